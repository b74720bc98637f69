"""GAN losses against hand computations from the book's and the survey's equations (numpy)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlbook.gan import losses
from dlbook.gan.train import prng_key

REAL = np.array([2.0, -1.0, 0.3], np.float32)   # discriminator logits C(x) on real images
FAKE = np.array([0.5, -3.0, 1.2], np.float32)   # ... on generated images


def sigmoid(x):
  return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def test_vanilla_losses_match_eq_5_1():
  d_real, d_fake = sigmoid(REAL), sigmoid(FAKE)
  expected_d = -np.mean(np.log(d_real)) - np.mean(np.log(1 - d_fake))
  np.testing.assert_allclose(losses.vanilla_d_loss(REAL, FAKE), expected_d, rtol=1e-6)
  np.testing.assert_allclose(losses.vanilla_g_loss(FAKE), -np.mean(np.log(d_fake)), rtol=1e-6)
  np.testing.assert_allclose(losses.vanilla_g_loss(FAKE, "minimax"), np.mean(np.log(1 - d_fake)), rtol=1e-6)
  # [N, 1] outputs are the same as [N]
  np.testing.assert_allclose(losses.vanilla_d_loss(REAL[:, None], FAKE[:, None]), expected_d, rtol=1e-6)
  with pytest.raises(ValueError, match="minimax"):
    losses.vanilla_g_loss(FAKE, "saturating")


def test_minimax_generator_gradient_vanishes_where_non_saturating_does_not():
  confident_fake = jnp.array([-8.0])  # D is sure the sample is fake
  g_minimax = jax.grad(lambda f: losses.vanilla_g_loss(f, "minimax"))(confident_fake)
  g_ns = jax.grad(lambda f: losses.vanilla_g_loss(f, "non_saturating"))(confident_fake)
  assert abs(float(g_minimax[0])) < 1e-3 < abs(float(g_ns[0]))


def test_wgan_losses_match_eqs_5_2_5_3():
  np.testing.assert_allclose(losses.wgan_critic_loss(REAL, FAKE), FAKE.mean() - REAL.mean(), rtol=1e-6)
  np.testing.assert_allclose(losses.wgan_g_loss(FAKE), -FAKE.mean(), rtol=1e-6)


def test_weight_clipping_clips_every_leaf_and_keeps_small_values():
  params = {"conv": {"kernel": jnp.array([[-0.5, 0.003], [0.02, -0.009]])}, "bias": jnp.array([1.0, -0.001])}
  clipped = losses.clip_weights(params, 0.01)
  np.testing.assert_array_equal(clipped["conv"]["kernel"], np.array([[-0.01, 0.003], [0.01, -0.009]], np.float32))
  np.testing.assert_array_equal(clipped["bias"], np.array([0.01, -0.001], np.float32))


def test_gradient_penalty_on_a_linear_critic_is_lambda_times_norm_minus_one_squared():
  # D(x) = <w, x> + b has gradient w everywhere, so the penalty is 10 (||w|| - 1)^2 for any x_hat.
  key = prng_key(0)
  real = jax.random.normal(key, (4, 3, 3, 2))
  fake = jax.random.normal(prng_key(1), (4, 3, 3, 2))
  w = jax.random.normal(prng_key(2), (3, 3, 2))
  critic = lambda x: jnp.sum(x * w, axis=(1, 2, 3)) + 0.7
  norm = float(jnp.linalg.norm(w))
  gp = losses.gradient_penalty(critic, real, fake, prng_key(3), weight=10.0)
  np.testing.assert_allclose(gp, 10.0 * (norm - 1.0) ** 2, rtol=1e-5)
  unit = lambda x: jnp.sum(x * w / norm, axis=(1, 2, 3))
  assert float(losses.gradient_penalty(unit, real, fake, prng_key(3))) < 1e-8


def test_gradient_penalty_is_taken_at_the_interpolates():
  # D(x) = 0.5 ||x||^2 has gradient x, so the penalty sees ||x_hat|| with x_hat = eps x + (1 - eps) G(z).
  real = np.random.default_rng(0).normal(size=(5, 2, 2, 1)).astype(np.float32)
  fake = np.random.default_rng(1).normal(size=(5, 2, 2, 1)).astype(np.float32)
  key = prng_key(7)
  eps = np.asarray(jax.random.uniform(key, (5, 1, 1, 1)))  # the draw gradient_penalty makes with this key
  x_hat = eps * real + (1 - eps) * fake
  expected = 10.0 * np.mean((np.sqrt((x_hat ** 2).reshape(5, -1).sum(-1)) - 1.0) ** 2)
  critic = lambda x: 0.5 * jnp.sum(x ** 2, axis=(1, 2, 3))
  np.testing.assert_allclose(losses.gradient_penalty(critic, real, fake, key), expected, rtol=1e-5)


def test_relativistic_average_losses_match_survey_eq_4():
  rel_real = REAL - FAKE.mean()   # C(x_r) - E C(x_f)
  rel_fake = FAKE - REAL.mean()   # C(x_f) - E C(x_r)
  expected_d = -np.mean(np.log(sigmoid(rel_real))) - np.mean(np.log(1 - sigmoid(rel_fake)))
  expected_g = -np.mean(np.log(sigmoid(rel_fake))) - np.mean(np.log(1 - sigmoid(rel_real)))
  np.testing.assert_allclose(losses.relativistic_d_loss(REAL, FAKE), expected_d, rtol=1e-6)
  np.testing.assert_allclose(losses.relativistic_g_loss(REAL, FAKE), expected_g, rtol=1e-6)
  # shifting every logit by a constant changes nothing: only differences to the other batch matter
  np.testing.assert_allclose(losses.relativistic_d_loss(REAL + 5, FAKE + 5), expected_d, rtol=1e-5)


CLASS_REAL = np.array([[2.0, 0.1, -1.0], [0.0, 1.5, 0.2]], np.float32)
CLASS_FAKE = np.array([[0.3, 0.3, 2.2], [1.0, -2.0, 0.5]], np.float32)
LABELS_REAL = np.array([0, 2], np.int32)
LABELS_FAKE = np.array([2, 1], np.int32)


def test_acgan_losses_match_eqs_5_4_to_5_7():
  q_real = softmax(CLASS_REAL.astype(np.float64))[np.arange(2), LABELS_REAL]   # Q(c | x)
  q_fake = softmax(CLASS_FAKE.astype(np.float64))[np.arange(2), LABELS_FAKE]   # Q(c | G(z, c))
  real, fake = REAL[:2], FAKE[:2]
  eq_5_4 = -np.mean(np.log(sigmoid(fake)))
  eq_5_5 = -np.mean(np.log(q_fake))
  eq_5_6 = -np.mean(np.log(sigmoid(real))) - np.mean(np.log(1 - sigmoid(fake)))
  eq_5_7 = -np.mean(np.log(q_real)) - np.mean(np.log(1 - q_fake))
  g_total, g_parts = losses.acgan_g_loss(fake, CLASS_FAKE, LABELS_FAKE)
  np.testing.assert_allclose(g_parts["g_adv"], eq_5_4, rtol=1e-6)
  np.testing.assert_allclose(g_parts["g_aux"], eq_5_5, rtol=1e-6)
  np.testing.assert_allclose(g_total, eq_5_4 + eq_5_5, rtol=1e-6)
  d_total, d_parts = losses.acgan_d_loss(real, fake, CLASS_REAL, LABELS_REAL, CLASS_FAKE, LABELS_FAKE)
  np.testing.assert_allclose(d_parts["d_adv"], eq_5_6, rtol=1e-6)
  np.testing.assert_allclose(d_parts["d_aux"], eq_5_7, rtol=1e-6)
  np.testing.assert_allclose(d_total, eq_5_6 + eq_5_7, rtol=1e-6)
  # Odena et al.'s form: D also classifies fakes into their class.
  _, odena = losses.acgan_d_loss(real, fake, CLASS_REAL, LABELS_REAL, CLASS_FAKE, LABELS_FAKE, aux_fake="odena")
  np.testing.assert_allclose(odena["d_aux"], -np.mean(np.log(q_real)) - np.mean(np.log(q_fake)), rtol=1e-6)
  _, half = losses.acgan_d_loss(real, fake, CLASS_REAL, LABELS_REAL, CLASS_FAKE, LABELS_FAKE, aux_weight=0.5)
  np.testing.assert_allclose(half["d_aux"], eq_5_7, rtol=1e-6)


def test_eq_5_7_fake_term_is_finite_when_the_class_head_is_certain():
  logits = jnp.array([[60.0, 0.0, 0.0]])
  value, grad = jax.value_and_grad(
      lambda l: losses.acgan_d_aux_loss(l, jnp.array([0]), l, jnp.array([0])))(logits)
  # -log q(0) ~ 2 e^-60 and -log(1 - q(0)) = 60 - log 2 (exactly, from the logsumexp form)
  np.testing.assert_allclose(value, 60.0 - np.log(2.0), rtol=1e-6)
  assert np.all(np.isfinite(np.asarray(grad)))


def test_dispatch_by_name_and_unknown_names():
  np.testing.assert_allclose(losses.d_adversarial_loss("wasserstein", REAL, FAKE), FAKE.mean() - REAL.mean())
  np.testing.assert_allclose(losses.g_adversarial_loss("relativistic", FAKE, REAL),
                             losses.relativistic_g_loss(REAL, FAKE))
  with pytest.raises(ValueError, match="relativistic"):
    losses.d_adversarial_loss("hinge", REAL, FAKE)
  with pytest.raises(ValueError, match="odena"):
    losses.acgan_d_aux_loss(CLASS_REAL, LABELS_REAL, CLASS_FAKE, LABELS_FAKE, aux_fake="other")
