"""Convolution, pooling and activation kernels shared by the evolutionary NAS supernets (book ch. 2).

Every individual of a population is a set of masks over max-size weights, so a population trains as
one `jax.vmap`; these kernels keep that vmapped program fast on CPU and equal to the plain ops.

Conv formulations (`CONV_IMPLS`; measured on this 2-core CPU with benchmarks/ga_population.py, figures
in docs/nas_evolution.md):
- ``taps``: a sum over the k*k taps of (shifted input) @ kernel[tap]; under vmap each tap is a batched
  matmul and no k*k-times larger patch tensor is materialised.
- ``patches``: image patches + one einsum (im2col). Vmapping the whole population at once makes the
  patch tensor fall out of cache, but one or two individuals at a time (`fitness.vmap_microbatch`) it
  is the fastest path both vmapped and looped, so the cpu presets use it.
- ``per_individual``: `lax.conv` with a custom batching rule, so each individual's conv (forward and
  both gradients) stays an ordinary XLA conv under vmap instead of a grouped conv.
- ``xla``: plain `lax.conv`; vmap turns it into a grouped conv (slow on XLA CPU, native on GPU).
- ``auto``: ``patches`` on the CPU (the cpu presets' measured choice), ``xla`` on GPUs/TPUs (the
  population's convs become one grouped native conv there); resolved when the model is traced.
"""

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
from jax import custom_batching

from dlbook.models.chain_cnn import ACTIVATIONS

CONV_IMPLS = ("taps", "patches", "per_individual", "xla", "auto")


def resolve_conv_impl(impl: str, backend=None) -> str:
  """The concrete formulation of `impl`: itself unless "auto" (patches on the CPU, xla elsewhere)."""
  if impl != "auto":
    return impl
  return "patches" if (backend or jax.default_backend()) == "cpu" else "xla"


