"""MobileNetV2 (Sandler et al. 2018), MobileNetV3-Small/-Large (Howard et al. 2019) and
MnasNet-1.0 (Tan et al. 2019), as torchvision and Keras define them.

Used by the leukaemia thesis (MobileNetV2, seed 003), the brain-tumour chapter (MobileNetV3-Large,
book ch. 13) and the Gen-CNN pool (seed 001 ch. 3). Inverted residual block (book §10.7): 1x1
expansion -> depthwise kxk -> (SE) -> linear 1x1 projection, with a residual when shapes agree.

Name maps (`*_names`) give, for every Flax module, the torchvision state-dict prefix or Keras layer
that holds its weights; `dlbook.models.weights` uses them.
"""

from typing import Tuple

import flax.linen as nn
import jax.numpy as jnp

from dlbook.models.backbones.common import (ConvBN, SqueezeExcite, check_input, check_padding, check_width,
                                            classify, hard_swish, make_divisible)
from dlbook.models.registry import register

# (expansion t, channels c, repeats n, first stride s): Sandler et al. Table 2.
MOBILENET_V2_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                         (6, 160, 3, 2), (6, 320, 1, 1))


class InvertedResidual(nn.Module):
  """1x1 expand -> depthwise -> [SE] -> 1x1 project (+ residual)."""
  hidden: int
  out: int
  stride: int = 1
  kernel: int = 3
  act: str = "relu6"
  se: int = 0                # squeeze width; 0 = no SE
  padding: str = "torch"
  bn_eps: float = 1e-5
  depthwise: str = "auto"

  @nn.compact
  def __call__(self, x, train: bool = False):
    inp = x.shape[-1]
    h = x
    if self.hidden != inp:
      h = ConvBN(self.hidden, 1, act=self.act, bn_eps=self.bn_eps, name="expand")(h, train)
    h = ConvBN(self.hidden, self.kernel, self.stride, groups=-1, act=self.act, padding=self.padding,
               bn_eps=self.bn_eps, depthwise=self.depthwise, name="depthwise")(h, train)
    if self.se:
      h = SqueezeExcite(self.se, "relu", "hard_sigmoid", name="se")(h)
    h = ConvBN(self.out, 1, act="none", bn_eps=self.bn_eps, name="project")(h, train)
    return x + h if self.stride == 1 and inp == self.out else h


class MobileNetV2(nn.Module):
  """MobileNetV2 (torchvision `mobilenet_v2`, Keras `MobileNetV2`; 3,504,872 parameters at 1000 classes)."""
  num_classes: int = 1000
  width: float = 1.0
  in_channels: int = 3
  dropout: float = 0.2
  features: bool = False
  stem_stride: int = 2
  padding: str = "torch"
  bn_eps: float = 1e-5
  # depthwise convs as shifted multiply-adds with a native gradient ("taps", common.DepthwiseConv) or grouped
  # convs ("conv"); "auto": taps on the CPU, conv elsewhere (common.resolve_depthwise). Same parameters, outputs
  depthwise: str = "auto"

  @nn.compact
  def __call__(self, x, train: bool = False):
    check_input(x, self.in_channels, "mobilenet_v2")
    check_width(self.width, "mobilenet_v2")
    check_padding(self.padding)
    c = make_divisible(32 * self.width)
    x = ConvBN(c, 3, self.stem_stride, act="relu6", padding=self.padding, bn_eps=self.bn_eps, name="stem")(x, train)
    i = 0
    for t, ch, n, s in MOBILENET_V2_SETTINGS:
      out = make_divisible(ch * self.width)
      for j in range(n):
        x = InvertedResidual(int(round(x.shape[-1] * t)), out, s if j == 0 else 1, padding=self.padding,
                             bn_eps=self.bn_eps, depthwise=self.depthwise, name=f"block_{i}")(x, train)
        i += 1
    last = make_divisible(1280 * max(1.0, self.width))
    x = ConvBN(last, 1, act="relu6", bn_eps=self.bn_eps, name="last")(x, train)
    feats = jnp.mean(x, axis=(1, 2))
    if self.features:
      return feats
    return classify(self, feats, train, self.num_classes, self.dropout)


