"""LSB replacement, the traditional baseline (book §6.1).

A payload of ``bpp`` bits per pixel is ``bpp·H·W`` bits. They replace the least
significant bits of the image's channel values, visited in a pseudo-random order drawn
from ``seed`` (the shared stego key), so the changes spread evenly over the image. A
payload larger than one bit per channel value (more than C bpp) continues in bit-plane 1,
then 2, and so on. At 1-3 bpp on RGB images only bit-plane 0 is used: each value changes
by at most ±1 and half of the visited values change on average.

Pure numpy integer code (no library does LSB replacement); `extract(embed(...))` returns
the bits exactly.
"""

import numpy as np

from dlbook.errors import require


def capacity_bits(shape, bpp: float) -> int:
  """Bits carried by one H×W image at ``bpp`` bits per pixel."""
  h, w = shape[-3], shape[-2]
  bits = bpp * h * w
  require(bpp > 0 and float(bits).is_integer(), f"payload_bpp {bpp} must be > 0 and give whole bits on {h}x{w}")
  return int(bits)


def _positions(shape, num_bits: int, seed: int):
  """(flat value index, bit plane) of every message bit in embedding order."""
  h, w, c = shape[-3:]
  values = h * w * c
  require(0 < num_bits <= 8 * values,
          f"LSB replacement can hold 1..{8 * values} bits in a {h}x{w}x{c} image, asked for {num_bits}")
  order = np.random.default_rng(seed).permutation(values)
  k = np.arange(num_bits)
  return order[k % values], k // values


def embed(cover: np.ndarray, bits: np.ndarray, seed: int = 0) -> np.ndarray:
  """Replaces LSBs of uint8 `cover` ([H,W,C] or [N,H,W,C]) with `bits` ([n] or [N,n] of 0/1)."""
  cover = np.asarray(cover)
  require(cover.dtype == np.uint8, f"LSB replacement needs uint8 images, got {cover.dtype}")
  require(cover.ndim in (3, 4), f"images must be HWC or NHWC, got shape {cover.shape}")
  batched = cover.ndim == 4
  images = cover if batched else cover[None]
  bits = np.asarray(bits)
  bits = bits if bits.ndim == 2 else bits[None]
  require(bits.shape[0] == images.shape[0], f"{images.shape[0]} images but {bits.shape[0]} messages")
  require(np.isin(bits, (0, 1)).all(), "message bits must be 0 or 1")
  idx, plane = _positions(images.shape, bits.shape[1], seed)
  flat = images.reshape(images.shape[0], -1).copy()
  mask = (1 << plane).astype(np.uint8)
  for j in np.unique(plane):  # each bit plane separately so a value is never hit twice per plane
    sel = plane == j
    cur = flat[:, idx[sel]]
    flat[:, idx[sel]] = (cur & ~mask[sel]) | (bits[:, sel].astype(np.uint8) << np.uint8(j))
  out = flat.reshape(images.shape)
  return out if batched else out[0]


def extract(stego: np.ndarray, num_bits: int, seed: int = 0) -> np.ndarray:
  """Reads `num_bits` bits per image back from uint8 `stego` (same seed as `embed`)."""
  stego = np.asarray(stego)
  require(stego.dtype == np.uint8, f"LSB extraction needs uint8 images, got {stego.dtype}")
  batched = stego.ndim == 4
  images = stego if batched else stego[None]
  idx, plane = _positions(images.shape, int(num_bits), seed)
  flat = images.reshape(images.shape[0], -1)
  bits = ((flat[:, idx] >> plane.astype(np.uint8)) & 1).astype(np.int32)
  return bits if batched else bits[0]
