"""Adaptive discriminator augmentation (ADA; Karras et al. 2020, survey seed 002 Eq. 10).

The controller keeps the overfitting heuristic r_t = E[sign(D_train)] (the mean sign
of the discriminator's outputs on real training images, over `interval` consecutive
minibatches) near a target (0.6): every `interval` D steps the augmentation
probability moves by sign(r_t - target) * (images seen) / `speed_images`, clipped to
[0, 1]. With the paper's settings (interval 4, speed 500k images) p can go from 0
to 1 in 500k images.

Every image the discriminator sees (real and fake, in the D and the G step) passes
through `augment(key, images, p)`: each transform is applied to each image
independently with probability p, and all are differentiable in the image, so the
generator's gradient flows through them.

Choice (the survey names no pipeline): the 'blit' and colour groups of ADA's
pipeline — x-flip, rotation by a multiple of 90 degrees (square images only),
integer translation by up to 1/8 of the size with reflection padding, brightness
(+N(0, 0.2)), contrast (x lognormal(0, 0.5 ln 2) about the image mean) and, for RGB,
saturation (x lognormal(0, ln 2) about the pixel's grey level). ADA's general
geometric transforms (fractional scaling and rotation with a wavelet filter) are left out.
"""

import math

import chex
import flax
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class AdaState:
  """The controller's state: the augmentation probability and the running sign statistics."""
  p: jnp.ndarray          # augmentation probability in [0, 1]
  sign_sum: jnp.ndarray   # sum of sign(D(x_real)) since the last adjustment
  count: jnp.ndarray      # number of real outputs summed since the last adjustment
  batches: jnp.ndarray    # minibatches observed since the last adjustment


def init_ada(p: float = 0.0) -> AdaState:
  return AdaState(p=jnp.asarray(p, jnp.float32), sign_sum=jnp.zeros((), jnp.float32),
                  count=jnp.zeros((), jnp.float32), batches=jnp.zeros((), jnp.int32))


def r_t(state: AdaState):
  """Survey Eq. 10: r_t = E[sign(D_train)] over the minibatches accumulated so far."""
  return state.sign_sum / jnp.maximum(state.count, 1.0)


def ada_update(state: AdaState, real_logits, *, target: float = 0.6, interval: int = 4,
               speed_images: float = 500_000.0) -> AdaState:
  """Adds one minibatch of D outputs on real images; every `interval` batches moves p
  by sign(r_t - target) * images / speed_images (up when D overfits, down otherwise)."""
  real_logits = jnp.reshape(real_logits, (-1,))
  state = state.replace(sign_sum=state.sign_sum + jnp.sum(jnp.sign(real_logits)),
                        count=state.count + real_logits.shape[0], batches=state.batches + 1)
  adjust = state.batches >= interval
  step = jnp.sign(r_t(state) - target) * state.count / speed_images
  p = jnp.where(adjust, jnp.clip(state.p + step, 0.0, 1.0), state.p)
  zero = jnp.zeros((), jnp.float32)
  return AdaState(p=p, sign_sum=jnp.where(adjust, zero, state.sign_sum),
                  count=jnp.where(adjust, zero, state.count),
                  batches=jnp.where(adjust, jnp.zeros((), jnp.int32), state.batches))


# ------------------------------------------------------------------ differentiable augmentations
def _gate(key, n, p):
  return jax.random.bernoulli(key, p, (n,))[:, None, None, None]


def xflip(key, images, p):
  return jnp.where(_gate(key, images.shape[0], p), images[:, :, ::-1, :], images)


def rotate90(key, images, p):
  """Rotation by k x 90 degrees, k uniform in {1, 2, 3} when applied."""
  n, h, w, _ = images.shape
  if h != w:
    return images
  k_gate, k_turns = jax.random.split(key)
  turns = jax.random.randint(k_turns, (n,), 1, 4)
  rotated = [jnp.rot90(images, k, axes=(1, 2)) for k in range(4)]
  out = jnp.select([turns[:, None, None, None] == k for k in range(1, 4)], rotated[1:], images)
  return jnp.where(_gate(k_gate, n, p), out, images)


def translate(key, images, p, fraction: float = 0.125):
  """Integer translation by up to `fraction` of the size on each axis, reflection-padded."""
  n, h, w, c = images.shape
  ph, pw = max(1, int(round(fraction * h))), max(1, int(round(fraction * w)))
  k_gate, k_y, k_x = jax.random.split(key, 3)
  dy = jax.random.randint(k_y, (n,), -ph, ph + 1)
  dx = jax.random.randint(k_x, (n,), -pw, pw + 1)
  gate = jax.random.bernoulli(k_gate, p, (n,))
  dy, dx = jnp.where(gate, dy, 0), jnp.where(gate, dx, 0)
  padded = jnp.pad(images, ((0, 0), (ph, ph), (pw, pw), (0, 0)), mode="reflect")
  crop = lambda img, oy, ox: jax.lax.dynamic_slice(img, (ph - oy, pw - ox, 0), (h, w, c))
  return jax.vmap(crop)(padded, dy, dx)


def brightness(key, images, p, std: float = 0.2):
  k_gate, k_b = jax.random.split(key)
  shift = jax.random.normal(k_b, (images.shape[0], 1, 1, 1)) * std
  return images + jnp.where(_gate(k_gate, images.shape[0], p), shift, 0.0)


def contrast(key, images, p, std: float = 0.5 * math.log(2)):
  k_gate, k_c = jax.random.split(key)
  factor = jnp.exp(jax.random.normal(k_c, (images.shape[0], 1, 1, 1)) * std)
  factor = jnp.where(_gate(k_gate, images.shape[0], p), factor, 1.0)
  mean = images.mean(axis=(1, 2, 3), keepdims=True)
  return images + (factor - 1.0) * (images - mean)  # exactly the input where not applied


def saturation(key, images, p, std: float = math.log(2)):
  if images.shape[-1] != 3:
    return images
  k_gate, k_s = jax.random.split(key)
  factor = jnp.exp(jax.random.normal(k_s, (images.shape[0], 1, 1, 1)) * std)
  factor = jnp.where(_gate(k_gate, images.shape[0], p), factor, 1.0)
  grey = images.mean(axis=-1, keepdims=True)
  return images + (factor - 1.0) * (images - grey)


PIPELINE = (xflip, rotate90, translate, brightness, contrast, saturation)


def augment(key, images, p):
  """Applies every transform of `PIPELINE`, each to each image with probability `p`."""
  chex.assert_rank(images, 4)
  keys = jax.random.split(key, len(PIPELINE))
  for k, transform in zip(keys, PIPELINE):
    images = transform(k, images, p)
  return images
