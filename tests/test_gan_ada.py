"""ADA (survey seed 002, Eq. 10): the controller moves p toward the r_t target; augmentations
are gated by p and let gradients through."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlbook.gan import ada
from dlbook.gan.train import prng_key


def run_batches(state, logits, n_batches, **kw):
  for _ in range(n_batches):
    state = ada.ada_update(state, logits, **kw)
  return state


def test_p_moves_up_when_r_t_is_above_target():
  # 7 of 8 real outputs positive: r_t = 0.75 > 0.6, D overfits -> more augmentation.
  logits = jnp.array([1.0, 2.0, 0.5, 3.0, 0.1, 1.0, 2.0, -1.0])
  state = ada.init_ada(0.2)
  state = run_batches(state, logits, 3, target=0.6, interval=4, speed_images=320.0)
  assert float(state.p) == pytest.approx(0.2)  # no adjustment before `interval` batches
  np.testing.assert_allclose(ada.r_t(state), 0.75)
  state = ada.ada_update(state, logits, target=0.6, interval=4, speed_images=320.0)
  assert float(state.p) == pytest.approx(0.2 + 32 / 320)  # sign(+) * 4 batches * 8 images / speed
  assert float(state.count) == 0 and int(state.batches) == 0  # statistics reset after adjusting


def test_p_moves_down_when_r_t_is_below_target_and_stays_in_unit_interval():
  logits = jnp.array([1.0, -2.0, -0.5, 3.0])  # r_t = 0 < 0.6
  state = run_batches(ada.init_ada(0.5), logits, 4, target=0.6, interval=4, speed_images=160.0)
  assert float(state.p) == pytest.approx(0.5 - 16 / 160)
  state = run_batches(state, logits, 400, target=0.6, interval=4, speed_images=160.0)
  assert float(state.p) == 0.0
  high = run_batches(ada.init_ada(0.95), jnp.ones(4), 40, target=0.6, interval=4, speed_images=160.0)
  assert float(high.p) == 1.0


def test_controller_is_jittable():
  update = jax.jit(lambda s, l: ada.ada_update(s, l, target=0.6, interval=1, speed_images=10.0))
  state = update(ada.init_ada(0.0), jnp.ones(5))
  assert float(state.p) == pytest.approx(0.5)


def images(n=6, size=8, channels=3):
  return jax.random.uniform(prng_key(0), (n, size, size, channels), minval=-1, maxval=1)


def test_p_zero_is_identity_and_p_one_changes_every_image():
  x = images()
  augment = jax.jit(ada.augment)  # one compilation for both values of p
  np.testing.assert_array_equal(augment(prng_key(1), x, 0.0), x)
  y = augment(prng_key(1), x, 1.0)
  assert y.shape == x.shape
  assert np.all(np.abs(np.asarray(y - x)).reshape(len(x), -1).max(axis=1) > 1e-3)


def test_single_transforms():
  x = images()
  np.testing.assert_array_equal(ada.xflip(prng_key(0), x, 1.0), x[:, :, ::-1])
  turned = np.asarray(ada.rotate90(prng_key(0), x, 1.0))
  assert all(any(np.allclose(turned[i], np.rot90(np.asarray(x[i]), k)) for k in (1, 2, 3)) for i in range(len(x)))
  shifted = np.asarray(ada.translate(prng_key(0), x, 1.0))
  # an integer translation keeps the interior pixels of some shifted copy of the input
  for i in range(len(x)):
    assert any(np.allclose(shifted[i, 1:-1, 1:-1], np.asarray(x[i])[1 - dy:7 - dy, 1 - dx:7 - dx])
               for dy in (-1, 0, 1) for dx in (-1, 0, 1))


def test_augmentation_is_differentiable_for_the_generator():
  x = images(channels=1)
  grad = jax.jit(jax.grad(lambda im: jnp.sum(ada.augment(prng_key(3), im, 0.8) ** 2)))(x)
  assert np.all(np.isfinite(np.asarray(grad))) and float(jnp.abs(grad).sum()) > 0
