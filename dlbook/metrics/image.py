"""Steganography image metrics (book §6.2.2).

- PSNR = 10·log10(MAX² / MSE), MAX = `data_range` (255 for 8-bit images).
- SSIM: Wang et al. (2004) with a Gaussian window (σ = 1.5, truncated at 3.5σ, i.e. 11×11),
  K1 = 0.01, K2 = 0.03, population covariances. It reproduces
  ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=..., channel_axis=-1)``: skimage filters with
  ``mode='reflect'`` and then discards a 5-pixel border, so the kept values are exactly a
  *valid* (unpadded) separable convolution, which is what is computed here. Colour images
  average the per-channel mean SSIM, as skimage does.
- Capacity in bits per pixel, extraction accuracy, steganalysis error rate.

PSNR and SSIM are meant for 8-bit images: use `to_uint8` on model outputs first, so the
reported figures are the ones a saved PNG would give. Both accept HW, HWC or NHWC arrays;
a batch returns the mean of the per-image values (``per_image=True`` returns them all).

Both are written in `jax.numpy` and jittable (pass `data_range` and `per_image` as static).
They compute in float64 when ``jax_enable_x64`` is on; in the default float32 the images
are first divided by `data_range` and centred per image, which keeps SSIM within ~1e-5 of
skimage's float64 result (tests pin 1e-4).
"""

import functools
from typing import Tuple

import jax
import jax.numpy as jnp
import numpy as np

from dlbook.errors import require

SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5  # skimage's truncation: radius int(3.5 * 1.5 + 0.5) = 5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def to_uint8(x, value_range: Tuple[float, float] = (-1.0, 1.0)) -> np.ndarray:
  """Maps values in `value_range` to 8-bit pixels (round to nearest, clip), as saving a PNG does."""
  lo, hi = value_range
  require(hi > lo, f"to_uint8: value_range must be (low, high) with high > low, got {value_range}")
  x = (np.asarray(x, np.float64) - lo) / (hi - lo) * 255.0
  return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _as_nhwc(a, b):
  a, b = jnp.asarray(a), jnp.asarray(b)
  require(a.shape == b.shape, f"images must have the same shape, got {a.shape} and {b.shape}")
  require(a.ndim in (2, 3, 4), f"images must be HW, HWC or NHWC, got shape {a.shape}")
  batched = a.ndim == 4
  if a.ndim == 2:
    a, b = a[..., None], b[..., None]
  if a.ndim == 3:
    a, b = a[None], b[None]
  dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
  return a.astype(dtype), b.astype(dtype), batched


def _reduce(values, batched: bool, per_image: bool):
  if per_image:
    return values if batched else values[0]
  return jnp.mean(values)


def psnr(a, b, data_range: float = 255.0, per_image: bool = False):
  """Peak signal-to-noise ratio in dB, 10·log10(data_range² / MSE); identical images give inf.

  A batch reports the mean of per-image PSNRs (the usual convention in the stego papers),
  not the PSNR of the pooled MSE.
  """
  a, b, batched = _as_nhwc(a, b)
  return _reduce(_psnr_values(a, b, float(data_range)), batched, per_image)


@functools.partial(jax.jit, static_argnums=2)
def _psnr_values(a, b, data_range):
  mse = jnp.mean((a - b) ** 2, axis=(1, 2, 3))
  return 10.0 * jnp.log10(data_range ** 2 / mse)


def gaussian_window(sigma: float = SSIM_SIGMA, truncate: float = SSIM_TRUNCATE) -> np.ndarray:
  """The normalised 1-D Gaussian of `scipy.ndimage.gaussian_filter` (radius int(truncate·σ + 0.5))."""
  radius = int(truncate * sigma + 0.5)
  x = np.arange(-radius, radius + 1, dtype=np.float64)
  w = np.exp(-0.5 * (x / sigma) ** 2)
  return w / w.sum()


