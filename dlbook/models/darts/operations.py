"""DARTS candidate operations (book ch. 3, Table 3.1 plus `none`), after quark0/darts
`cnn/operations.py`: an `OPS` dict from op name to constructor `(C, stride, affine) -> module`.

Every module is called as `op(x, train)` on NHWC arrays. Choices where the book is silent follow the
reference: sep_conv = 2 x [ReLU, depthwise conv, pointwise conv, BN]; dil_conv = 1 x [ReLU, dilated
depthwise conv, pointwise conv, BN]; skip_connect in a reduction cell is a factorized reduce; padding
is the reference's symmetric explicit padding; BatchNorm has PyTorch's momentum 0.1 (flax 0.9) and
eps 1e-5; conv and dense kernels use PyTorch's default init, U(+-1/sqrt(fan_in)).

**Kernel formulation (`conv_impl`).** "shift" writes the depthwise conv as k*k shifted
multiply-adds with a gather-form custom gradient (`depthwise_conv`) and the pointwise conv as one matmul.
"dense" uses that a depthwise conv followed by a pointwise conv is linear, so it equals ONE dense conv
whose kernel is K[y, x, i, o] = dw[y, x, i] * pw[i, o] (C times more multiply-adds, a GEMM-backed XLA
kernel). "grouped" is `feature_group_count`. Measured on this 2-core CPU (batch 16, C=16,
8-cell search supernet, forward + backward; `benchmarks/darts_step.py --conv_impls=shift,dense` times
whole search steps): shift 3.5 s, dense 55 s. Single ops cost about the same in both
formulations (dense ~1.3x shift), but inside the search cell's scanned mixed op the dense conv's
gradient is ~15x slower on XLA CPU; in the evaluation network (no scan) the two are within 10%.
Single-op forward timings favour "dense", which is the wrong guide for the supernet. The
parameters are the same in all three (a depthwise and a pointwise kernel, as in the reference), so
parameter counts, checkpoints and gradients do not depend on the choice; outputs agree to float
rounding.

**Per backend ("auto", the default of `conv_impl` and `pool_impl`).** The formulations above were chosen
on a 2-core CPU; on GPUs and TPUs they make very large XLA programs (minutes to compile, and one to two
orders of magnitude slower than the PyTorch reference on an H200; docs/darts.md "On accelerators").
"auto" follows `jax.default_backend()`: on "cpu" it is today's CPU choice (`shift` convs, `gather`
pooling gradients), elsewhere the native XLA kernels the accelerator libraries implement (`grouped`
depthwise convs through `feature_group_count`, `xla` pooling through `lax.reduce_window` with autodiff's
gradients). `pool_impl="gather"` is the custom gather-form gradient below; `pool_impl="xla"` is
`reduce_window`, whose max-pool gradient (`select_and_scatter`) also goes to the first maximum.
"""

import functools
from typing import Callable, Dict

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from dlbook.errors import require

PRIMITIVES = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)
CONV_IMPLS = ("auto", "dense", "grouped", "shift")
POOL_IMPLS = ("auto", "gather", "xla")
DEFAULT_CONV_IMPL = "auto"
DEFAULT_POOL_IMPL = "auto"
# What "auto" picks: on the CPU the formulations measured fastest there, elsewhere the native kernels.
CPU_KERNELS = {"conv_impl": "shift", "pool_impl": "gather"}
ACCELERATOR_KERNELS = {"conv_impl": "grouped", "pool_impl": "xla"}

# PyTorch's default conv/linear init (kaiming_uniform with a=sqrt(5)) is U(+-1/sqrt(fan_in)).
torch_default_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def check_conv_impl(conv_impl: str) -> None:
  require(conv_impl in CONV_IMPLS, f"unknown conv_impl {conv_impl!r}; valid: {', '.join(CONV_IMPLS)}")


def check_pool_impl(pool_impl: str) -> None:
  require(pool_impl in POOL_IMPLS, f"unknown pool_impl {pool_impl!r}; valid: {', '.join(POOL_IMPLS)}")


def on_accelerator(backend=None) -> bool:
  """Whether `backend` (default: `jax.default_backend()`) is a GPU/TPU rather than the CPU."""
  return (backend or jax.default_backend()) != "cpu"


