"""DenseNet-121/-201 (Huang et al. 2017) and DenseNet-121 with squeeze-and-excitation (seed 004).

Used by the GA transfer-learning assignment (seed 004: DenseNet-121 + SE after each dense block,
reduction 16) and the pan-cancer ensemble (book Fig. 12.7: DenseNet-201).

Dense layer: BN -> ReLU -> 1x1 conv (4k) -> BN -> ReLU -> 3x3 conv (k), its output concatenated to its
input (k = growth rate 32). Transition: BN -> ReLU -> 1x1 conv (half the channels) -> 2x2 average pool.

The dense layers are numbered 1..L over the whole network (L = 58 for DenseNet-121: 6+12+24+16).
Seed 004's genes act on that numbering, and both are masks over ONE fixed-shape network:
- `include` (a call-time int or traced scalar, default all): layers after the first `include`
  contribute zeros, and the head reads the block that holds layer `include`, exactly as if the
  network had been cut there (stem, first `include` layers, the transitions between completed blocks,
  that block's SE). Its pooled features are zero-padded to the widest block, so the head has one shape.
  BatchNorm running statistics of excluded layers are left unchanged in training.
- `freeze_mask(params, n_frozen)`: True = trainable; the stem and dense layers 1..n_frozen (and a
  transition once its whole block is frozen) are frozen; SE layers and the head never are.
**Choice** (seed 004 is silent): a cut inside block b pools that block's raw concatenated output (after
its SE), as truncating torchvision's `features` after `denseblock{b}` would; the final BN + ReLU belongs
to block 4's output only.
"""

import itertools
from typing import Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util

from dlbook.errors import require
from dlbook.models.backbones.common import conv as conv2d
from dlbook.models.backbones.common import (check_input, check_padding, classify, conv_init, conv_pad,
                                            max_pool, stage_list)
from dlbook.models.registry import register

NEVER = 10 ** 6   # depth of leaves that are never frozen (SE, head)


class GatedBatchNorm(nn.BatchNorm):
  """`nn.BatchNorm` whose running-statistics update is skipped where `gate` is False."""

  @nn.compact
  def __call__(self, x, use_running_average: Optional[bool] = None, *, gate=None):
    updating = not nn.merge_param("use_running_average", self.use_running_average, use_running_average)
    if gate is None or not updating or self.is_initializing():
      return super().__call__(x, use_running_average)
    old_mean, old_var = self.get_variable("batch_stats", "mean"), self.get_variable("batch_stats", "var")
    y = super().__call__(x, use_running_average)
    self.put_variable("batch_stats", "mean", jnp.where(gate, self.get_variable("batch_stats", "mean"), old_mean))
    self.put_variable("batch_stats", "var", jnp.where(gate, self.get_variable("batch_stats", "var"), old_var))
    return y


class DenseLayer(nn.Module):
  growth: int
  bn_size: int = 4
  bn_eps: float = 1e-5
  padding: str = "torch"

  @nn.compact
  def __call__(self, x, train: bool = False, gate=None):
    bn = lambda name: GatedBatchNorm(use_running_average=not train, momentum=0.9, epsilon=self.bn_eps,  # noqa: E731
                                     name=name)
    h = nn.relu(bn("norm1")(x, gate=gate))
    h = conv2d(self.bn_size * self.growth, 1, use_bias=False, name="conv1")(h)
    h = nn.relu(bn("norm2")(h, gate=gate))
    return nn.Conv(self.growth, (3, 3), padding=conv_pad(3, self.padding), use_bias=False, kernel_init=conv_init,
                   name="conv2")(h)