def _same_padded(x, kh: int, kw: int, stride: int):
  """NHWC `x` zero-padded as XLA's 'SAME' pads it, and the output height and width."""
  _, h, w, _ = x.shape
  out_h, out_w = -(-h // stride), -(-w // stride)
  pad_h = max((out_h - 1) * stride + kh - h, 0)
  pad_w = max((out_w - 1) * stride + kw - w, 0)
  x = jnp.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
  return x, out_h, out_w


def _tap(x, i: int, j: int, out_h: int, out_w: int, stride: int):
  """The input pixels that kernel tap (i, j) sees, for every output pixel."""
  return x[:, i:i + (out_h - 1) * stride + 1:stride, j:j + (out_w - 1) * stride + 1:stride, :]


def image_patches(x, k: int, stride: int = 1):
  """[N, H', W', k*k*C] 'SAME' patches of NHWC `x`, ordered (kh, kw, c) like an HWIO kernel.

  Built from k*k shifted slices: `lax.conv_general_dilated_patches` is a convolution with a
  one-hot kernel, (k*k*C)^2 multiply-adds per pixel, which is far slower on CPU.
  """
  n, _, _, c = x.shape
  x, out_h, out_w = _same_padded(x, k, k, stride)
  taps = [_tap(x, i, j, out_h, out_w, stride) for i in range(k) for j in range(k)]
  return jnp.stack(taps, axis=3).reshape(n, out_h, out_w, k * k * c)


def _merge_population(fn):
  """`fn` (per-image, any leading batch size) with a batching rule that folds the vmapped
  (population) axis into the batch axis: [P, N, ...] -> fn on [P·N, ...] -> [P, N, ...]. The result
  is the same; im2col's k*k slices, stack and pad then run on rank-4 arrays as in the per-individual
  loop (a profile of the vmapped path found them the ops where it lost most; docs/nas_evolution.md)."""
  wrapped = custom_batching.custom_vmap(fn)

  @wrapped.def_vmap
  def rule(axis_size, in_batched, x):
    del in_batched
    out = wrapped(x.reshape((axis_size * x.shape[1],) + x.shape[2:]))
    return out.reshape((axis_size, x.shape[1]) + out.shape[1:]), True

  return wrapped


@functools.lru_cache(maxsize=None)
def population_patches(k: int, stride: int):
  """`image_patches(x, k, stride)` that stays rank 4 under `jax.vmap` (forward and backward)."""
  forward = _merge_population(lambda x: image_patches(x, k, stride))

  def backward_fn(g, x_zero):
    return jax.vjp(lambda x: image_patches(x, k, stride), x_zero)[1](g)[0]

  backward = custom_batching.custom_vmap(backward_fn)

  @backward.def_vmap
  def backward_rule(axis_size, in_batched, g, x_zero):
    merge = lambda a, b: (a.reshape((axis_size * a.shape[1],) + a.shape[2:]) if b
                          else jnp.broadcast_to(a, (axis_size,) + a.shape).reshape((-1,) + a.shape[1:]))
    out = backward(merge(g, in_batched[0]), merge(x_zero, in_batched[1]))
    return out.reshape((axis_size, -1) + out.shape[1:]), True

  @jax.custom_vjp
  def patches(x):
    return forward(x)

  def fwd(x):
    return forward(x), jnp.zeros_like(x)

  def bwd(x_zero, g):
    return (backward(g, x_zero),)

  patches.defvjp(fwd, bwd)
  return patches


def _xla_conv(x, kernel, stride: int):
  return jax.lax.conv_general_dilated(x, kernel, (stride, stride), "SAME",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _per_individual(fn):
  """`fn` with a batching rule that runs it once per batch member (an unrolled loop of unbatched
  calls) instead of letting vmap turn it into one batched primitive."""
  wrapped = custom_batching.custom_vmap(fn)

  @wrapped.def_vmap
  def rule(axis_size, in_batched, *args):
    pick = lambda i: [a[i] if b else a for a, b in zip(args, in_batched)]
    return jnp.stack([wrapped(*pick(i)) for i in range(axis_size)]), True

  return wrapped


@functools.lru_cache(maxsize=None)
def per_individual_conv(stride: int):
  """'SAME' NHWC conv whose forward and backward stay plain XLA convolutions under `jax.vmap`.

  Vmapping `lax.conv` over per-individual kernels makes a grouped convolution (one group per
  individual), which XLA CPU runs ~6-8x slower than the same convs one by one
  (benchmarks/ga_population.py). Here the forward conv and both backward convs (input and kernel
  gradients) carry a custom batching rule that emits one ordinary conv per individual; all other
  ops of the network stay vectorised. Outside vmap it is exactly `lax.conv_general_dilated`.
  """
  forward = _per_individual(lambda x, w: _xla_conv(x, w, stride))
  input_grad = _per_individual(lambda g, w, x_zero: jax.vjp(lambda x: _xla_conv(x, w, stride), x_zero)[1](g)[0])
  kernel_grad = _per_individual(lambda x, g, w_zero: jax.vjp(lambda w: _xla_conv(x, w, stride), w_zero)[1](g)[0])

  @jax.custom_vjp
  def conv(x, w):
    return forward(x, w)

  def fwd(x, w):
    return forward(x, w), (x, w)

  def bwd(res, g):
    x, w = res
    return input_grad(g, w, jnp.zeros_like(x)), kernel_grad(x, g, jnp.zeros_like(w))

  conv.defvjp(fwd, bwd)
  return conv


def shifted_matmul_conv(x, kernel, stride: int = 1):
  """'SAME' conv as a sum over the k*k kernel taps of (shifted input) @ kernel[tap]: no k*k-times
  larger patch tensor is materialised; under vmap every tap is a batched matmul."""
  kh, kw = kernel.shape[:2]
  x, out_h, out_w = _same_padded(x, kh, kw, stride)
  out = 0.0
  for i in range(kh):
    for j in range(kw):
      out = out + jnp.einsum("nhwc,cd->nhwd", _tap(x, i, j, out_h, out_w, stride), kernel[i, j])
  return out


def conv2d(x, kernel, impl: str = "taps", stride: int = 1):
  """'SAME' 2-D convolution of NHWC `x` with an HWIO `kernel` in one of `CONV_IMPLS` (module docstring)."""
  kh, kw, cin, cout = kernel.shape
  impl = resolve_conv_impl(impl)
  if impl == "per_individual":
    return per_individual_conv(int(stride))(x, kernel)
  if impl == "xla":
    return _xla_conv(x, kernel, stride)
  if impl == "taps":
    return shifted_matmul_conv(x, kernel, stride)
  return jnp.einsum("nhwk,kc->nhwc", population_patches(kh, int(stride))(x), kernel.reshape(kh * kw * cin, cout))


def max_pool_2x2(x):
  """2x2 max pooling with stride 2 ('VALID': an odd last row/column is dropped, as `nn.max_pool`) on
  NHWC `x`, as a reshape and a max over the window axes, with the gradient going to the first maximum
  of each window in row-major order (as `nn.max_pool`'s) through a custom, elementwise backward.

  Under vmap, `nn.max_pool`'s gradient leaves XLA's select-and-scatter path for a variadic
  reduce-window that materialises one int32 iota per dimension of the whole population's activations
  (measured: ~40% of a vmapped training step of the cpu-preset chain supernet); the windows do not
  overlap, so here forward and backward are plain elementwise work."""
  n, h, w, c = x.shape
  return _max_pool_2x2(x[:, :h - h % 2, :w - w % 2])


def _window_taps(x):
  n, h, w, c = x.shape
  v = x.reshape(n, h // 2, 2, w // 2, 2, c)
  return [v[:, :, i, :, j] for i in range(2) for j in range(2)]


def _window_max(taps):
  return jnp.maximum(jnp.maximum(taps[0], taps[1]), jnp.maximum(taps[2], taps[3]))


@jax.custom_vjp
def _max_pool_2x2(x):
  return _window_max(_window_taps(x))


def _max_pool_2x2_fwd(x):
  return _max_pool_2x2(x), x


def _max_pool_2x2_bwd(x, g):
  taps = _window_taps(x)
  best = _window_max(taps)
  owner = jnp.full(best.shape, 3, jnp.int8)
  for t in (2, 1, 0):
    owner = jnp.where(taps[t] == best, jnp.int8(t), owner)
  grads = jnp.stack([jnp.where(owner == t, g, 0.0) for t in range(4)], axis=-2)  # [n, h/2, w/2, 4, c]
  n, h2, w2, _, c = grads.shape
  grads = grads.reshape(n, h2, w2, 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
  return (grads.reshape(n, 2 * h2, 2 * w2, c),)


_max_pool_2x2.defvjp(_max_pool_2x2_fwd, _max_pool_2x2_bwd)


def centred_kernel_mask(max_kernel: int, k) -> jax.Array:
  """[max_kernel, max_kernel] mask of the centred k x k window (k odd; traced k allowed)."""
  offset = jnp.abs(jnp.arange(max_kernel) - max_kernel // 2)
  inside = offset <= (k // 2)
  return (inside[:, None] & inside[None, :]).astype(jnp.float32)


FUSED_ACTIVATIONS = ("relu", "elu", "tanh", "sigmoid")


def fused_activation(index, x, names: Sequence[str]):
  """`names[index]` (all in FUSED_ACTIVATIONS) from ONE exponential per element, e = exp(-k|x|):
  elu(x<0) = e - 1 (k=1), sigmoid = 1/(1+e) or e/(1+e) by sign (k=1), tanh = +-(1-e)/(1+e) (k=2).

  Under vmap a per-individual activation index turns `lax.switch` into a select over every branch, so
  elu, tanh and sigmoid would each be evaluated (3 transcendentals per element, forward and backward)
  for every individual; this form costs one. Equal to the jax.nn functions to float rounding, with
  the same derivatives (including at 0)."""
  kind = jnp.asarray([FUSED_ACTIVATIONS.index(n) for n in names], jnp.int32)[index]
  positive = x >= 0
  magnitude = jnp.where(positive, x, -x)  # |x| with derivative +1 at 0, as the positive branch
  e = jnp.exp(-jnp.where(kind == 2, 2.0, 1.0) * magnitude)
  relu = jnp.where(x > 0, x, 0.0)  # derivative 0 at 0, as jax.nn.relu
  elu = jnp.where(positive, x, e - 1.0)
  tanh_abs = (1.0 - e) / (1.0 + e)
  tanh = jnp.where(positive, tanh_abs, -tanh_abs)
  sigmoid = jnp.where(positive, 1.0, e) / (1.0 + e)
  return jax.lax.select_n(jnp.broadcast_to(kind, x.shape), relu, elu, tanh, sigmoid)


def select_activation(index, x, names: Sequence[str]):
  """The activation `names[index]` applied to x (index may be traced): `fused_activation` when every
  name is in FUSED_ACTIVATIONS, else `lax.switch`."""
  if all(n in FUSED_ACTIVATIONS for n in names):
    return fused_activation(index, x, names)
  return jax.lax.switch(index, [ACTIVATIONS[n] for n in names], x)
