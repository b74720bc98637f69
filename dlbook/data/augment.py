"""Pure, jittable image augmentation: pad-and-crop, flips, rotation, zoom, dihedral, cutout.

Every function maps (key, images [N, H, W, C]) -> images, with an independent draw
per image, so it runs inside the jitted train step.
"""

import jax
import jax.numpy as jnp


def pad_and_crop(key, images, pad: int):
  """Zero-pads by `pad` and takes a random crop of the original size (CIFAR-style)."""
  if pad <= 0:
    return images
  n, h, w, _ = images.shape
  padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  offsets = jax.random.randint(key, (n, 2), 0, 2 * pad + 1)
  crop = lambda img, o: jax.lax.dynamic_slice(img, (o[0], o[1], 0), (h, w, img.shape[-1]))
  return jax.vmap(crop)(padded, offsets)


def horizontal_flip(key, images, p: float = 0.5):
  flip = jax.random.bernoulli(key, p, (images.shape[0], 1, 1, 1))
  return jnp.where(flip, images[:, :, ::-1, :], images)


def rotate(key, images, max_degrees: float):
  """Rotates each image by an angle uniform in ±max_degrees (bilinear, zero fill)."""
  if max_degrees <= 0:
    return images
  n, h, w, c = images.shape
  angles = jax.random.uniform(key, (n,), minval=-max_degrees, maxval=max_degrees) * jnp.pi / 180
  yy, xx = jnp.meshgrid(jnp.arange(h) - (h - 1) / 2, jnp.arange(w) - (w - 1) / 2, indexing="ij")

  def one(img, a):
    cos, sin = jnp.cos(a), jnp.sin(a)
    src_y = cos * yy - sin * xx + (h - 1) / 2
    src_x = sin * yy + cos * xx + (w - 1) / 2
    sample = lambda ch: jax.scipy.ndimage.map_coordinates(ch, [src_y, src_x], order=1, mode="constant")
    return jax.vmap(sample, in_axes=-1, out_axes=-1)(img)

  return jax.vmap(one)(images, angles)


def vertical_flip(key, images, p: float = 0.5):
  flip = jax.random.bernoulli(key, p, (images.shape[0], 1, 1, 1))
  return jnp.where(flip, images[:, ::-1, :, :], images)


def zoom(key, images, max_zoom: float):
  """Zooms each image in about its centre by a factor uniform in [1, 1 + max_zoom] (bilinear): a
  central crop of 1/factor of the side resized back to the full size (seed 003's crop/zoom)."""
  if max_zoom <= 0:
    return images
  n, h, w, _ = images.shape
  factors = jax.random.uniform(key, (n,), minval=1.0, maxval=1.0 + max_zoom)
  yy, xx = jnp.meshgrid(jnp.arange(h) - (h - 1) / 2, jnp.arange(w) - (w - 1) / 2, indexing="ij")

  def one(img, f):
    coords = [yy / f + (h - 1) / 2, xx / f + (w - 1) / 2]
    sample = lambda ch: jax.scipy.ndimage.map_coordinates(ch, coords, order=1, mode="nearest")
    return jax.vmap(sample, in_axes=-1, out_axes=-1)(img)

  return jax.vmap(one)(images, factors)


def dihedral(key, images):
  """One of the 8 symmetries of the square per image (4 rotations by 90°, each optionally
  mirrored), drawn uniformly: exact pixel permutations, so no interpolation, no fill and
  no change to the 8-bit values. Needs square images."""
  n, h, w, _ = images.shape
  if h != w:
    raise ValueError(f"dihedral augmentation needs square images, got {h}x{w}")
  choice = jax.random.randint(key, (n, 1, 1, 1), 0, 8)
  out = images
  for k in range(1, 8):
    variant = jnp.rot90(images, k % 4, axes=(1, 2))
    if k >= 4:
      variant = variant[:, :, ::-1, :]
    out = jnp.where(choice == k, variant, out)
  return out


def cutout(key, images, size: int):
  """Zeroes one size x size square per image, centred uniformly (DeVries & Taylor 2017)."""
  if size <= 0:
    return images
  n, h, w, _ = images.shape
  centres = jax.random.randint(key, (n, 2), 0, jnp.array([h, w]))
  yy, xx = jnp.arange(h)[None, :, None], jnp.arange(w)[None, None, :]
  cy, cx = centres[:, 0, None, None], centres[:, 1, None, None]
  top, left = cy - size // 2, cx - size // 2  # square clipped at the borders, as in the reference
  inside = (yy >= top) & (yy < top + size) & (xx >= left) & (xx < left + size)
  return images * (~inside)[..., None]


def augment(key, images, config):
  """Applies the augmentations switched on in `config` (a ConfigDict or None)."""
  if config is None:
    return images
  k1, k2, k3, k4 = jax.random.split(key, 4)
  k5, k6 = jax.random.split(jax.random.fold_in(key, 4))  # the later options: earlier draws stay as they were
  images = pad_and_crop(k1, images, int(config.get("crop_pad", 0)))
  if config.get("flip", False):
    images = horizontal_flip(k2, images)
  if config.get("vflip", False):
    images = vertical_flip(k5, images)
  images = zoom(k6, images, float(config.get("zoom", 0.0)))
  images = rotate(k3, images, float(config.get("rotation", 0.0)))
  return cutout(k4, images, int(config.get("cutout", 0)))
