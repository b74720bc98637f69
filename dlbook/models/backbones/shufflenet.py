"""ShuffleNetV2 x1.0 / x1.5 / x2.0 (Ma et al. 2018), as torchvision defines them (Gen-CNN pool, seed 001).

Unit (book §10.7, channel shuffle): stride 1 splits the channels in half and transforms one half
(1x1 -> depthwise 3x3 -> 1x1); stride 2 transforms both copies (left: depthwise 3x3 -> 1x1); the halves
are concatenated and shuffled with 2 groups (reshape to (..., 2, C/2), swap, flatten).
"""

import flax.linen as nn
import jax.numpy as jnp

from dlbook.models.backbones.common import ConvBN, check_input, classify, max_pool
from dlbook.models.registry import register

SHUFFLENET_CHANNELS = {"x1_0": (24, 116, 232, 464, 1024), "x1_5": (24, 176, 352, 704, 1024),
                       "x2_0": (24, 244, 488, 976, 2048)}
SHUFFLENET_REPEATS = (4, 8, 4)


def channel_shuffle(x, groups: int):
  n, h, w, c = x.shape
  return x.reshape(n, h, w, groups, c // groups).swapaxes(3, 4).reshape(n, h, w, c)


class ShuffleUnit(nn.Module):
  out: int
  stride: int
  bn_eps: float = 1e-5

  @nn.compact
  def __call__(self, x, train: bool = False):
    bf = self.out // 2
    if self.stride == 1:
      left, right = jnp.split(x, 2, axis=-1)
    else:
      left = ConvBN(x.shape[-1], 3, self.stride, groups=-1, act="none", bn_eps=self.bn_eps, name="left_dw")(x, train)
      left = ConvBN(bf, 1, bn_eps=self.bn_eps, name="left_pw")(left, train)
      right = x
    right = ConvBN(bf, 1, bn_eps=self.bn_eps, name="right_pw1")(right, train)
    right = ConvBN(bf, 3, self.stride, groups=-1, act="none", bn_eps=self.bn_eps, name="right_dw")(right, train)
    right = ConvBN(bf, 1, bn_eps=self.bn_eps, name="right_pw2")(right, train)
    return channel_shuffle(jnp.concatenate([left, right], axis=-1), 2)


class ShuffleNetV2(nn.Module):
  size: str = "x1_0"
  num_classes: int = 1000
  in_channels: int = 3
  dropout: float = 0.0
  features: bool = False
  stem_stride: int = 2
  stem_pool: bool = True
  bn_eps: float = 1e-5

  @nn.compact
  def __call__(self, x, train: bool = False):
    check_input(x, self.in_channels, f"shufflenet_v2_{self.size}")
    ch = SHUFFLENET_CHANNELS[self.size]
    x = ConvBN(ch[0], 3, self.stem_stride, bn_eps=self.bn_eps, name="stem")(x, train)
    if self.stem_pool:
      x = max_pool(x, 3, 2, 1)
    for s, (n, out) in enumerate(zip(SHUFFLENET_REPEATS, ch[1:4])):
      for j in range(n):
        x = ShuffleUnit(out, 2 if j == 0 else 1, self.bn_eps, name=f"stage{s + 2}_{j}")(x, train)
    x = ConvBN(ch[4], 1, bn_eps=self.bn_eps, name="last")(x, train)
    feats = jnp.mean(x, axis=(1, 2))
    if self.features:
      return feats
    return classify(self, feats, train, self.num_classes, self.dropout)


def _register(size):
  @register(f"shufflenet_v2_{size}")
  def build(num_classes: int = 1000, **kwargs) -> ShuffleNetV2:
    return ShuffleNetV2(size=size, num_classes=num_classes, **kwargs)
  return build


for _size in SHUFFLENET_CHANNELS:
  _register(_size)


def shufflenet_torchvision_names(path, modules, model):
  """torchvision: conv1.{0,1}, stage{s}.{j}.branch1.{0,1,2,3} / branch2.{0,1,3,4,5,6}, conv5.{0,1}, fc."""
  top = path[0]
  if top in ("stem", "last"):
    p = {"stem": "conv1", "last": "conv5"}[top]
    return (f"{p}.0", "conv") if path[1] == "conv" else (f"{p}.1", "bn")
  if top == "classifier":
    return "fc", "dense"
  stage, j = top.split("_")
  conv, bn = {"left_dw": ("branch1.0", "branch1.1"), "left_pw": ("branch1.2", "branch1.3"),
              "right_pw1": ("branch2.0", "branch2.1"), "right_dw": ("branch2.3", "branch2.4"),
              "right_pw2": ("branch2.5", "branch2.6")}[path[1]]
  return (f"{stage}.{j}.{conv}", "conv") if path[2] == "conv" else (f"{stage}.{j}.{bn}", "bn")