def resolve(name: str, value: str, backend=None) -> str:
  """The concrete choice for a kernel setting (`conv_impl`, `pool_impl`): `value` unless it is "auto"."""
  if value != "auto":
    return value
  return (ACCELERATOR_KERNELS if on_accelerator(backend) else CPU_KERNELS)[name]


def conv2d(x, kernel, stride: int = 1, padding: int = 0, dilation: int = 1, groups: int = 1):
  """NHWC x HWIO convolution with PyTorch-style symmetric padding."""
  return lax.conv_general_dilated(x, kernel, (stride, stride), ((padding, padding), (padding, padding)),
                                  rhs_dilation=(dilation, dilation), dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                  feature_group_count=groups)


def output_size(size: int, kernel_size: int, stride: int, padding: int, dilation: int = 1) -> int:
  return (size + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1


def _pad_spatial(x, lo_h: int, hi_h: int, lo_w: int, hi_w: int, value=0.0, interior: int = 0):
  config = [(0, 0, 0), (lo_h, hi_h, interior), (lo_w, hi_w, interior)] + [(0, 0, 0)] * (x.ndim - 3)
  return lax.pad(x, jnp.asarray(value, x.dtype), config)


def _window(xp, i: int, j: int, stride: int, out_h: int, out_w: int):
  """xp[:, i + q*stride, j + r*stride] for q < out_h, r < out_w."""
  return xp[:, i:i + (out_h - 1) * stride + 1:stride, j:j + (out_w - 1) * stride + 1:stride]


def windows(x, kernel_size: int, stride: int, padding: int, dilation: int = 1, pad_value=0.0):
  """The k*k shifted (strided, dilated) views of `x` [N, H, W, ...] padded by `padding`, one per kernel
  tap in row-major order, each [N, H_out, W_out, ...]. XLA fuses a sum over them into one loop."""
  k, d = kernel_size, dilation
  out_h = output_size(x.shape[1], k, stride, padding, d)
  out_w = output_size(x.shape[2], k, stride, padding, d)
  xp = _pad_spatial(x, padding, padding, padding, padding, pad_value) if padding else x
  # Materialise the padded input: otherwise XLA fuses its producers into each of the k*k windows, and
  # across a cell's nodes those copies multiply (k*k per level), which made compile times explode
  # (minutes for a tiny network) and recomputed whole ops.
  xp = lax.optimization_barrier(xp)
  return [_window(xp, i * d, j * d, stride, out_h, out_w) for i in range(k) for j in range(k)]


def transposed_windows(dy, in_h: int, in_w: int, kernel_size: int, stride: int, padding: int, dilation: int = 1,
                       pad_value=0.0):
  """The gather form of the transpose of `windows`: views T_t of dy (upsampled by the stride, padded) such
  that sum_t f(windows(x)[t]) has input cotangent sum_t f'(T_{k*k-1-t}), each [N, in_h, in_w, ...].

  In 1-D, y[q] = sum_i w_i x[q s + i d - p] gives dx[r] = sum_i w_i A[r + (k-1-i) d] with A the
  stride-upsampled dy shifted by (k-1) d - p. A sum of gathers from one padded array runs as one fast
  fused loop; the scatter form autodiff produces (a sum of k*k pads) runs several times slower."""
  k, s, d = kernel_size, stride, dilation
  lo = (k - 1) * d - padding
  hi_h = in_h + (k - 1) * d - lo - ((dy.shape[1] - 1) * s + 1)
  hi_w = in_w + (k - 1) * d - lo - ((dy.shape[2] - 1) * s + 1)
  a = lax.optimization_barrier(_pad_spatial(dy, lo, hi_h, lo, hi_w, pad_value, interior=s - 1))
  return [_window(a, i * d, j * d, 1, in_h, in_w) for i in range(k) for j in range(k)]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def depthwise_conv(x, kernel, stride: int, padding: int, dilation: int):
  """Depthwise conv as k*k shifted multiply-adds; `kernel` is [k, k, 1, C]. Its gradient is written in
  gather form (`transposed_windows`), which is differentiable again (second-order DARTS)."""
  k = kernel.shape[0]
  taps = kernel.reshape(k * k, kernel.shape[-1])
  y = 0.0
  for t, window in enumerate(windows(x, k, stride, padding, dilation)):
    y = y + window * taps[t]
  return y


def _depthwise_conv_fwd(x, kernel, stride, padding, dilation):
  return depthwise_conv(x, kernel, stride, padding, dilation), (x, kernel)


def _depthwise_conv_bwd(stride, padding, dilation, residuals, dy):
  x, kernel = residuals
  # Rematerialised when differentiated again (second-order DARTS): otherwise the outer derivative keeps
  # all 2 k*k tap views of x and dy as residuals, and across a scanned cell of edges that stack needed
  # 77 GB at batch 64. Recomputing the views costs one extra backward pass per depthwise conv.
  return jax.checkpoint(functools.partial(_depthwise_conv_grads, stride, padding, dilation),
                        policy=jax.checkpoint_policies.nothing_saveable)(x, kernel, dy)


def _depthwise_conv_grads(stride, padding, dilation, x, kernel, dy):
  k = kernel.shape[0]
  taps = kernel.reshape(k * k, kernel.shape[-1])
  dx = 0.0
  for t, view in enumerate(transposed_windows(dy, x.shape[1], x.shape[2], k, stride, padding, dilation)):
    dx = dx + view * taps[k * k - 1 - t]
  # einsum (a dot_general) measured ~2x faster than jnp.sum(window * dy, (0, 1, 2)) on XLA CPU.
  d_taps = [jnp.einsum("nhwc,nhwc->c", window, dy) for window in windows(x, k, stride, padding, dilation)]
  return dx, jnp.stack(d_taps).reshape(kernel.shape)


depthwise_conv.defvjp(_depthwise_conv_fwd, _depthwise_conv_bwd)


def pointwise(x, kernel):
  """1x1 conv as one matmul over all pixels; `kernel` is [C, C_out]."""
  return (x.reshape(-1, x.shape[-1]) @ kernel).reshape(x.shape[:-1] + (kernel.shape[-1],))


def max_pool_3x3(x, stride: int, pool_impl: str = "gather"):
  """3x3 max pooling with padding 1 (padding never wins) on [N, H, W, ...]; the gradient goes to the
  first maximum in row-major order, as PyTorch's. "gather": custom gradient in gather form (XLA CPU's
  `reduce_window` max and its `select_and_scatter` gradient run about 5x slower there); "xla":
  `lax.reduce_window` and its autodiff gradient (native on accelerators); "auto": per backend."""
  pool_impl = resolve("pool_impl", pool_impl)
  if pool_impl == "xla":
    return _reduce_window(x, -jnp.inf, lax.max, stride)
  check_pool_impl(pool_impl)
  return _max_pool_3x3(x, stride, x.shape[1], x.shape[2])


def _reduce_window(x, init, op, stride: int):
  """A 3x3 window reduction with padding 1 over the spatial axes of [N, H, W, ...]."""
  rest = (1,) * (x.ndim - 3)
  return lax.reduce_window(x, init, op, (1, 3, 3) + rest, (1, stride, stride) + rest,
                           ((0, 0), (1, 1), (1, 1)) + ((0, 0),) * len(rest))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _max_pool_3x3(x, stride, in_h, in_w):
  return _max_pool_fwd(x, stride, in_h, in_w)[0]


def _max_pool_fwd(x, stride, in_h, in_w):
  taps = windows(x, 3, stride, 1, pad_value=-jnp.inf)
  best = taps[0]
  for t in taps[1:]:
    best = jnp.maximum(best, t)
  first = jnp.full(best.shape, len(taps) - 1, jnp.int8)
  for t in range(len(taps) - 2, -1, -1):
    first = jnp.where(taps[t] == best, jnp.int8(t), first)
  return best, first


def _max_pool_bwd(stride, in_h, in_w, first, dy):
  grads = transposed_windows(dy, in_h, in_w, 3, stride, 1)
  owners = transposed_windows(first, in_h, in_w, 3, stride, 1, pad_value=-1)
  dx = 0.0
  for t, (g, owner) in enumerate(zip(grads, owners)):
    dx = dx + jnp.where(owner == 8 - t, g, 0.0)
  return (dx,)


_max_pool_3x3.defvjp(_max_pool_fwd, _max_pool_bwd)


def avg_pool_3x3(x, stride: int, pool_impl: str = "gather"):
  """3x3 average pooling, padding 1, padding excluded from the count (`count_include_pad=False`): a sum
  over the window ("gather": the shifted depthwise conv with its gather-form gradient; "xla":
  `lax.reduce_window`; "auto": per backend) times 1 / (real pixels per window)."""
  pool_impl = resolve("pool_impl", pool_impl)
  check_pool_impl(pool_impl)
  ones = np.ones((x.shape[1] + 2, x.shape[2] + 2), np.float32)
  ones[0], ones[-1], ones[:, 0], ones[:, -1] = 0, 0, 0, 0
  out_h, out_w = output_size(x.shape[1], 3, stride, 1), output_size(x.shape[2], 3, stride, 1)
  count = sum(ones[i:i + (out_h - 1) * stride + 1:stride, j:j + (out_w - 1) * stride + 1:stride]
              for i in range(3) for j in range(3))  # real pixels per window, computed at trace time
  inv_count = jnp.asarray((1.0 / count).reshape((1, out_h, out_w) + (1,) * (x.ndim - 3)))
  if pool_impl == "xla":
    return _reduce_window(x, 0.0, lax.add, stride) * inv_count
  ones_kernel = jnp.ones((3, 3, 1, x.shape[-1]), x.dtype)
  return depthwise_conv(x, ones_kernel, stride, 1, 1) * inv_count


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def standardize(x, epsilon: float):
  """Batch standardisation over every axis but the last: (x_hat, mean, var) with x_hat = (x - mean) /
  sqrt(var + epsilon) and the biased variance mean((x - mean)^2), as BatchNorm in training mode.

  Its JVP is written in closed form, d x_hat = r (dx - mean(dx)) - x_hat r mean(x_hat dx) with
  r = 1 / sqrt(var + epsilon), so the only values autodiff keeps for the backward pass are x_hat and r
  (differentiating the arithmetic keeps the centred input, the variance, its rsqrt and their broadcasts:
  about six arrays per BatchNorm, each a stacked residual of a scanned mixed op). Being a JVP rule, it
  serves every order and mode of differentiation (the second-order DARTS hypergradient included)."""
  axes = tuple(range(x.ndim - 1))
  mean = jnp.mean(x, axes)
  centred = x - mean
  var = jnp.mean(jnp.square(centred), axes)
  return centred * lax.rsqrt(var + epsilon), mean, var


@standardize.defjvp
def _standardize_jvp(epsilon, primals, tangents):
  (x,), (dx,) = primals, tangents
  x_hat, mean, var = standardize(x, epsilon)
  axes = tuple(range(x.ndim - 1))
  r = lax.rsqrt(var + epsilon)
  d_mean = jnp.mean(dx, axes)
  projection = jnp.mean(x_hat * dx, axes)  # mean(x_hat dx) = r mean((x - mean) dx)
  d_x_hat = r * (dx - d_mean) - x_hat * (r * projection)
  return (x_hat, mean, var), (d_x_hat, d_mean, 2.0 * projection / r)


class BatchNorm(nn.Module):
  """BatchNorm over NHWC with PyTorch's defaults (momentum 0.1 == flax 0.9, eps 1e-5): batch statistics in
  training, running ones otherwise. The same variables as `flax.linen.BatchNorm` (params `scale`, `bias`
  when `affine`; batch_stats `mean`, `var` with flax's update rule, not updated at init) and the same outputs
  to float rounding (flax's default variance is E[x^2] - E[x]^2, this one the two-pass mean of squares);
  training mode goes through `standardize`, whose closed-form derivative keeps two residuals per layer.

  `edges` > 1: x holds `edges` independent layers' inputs stacked on channels (see `edge_stacked`); the
  variables are stacked on a leading axis of that size."""
  train: bool
  affine: bool
  momentum: float = 0.9
  epsilon: float = 1e-5
  edges: int = 1

  @nn.compact
  def __call__(self, x):
    shape = edge_stacked(self.edges, x.shape[-1])
    ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros(shape, jnp.float32))
    ra_var = self.variable("batch_stats", "var", lambda: jnp.ones(shape, jnp.float32))
    flat = lambda v: v.reshape(-1)  # noqa: E731 (edge-stacked variables line up with the stacked channels)
    if self.train:
      y, mean, var = standardize(x, self.epsilon)
      if not self.is_initializing():
        ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean.reshape(shape)
        ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var.reshape(shape)
    else:
      y = (x - flat(ra_mean.value)) * lax.rsqrt(flat(ra_var.value) + self.epsilon)
    if self.affine:
      y = y * flat(self.param("scale", nn.initializers.ones, shape)) + flat(
          self.param("bias", nn.initializers.zeros, shape))
    return y


