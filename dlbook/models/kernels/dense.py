"""Dense (ungrouped) kxk convolution, NHWC x HWIO, whose CPU backward pass is two matmuls over image patches.

XLA:CPU differentiates `lax.conv_general_dilated` with respect to the kernel as another convolution whose
window is the whole image, which its convolution library runs slowly; forward + backward of a ResNet50 3x3
layer took 1.5-2x longer than the same gradients written as matmuls over the layer's k*k shifted input views
(`benchmarks/conv_gradients.py`). `conv2d` keeps XLA's convolution for the forward pass (it is the faster
forward) and, on the CPU, a custom backward pass:
  cols = [x_pad shifted by each tap (i, j), strided]          (N, HO, WO, k*k*C_in), rebuilt from x
  dw   = cols^T @ dy                                          (k*k*C_in, C_out)
  dx   = sum over taps of dy @ w[i, j]^T placed back at (i, j) (padding, strides and cropping undone)
Only x is kept for the backward pass (the patches are rebuilt there), as for the convolution itself. GPUs and
TPUs keep JAX's derivative of the convolution (`lax.platform_dependent`).
"""

import functools
from typing import Tuple

import jax
import jax.numpy as jnp
from jax import lax

Pads = Tuple[Tuple[int, int], Tuple[int, int]]
DIMS = ("NHWC", "HWIO", "NHWC")


def conv_reference(x, w, stride: int, pads: Pads):
  return lax.conv_general_dilated(x, w, (stride, stride), pads, dimension_numbers=DIMS)


def _views(xp, k_h: int, k_w: int, stride: int, ho: int, wo: int):
  return [xp[:, i:i + (ho - 1) * stride + 1:stride, j:j + (wo - 1) * stride + 1:stride, :]
          for i in range(k_h) for j in range(k_w)]


def patch_grads(x, w, dy, stride: int, pads: Pads):
  """(dx, dw) of `conv_reference` as matmuls over the k*k shifted views of the padded input."""
  k_h, k_w, c_in, c_out = w.shape
  n, h, wd, _ = x.shape
  _, ho, wo, _ = dy.shape
  xp = jnp.pad(x, ((0, 0), tuple(pads[0]), tuple(pads[1]), (0, 0)))
  cols = jnp.concatenate(_views(xp, k_h, k_w, stride, ho, wo), axis=-1).reshape(-1, k_h * k_w * c_in)
  g = dy.reshape(-1, c_out)
  dw = (cols.T @ g).reshape(w.shape)
  dcols = (g @ w.reshape(-1, c_out).T).reshape(n, ho, wo, k_h * k_w, c_in)
  hp, wp = xp.shape[1], xp.shape[2]
  dxp = 0.0
  for t in range(k_h * k_w):
    i, j = divmod(t, k_w)
    # the view's pixels sit at rows i, i+stride, ... of the padded input: pad them back into place
    dxp = dxp + lax.pad(dcols[:, :, :, t, :], jnp.zeros((), dy.dtype),
                        ((0, 0, 0), (i, hp - i - (ho - 1) * stride - 1, stride - 1),
                         (j, wp - j - (wo - 1) * stride - 1, stride - 1), (0, 0, 0)))
  dx = dxp[:, pads[0][0]:pads[0][0] + h, pads[1][0]:pads[1][0] + wd, :]
  return dx, dw


def reference_grads(x, w, dy, stride: int, pads: Pads):
  return jax.vjp(lambda x, w: conv_reference(x, w, stride, pads), x, w)[1](dy)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv2d(x, w, stride, pads):
  return conv_reference(x, w, stride, pads)


def _fwd(x, w, stride, pads):
  return conv_reference(x, w, stride, pads), (x, w)


def _bwd(stride, pads, res, dy):
  x, w = res
  return tuple(lax.platform_dependent(x, w, dy, cpu=functools.partial(patch_grads, stride=stride, pads=pads),
                                      default=functools.partial(reference_grads, stride=stride, pads=pads)))


_conv2d.defvjp(_fwd, _bwd)


def conv2d(x, w, stride: int = 1, pads: Pads = ((1, 1), (1, 1))):
  """`lax.conv_general_dilated(x, w, stride, pads)` (NHWC, HWIO, no dilation or groups) with the patch-matmul
  backward pass on the CPU."""
  return _conv2d(x, w, int(stride), tuple((int(a), int(b)) for a, b in pads))
