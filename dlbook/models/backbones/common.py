"""Building blocks shared by the ImageNet backbones (book ch. 10 §10.7 convolution types).

Conventions every backbone follows:
- NHWC inputs; `__call__(x, train=False)` returns logits `(N, num_classes)`, or the pooled
  features `(N, C)` when the model is built with `features=True` (no dropout, no head).
- `padding="torch"` pads every convolution symmetrically by (k-1)//2 as torchvision does;
  `padding="keras"` uses TensorFlow 'same' padding, which puts the extra row and column of a
  stride-2 convolution on the bottom/right. The two give different outputs for stride-2 layers,
  so a converted checkpoint must run with the padding of the framework that trained it.
- `bn_eps` is part of the architecture's definition in each framework (torchvision 1e-5,
  MobileNetV3 and EfficientNet 1e-3, Keras 1e-3 or 1.001e-5): converters set it.
- `stem_stride` (and `stem_pool` where the stem has a max-pool) make the small-input variants for
  28-64 px images: stride 1 and no stem pooling keep 4x (or 2x) more resolution.
"""

import math
from typing import Any, Callable, Optional, Sequence, Tuple

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from dlbook.errors import require
from dlbook.models.kernels.depthwise import depthwise_conv, same_pads

PADDINGS = ("torch", "keras")

# torchvision's initialisers: Kaiming-normal (fan-out) convolutions, zero biases; linear heads
# are per family (normal(0, 0.01) or uniform), so the default Dense init is kept where not stated.
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
dense_init = nn.initializers.normal(0.01)


def make_divisible(v: float, divisor: int = 8, min_value: Optional[int] = None) -> int:
  """Rounds a channel count to a multiple of `divisor`, never more than 10% down (MobileNet)."""
  min_value = divisor if min_value is None else min_value
  new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
  if new_v < 0.9 * v:
    new_v += divisor
  return new_v


def check_padding(padding: str) -> None:
  require(padding in PADDINGS, f"unknown padding {padding!r}; valid: {', '.join(PADDINGS)}")


def conv_pad(kernel, padding: str, dilation: int = 1):
  """Padding argument of nn.Conv: symmetric (k-1)//2 (torch) or TF 'SAME' (keras)."""
  if padding == "keras":
    return "SAME"
  kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
  ph, pw = dilation * (kh - 1) // 2, dilation * (kw - 1) // 2
  return ((ph, ph), (pw, pw))


def hard_sigmoid(x):
  return jax.nn.relu6(x + 3.0) / 6.0


def hard_swish(x):
  return x * hard_sigmoid(x)


ACTIVATIONS = {"relu": nn.relu, "relu6": jax.nn.relu6, "hard_swish": hard_swish, "silu": nn.silu,
               "sigmoid": nn.sigmoid, "hard_sigmoid": hard_sigmoid, "none": lambda x: x}


def batch_norm(train: bool, eps: float, momentum: float = 0.9, name: Optional[str] = None,
               use_scale: bool = True) -> nn.BatchNorm:
  """`nn.BatchNorm` with torchvision's momentum (0.1 new / 0.9 kept) and an explicit epsilon."""
  return nn.BatchNorm(use_running_average=not train, momentum=momentum, epsilon=eps, use_scale=use_scale,
                      name=name)


DEPTHWISE = ("conv", "taps", "auto")


def resolve_depthwise(impl: str) -> str:
  """The depthwise lowering `impl` names: "auto" is "taps" on the CPU (DepthwiseConv's slices with their
  native gradient, 35-140x faster to differentiate than XLA:CPU's grouped conv; docs/backbones.md) and
  "conv" (XLA's native grouped convolution) on GPUs and TPUs. Resolved when the model is traced."""
  require(impl in DEPTHWISE, f"unknown depthwise {impl!r}; valid: {', '.join(DEPTHWISE)}")
  return impl if impl != "auto" else ("taps" if jax.default_backend() == "cpu" else "conv")


