"""ResNet50 (He et al. 2016) and ResNet101V2 (pre-activation, He et al. 2016b).

ResNet50 is in the pan-cancer ensemble (book ch. 12); ResNet101V2 is a leukaemia baseline (seed 003).
ResNet50 comes in two published forms:
- `style="torchvision"` (ResNet v1.5): stride on the 3x3 conv, convolutions without bias;
  25,557,032 parameters at 1000 classes.
- `style="keras"` (Keras `ResNet50`, the original Caffe model): stride on the first 1x1 conv, every conv
  with a bias, BN eps 1.001e-5; 25,583,592 parameters (+53,120 BN statistics = Keras' 25,636,712).
ResNet101V2 follows Keras `ResNet101V2` (the only published implementation of the sources' model):
stride on the last block of each stage, shortcut max-pool, 44,675,560 variables in all.
"""

import flax.linen as nn
import jax.numpy as jnp

from dlbook.errors import require
from dlbook.models.backbones.common import batch_norm, check_input, classify, conv_init, max_pool
from dlbook.models.backbones.common import conv as conv2d
from dlbook.models.registry import register

RESNET50_BLOCKS = (3, 4, 6, 3)
RESNET101_BLOCKS = (3, 4, 23, 3)
STYLES = ("torchvision", "keras")


