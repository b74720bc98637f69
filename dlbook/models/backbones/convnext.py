"""ConvNeXt-Tiny (Liu et al. 2022), as torchvision defines it (Gen-CNN pool, seed 001; 28,589,128 parameters).

Patchify stem (4x4 stride-4 conv + LayerNorm), four stages of (3, 3, 9, 3) blocks at (96, 192, 384, 768)
channels, LayerNorm + 2x2 stride-2 conv between stages. Block: depthwise 7x7 -> LayerNorm -> linear 4C ->
GELU (exact erf form, as torch) -> linear C -> layer scale (init 1e-6) -> stochastic depth -> residual.
Stochastic depth grows linearly to 0.1 over the 18 blocks (torchvision's default).
"""

import flax.linen as nn
import jax.numpy as jnp

from dlbook.models.backbones.common import DepthwiseConv, check_input, drop_path
from dlbook.models.registry import register

CONVNEXT_TINY = dict(widths=(96, 192, 384, 768), depths=(3, 3, 9, 3))
_trunc = nn.initializers.truncated_normal(0.02)


def _ln(name):
  return nn.LayerNorm(epsilon=1e-6, name=name)


class CNBlock(nn.Module):
  drop_rate: float = 0.0
  layer_scale: float = 1e-6

  @nn.compact
  def __call__(self, x, train: bool = False):
    c = x.shape[-1]
    h = DepthwiseConv((7, 7), 1, ((3, 3), (3, 3)), use_bias=True, kernel_init=_trunc, name="dwconv")(x)
    h = _ln("norm")(h)
    h = nn.gelu(nn.Dense(4 * c, kernel_init=_trunc, name="fc1")(h), approximate=False)
    h = nn.Dense(c, kernel_init=_trunc, name="fc2")(h)
    h = h * self.param("layer_scale", nn.initializers.constant(self.layer_scale), (c,))
    return x + drop_path(self, h, self.drop_rate, train)


class ConvNeXt(nn.Module):
  num_classes: int = 1000
  width: float = 1.0
  in_channels: int = 3
  dropout: float = 0.0
  features: bool = False
  stem_stride: int = 4       # small inputs: 1 or 2 (the stem kernel follows the stride)
  stochastic_depth: float = 0.1

  @nn.compact
  def __call__(self, x, train: bool = False):
    check_input(x, self.in_channels, "convnext_tiny")
    widths = [int(round(w * self.width)) for w in CONVNEXT_TINY["widths"]]
    depths = CONVNEXT_TINY["depths"]
    s = self.stem_stride
    x = _ln("stem_norm")(nn.Conv(widths[0], (s, s), (s, s), padding="VALID", kernel_init=_trunc, name="stem")(x))
    total, k = sum(depths), 0
    for i, (w, d) in enumerate(zip(widths, depths)):
      if i > 0:
        x = _ln(f"down{i}_norm")(x)
        x = nn.Conv(w, (2, 2), (2, 2), padding="VALID", kernel_init=_trunc, name=f"down{i}")(x)
      for j in range(d):
        x = CNBlock(self.stochastic_depth * k / (total - 1.0), name=f"stage{i}_{j}")(x, train)
        k += 1
    feats = _ln("head_norm")(jnp.mean(x, axis=(1, 2)))
    if self.features:
      return feats
    if self.dropout > 0:
      feats = nn.Dropout(self.dropout, deterministic=not train)(feats)
    return nn.Dense(self.num_classes, kernel_init=_trunc, name="classifier")(feats)


@register("convnext_tiny")
def convnext_tiny(num_classes: int = 1000, **kwargs) -> ConvNeXt:
  return ConvNeXt(num_classes=num_classes, **kwargs)


def convnext_torchvision_names(path, modules, model):
  """torchvision: features.0.{0,1} stem, features.{2i-1}.{j}.block.{0,2,3,5} + layer_scale,
  features.{2i}.{0,1} downsampling, classifier.{0,2}."""
  top = path[0]
  fixed = {"stem": ("features.0.0", "conv"), "stem_norm": ("features.0.1", "ln"),
           "head_norm": ("classifier.0", "ln"), "classifier": ("classifier.2", "dense")}
  if top in fixed:
    return fixed[top]
  if top.startswith("down"):
    i = int(top[4])
    return (f"features.{2 * i}.0", "ln") if top.endswith("_norm") else (f"features.{2 * i}.1", "conv")
  stage, j = top[len("stage"):].split("_")
  prefix = f"features.{2 * int(stage) + 1}.{j}"
  if len(path) == 1:   # the block's own layer_scale parameter
    return prefix, "layer_scale"
  idx, kind = {"dwconv": ("0", "conv"), "norm": ("2", "ln"), "fc1": ("3", "dense"), "fc2": ("5", "dense")}[path[1]]
  return f"{prefix}.block.{idx}", kind