class DepthwiseConv(nn.Module):
  """Depthwise kxk convolution (one filter per channel), with `nn.Conv(C, k, feature_group_count=C)`'s
  parameters ('kernel' (k, k, 1, C), 'bias') and values, lowered as `impl` says (`resolve_depthwise`):
  "taps" is a sum of k*k shifted, strided slices times per-channel weights whose backward pass is the
  native CPU kernel of `dlbook.models.kernels.depthwise` where available; "conv" is XLA's grouped
  convolution, native on GPUs and TPUs but slow to differentiate on XLA:CPU."""
  kernel: Tuple[int, int]
  stride: int = 1
  padding: Any = "SAME"     # "SAME", "VALID" or ((top, bottom), (left, right))
  use_bias: bool = False
  kernel_init: Callable = conv_init
  impl: str = "auto"

  @nn.compact
  def __call__(self, x):
    kh, kw = self.kernel
    c = x.shape[-1]
    w = self.param("kernel", self.kernel_init, (kh, kw, 1, c))
    b = self.param("bias", nn.initializers.zeros, (c,)) if self.use_bias else None
    x, w, b = nn.dtypes.promote_dtype(x, w, b)
    if resolve_depthwise(self.impl) == "taps":
      if self.padding == "SAME":
        pads = same_pads(x.shape[1:3], (kh, kw), self.stride)
      else:
        pads = ((0, 0), (0, 0)) if self.padding == "VALID" else self.padding
      y = depthwise_conv(x, w[:, :, 0, :], self.stride, pads)
    else:
      pads = self.padding if isinstance(self.padding, str) else [tuple(p) for p in self.padding]
      y = jax.lax.conv_general_dilated(x, w, (self.stride, self.stride), pads,
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=c)
    return y + b if b is not None else y


class PointwiseConv(nn.Module):
  """1x1 convolution (optionally strided, no padding) as one (pixels, C_in) @ (C_in, C_out) matmul.
  Same parameters ('kernel' (1, 1, C_in, C_out), 'bias') and values as `nn.Conv` with a 1x1 kernel; XLA:CPU
  differentiates the convolution form by transposing both activations and running a convolution whose
  window is the whole image (YNNPACK, about 10 GFLOP/s), the matmul form by two plain matmuls: the
  gradient of a 112-px, 16->96-channel layer at batch 32 took 148 ms as a conv, 23 ms as a matmul
  (`benchmarks/conv_gradients.py`)."""
  features: int
  stride: int = 1
  use_bias: bool = False
  kernel_init: Callable = conv_init

  @nn.compact
  def __call__(self, x):
    w = self.param("kernel", self.kernel_init, (1, 1, x.shape[-1], self.features))
    b = self.param("bias", nn.initializers.zeros, (self.features,)) if self.use_bias else None
    x, w, b = nn.dtypes.promote_dtype(x, w, b)
    if self.stride > 1:
      x = x[:, ::self.stride, ::self.stride, :]
    y = (x.reshape(-1, x.shape[-1]) @ w[0, 0]).reshape(*x.shape[:-1], self.features)
    return y + b if b is not None else y


def is_pointwise(kernel: Tuple[int, int], groups: int, pad: Any) -> bool:
  """Whether a conv with these settings is a plain (ungrouped, unpadded) 1x1 convolution."""
  unpadded = pad in ("SAME", "VALID") or (not isinstance(pad, str) and all(tuple(p) == (0, 0) for p in pad))
  return tuple(kernel) == (1, 1) and groups == 1 and unpadded


def conv(features: int, kernel: Any, stride: Any = 1, padding: Any = "SAME", use_bias: bool = True,
         kernel_init: Callable = conv_init, name: Optional[str] = None) -> nn.Module:
  """`nn.Conv(features, kernel, stride, padding, ...)`, or the same parameters and values as a
  `PointwiseConv` matmul when it is an unpadded 1x1 convolution."""
  k = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
  s = stride if isinstance(stride, int) else stride[0]
  if is_pointwise(k, 1, padding) and (isinstance(stride, int) or len(set(stride)) == 1):
    return PointwiseConv(features, s, use_bias, kernel_init, name=name)
  return nn.Conv(features, k, (s, s) if isinstance(stride, int) else tuple(stride), padding=padding,
                 use_bias=use_bias, kernel_init=kernel_init, name=name)