@register("mobilenet_v2")
def mobilenet_v2(num_classes: int = 1000, **kwargs) -> MobileNetV2:
  return MobileNetV2(num_classes=num_classes, **kwargs)


def _convbn(prefix: str, leaf: str, conv: str, bn: str, kind: str = "conv"):
  return (f"{prefix}.{conv}", kind) if leaf == "conv" else (f"{prefix}.{bn}", "bn")


def mobilenet_v2_torchvision_names(path: Tuple[str, ...], modules, model) -> Tuple[str, str]:
  """torchvision keys: features.0 (stem), features.{i+1}.conv.* (blocks), features.18, classifier.1."""
  head = path[0]
  if head == "stem":
    return _convbn("features.0", path[1], "0", "1")
  if head == "last":
    return _convbn(f"features.{len(_v2_blocks(modules)) + 1}", path[1], "0", "1")
  if head == "classifier":
    return "classifier.1", "dense"
  i = int(head.split("_")[1])
  expand = (head, "expand", "conv") in modules
  part, leaf = path[1], path[2]
  if part == "expand":
    return _convbn(f"features.{i + 1}.conv.0", leaf, "0", "1")
  if part == "depthwise":
    return _convbn(f"features.{i + 1}.conv.{1 if expand else 0}", leaf, "0", "1")
  j = 2 if expand else 1
  return (f"features.{i + 1}.conv.{j}", "conv") if leaf == "conv" else (f"features.{i + 1}.conv.{j + 1}", "bn")


def _v2_blocks(modules):
  return {p[0] for p in modules if p[0].startswith("block_")}


def mobilenet_v2_keras_names(path: Tuple[str, ...], modules, model) -> Tuple[str, str]:
  """Keras layers: Conv1/bn_Conv1, expanded_conv_*, block_{i}_{expand,depthwise,project}[_BN], Conv_1."""
  head = path[0]
  if head == "stem":
    return ("Conv1", "conv") if path[1] == "conv" else ("bn_Conv1", "bn")
  if head == "last":
    return ("Conv_1", "conv") if path[1] == "conv" else ("Conv_1_bn", "bn")
  if head == "classifier":
    return "predictions", "dense"
  i = int(head.split("_")[1])
  prefix = "expanded_conv_" if i == 0 else f"block_{i}_"
  part, leaf = path[1], path[2]
  kind = "dwconv" if part == "depthwise" else "conv"
  return (prefix + part, kind) if leaf == "conv" else (prefix + part + "_BN", "bn")


# ------------------------------------------------------------------------------------ MobileNetV3

# (kernel, expanded, out, SE, activation, stride): Howard et al. Tables 1-2 as torchvision writes them.
MOBILENET_V3 = {
    "large": ((3, 16, 16, False, "relu", 1), (3, 64, 24, False, "relu", 2), (3, 72, 24, False, "relu", 1),
              (5, 72, 40, True, "relu", 2), (5, 120, 40, True, "relu", 1), (5, 120, 40, True, "relu", 1),
              (3, 240, 80, False, "hard_swish", 2), (3, 200, 80, False, "hard_swish", 1),
              (3, 184, 80, False, "hard_swish", 1), (3, 184, 80, False, "hard_swish", 1),
              (3, 480, 112, True, "hard_swish", 1), (3, 672, 112, True, "hard_swish", 1),
              (5, 672, 160, True, "hard_swish", 2), (5, 960, 160, True, "hard_swish", 1),
              (5, 960, 160, True, "hard_swish", 1)),
    "small": ((3, 16, 16, True, "relu", 2), (3, 72, 24, False, "relu", 2), (3, 88, 24, False, "relu", 1),
              (5, 96, 40, True, "hard_swish", 2), (5, 240, 40, True, "hard_swish", 1),
              (5, 240, 40, True, "hard_swish", 1), (5, 120, 48, True, "hard_swish", 1),
              (5, 144, 48, True, "hard_swish", 1), (5, 288, 96, True, "hard_swish", 2),
              (5, 576, 96, True, "hard_swish", 1), (5, 576, 96, True, "hard_swish", 1)),
}
MOBILENET_V3_LAST = {"large": 1280, "small": 1024}