def _filter_valid(x, window):
  """Separable valid convolution of NHWC `x` with `window` along H and W, per channel."""
  k = window.shape[0]
  n, h, w, c = x.shape
  x = jnp.moveaxis(x, -1, 1).reshape(n * c, 1, h, w)
  kh = window.reshape(1, 1, k, 1).astype(x.dtype)
  kw = window.reshape(1, 1, 1, k).astype(x.dtype)
  dn = ("NCHW", "OIHW", "NCHW")
  prec = jax.lax.Precision.HIGHEST
  y = jax.lax.conv_general_dilated(x, kh, (1, 1), "VALID", dimension_numbers=dn, precision=prec)
  y = jax.lax.conv_general_dilated(y, kw, (1, 1), "VALID", dimension_numbers=dn, precision=prec)
  return jnp.moveaxis(y.reshape(n, c, h - k + 1, w - k + 1), 1, -1)


def ssim(a, b, data_range: float = 255.0, per_image: bool = False):
  """Gaussian-window SSIM (Wang et al. 2004), equal to skimage's with the settings above.

  Images must be at least 11×11 (the window). For colour images the SSIM of each channel
  is averaged, like ``channel_axis=-1`` in skimage.
  """
  a, b, batched = _as_nhwc(a, b)
  size = 2 * int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5) + 1
  require(min(a.shape[1:3]) >= size, f"SSIM needs images of at least {size}x{size} pixels, got {a.shape[1:3]}")
  return _reduce(_ssim_values(a, b, float(data_range)), batched, per_image)


@functools.partial(jax.jit, static_argnums=2)
def _ssim_values(a, b, data_range):
  """Per-image SSIM of NHWC float arrays."""
  window = jnp.asarray(gaussian_window(), a.dtype)
  # Scale to [0, 1] and centre per image: SSIM is invariant to a common shift, and this keeps
  # E[x²] − E[x]² accurate in float32.
  a, b = a / data_range, b / data_range
  shift = jnp.mean((a + b) / 2, axis=(1, 2, 3), keepdims=True)
  a, b = a - shift, b - shift
  c1, c2 = SSIM_K1 ** 2, SSIM_K2 ** 2
  ux, uy = _filter_valid(a, window), _filter_valid(b, window)
  vx = _filter_valid(a * a, window) - ux * ux
  vy = _filter_valid(b * b, window) - uy * uy
  vxy = _filter_valid(a * b, window) - ux * uy
  # The luminance term uses the unshifted means.
  mx, my = ux + shift, uy + shift
  s = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
  return jnp.mean(jnp.mean(s, axis=(1, 2)), axis=-1)  # per-channel mean, then channel average


def bits_per_pixel(num_bits: int, height: int, width: int) -> float:
  """Capacity (book §6.2.2): embedded bits / (H·W); colour channels do not multiply pixels."""
  require(height > 0 and width > 0, f"bits_per_pixel: image size must be positive, got {height}x{width}")
  return float(num_bits) / float(height * width)


def extraction_accuracy(bits, decoded_bits) -> float:
  """Fraction of embedded bits decoded correctly (book §6.2.2). Inputs are {0, 1} arrays of
  the same shape; soft decoder outputs should be thresholded first."""
  bits, decoded_bits = np.asarray(bits), np.asarray(decoded_bits)
  require(bits.shape == decoded_bits.shape,
          f"extraction_accuracy: shapes differ, {bits.shape} and {decoded_bits.shape}")
  require(bits.size > 0, "extraction_accuracy: no bits")
  return float(np.mean(bits.astype(np.int64) == decoded_bits.astype(np.int64)))


def steganalysis_error_rate(labels, predictions) -> float:
  """(1 − accuracy) × 100 of a cover/stego classifier (book §6.2.2); 50 is chance, higher is better."""
  labels, predictions = np.asarray(labels), np.asarray(predictions)
  require(labels.shape == predictions.shape,
          f"steganalysis_error_rate: shapes differ, {labels.shape} and {predictions.shape}")
  require(labels.size > 0, "steganalysis_error_rate: no samples")
  return float((1.0 - np.mean(labels.astype(np.int64) == predictions.astype(np.int64))) * 100.0)
