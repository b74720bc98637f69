"""DARTS bilevel optimisation (dlbook.nas.darts.bilevel): exact vs finite-difference hypergradients."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from dlbook import models
from dlbook.errors import DlbookError
from dlbook.models.darts.search_network import split_arch
from dlbook.nas.darts import bilevel
from dlbook.training import optim


@functools.lru_cache(maxsize=None)
def tiny_problem():
  """A 3-cell, 2-node, 2-channel supernet on 8x8 inputs, and a train and a val batch."""
  model = models.build("darts_search", num_classes=3, init_channels=2, layers=3, steps=2, multiplier=2)
  rng = np.random.default_rng(0)
  batch = lambda: {"image": jnp.asarray(rng.standard_normal((6, 8, 8, 1)), jnp.float32),
                   "label": jnp.asarray(rng.integers(0, 3, 6), jnp.int32)}
  variables = model.init({"params": jax.random.key(0)}, jnp.zeros((2, 8, 8, 1)), train=False)
  weights, alphas = split_arch(variables["params"])
  alphas = jax.tree.map(lambda a: a + 0.3 * jax.random.normal(jax.random.key(1), a.shape), alphas)
  return model, weights, alphas, variables["batch_stats"], batch(), batch()


def test_exact_and_finite_difference_hypergradients_agree():
  model, weights, alphas, batch_stats, tb, vb = tiny_problem()
  train, val = (tb["image"], tb["label"]), (vb["image"], vb["label"])
  xi, momentum, wd = 0.5, 0.9, 3e-4  # a large xi makes the second-order term a large part of the gradient
  trace = jax.tree.map(lambda w: 0.1 * jnp.ones_like(w), weights)
  args = (model.apply, weights, alphas, batch_stats, train, val, xi, trace, momentum, wd)
  exact, val_loss = jax.jit(bilevel.exact_alpha_grad, static_argnums=0)(*args)
  fd, val_loss_fd = jax.jit(bilevel.finite_difference_alpha_grad, static_argnums=0)(*args)
  # The first-order part, grad_alpha L_val(w', alpha) at the unrolled weights, is common to both.
  w_prime = bilevel.unrolled_weights(model.apply, weights, alphas, batch_stats, train, xi, trace, momentum, wd)
  direct = jax.grad(lambda a: bilevel.train_loss(model.apply, w_prime, a, batch_stats, *val)[0])(alphas)
  flat = lambda t: np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(t)])
  second_exact = flat(exact) - flat(direct)
  second_fd = flat(fd) - flat(direct)
  assert np.linalg.norm(second_exact) > 0.1 * np.linalg.norm(flat(direct))  # the test is not trivial
  np.testing.assert_allclose(val_loss, val_loss_fd, rtol=1e-6)
  cosine = second_exact @ second_fd / (np.linalg.norm(second_exact) * np.linalg.norm(second_fd))
  assert cosine > 0.999
  np.testing.assert_allclose(second_fd, second_exact, rtol=0.05, atol=0.02 * np.abs(second_exact).max())


def make_state(model, weights, alphas, batch_stats, total_steps=10):
  w_cfg = ml_collections.ConfigDict(dict(name="sgd", learning_rate=0.025, schedule="cosine", final_learning_rate=0.001,
                                         momentum=0.9, weight_decay=3e-4, grad_clip_norm=5.0))
  a_cfg = ml_collections.ConfigDict(dict(name="adam", learning_rate=3e-4, b1=0.5, b2=0.999, weight_decay=1e-3))
  variables = {"params": {**weights, **alphas}, "batch_stats": batch_stats}
  state = bilevel.SearchState.create(model.apply, variables, optim.make_optimizer(w_cfg, total_steps),
                                     optim.make_optimizer(a_cfg, total_steps))
  return state, optim.make_schedule(w_cfg, total_steps)


@pytest.mark.parametrize("order", [1, 2])
def test_search_step_updates_alphas_and_weights_deterministically(order):
  model, weights, alphas, batch_stats, tb, vb = tiny_problem()
  state, schedule = make_state(model, weights, alphas, batch_stats)
  step = jax.jit(bilevel.make_search_step(order, schedule, 0.9, 3e-4, "exact",
                                          ml_collections.ConfigDict(dict(crop_pad=1))))
  s1, m1 = step(state, tb, vb, jax.random.key(3))
  s1b, _ = step(state, tb, vb, jax.random.key(3))
  assert int(s1.step) == 1 and np.isfinite(float(m1["loss"])) and np.isfinite(float(m1["val_loss"]))
  assert float(m1["alpha_grad_norm"]) > 0
  # Adam's first step moves every alpha entry with a nonzero gradient by about the learning rate.
  delta = np.abs(np.asarray(s1.alphas["alphas_normal"] - state.alphas["alphas_normal"]))
  assert 1e-4 < delta.max() < 1e-3
  assert not np.allclose(s1.weights["classifier"]["kernel"], state.weights["classifier"]["kernel"])
  for a, b in zip(jax.tree_util.tree_leaves(s1), jax.tree_util.tree_leaves(s1b)):
    np.testing.assert_array_equal(a, b)
  # The momentum trace the unrolled step reads is the SGD optimizer's own.
  trace = bilevel.momentum_buffer(s1.w_opt_state, s1.weights)
  assert optax.global_norm(trace) > 0


def test_first_order_gradient_is_the_validation_gradient():
  model, weights, alphas, batch_stats, _, vb = tiny_problem()
  val = (vb["image"], vb["label"])
  grad, _ = bilevel.first_order_alpha_grad(model.apply, weights, alphas, batch_stats, val)
  loss = lambda a: bilevel.train_loss(model.apply, weights, a, batch_stats, *val)[0]
  eps = 1e-2
  e = jnp.zeros_like(alphas["alphas_normal"]).at[1, 4].set(eps)
  fd = (loss(dict(alphas, alphas_normal=alphas["alphas_normal"] + e)) -
        loss(dict(alphas, alphas_normal=alphas["alphas_normal"] - e))) / (2 * eps)
  np.testing.assert_allclose(grad["alphas_normal"][1, 4], fd, rtol=0.02, atol=1e-5)


def test_bad_settings_are_user_errors():
  with pytest.raises(DlbookError, match="order 3"):
    bilevel.check_settings(3, "exact")
  with pytest.raises(DlbookError, match="hessian 'newton'"):
    bilevel.make_search_step(2, optax.constant_schedule(0.1), 0.9, 0.0, hessian="newton")