class MobileNetV3(nn.Module):
  """MobileNetV3 (torchvision `mobilenet_v3_{small,large}`, Keras `MobileNetV3{Small,Large}` without its
  built-in rescaling): hard-swish, SE with hard-sigmoid gate, BN eps 1e-3 in both frameworks."""
  size: str = "large"
  num_classes: int = 1000
  width: float = 1.0
  in_channels: int = 3
  dropout: float = 0.2
  features: bool = False
  stem_stride: int = 2
  padding: str = "torch"
  bn_eps: float = 1e-3
  depthwise: str = "auto"    # "taps", "conv" or "auto" (taps on the CPU): see MobileNetV2.depthwise

  @nn.compact
  def __call__(self, x, train: bool = False):
    name = f"mobilenet_v3_{self.size}"
    check_input(x, self.in_channels, name)
    check_width(self.width, name)
    check_padding(self.padding)
    adjust = lambda c: make_divisible(c * self.width)   # noqa: E731
    x = ConvBN(adjust(16), 3, self.stem_stride, act="hard_swish", padding=self.padding, bn_eps=self.bn_eps,
               name="stem")(x, train)
    for i, (k, exp, out, se, act, s) in enumerate(MOBILENET_V3[self.size]):
      x = InvertedResidual(adjust(exp), adjust(out), s, k, act, make_divisible(adjust(exp) // 4) if se else 0,
                           self.padding, self.bn_eps, self.depthwise, name=f"block_{i}")(x, train)
    x = ConvBN(6 * x.shape[-1], 1, act="hard_swish", bn_eps=self.bn_eps, name="last")(x, train)
    feats = jnp.mean(x, axis=(1, 2))
    feats = hard_swish(nn.Dense(adjust(MOBILENET_V3_LAST[self.size]), name="head_fc")(feats))
    if self.features:
      return feats
    return classify(self, feats, train, self.num_classes, self.dropout)


@register("mobilenet_v3_large")
def mobilenet_v3_large(num_classes: int = 1000, **kwargs) -> MobileNetV3:
  return MobileNetV3(size="large", num_classes=num_classes, **kwargs)


@register("mobilenet_v3_small")
def mobilenet_v3_small(num_classes: int = 1000, **kwargs) -> MobileNetV3:
  return MobileNetV3(size="small", num_classes=num_classes, **kwargs)


def mobilenet_v3_torchvision_names(path, modules, model):
  """torchvision: features.0 stem, features.{i+1}.block.{j} (expand, depthwise, SE fc1/fc2, project),
  features.{N+1} last conv, classifier.0 / classifier.3."""
  head = path[0]
  if head == "stem":
    return _convbn("features.0", path[1], "0", "1")
  if head == "last":
    return _convbn(f"features.{len(_v2_blocks(modules)) + 1}", path[1], "0", "1")
  if head == "head_fc":
    return "classifier.0", "dense"
  if head == "classifier":
    return "classifier.3", "dense"
  i = int(head.split("_")[1])
  parts = [p for p in ("expand", "depthwise", "se", "project") if any(m[:2] == (head, p) for m in modules)]
  j = parts.index(path[1])
  if path[1] == "se":
    return f"features.{i + 1}.block.{j}.{path[2]}", "dense"
  return _convbn(f"features.{i + 1}.block.{j}", path[2], "0", "1")


def mobilenet_v3_keras_names(path, modules, model):
  """Keras 3: conv/conv_bn, expanded_conv[_{i}]_{expand,depthwise,project}[_bn] (Keras 2: `_BatchNorm`, renamed
  on reading), squeeze_excite_conv[_1],
  conv_1/conv_1_bn, conv_2 (head 1x1 conv) and logits (1x1 conv)."""
  head = path[0]
  if head == "stem":
    return ("conv", "conv") if path[1] == "conv" else ("conv_bn", "bn")
  if head == "last":
    return ("conv_1", "conv") if path[1] == "conv" else ("conv_1_bn", "bn")
  if head == "head_fc":
    return "conv_2", "dense"
  if head == "classifier":
    return "logits", "dense"
  i = int(head.split("_")[1])
  prefix = "expanded_conv_" if i == 0 else f"expanded_conv_{i}_"
  part = path[1]
  if part == "se":
    return prefix + ("squeeze_excite_conv" if path[2] == "fc1" else "squeeze_excite_conv_1"), "dense"
  kind = "dwconv" if part == "depthwise" else "conv"
  return (prefix + part, kind) if path[2] == "conv" else (prefix + part + "_bn", "bn")


# ------------------------------------------------------------------------------------ MnasNet

# (kernel, stride, expansion, repeats, channels): Tan et al. Fig. 7 (MnasNet-A1 without SE = torchvision B1).
MNASNET_STACKS = ((3, 2, 3, 3, 24), (5, 2, 3, 3, 40), (5, 2, 6, 3, 80), (3, 1, 6, 2, 96), (5, 2, 6, 4, 192),
                  (3, 1, 6, 1, 320))


def _round_to_multiple(v: float, divisor: int = 8, round_up_bias: float = 0.9) -> int:
  new = max(divisor, int(v + divisor / 2) // divisor * divisor)
  return new if new >= round_up_bias * v else new + divisor


class MnasNet(nn.Module):
  """MnasNet-B1 (torchvision `mnasnet1_0`: 4,383,312 parameters): MnasNet-A1's layout without SE."""
  num_classes: int = 1000
  width: float = 1.0
  in_channels: int = 3
  dropout: float = 0.2
  features: bool = False
  stem_stride: int = 2
  padding: str = "torch"
  bn_eps: float = 1e-5

  @nn.compact
  def __call__(self, x, train: bool = False):
    check_input(x, self.in_channels, "mnasnet1_0")
    check_width(self.width, "mnasnet1_0")
    d = [_round_to_multiple(c * self.width) for c in (32, 16, 24, 40, 80, 96, 192, 320)]
    x = ConvBN(d[0], 3, self.stem_stride, padding=self.padding, bn_eps=self.bn_eps, name="stem")(x, train)
    x = ConvBN(d[0], 3, 1, groups=-1, padding=self.padding, bn_eps=self.bn_eps, name="stem_dw")(x, train)
    x = ConvBN(d[1], 1, act="none", bn_eps=self.bn_eps, name="stem_pw")(x, train)
    for si, ((k, s, t, n, _), out) in enumerate(zip(MNASNET_STACKS, d[2:])):
      for j in range(n):
        x = InvertedResidual(x.shape[-1] * t, out, s if j == 0 else 1, k, "relu", padding=self.padding,
                             bn_eps=self.bn_eps, name=f"stack_{si}_{j}")(x, train)
    x = ConvBN(1280, 1, bn_eps=self.bn_eps, name="last")(x, train)
    feats = jnp.mean(x, axis=(1, 2))
    if self.features:
      return feats
    return classify(self, feats, train, self.num_classes, self.dropout)


@register("mnasnet1_0")
def mnasnet1_0(num_classes: int = 1000, **kwargs) -> MnasNet:
  return MnasNet(num_classes=num_classes, **kwargs)


def mnasnet_torchvision_names(path, modules, model):
  """torchvision: layers.0-7 stem, layers.{8+s}.{j}.layers.{0..7} stacks, layers.14/15, classifier.1."""
  head, leaf = path[0], path[-1]
  fixed = {"stem": ("0", "1"), "stem_dw": ("3", "4"), "stem_pw": ("6", "7"), "last": ("14", "15")}
  if head in fixed:
    c, b = fixed[head]
    return (f"layers.{c}", "conv") if leaf == "conv" else (f"layers.{b}", "bn")
  if head == "classifier":
    return "classifier.1", "dense"
  _, s, j = head.split("_")
  c, b = {"expand": ("0", "1"), "depthwise": ("3", "4"), "project": ("6", "7")}[path[1]]
  prefix = f"layers.{8 + int(s)}.{j}.layers"
  return (f"{prefix}.{c}", "conv") if leaf == "conv" else (f"{prefix}.{b}", "bn")

