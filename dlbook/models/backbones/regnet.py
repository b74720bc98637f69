"""RegNetX-400MF and RegNetY-400MF (Radosavovic et al. 2020), as torchvision defines them (Gen-CNN pool,
seed 001 ch. 3). Stage widths and depths are torchvision's quantised linear rule for
(depth, w0, wa, wm, group width) = (22, 24, 24.48, 2.54, 16) and (16, 48, 27.89, 2.09, 8); the values
below are what that rule gives (checked by the parameter counts 5,495,976 and 4,344,144).
Block: 1x1 -> grouped 3x3 (stride) -> [SE, width round(0.25 x block input)] -> 1x1, projection shortcut.
"""

import flax.linen as nn
import jax.numpy as jnp

from dlbook.models.backbones.common import ConvBN, SqueezeExcite, check_input, classify
from dlbook.models.registry import register

REGNETS = {
    "regnet_x_400mf": dict(widths=(32, 64, 160, 400), depths=(1, 2, 7, 12), group_width=16, se_ratio=0.0),
    "regnet_y_400mf": dict(widths=(48, 104, 208, 440), depths=(1, 3, 6, 6), group_width=8, se_ratio=0.25),
}


class ResBottleneckBlock(nn.Module):
  out: int
  stride: int
  group_width: int
  se_ratio: float
  bn_eps: float = 1e-5

  @nn.compact
  def __call__(self, x, train: bool = False):
    w_in = x.shape[-1]
    h = ConvBN(self.out, 1, bn_eps=self.bn_eps, name="a")(x, train)
    h = ConvBN(self.out, 3, self.stride, groups=self.out // min(self.group_width, self.out), bn_eps=self.bn_eps,
               name="b")(h, train)
    if self.se_ratio:
      h = SqueezeExcite(int(round(self.se_ratio * w_in)), "relu", "sigmoid", name="se")(h)
    h = ConvBN(self.out, 1, act="none", bn_eps=self.bn_eps, name="c")(h, train)
    if w_in != self.out or self.stride != 1:
      x = ConvBN(self.out, 1, self.stride, act="none", bn_eps=self.bn_eps, name="proj")(x, train)
    return nn.relu(x + h)


class RegNet(nn.Module):
  variant: str = "regnet_x_400mf"
  num_classes: int = 1000
  in_channels: int = 3
  dropout: float = 0.0
  features: bool = False
  stem_stride: int = 2
  bn_eps: float = 1e-5

  @nn.compact
  def __call__(self, x, train: bool = False):
    check_input(x, self.in_channels, self.variant)
    cfg = REGNETS[self.variant]
    x = ConvBN(32, 3, self.stem_stride, bn_eps=self.bn_eps, name="stem")(x, train)
    for i, (w, d) in enumerate(zip(cfg["widths"], cfg["depths"])):
      for j in range(d):
        x = ResBottleneckBlock(w, 2 if j == 0 else 1, cfg["group_width"], cfg["se_ratio"], self.bn_eps,
                               name=f"block{i + 1}_{j}")(x, train)
    feats = jnp.mean(x, axis=(1, 2))
    if self.features:
      return feats
    return classify(self, feats, train, self.num_classes, self.dropout)


@register("regnet_x_400mf")
def regnet_x_400mf(num_classes: int = 1000, **kwargs) -> RegNet:
  return RegNet(variant="regnet_x_400mf", num_classes=num_classes, **kwargs)


@register("regnet_y_400mf")
def regnet_y_400mf(num_classes: int = 1000, **kwargs) -> RegNet:
  return RegNet(variant="regnet_y_400mf", num_classes=num_classes, **kwargs)


def regnet_torchvision_names(path, modules, model):
  """torchvision: stem.{0,1}, trunk_output.block{i}.block{i}-{j}.{proj,f.a,f.b,f.se,f.c}, fc."""
  top = path[0]
  if top == "stem":
    return ("stem.0", "conv") if path[1] == "conv" else ("stem.1", "bn")
  if top == "classifier":
    return "fc", "dense"
  stage, j = top.split("_")
  prefix = f"trunk_output.{stage}.{stage}-{j}"
  part = path[1]
  if part == "se":
    return f"{prefix}.f.se.{path[2]}", "dense"
  prefix += ".proj" if part == "proj" else f".f.{part}"
  return (f"{prefix}.0", "conv") if path[2] == "conv" else (f"{prefix}.1", "bn")
