"""Pure adversarial losses of book ch. 5 and survey seed 002.

Discriminators return *logits* C(x) (the pre-sigmoid output); the book's sigmoid
output D(x) = sigmoid(C(x)) is folded into the binary cross-entropy, which is the
same function computed stably (log sigmoid(c) = -softplus(-c)). Critics (WGAN)
return unbounded scores and never see a sigmoid.

Every loss is a mean over the batch and is minimised by its player:
- vanilla GAN, book Eq. 5.1: D minimises -E log D(x) - E log(1 - D(G(z))); G minimises
  the non-saturating -E log D(G(z)) (default) or the minimax E log(1 - D(G(z))).
- WGAN, book Eqs. 5.2-5.3: the critic minimises E D(G(z)) - E D(x); G minimises -E D(G(z)).
  Weight clipping keeps the critic Lipschitz (`clip_weights`).
- WGAN-GP, survey Eq. 5: + lambda E (||grad_x D(x_hat)||_2 - 1)^2, lambda = 10, on
  x_hat uniformly interpolated between real and fake images.
- relativistic average GAN, survey Eq. 4: D_R(x_r) = sigmoid(C(x_r) - E C(x_f)),
  D_R(x_f) = sigmoid(C(x_f) - E C(x_r)).
- ACGAN, book Eqs. 5.4-5.7.
"""

from typing import Callable, Dict, Tuple

import chex
import jax
import jax.numpy as jnp
import optax

ADVERSARIAL_LOSSES = ("non_saturating", "minimax", "relativistic", "wasserstein")
ACGAN_AUX_FAKE = ("book", "odena")


def _scores(logits):
  """Flattens [N] or [N, 1] discriminator outputs to [N]."""
  logits = jnp.asarray(logits)
  if logits.ndim == 2:
    chex.assert_axis_dimension(logits, 1, 1)
    logits = logits[:, 0]
  chex.assert_rank(logits, 1)
  return logits


def log_d(logits):
  """log sigmoid(C): the log-probability the discriminator gives to 'real'."""
  return jax.nn.log_sigmoid(logits)


def log_one_minus_d(logits):
  """log(1 - sigmoid(C)) = log sigmoid(-C)."""
  return jax.nn.log_sigmoid(-logits)


# ------------------------------------------------------------------ vanilla (book Eq. 5.1)
def vanilla_d_loss(real_logits, fake_logits):
  """Book Eq. 5.1, discriminator side: -E log D(x) - E log(1 - D(G(z)))."""
  real, fake = _scores(real_logits), _scores(fake_logits)
  return (optax.sigmoid_binary_cross_entropy(real, jnp.ones_like(real)).mean()
          + optax.sigmoid_binary_cross_entropy(fake, jnp.zeros_like(fake)).mean())


def vanilla_g_loss(fake_logits, form: str = "non_saturating"):
  """Generator side of Eq. 5.1.

  `non_saturating`: -E log D(G(z)) (Goodfellow et al. 2014's practical form; book Eq. 5.4's
  adversarial term). `minimax`: E log(1 - D(G(z))), Eq. 5.1 as written, whose gradient
  vanishes when D confidently rejects the fakes.
  """
  fake = _scores(fake_logits)
  if form == "non_saturating":
    return -log_d(fake).mean()
  if form == "minimax":
    return log_one_minus_d(fake).mean()
  raise ValueError(f"unknown vanilla generator loss form {form!r}; valid: non_saturating, minimax")


# ------------------------------------------------------------------ WGAN (book Eqs. 5.2-5.3)
def wgan_critic_loss(real_scores, fake_scores):
  """Book Eq. 5.2 as a loss to minimise: E D(G(z)) - E D(x)."""
  return _scores(fake_scores).mean() - _scores(real_scores).mean()


def wgan_g_loss(fake_scores):
  """Book Eq. 5.3: -E D(G(z))."""
  return -_scores(fake_scores).mean()


def clip_weights(params, clip: float):
  """WGAN weight clipping (Arjovsky et al. 2017): every critic parameter into [-clip, clip]."""
  return jax.tree.map(lambda p: jnp.clip(p, -clip, clip), params)


def gradient_penalty(critic_fn: Callable, real, fake, key, weight: float = 10.0):
  """Survey Eq. 5 (WGAN-GP, Gulrajani et al. 2017): lambda E (||grad D(x_hat)||_2 - 1)^2.

  x_hat = eps x + (1 - eps) G(z) with one eps ~ U[0, 1] per example. `critic_fn` maps
  images [N, ...] to scores [N] (or [N, 1]); since examples do not interact in it
  (no batch statistics), the gradient of the summed scores gives each example's
  own gradient.
  """
  chex.assert_equal_shape([real, fake])
  eps = jax.random.uniform(key, (real.shape[0],) + (1,) * (real.ndim - 1), real.dtype)
  x_hat = eps * real + (1.0 - eps) * fake
  grads = jax.grad(lambda x: _scores(critic_fn(x)).sum())(x_hat)
  norms = jnp.sqrt(jnp.sum(grads.reshape(grads.shape[0], -1) ** 2, axis=-1) + 1e-12)
  return weight * jnp.mean((norms - 1.0) ** 2)


# ------------------------------------------------------------------ relativistic average (survey Eq. 4)
def relativistic_logits(real_logits, fake_logits) -> Tuple[jnp.ndarray, jnp.ndarray]:
  """Survey Eq. 4 before the sigmoid S: C(x_r) - E C(x_f) and C(x_f) - E C(x_r)."""
  real, fake = _scores(real_logits), _scores(fake_logits)
  return real - fake.mean(), fake - real.mean()