class Bottleneck(nn.Module):
  """1x1 -> 3x3 -> 1x1 (x4) with a projection shortcut where the shape changes."""
  filters: int
  stride: int = 1
  style: str = "torchvision"
  bn_eps: float = 1e-5

  @nn.compact
  def __call__(self, x, train: bool = False):
    keras = self.style == "keras"
    conv = lambda f, k, s, name: conv2d(f, k, s, ((k // 2, k // 2),) * 2, keras, name=name)  # noqa: E731
    bn = lambda name: batch_norm(train, self.bn_eps, name=name)  # noqa: E731
    s1, s3 = (self.stride, 1) if keras else (1, self.stride)
    h = nn.relu(bn("bn1")(conv(self.filters, 1, s1, "conv1")(x)))
    h = nn.relu(bn("bn2")(conv(self.filters, 3, s3, "conv2")(h)))
    h = bn("bn3")(conv(4 * self.filters, 1, 1, "conv3")(h))
    if self.stride != 1 or x.shape[-1] != 4 * self.filters:
      x = bn("downsample_bn")(conv(4 * self.filters, 1, self.stride, "downsample_conv")(x))
    return nn.relu(x + h)


class ResNet(nn.Module):
  """ResNet v1 with bottlenecks (ResNet50 by default)."""
  blocks: tuple = RESNET50_BLOCKS
  num_classes: int = 1000
  width: float = 1.0
  in_channels: int = 3
  dropout: float = 0.0
  features: bool = False
  stem_stride: int = 2
  stem_pool: bool = True
  style: str = "torchvision"
  bn_eps: float = 1e-5

  @nn.compact
  def __call__(self, x, train: bool = False):
    check_input(x, self.in_channels, "resnet50")
    require(self.style in STYLES, f"unknown resnet style {self.style!r}; valid: {', '.join(STYLES)}")
    base = int(round(64 * self.width))
    x = nn.Conv(base, (7, 7), (self.stem_stride,) * 2, padding=((3, 3), (3, 3)), use_bias=self.style == "keras",
                kernel_init=conv_init, name="stem_conv")(x)
    x = nn.relu(batch_norm(train, self.bn_eps, name="stem_bn")(x))
    if self.stem_pool:
      x = max_pool(x, 3, 2, 1)
    for i, n in enumerate(self.blocks):
      for j in range(n):
        x = Bottleneck(base * 2 ** i, 2 if (j == 0 and i > 0) else 1, self.style, self.bn_eps,
                       name=f"layer{i + 1}_{j}")(x, train)
    feats = jnp.mean(x, axis=(1, 2))
    if self.features:
      return feats
    return classify(self, feats, train, self.num_classes, self.dropout, kernel_init=nn.initializers.lecun_normal())


@register("resnet50")
def resnet50(num_classes: int = 1000, **kwargs) -> ResNet:
  return ResNet(blocks=RESNET50_BLOCKS, num_classes=num_classes, **kwargs)


def resnet_torchvision_names(path, modules, model):
  """torchvision: conv1/bn1, layer{i}.{j}.{conv,bn}{1,2,3}, layer{i}.{j}.downsample.{0,1}, fc."""
  top = path[0]
  fixed = {"stem_conv": ("conv1", "conv"), "stem_bn": ("bn1", "bn"), "classifier": ("fc", "dense")}
  if top in fixed:
    return fixed[top]
  layer, j = top.split("_")
  part = {"downsample_conv": "downsample.0", "downsample_bn": "downsample.1"}.get(path[1], path[1])
  return f"{layer}.{j}.{part}", "bn" if "bn" in path[1] else "conv"


def resnet_keras_names(path, modules, model):
  """Keras: conv1_conv/conv1_bn, conv{i+1}_block{j+1}_{0,1,2,3}_{conv,bn} (0 = shortcut), predictions."""
  top = path[0]
  fixed = {"stem_conv": ("conv1_conv", "conv"), "stem_bn": ("conv1_bn", "bn"), "classifier": ("predictions", "dense")}
  if top in fixed:
    return fixed[top]
  layer, j = top.split("_")
  stage = int(layer[len("layer"):]) + 1
  kind = "bn" if "bn" in path[1] else "conv"
  idx = "0" if path[1].startswith("downsample") else path[1][-1]
  return f"conv{stage}_block{int(j) + 1}_{idx}_{kind}", kind


# ------------------------------------------------------------------------------------ ResNetV2

class PreactBottleneck(nn.Module):
  """Keras `block2`: BN-ReLU preactivation; shortcut conv on the preactivation (first block) or a
  strided 1x1 max-pool; the stride sits on the 3x3 conv."""
  filters: int
  stride: int = 1
  conv_shortcut: bool = False
  bn_eps: float = 1.001e-5

  @nn.compact
  def __call__(self, x, train: bool = False):
    preact = nn.relu(batch_norm(train, self.bn_eps, name="preact_bn")(x))
    if self.conv_shortcut:
      shortcut = conv2d(4 * self.filters, 1, self.stride, name="shortcut")(preact)
    else:
      shortcut = x[:, ::self.stride, ::self.stride, :] if self.stride > 1 else x
    h = conv2d(self.filters, 1, use_bias=False, name="conv1")(preact)
    h = nn.relu(batch_norm(train, self.bn_eps, name="bn1")(h))
    h = nn.Conv(self.filters, (3, 3), (self.stride,) * 2, padding=((1, 1), (1, 1)), use_bias=False,
                kernel_init=conv_init, name="conv2")(h)
    h = nn.relu(batch_norm(train, self.bn_eps, name="bn2")(h))
    h = conv2d(4 * self.filters, 1, name="conv3")(h)
    return shortcut + h


class ResNetV2(nn.Module):
  """Keras `ResNet101V2` (and, with other `blocks`, 50V2/152V2)."""
  blocks: tuple = RESNET101_BLOCKS
  num_classes: int = 1000
  width: float = 1.0
  in_channels: int = 3
  dropout: float = 0.0
  features: bool = False
  stem_stride: int = 2
  stem_pool: bool = True
  bn_eps: float = 1.001e-5

  @nn.compact
  def __call__(self, x, train: bool = False):
    check_input(x, self.in_channels, "resnet101v2")
    base = int(round(64 * self.width))
    x = nn.Conv(base, (7, 7), (self.stem_stride,) * 2, padding=((3, 3), (3, 3)), kernel_init=conv_init,
                name="stem_conv")(x)
    if self.stem_pool:   # Keras pads with zeros before this pool, and no ReLU precedes it
      x = nn.max_pool(jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0))), (3, 3), (2, 2))
    for i, n in enumerate(self.blocks):
      last_stride = 2 if i < len(self.blocks) - 1 else 1
      for j in range(n):
        x = PreactBottleneck(base * 2 ** i, last_stride if j == n - 1 else 1, j == 0, self.bn_eps,
                             name=f"stage{i + 2}_block{j + 1}")(x, train)
    x = nn.relu(batch_norm(train, self.bn_eps, name="post_bn")(x))
    feats = jnp.mean(x, axis=(1, 2))
    if self.features:
      return feats
    return classify(self, feats, train, self.num_classes, self.dropout, kernel_init=nn.initializers.lecun_normal())


@register("resnet101v2")
def resnet101v2(num_classes: int = 1000, **kwargs) -> ResNetV2:
  return ResNetV2(blocks=RESNET101_BLOCKS, num_classes=num_classes, **kwargs)


def resnetv2_keras_names(path, modules, model):
  """Keras: conv1_conv, conv{s}_block{j}_{preact_bn,0_conv,1_conv,1_bn,2_conv,2_bn,3_conv}, post_bn, predictions."""
  top = path[0]
  fixed = {"stem_conv": ("conv1_conv", "conv"), "post_bn": ("post_bn", "bn"), "classifier": ("predictions", "dense")}
  if top in fixed:
    return fixed[top]
  stage, block = top.split("_")
  part = {"preact_bn": "preact_bn", "shortcut": "0_conv", "conv1": "1_conv", "bn1": "1_bn", "conv2": "2_conv",
          "bn2": "2_bn", "conv3": "3_conv"}[path[1]]
  return f"conv{stage[len('stage'):]}_{block}_{part}", "bn" if part.endswith("bn") else "conv"