class SE(nn.Module):
  """Squeeze-and-excitation with reduction r (Hu et al. 2018): sigmoid(W2 relu(W1 GAP(x))) * x."""
  reduction: int = 16

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    s = jnp.mean(x, axis=(1, 2))
    s = nn.relu(nn.Dense(c // self.reduction, kernel_init=nn.initializers.kaiming_normal(), name="fc1")(s))
    s = nn.sigmoid(nn.Dense(c, kernel_init=nn.initializers.kaiming_normal(), name="fc2")(s))
    return x * s[:, None, None, :]


class DenseNet(nn.Module):
  """DenseNet-BC (torchvision `densenet121/201`, Keras `DenseNet121/201`), optional SE after each block."""
  blocks: Sequence[int] = (6, 12, 24, 16)
  num_classes: int = 1000
  growth: int = 32
  init_features: int = 64
  in_channels: int = 3
  dropout: float = 0.0
  features: bool = False
  se_reduction: int = 0      # 0 = plain DenseNet; 16 = seed 004's SE blocks
  stem_stride: int = 2
  stem_pool: bool = True
  padding: str = "torch"
  bn_eps: float = 1e-5

  @property
  def num_dense_layers(self) -> int:
    return sum(self.blocks)

  @nn.compact
  def __call__(self, x, train: bool = False, include=None):
    check_input(x, self.in_channels, "densenet")
    check_padding(self.padding)
    blocks = stage_list(self.blocks)
    x = nn.Conv(self.init_features, (7, 7), (self.stem_stride,) * 2, padding=((3, 3), (3, 3)), use_bias=False,
                kernel_init=conv_init, name="stem_conv")(x)
    x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=self.bn_eps, name="stem_bn")(x))
    if self.stem_pool:
      x = max_pool(x, 3, 2, 1)
    pooled, widths, k = [], [], 0
    for b, n in enumerate(blocks):
      for _ in range(n):
        k += 1
        gate = None if include is None else jnp.asarray(k <= include)
        new = DenseLayer(self.growth, bn_eps=self.bn_eps, padding=self.padding, name=f"layer_{k}")(x, train, gate)
        if gate is not None:
          new = new * gate.astype(new.dtype)
        x = jnp.concatenate([x, new], axis=-1)
      if self.se_reduction:
        x = SE(self.se_reduction, name=f"se_{b + 1}")(x)
      widths.append(x.shape[-1])
      if b < len(blocks) - 1:
        if include is not None:
          pooled.append(jnp.mean(x, axis=(1, 2)))
        x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=self.bn_eps,
                                 name=f"transition_{b + 1}_norm")(x))
        x = conv2d(x.shape[-1] // 2, 1, use_bias=False, name=f"transition_{b + 1}_conv")(x)
        x = nn.avg_pool(x, (2, 2), (2, 2))
    x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=self.bn_eps, name="norm_final")(x))
    feats = jnp.mean(x, axis=(1, 2))
    # the head reads the widest block output (the last one in DenseNet-121/201), zero-padded
    pad = lambda f: jnp.pad(f, ((0, 0), (0, max(widths) - f.shape[-1])))  # noqa: E731
    feats = pad(feats)
    if include is not None:
      ends = jnp.cumsum(jnp.array(blocks))[:-1]
      cut_block = jnp.sum(jnp.asarray(include) > ends)   # the block holding layer `include`
      feats = jnp.stack([pad(p) for p in pooled] + [feats])[cut_block]
    if self.features:
      return feats
    return classify(self, feats, train, self.num_classes, self.dropout, kernel_init=nn.initializers.lecun_normal())


def layer_depths(params, blocks: Sequence[int] = (6, 12, 24, 16)):
  """Pytree like `params`: the dense-layer number each leaf freezes with (stem 1, layer_k k, a transition
  with its block's last layer, the final BN with the last layer; SE layers and the head never)."""
  ends = list(itertools.accumulate(blocks))

  def depth(path: Tuple[str, ...]) -> int:
    top = path[0]
    if top.startswith("stem"):
      return 1
    if top.startswith("layer_"):
      return int(top.split("_")[1])
    if top.startswith("transition_"):
      return ends[int(top.split("_")[1]) - 1]
    if top == "norm_final":
      return ends[-1]
    return NEVER

  flat = traverse_util.flatten_dict(params)
  return traverse_util.unflatten_dict({k: depth(k) for k in flat})


def freeze_mask(params, n_frozen, blocks: Sequence[int] = (6, 12, 24, 16)):
  """True = trainable. `n_frozen` may be a Python int (a static mask for `freezing.masked_optimizer`)
  or a traced scalar (multiply updates by it inside a vmapped GA step)."""
  if isinstance(n_frozen, int):
    require(0 <= n_frozen <= sum(blocks), f"n_frozen must be in 0..{sum(blocks)}, got {n_frozen}")
    return jax.tree.map(lambda d: bool(d > n_frozen), layer_depths(params, blocks))
  return jax.tree.map(lambda d: d > n_frozen, layer_depths(params, blocks))