def relativistic_d_loss(real_logits, fake_logits):
  """RaSGAN discriminator (Jolicoeur-Martineau 2019): -E log D_R(x_r) - E log(1 - D_R(x_f))."""
  rel_real, rel_fake = relativistic_logits(real_logits, fake_logits)
  return -log_d(rel_real).mean() - log_one_minus_d(rel_fake).mean()


def relativistic_g_loss(real_logits, fake_logits):
  """RaSGAN generator: the D loss with real and fake swapped, -E log D_R(x_f) - E log(1 - D_R(x_r)).

  The survey gives D_R only (Eq. 4); this symmetric generator loss is the one of the
  paper it cites. Unlike the other generator losses it needs D's outputs on real data.
  """
  rel_real, rel_fake = relativistic_logits(real_logits, fake_logits)
  return -log_d(rel_fake).mean() - log_one_minus_d(rel_real).mean()


# ------------------------------------------------------------------ dispatch by name
def d_adversarial_loss(kind: str, real_logits, fake_logits):
  """The discriminator/critic loss named `kind` (one of ADVERSARIAL_LOSSES)."""
  if kind in ("non_saturating", "minimax"):
    return vanilla_d_loss(real_logits, fake_logits)
  if kind == "relativistic":
    return relativistic_d_loss(real_logits, fake_logits)
  if kind == "wasserstein":
    return wgan_critic_loss(real_logits, fake_logits)
  raise ValueError(f"unknown adversarial loss {kind!r}; valid: {', '.join(ADVERSARIAL_LOSSES)}")


def g_adversarial_loss(kind: str, fake_logits, real_logits=None):
  """The generator loss named `kind`; `real_logits` is used by the relativistic loss only."""
  if kind in ("non_saturating", "minimax"):
    return vanilla_g_loss(fake_logits, kind)
  if kind == "relativistic":
    return relativistic_g_loss(real_logits, fake_logits)
  if kind == "wasserstein":
    return wgan_g_loss(fake_logits)
  raise ValueError(f"unknown adversarial loss {kind!r}; valid: {', '.join(ADVERSARIAL_LOSSES)}")


# ------------------------------------------------------------------ ACGAN (book Eqs. 5.4-5.7)
def _log_q(class_logits, labels):
  """log Q(c | x): the log-probability of the given class under D's class head."""
  chex.assert_rank(class_logits, 2)
  chex.assert_rank(labels, 1)
  return -optax.softmax_cross_entropy_with_integer_labels(class_logits, labels)


def _log_not_q(class_logits, labels):
  """log(1 - Q(c | x)) = logsumexp over the other classes - logsumexp over all (exact and stable)."""
  others = jnp.where(jax.nn.one_hot(labels, class_logits.shape[-1], dtype=bool), -jnp.inf, class_logits)
  return jax.nn.logsumexp(others, axis=-1) - jax.nn.logsumexp(class_logits, axis=-1)


def acgan_g_aux_loss(fake_class_logits, fake_labels):
  """Book Eq. 5.5: -E log Q(c | G(z, c))."""
  return -_log_q(fake_class_logits, fake_labels).mean()


def acgan_d_aux_loss(real_class_logits, real_labels, fake_class_logits, fake_labels, aux_fake: str = "book"):
  """Book Eq. 5.7: -E log Q(c | x) - E log(1 - Q(c | G(z, c))).

  `aux_fake='book'` is Eq. 5.7 as printed: D's class head learns the real classes and
  is pushed *away* from the conditioning class on fakes. `aux_fake='odena'` is the
  original ACGAN (Odena et al. 2017), where D also learns to classify fakes into their
  conditioning class: -E log Q(c | x) - E log Q(c | G(z, c)).
  """
  real_term = -_log_q(real_class_logits, real_labels).mean()
  if aux_fake == "book":
    fake_term = -_log_not_q(fake_class_logits, fake_labels).mean()
  elif aux_fake == "odena":
    fake_term = -_log_q(fake_class_logits, fake_labels).mean()
  else:
    raise ValueError(f"unknown acgan aux_fake {aux_fake!r}; valid: {', '.join(ACGAN_AUX_FAKE)}")
  return real_term + fake_term


def acgan_d_loss(real_logits, fake_logits, real_class_logits, real_labels, fake_class_logits, fake_labels,
                 adversarial: str = "non_saturating", aux_fake: str = "book", aux_weight: float = 1.0
                 ) -> Tuple[jnp.ndarray, Dict[str, jnp.ndarray]]:
  """Book Eq. 5.6 (adversarial, BCE) + `aux_weight` x Eq. 5.7 (auxiliary); returns (total, parts)."""
  adv = d_adversarial_loss(adversarial, real_logits, fake_logits)
  aux = acgan_d_aux_loss(real_class_logits, real_labels, fake_class_logits, fake_labels, aux_fake)
  return adv + aux_weight * aux, {"d_adv": adv, "d_aux": aux}


def acgan_g_loss(fake_logits, fake_class_logits, fake_labels, adversarial: str = "non_saturating",
                 real_logits=None, aux_weight: float = 1.0) -> Tuple[jnp.ndarray, Dict[str, jnp.ndarray]]:
  """Book Eq. 5.4 (adversarial) + `aux_weight` x Eq. 5.5 (auxiliary); returns (total, parts)."""
  adv = g_adversarial_loss(adversarial, fake_logits, real_logits)
  aux = acgan_g_aux_loss(fake_class_logits, fake_labels)
  return adv + aux_weight * aux, {"g_adv": adv, "g_aux": aux}