class ConvBN(nn.Module):
  """Conv (no bias unless asked) -> BatchNorm -> activation: torchvision's Conv2dNormActivation."""
  features: int
  kernel: Any = 3
  stride: int = 1
  groups: int = 1
  act: str = "relu"
  padding: Any = "torch"   # "torch", "keras", "VALID" or explicit pairs
  bn_eps: float = 1e-5
  use_bias: bool = False
  bn_scale: bool = True
  depthwise: str = "auto"     # how a depthwise conv (groups=-1) is lowered: "conv", "taps" or "auto"

  @nn.compact
  def __call__(self, x, train: bool = False):
    k = (self.kernel, self.kernel) if isinstance(self.kernel, int) else tuple(self.kernel)
    pad = conv_pad(k, self.padding) if self.padding in PADDINGS else self.padding
    groups = x.shape[-1] if self.groups == -1 else self.groups   # -1: depthwise
    if self.groups == -1 and self.features == x.shape[-1]:
      x = DepthwiseConv(k, self.stride, pad, self.use_bias, impl=self.depthwise, name="conv")(x)
    elif is_pointwise(k, groups, pad):
      x = PointwiseConv(self.features, self.stride, self.use_bias, name="conv")(x)
    else:
      x = nn.Conv(self.features, k, (self.stride, self.stride), padding=pad, feature_group_count=groups,
                  use_bias=self.use_bias, kernel_init=conv_init, name="conv")(x)
    x = batch_norm(train, self.bn_eps, name="bn", use_scale=self.bn_scale)(x)
    return ACTIVATIONS[self.act](x)


class SqueezeExcite(nn.Module):
  """Squeeze-and-excitation (Hu et al. 2018): GAP -> fc1 -> act -> fc2 -> gate -> rescale."""
  squeeze: int
  act: str = "relu"
  gate: str = "sigmoid"

  @nn.compact
  def __call__(self, x):
    s = jnp.mean(x, axis=(1, 2))
    s = ACTIVATIONS[self.act](nn.Dense(self.squeeze, name="fc1")(s))
    s = ACTIVATIONS[self.gate](nn.Dense(x.shape[-1], name="fc2")(s))
    return x * s[:, None, None, :]


def drop_path(module: nn.Module, x, rate: float, train: bool):
  """Stochastic depth ('row' mode): zero a residual branch per sample with probability `rate`."""
  if not train or rate == 0.0:
    return x
  keep = jax.random.bernoulli(module.make_rng("dropout"), 1.0 - rate, (x.shape[0],) + (1,) * (x.ndim - 1))
  return jnp.where(keep, x / (1.0 - rate), 0.0)


def max_pool(x, k: int, s: int, pad: int = 0, ceil_mode: bool = False):
  """torch.nn.MaxPool2d: -inf padding on both sides, optional ceil mode (extra right/bottom)."""
  pads = []
  for n in x.shape[1:3]:
    extra = 0
    if ceil_mode:
      out = math.ceil((n + 2 * pad - k) / s) + 1
      if (out - 1) * s >= n + pad:   # the last window must start inside the input (torch's rule)
        out -= 1
      extra = max(0, (out - 1) * s + k - (n + 2 * pad))
    pads.append((pad, pad + extra))
  return nn.max_pool(x, (k, k), (s, s), padding=pads)


def adaptive_avg_pool(x, out: Tuple[int, int]):
  """torch.nn.AdaptiveAvgPool2d: window i covers [floor(i n / o), ceil((i + 1) n / o))."""
  h, w = x.shape[1:3]
  if (h, w) == tuple(out):
    return x
  rows = []
  for i in range(out[0]):
    r0, r1 = (i * h) // out[0], -((-(i + 1) * h) // out[0])
    cols = []
    for j in range(out[1]):
      c0, c1 = (j * w) // out[1], -((-(j + 1) * w) // out[1])
      cols.append(jnp.mean(x[:, r0:r1, c0:c1, :], axis=(1, 2)))
    rows.append(jnp.stack(cols, axis=1))
  return jnp.stack(rows, axis=1)


def classify(module: nn.Module, feats, train: bool, num_classes: int, dropout: float, name: str = "classifier",
             kernel_init=dense_init):
  """The usual head after global pooling: dropout -> linear."""
  chex.assert_rank(feats, 2)
  if dropout > 0:
    feats = nn.Dropout(dropout, deterministic=not train)(feats)
  logits = nn.Dense(num_classes, kernel_init=kernel_init, name=name)(feats)
  chex.assert_shape(logits, (feats.shape[0], num_classes))
  return logits


def check_input(x, in_channels: int, name: str) -> None:
  chex.assert_rank(x, 4)
  require(x.shape[-1] == in_channels,
          f"model {name!r} was built for {in_channels} input channel(s), got an input of shape {x.shape}")


def check_width(width: float, name: str) -> None:
  require(width > 0, f"model {name!r}: width multiplier must be positive, got {width}")


def stage_list(v: Sequence[int]) -> Tuple[int, ...]:
  return tuple(int(a) for a in v)


Activation = Callable[[Any], Any]
