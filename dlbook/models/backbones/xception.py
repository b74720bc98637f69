"""Xception (Chollet 2017) as Keras `Xception` defines it (pan-cancer ensemble, book ch. 12): entry flow
with strided 1x1 residual projections, 8 middle-flow blocks of three separable convs, exit flow; BN eps
1e-3; 22,855,952 trainable and 22,910,480 variables in all at 1000 classes.

A separable conv is a depthwise 3x3 followed by a pointwise 1x1, both without bias (book §10.7).
Keras' four residual projections are auto-named (`conv2d`, `batch_normalization`, ...): the Flax
modules `residual_{i}` are numbered in the same creation order.
"""

import flax.linen as nn
import jax.numpy as jnp

from dlbook.models.backbones.common import DepthwiseConv, PointwiseConv, batch_norm, check_input, classify, conv_init
from dlbook.models.registry import register


class SeparableConv(nn.Module):
  features: int

  @nn.compact
  def __call__(self, x):
    x = DepthwiseConv((3, 3), 1, "SAME", name="depthwise")(x)
    return PointwiseConv(self.features, name="pointwise")(x)


class Xception(nn.Module):
  num_classes: int = 1000
  width: float = 1.0
  in_channels: int = 3
  dropout: float = 0.0
  features: bool = False
  stem_stride: int = 2
  bn_eps: float = 1e-3

  @nn.compact
  def __call__(self, x, train: bool = False):
    check_input(x, self.in_channels, "xception")
    w = lambda c: max(1, int(round(c * self.width)))  # noqa: E731
    bn = lambda name: batch_norm(train, self.bn_eps, name=name)  # noqa: E731

    def sep(h, f, name):
      return bn(name + "_bn")(SeparableConv(w(f), name=name)(h))

    x = nn.Conv(w(32), (3, 3), (self.stem_stride,) * 2, padding="VALID", use_bias=False, kernel_init=conv_init,
                name="block1_conv1")(x)
    x = nn.relu(bn("block1_conv1_bn")(x))
    x = nn.Conv(w(64), (3, 3), padding="VALID", use_bias=False, kernel_init=conv_init, name="block1_conv2")(x)
    x = nn.relu(bn("block1_conv2_bn")(x))
    entry = ((2, 128, 128, False), (3, 256, 256, True), (4, 728, 728, True), (13, 728, 1024, True))
    for r, (b, f1, f2, act_first) in enumerate(entry):
      if b == 13:   # exit flow: the middle flow comes before it
        for m in range(5, 13):
          h = x
          for s in (1, 2, 3):
            h = sep(nn.relu(h), 728, f"block{m}_sepconv{s}")
          x = x + h
      residual = PointwiseConv(w(f2), 2, name=f"residual_{r}")(x)
      residual = bn(f"residual_{r}_bn")(residual)
      h = nn.relu(x) if act_first else x
      h = sep(h, f1, f"block{b}_sepconv1")
      h = sep(nn.relu(h), f2, f"block{b}_sepconv2")
      x = nn.max_pool(h, (3, 3), (2, 2), padding="SAME") + residual
    x = nn.relu(sep(x, 1536, "block14_sepconv1"))
    x = nn.relu(sep(x, 2048, "block14_sepconv2"))
    feats = jnp.mean(x, axis=(1, 2))
    if self.features:
      return feats
    return classify(self, feats, train, self.num_classes, self.dropout, kernel_init=nn.initializers.lecun_normal())


@register("xception")
def xception(num_classes: int = 1000, **kwargs) -> Xception:
  return Xception(num_classes=num_classes, **kwargs)


def xception_keras_names(path, modules, model):
  """Keras: block{b}_conv{c}[_bn], block{b}_sepconv{s}[_bn] (depthwise and pointwise kernels of one
  SeparableConv2D layer), residual projections conv2d_{i}/batch_normalization_{i} (renumbered), predictions."""
  top = path[0]
  if top == "classifier":
    return "predictions", "dense"
  if top.startswith("residual_"):
    i = int(top.split("_")[1])
    return (f"batch_normalization_{i}", "bn") if top.endswith("_bn") else (f"conv2d_{i}", "conv")
  if top.endswith("_bn"):
    return top, "bn"
  if "sepconv" in top:
    return top, "sep_dw" if path[1] == "depthwise" else "sep_pw"
  return top, "conv"