def batch_norm(train: bool, affine: bool, name=None, edges: int = 1) -> BatchNorm:
  """BatchNorm with PyTorch's defaults (momentum 0.1 == flax 0.9, eps 1e-5); batch statistics in training."""
  return BatchNorm(train, affine, edges=edges, name=name)


def edge_stacked(edges: int, channels: int) -> tuple:
  """Shape of a per-channel variable when `edges` independent copies of a layer run as one layer on their
  inputs stacked on channels ([..., edges * C], edge-major): (C,) for one copy, else (edges, C), the
  layout `nn.scan`/`nn.vmap` give the same copies' variables."""
  require(channels % edges == 0, f"{channels} stacked channels do not split into {edges} edges")
  return (channels,) if edges == 1 else (edges, channels // edges)


def stacked_conv(x, kernel, edges: int, stride: int = 1, padding: int = 0, dilation: int = 1):
  """A bias-free conv of each of `edges` channel-stacked inputs with its own kernel ([edges, k, k, C, F] or,
  for one edge, [k, k, C, F]): one conv with `edges` feature groups (block-diagonal kernel)."""
  if edges == 1:
    return conv2d(x, kernel, stride, padding, dilation)
  e, k, _, c, f = kernel.shape
  grouped = jnp.moveaxis(kernel, 0, 3).reshape(k, k, c, e * f)  # output channels edge-major
  return conv2d(x, grouped, stride, padding, dilation, groups=e)


class DepthwisePointwise(nn.Module):
  """Depthwise k x k conv (stride, dilation) then a 1x1 conv to `features`; no nonlinearity between.

  Parameters `depthwise` [k, k, 1, C] and `pointwise` [1, 1, C, features], as the reference's two
  bias-free `nn.Conv2d`. `conv_impl` picks the formulation (module docstring). `edges` > 1: that many
  independent copies on channel-stacked inputs (`edge_stacked`), parameters with a leading edge axis; the
  depthwise conv is then simply wider and the pointwise conv has one feature group per edge."""
  features: int
  kernel_size: int
  stride: int = 1
  padding: int = 0
  dilation: int = 1
  conv_impl: str = DEFAULT_CONV_IMPL
  edges: int = 1

  @nn.compact
  def __call__(self, x):
    c, k, e = edge_stacked(self.edges, x.shape[-1])[-1], self.kernel_size, self.edges
    lead = (e,) if e > 1 else ()
    dw = self.param("depthwise", torch_default_init, lead + (k, k, 1, c))
    pw = self.param("pointwise", torch_default_init, lead + (1, 1, c, self.features))
    conv_impl = resolve("conv_impl", self.conv_impl)
    if conv_impl == "dense" and e == 1:  # edge-stacked copies use the shifted taps instead
      kernel = dw[:, :, 0, :, None] * pw[0, 0][None, None]  # [k, k, C, features]
      return conv2d(x, kernel, self.stride, self.padding, self.dilation)
    if e > 1:
      dw = jnp.moveaxis(dw, 0, 3).reshape(k, k, 1, e * c)  # one depthwise conv over the stacked channels
    if conv_impl == "grouped":
      y = conv2d(x, dw, self.stride, self.padding, self.dilation, groups=e * c)
    else:
      check_conv_impl(conv_impl)
      y = depthwise_conv(x, dw, self.stride, self.padding, self.dilation)
    return pointwise(y, pw[0, 0]) if e == 1 else stacked_conv(y, pw, e)


class Stem(nn.Module):
  """3x3 conv (no bias) -> affine BN: the CIFAR stem of both DARTS networks."""
  features: int

  @nn.compact
  def __call__(self, x, train: bool):
    x = nn.Conv(self.features, (3, 3), 1, [(1, 1), (1, 1)], use_bias=False, kernel_init=torch_default_init,
                name="conv")(x)
    return batch_norm(train, True, "bn")(x)


class ReLUConvBN(nn.Module):
  """ReLU -> conv (no bias) -> BN."""
  features: int
  kernel_size: int = 1
  stride: int = 1
  padding: int = 0
  affine: bool = True

  @nn.compact
  def __call__(self, x, train: bool):
    k = self.kernel_size
    x = nn.Conv(self.features, (k, k), self.stride, [(self.padding, self.padding)] * 2, use_bias=False,
                kernel_init=torch_default_init, name="conv")(nn.relu(x))
    return batch_norm(train, self.affine, "bn")(x)


class DilConv(nn.Module):
  """ReLU -> dilated depthwise conv -> pointwise conv -> BN."""
  features: int
  kernel_size: int
  stride: int
  padding: int
  dilation: int
  affine: bool = True
  conv_impl: str = DEFAULT_CONV_IMPL
  edges: int = 1

  @nn.compact
  def __call__(self, x, train: bool):
    x = DepthwisePointwise(self.features, self.kernel_size, self.stride, self.padding, self.dilation,
                           self.conv_impl, self.edges, name="conv")(nn.relu(x))
    return batch_norm(train, self.affine, "bn", self.edges)(x)


class SepConv(nn.Module):
  """Two stacked [ReLU -> depthwise conv -> pointwise conv -> BN]; only the first has the stride."""
  features: int
  kernel_size: int
  stride: int
  padding: int
  affine: bool = True
  conv_impl: str = DEFAULT_CONV_IMPL
  edges: int = 1

  @nn.compact
  def __call__(self, x, train: bool):
    c, k, p, e = x.shape[-1] // self.edges, self.kernel_size, self.padding, self.edges
    x = DepthwisePointwise(c, k, self.stride, p, 1, self.conv_impl, e, name="conv_0")(nn.relu(x))
    x = batch_norm(train, self.affine, "bn_0", e)(x)
    x = DepthwisePointwise(self.features, k, 1, p, 1, self.conv_impl, e, name="conv_1")(nn.relu(x))
    return batch_norm(train, self.affine, "bn_1", e)(x)


class Conv7x1_1x7(nn.Module):
  """ReLU -> 1x7 conv -> 7x1 conv -> BN (used by the reference's NASNet/AmoebaNet genotypes)."""
  features: int
  stride: int
  affine: bool = True

  @nn.compact
  def __call__(self, x, train: bool):
    x = nn.Conv(self.features, (1, 7), (1, self.stride), [(0, 0), (3, 3)], use_bias=False,
                kernel_init=torch_default_init, name="conv_1x7")(nn.relu(x))
    x = nn.Conv(self.features, (7, 1), (self.stride, 1), [(3, 3), (0, 0)], use_bias=False,
                kernel_init=torch_default_init, name="conv_7x1")(x)
    return batch_norm(train, self.affine, "bn")(x)


class FactorizedReduce(nn.Module):
  """ReLU -> two 1x1 stride-2 convs (the second offset by one pixel) concatenated -> BN."""
  features: int
  affine: bool = True
  edges: int = 1

  @nn.compact
  def __call__(self, x, train: bool):
    require(self.features % 2 == 0, f"FactorizedReduce needs an even channel count, got {self.features}")
    require(x.shape[1] % 2 == 0 and x.shape[2] % 2 == 0,
            f"a DARTS reduction needs even feature maps, got {x.shape[1]}x{x.shape[2]}; "
            f"choose an input size divisible by 4 (data.image_size)")
    x = nn.relu(x)
    if self.edges > 1:  # channel-stacked copies: grouped 1x1 convs, halves interleaved per edge
      e, c, half = self.edges, x.shape[-1] // self.edges, self.features // 2
      conv = lambda name, v: stacked_conv(v[:, ::2, ::2, :], StackedKernel(  # noqa: E731
          (e, 1, 1, c, half), name=name)(), e)
      y = jnp.concatenate([conv("conv_1", x).reshape(x.shape[:1] + (-1, e, half)),
                           conv("conv_2", x[:, 1:, 1:, :]).reshape(x.shape[:1] + (-1, e, half))], axis=-1)
      y = y.reshape(x.shape[:1] + (x.shape[1] // 2, x.shape[2] // 2, e * self.features))
      return batch_norm(train, self.affine, "bn", e)(y)
    conv = lambda name: nn.Conv(self.features // 2, (1, 1), 2, "VALID", use_bias=False,
                                kernel_init=torch_default_init, name=name)
    x = jnp.concatenate([conv("conv_1")(x), conv("conv_2")(x[:, 1:, 1:, :])], axis=-1)
    return batch_norm(train, self.affine, "bn")(x)


class StackedKernel(nn.Module):
  """The `kernel` parameter of edge-stacked copies of a bias-free `nn.Conv` ([edges, k, k, C, F])."""
  shape: tuple

  @nn.compact
  def __call__(self):
    return self.param("kernel", torch_default_init, self.shape)


class Pool(nn.Module):
  """3x3 max or average pooling (average excludes the padding, as `count_include_pad=False`), with an
  optional affine-free BN after it (the search network's `MixedOp` adds one)."""
  kind: str
  stride: int
  bn_after: bool = False
  pool_impl: str = DEFAULT_POOL_IMPL
  edges: int = 1

  @nn.compact
  def __call__(self, x, train: bool):
    pool = max_pool_3x3 if self.kind == "max" else avg_pool_3x3
    x = pool(x, self.stride, self.pool_impl)
    return batch_norm(train, False, "bn", self.edges)(x) if self.bn_after else x


class Identity(nn.Module):
  edges: int = 1

  @nn.compact
  def __call__(self, x, train: bool):
    return x


class Zero(nn.Module):
  """The `none` op: zeros with the output shape."""
  stride: int

  @nn.compact
  def __call__(self, x, train: bool):
    return jnp.zeros_like(x[:, ::self.stride, ::self.stride, :])


OpConstructor = Callable[..., nn.Module]

# name -> (C, stride, affine, conv_impl=..., pool_impl=..., name=...) -> module, as the reference's OPS.
OPS: Dict[str, OpConstructor] = {
    "none": lambda C, stride, affine, conv_impl=DEFAULT_CONV_IMPL, pool_impl=DEFAULT_POOL_IMPL, **kw: Zero(
        stride, **kw),
    "avg_pool_3x3": lambda C, stride, affine, conv_impl=DEFAULT_CONV_IMPL, pool_impl=DEFAULT_POOL_IMPL, **kw: Pool(
        "avg", stride, pool_impl=pool_impl, **kw),
    "max_pool_3x3": lambda C, stride, affine, conv_impl=DEFAULT_CONV_IMPL, pool_impl=DEFAULT_POOL_IMPL, **kw: Pool(
        "max", stride, pool_impl=pool_impl, **kw),
    "skip_connect": lambda C, stride, affine, conv_impl=DEFAULT_CONV_IMPL, pool_impl=DEFAULT_POOL_IMPL, **kw: (
        Identity(**kw) if stride == 1 else FactorizedReduce(C, affine, **kw)),
    "sep_conv_3x3": lambda C, stride, affine, conv_impl=DEFAULT_CONV_IMPL, pool_impl=DEFAULT_POOL_IMPL, **kw: SepConv(
        C, 3, stride, 1, affine, conv_impl, **kw),
    "sep_conv_5x5": lambda C, stride, affine, conv_impl=DEFAULT_CONV_IMPL, pool_impl=DEFAULT_POOL_IMPL, **kw: SepConv(
        C, 5, stride, 2, affine, conv_impl, **kw),
    "sep_conv_7x7": lambda C, stride, affine, conv_impl=DEFAULT_CONV_IMPL, pool_impl=DEFAULT_POOL_IMPL, **kw: SepConv(
        C, 7, stride, 3, affine, conv_impl, **kw),
    "dil_conv_3x3": lambda C, stride, affine, conv_impl=DEFAULT_CONV_IMPL, pool_impl=DEFAULT_POOL_IMPL, **kw: DilConv(
        C, 3, stride, 2, 2, affine, conv_impl, **kw),
    "dil_conv_5x5": lambda C, stride, affine, conv_impl=DEFAULT_CONV_IMPL, pool_impl=DEFAULT_POOL_IMPL, **kw: DilConv(
        C, 5, stride, 4, 2, affine, conv_impl, **kw),
    "conv_7x1_1x7": lambda C, stride, affine, conv_impl=DEFAULT_CONV_IMPL, pool_impl=DEFAULT_POOL_IMPL, **kw: (
        Conv7x1_1x7(C, stride, affine, **kw)),
}


def drop_path(key, x, drop_prob):
  """Zeroes whole examples with probability `drop_prob` and rescales the rest (reference `utils.drop_path`)."""
  keep = 1.0 - drop_prob
  mask = jax.random.bernoulli(key, keep, (x.shape[0],) + (1,) * (x.ndim - 1))
  return jnp.where(mask, x / keep, 0.0)
