"""Depthwise kxk convolution (NHWC, one filter per channel) with a fast CPU backward pass.

The forward pass is a sum of k*k shifted, strided slices times per-channel weights, which XLA fuses with
its neighbours. Its automatic derivative is k*k separate reductions over the batch and both spatial
axes for the kernel gradient plus k*k padded adds for the input gradient; on XLA:CPU these ran at a few
GFLOP/s and were a third of a MobileNetV2 training step. `depthwise_conv` therefore has a custom VJP: on
the CPU, for float32, both gradients come from one pass of the C++ kernel `depthwise.cc` (`native`),
deterministic whatever the thread count; on GPUs and TPUs, for other dtypes, or when the native kernel
is unavailable, from JAX's differentiation of the same slices (`depthwise_conv_reference`).
`benchmarks/conv_gradients.py` times them; tests/test_kernels.py pins them equal.

The native backward is not itself differentiable: second derivatives through `depthwise_conv` on the
CPU raise; use `depthwise_conv_reference` for those.
"""

import functools
from typing import Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from dlbook.models.kernels import native

Pads = Tuple[Tuple[int, int], Tuple[int, int]]
MAX_NATIVE_TAPS = 64   # the C++ kernel's limit on kh * kw (larger kernels use JAX's derivative)


def same_pads(hw: Sequence[int], kernel: Sequence[int], stride: int) -> Pads:
  """XLA's 'SAME' padding (the extra pixel, if any, after) for spatial shape `hw`."""
  pads = []
  for n, k in zip(hw, kernel):
    total = max((-(-n // stride) - 1) * stride + k - n, 0)
    pads.append((total // 2, total - total // 2))
  return tuple(pads)


def depthwise_conv_reference(x, w, stride: int, pads: Pads):
  """x (N, H, W, C), w (KH, KW, C) -> (N, HO, WO, C): the shifted-slice form, differentiated by JAX."""
  kh, kw, c = w.shape
  xp = jnp.pad(x, ((0, 0), tuple(pads[0]), tuple(pads[1]), (0, 0)))
  ho = (xp.shape[1] - kh) // stride + 1
  wo = (xp.shape[2] - kw) // stride + 1
  out = 0.0
  for i in range(kh):
    for j in range(kw):
      tap = jax.lax.slice(xp, (0, i, j, 0), (xp.shape[0], i + (ho - 1) * stride + 1, j + (wo - 1) * stride + 1, c),
                          (1, stride, stride, 1))
      out = out + tap * w[i, j]
  return out


def native_grads(x, w, dy, stride: int, pads: Pads):
  """(dx, dw) of `depthwise_conv_reference` from the C++ kernel (CPU, float32; `native.available`)."""
  return jax.ffi.ffi_call("dlbook_depthwise_grad", (jax.ShapeDtypeStruct(x.shape, x.dtype),
                                                    jax.ShapeDtypeStruct(w.shape, w.dtype)),
                          vmap_method="sequential")(
      x, w, dy, stride=np.int64(stride), pad_top=np.int64(pads[0][0]), pad_left=np.int64(pads[1][0]))


def reference_grads(x, w, dy, stride: int, pads: Pads):
  return jax.vjp(lambda x, w: depthwise_conv_reference(x, w, stride, pads), x, w)[1](dy)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _depthwise_conv(x, w, stride, pads):
  return depthwise_conv_reference(x, w, stride, pads)


def _fwd(x, w, stride, pads):
  return depthwise_conv_reference(x, w, stride, pads), (x, w)


def _bwd(stride, pads, res, dy):
  x, w = res
  return tuple(jax.lax.platform_dependent(
      x, w, dy,
      cpu=functools.partial(native_grads, stride=stride, pads=pads),
      default=functools.partial(reference_grads, stride=stride, pads=pads)))


_depthwise_conv.defvjp(_fwd, _bwd)


def depthwise_conv(x, w, stride: int = 1, pads: Pads = ((1, 1), (1, 1)), *, use_native: bool = True):
  """Depthwise convolution of NHWC `x` with `w` (KH, KW, C): out[n, o, p, c] =
  sum_ij xpad[n, o*stride + i, p*stride + j, c] * w[i, j, c], `pads` ((top, bottom), (left, right)) of
  zeros. Same values as `lax.conv_general_dilated(..., feature_group_count=C)`; its gradient runs the
  native kernel on the CPU when `use_native` and both arrays are float32."""
  pads = tuple((int(a), int(b)) for a, b in pads)
  if (use_native and x.dtype == jnp.float32 and w.dtype == jnp.float32 and x.ndim == 4 and w.ndim == 3
      and w.shape[0] * w.shape[1] <= MAX_NATIVE_TAPS and native.available("depthwise")):
    return _depthwise_conv(x, w, int(stride), pads)
  return depthwise_conv_reference(x, w, stride, pads)
