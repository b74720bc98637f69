"""EfficientNetV2-S (Tan & Le 2021), as torchvision defines it (Gen-CNN pool, seed 001; 21,458,488 parameters).

Fused-MBConv stages (a full kxk conv replaces expand + depthwise) then MBConv stages with SE (squeeze to a
quarter of the block's input width, SiLU, sigmoid gate); SiLU everywhere; BN eps 1e-3; stochastic depth
growing linearly to 0.2 over the blocks; dropout 0.2 before the classifier.
"""

import flax.linen as nn
import jax.numpy as jnp

from dlbook.models.backbones.common import (ConvBN, SqueezeExcite, check_input, classify, drop_path,
                                            make_divisible)
from dlbook.models.registry import register

# (fused, expansion, kernel, stride, in, out, layers): torchvision's efficientnet_v2_s settings.
EFFICIENTNET_V2_S = ((True, 1, 3, 1, 24, 24, 2), (True, 4, 3, 2, 24, 48, 4), (True, 4, 3, 2, 48, 64, 4),
                     (False, 4, 3, 2, 64, 128, 6), (False, 6, 3, 1, 128, 160, 9), (False, 6, 3, 2, 160, 256, 15))


class MBConv(nn.Module):
  fused: bool
  expansion: int
  kernel: int
  stride: int
  out: int
  drop_rate: float = 0.0
  bn_eps: float = 1e-3

  @nn.compact
  def __call__(self, x, train: bool = False):
    inp = x.shape[-1]
    hidden = make_divisible(inp * self.expansion)
    h = x
    if self.fused:
      if hidden != inp:
        h = ConvBN(hidden, self.kernel, self.stride, act="silu", bn_eps=self.bn_eps, name="expand")(h, train)
        h = ConvBN(self.out, 1, act="none", bn_eps=self.bn_eps, name="project")(h, train)
      else:
        h = ConvBN(self.out, self.kernel, self.stride, act="silu", bn_eps=self.bn_eps, name="project")(h, train)
    else:
      if hidden != inp:
        h = ConvBN(hidden, 1, act="silu", bn_eps=self.bn_eps, name="expand")(h, train)
      h = ConvBN(hidden, self.kernel, self.stride, groups=-1, act="silu", bn_eps=self.bn_eps, name="depthwise")(h, train)
      h = SqueezeExcite(max(1, inp // 4), "silu", "sigmoid", name="se")(h)
      h = ConvBN(self.out, 1, act="none", bn_eps=self.bn_eps, name="project")(h, train)
    if self.stride == 1 and inp == self.out:
      return x + drop_path(self, h, self.drop_rate, train)
    return h


class EfficientNetV2(nn.Module):
  num_classes: int = 1000
  in_channels: int = 3
  dropout: float = 0.2
  features: bool = False
  stem_stride: int = 2
  stochastic_depth: float = 0.2
  bn_eps: float = 1e-3

  @nn.compact
  def __call__(self, x, train: bool = False):
    check_input(x, self.in_channels, "efficientnet_v2_s")
    x = ConvBN(24, 3, self.stem_stride, act="silu", bn_eps=self.bn_eps, name="stem")(x, train)
    total = sum(s[-1] for s in EFFICIENTNET_V2_S)
    k = 0
    for i, (fused, t, ker, stride, _, out, n) in enumerate(EFFICIENTNET_V2_S):
      for j in range(n):
        x = MBConv(fused, t, ker, stride if j == 0 else 1, out, self.stochastic_depth * k / total, self.bn_eps,
                   name=f"stage{i + 1}_{j}")(x, train)
        k += 1
    x = ConvBN(1280, 1, act="silu", bn_eps=self.bn_eps, name="last")(x, train)
    feats = jnp.mean(x, axis=(1, 2))
    if self.features:
      return feats
    return classify(self, feats, train, self.num_classes, self.dropout)


@register("efficientnet_v2_s")
def efficientnet_v2_s(num_classes: int = 1000, **kwargs) -> EfficientNetV2:
  return EfficientNetV2(num_classes=num_classes, **kwargs)


def efficientnet_torchvision_names(path, modules, model):
  """torchvision: features.0 stem, features.{i}.{j}.block.{0,1,2,3} (expand/fused, depthwise, SE, project),
  features.7 last conv, classifier.1."""
  top = path[0]
  if top in ("stem", "last"):
    i = 0 if top == "stem" else len(EFFICIENTNET_V2_S) + 1
    return (f"features.{i}.0", "conv") if path[1] == "conv" else (f"features.{i}.1", "bn")
  if top == "classifier":
    return "classifier.1", "dense"
  stage, j = top[len("stage"):].split("_")
  parts = [p for p in ("expand", "depthwise", "se", "project") if any(m[:2] == (top, p) for m in modules)]
  idx = parts.index(path[1])
  prefix = f"features.{stage}.{j}.block.{idx}"
  if path[1] == "se":
    return f"{prefix}.{path[2]}", "dense"
  return (f"{prefix}.0", "conv") if path[2] == "conv" else (f"{prefix}.1", "bn")