def frozen_prefixes(n_frozen: int, blocks: Sequence[int] = (6, 12, 24, 16)) -> Tuple[Tuple[str, ...], ...]:
  """The module paths frozen with the first `n_frozen` dense layers (for `freezing.frozen_batchnorm`)."""
  require(0 <= n_frozen <= sum(blocks), f"n_frozen must be in 0..{sum(blocks)}, got {n_frozen}")
  if n_frozen == 0:
    return ()
  out = [("stem_conv",), ("stem_bn",)] + [(f"layer_{k}",) for k in range(1, n_frozen + 1)]
  ends = list(itertools.accumulate(blocks))
  out += [(f"transition_{b + 1}_{p}",) for b, e in enumerate(ends[:-1]) if e <= n_frozen for p in ("norm", "conv")]
  if n_frozen >= ends[-1]:
    out.append(("norm_final",))
  return tuple(out)


DENSENET_BLOCKS = {"densenet121": (6, 12, 24, 16), "densenet201": (6, 12, 48, 32)}


@register("densenet121")
def densenet121(num_classes: int = 1000, **kwargs) -> DenseNet:
  return DenseNet(blocks=DENSENET_BLOCKS["densenet121"], num_classes=num_classes, **kwargs)


@register("densenet201")
def densenet201(num_classes: int = 1000, **kwargs) -> DenseNet:
  return DenseNet(blocks=DENSENET_BLOCKS["densenet201"], num_classes=num_classes, **kwargs)


@register("densenet121_se")
def densenet121_se(num_classes: int = 1000, **kwargs) -> DenseNet:
  """Seed 004's network: DenseNet-121 with SE (reduction 16) after each of its four dense blocks."""
  kwargs.setdefault("se_reduction", 16)
  return DenseNet(blocks=DENSENET_BLOCKS["densenet121"], num_classes=num_classes, **kwargs)


@register("densenet_se")
def densenet_se(num_classes: int = 1000, **kwargs) -> DenseNet:
  """DenseNet with SE after each block and any `blocks`, `growth`, `init_features` (default: DenseNet-121-SE's);
  small ones stand in for DenseNet-121-SE in tests, with the same include/freeze masks."""
  kwargs.setdefault("se_reduction", 16)
  kwargs.setdefault("blocks", DENSENET_BLOCKS["densenet121"])
  return DenseNet(num_classes=num_classes, **kwargs)


def _block_of(k: int, blocks: Sequence[int]) -> Tuple[int, int]:
  """(block, index within block), both 1-based, of dense layer k."""
  start = 0
  for b, n in enumerate(blocks):
    if k <= start + n:
      return b + 1, k - start
    start += n
  raise ValueError(f"dense layer {k} beyond {sum(blocks)}")


def densenet_torchvision_names(path, modules, model):
  """torchvision: features.conv0/norm0, features.denseblock{b}.denselayer{j}.{norm1,conv1,norm2,conv2},
  features.transition{b}.{norm,conv}, features.norm5, classifier (SE layers have no torchvision source)."""
  top = path[0]
  fixed = {"stem_conv": ("features.conv0", "conv"), "stem_bn": ("features.norm0", "bn"),
           "norm_final": ("features.norm5", "bn"), "classifier": ("classifier", "dense")}
  if top in fixed:
    return fixed[top]
  if top.startswith("transition_"):
    _, b, part = top.split("_")
    return f"features.transition{b}.{part}", "bn" if part == "norm" else "conv"
  if top.startswith("layer_"):
    b, j = _block_of(int(top.split("_")[1]), model.blocks)
    return f"features.denseblock{b}.denselayer{j}.{path[1]}", "bn" if path[1].startswith("norm") else "conv"
  return None


def densenet_keras_names(path, modules, model):
  """Keras: conv1_conv/conv1_bn, conv{b+1}_block{j}_{0_bn,1_conv,1_bn,2_conv}, pool{b+1}_{bn,conv}, bn,
  predictions."""
  top = path[0]
  fixed = {"stem_conv": ("conv1_conv", "conv"), "stem_bn": ("conv1_bn", "bn"), "norm_final": ("bn", "bn"),
           "classifier": ("predictions", "dense")}
  if top in fixed:
    return fixed[top]
  if top.startswith("transition_"):
    _, b, part = top.split("_")
    return (f"pool{int(b) + 1}_bn", "bn") if part == "norm" else (f"pool{int(b) + 1}_conv", "conv")
  if top.startswith("layer_"):
    b, j = _block_of(int(top.split("_")[1]), model.blocks)
    part = {"norm1": ("0_bn", "bn"), "conv1": ("1_conv", "conv"), "norm2": ("1_bn", "bn"),
            "conv2": ("2_conv", "conv")}[path[1]]
    return f"conv{b + 1}_block{j}_{part[0]}", part[1]
  return None
