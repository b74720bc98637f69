"""DARTS bilevel optimisation (dlbook.nas.darts.bilevel): exact vs finite-difference hypergradients."""

import functools

import flax.linen as nn
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


class SmoothMixture(nn.Module):
  """A small smooth stand-in for the supernet with its interface (top-level `alphas_normal` /
  `alphas_reduce`, BatchNorm statistics, `__call__(x, train)`): dense layers whose outputs are
  softmax(alpha)-weighted mixtures of tanh, softplus and identity candidates."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    init = nn.initializers.normal(0.5)
    weights = {"normal": jax.nn.softmax(self.param("alphas_normal", init, (2, 3)), -1),
               "reduce": jax.nn.softmax(self.param("alphas_reduce", init, (1, 3)), -1)}
    h = nn.Dense(12, name="stem")(x.reshape(x.shape[0], -1))
    h = nn.BatchNorm(use_running_average=not train, momentum=0.9, name="bn")(h)
    for name, width in (("normal", 12), ("reduce", 8)):
      for e, w in enumerate(weights[name]):
        candidates = (jnp.tanh(nn.Dense(width, name=f"{name}_{e}_tanh")(h)),
                      nn.softplus(nn.Dense(width, name=f"{name}_{e}_softplus")(h)),
                      nn.Dense(width, use_bias=False, name=f"{name}_{e}_linear")(h))
        h = sum(w[k] * c for k, c in enumerate(candidates))
    return nn.Dense(3, name="classifier")(h)


@functools.lru_cache(maxsize=None)
def smooth_problem():
  model = SmoothMixture()
  rng = np.random.default_rng(1)
  batch = lambda: (jnp.asarray(rng.standard_normal((16, 4, 4, 1)), jnp.float32),
                   jnp.asarray(rng.integers(0, 3, 16), jnp.int32))
  variables = model.init(jax.random.key(0), jnp.zeros((2, 4, 4, 1)))
  weights, alphas = split_arch(variables["params"])
  trace = jax.tree.map(lambda w: 0.1 * jnp.ones_like(w), weights)
  return model, weights, alphas, variables["batch_stats"], batch(), batch(), trace


@pytest.mark.slow  # long: runs with DLBOOK_SLOW=1 (keeps the CI suite in its time budget)
def test_exact_hypergradient_equals_numerical_derivative_and_finite_difference():
  """On a smooth network (no ReLU, max or BatchNorm on tiny maps) the unrolled objective
  F(alpha) = L_val(w - xi (mu m + grad_w L_train(w, alpha) + lambda w), alpha) is smooth, so central
  differences of F check the exact hypergradient, and the reference's finite-difference
  Hessian-vector product must agree with it. (On the 2-channel supernet of `tiny_problem`, F and
  grad_alpha L_train jump wherever a ReLU or max flips; their finite differences do not converge as
  the step shrinks, so they cannot check anything there: docs/darts.md.)"""
  model, weights, alphas, batch_stats, train, val, trace = smooth_problem()
  xi, momentum, wd = 0.5, 0.9, 3e-4  # a large xi makes the second-order term a large part of the gradient
  args = (model.apply, weights, alphas, batch_stats, train, val, xi, trace, momentum, wd)
  exact, val_loss = jax.jit(bilevel.exact_alpha_grad, static_argnums=0)(*args)
  fd, val_loss_fd = jax.jit(bilevel.finite_difference_alpha_grad, static_argnums=0)(*args)
  flat = lambda t: np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(t)]).astype(np.float64)

  def unrolled_objective(a):
    w_prime = bilevel.unrolled_weights(model.apply, weights, a, batch_stats, train, xi, trace, momentum, wd)
    return bilevel.train_loss(model.apply, w_prime, a, batch_stats, *val)[0], w_prime

  objective = jax.jit(lambda a: unrolled_objective(a)[0])
  np.testing.assert_allclose(val_loss, objective(alphas), rtol=1e-6)
  np.testing.assert_allclose(val_loss_fd, val_loss, rtol=1e-6)
  # 1. The exact hypergradient is the derivative of F: central differences along random directions.
  h = 1e-2
  for i in range(3):
    d = jax.tree.map(lambda a: jax.random.normal(jax.random.key(10 + i), a.shape), alphas)
    step = lambda s: jax.tree.map(lambda a, b: a + s * h * b, alphas, d)
    numerical = (float(objective(step(1.0))) - float(objective(step(-1.0)))) / (2 * h)
    np.testing.assert_allclose(flat(exact) @ flat(d), numerical, rtol=2e-3, atol=1e-5)
  # 2. The finite-difference Hessian-vector product agrees with it on the second-order part.
  w_prime = unrolled_objective(alphas)[1]
  direct = flat(jax.grad(lambda a: bilevel.train_loss(model.apply, w_prime, a, batch_stats, *val)[0])(alphas))
  second_exact, second_fd = flat(exact) - direct, flat(fd) - direct
  assert np.linalg.norm(second_exact) > 0.1 * np.linalg.norm(direct)  # the test is not trivial
  np.testing.assert_allclose(second_fd, second_exact, rtol=1e-2, atol=1e-3 * np.abs(second_exact).max())


@pytest.mark.slow
def test_exact_hypergradient_on_the_supernet_equals_float64_central_differences():
  """The exact second-order hypergradient of the real supernet (3 cells, 1 node, 2 channels, all 8 ops)
  is the derivative of the unrolled objective. F is only piecewise smooth there (ReLUs, maxes and
  BatchNorm on 2x2 maps), so central differences need float64 and a step below the kink spacing:
  measured, they agree with the exact value to ~8 digits at h = 1e-6 and are off at h = 1e-3."""
  with jax.enable_x64(True):
    model = models.build("darts_search", num_classes=3, init_channels=2, layers=3, steps=1, multiplier=1)
    rng = np.random.default_rng(0)
    batch = lambda: (jnp.asarray(rng.standard_normal((6, 8, 8, 1))), jnp.asarray(rng.integers(0, 3, 6), jnp.int32))
    variables = model.init({"params": jax.random.key(0)}, jnp.zeros((2, 8, 8, 1)), train=False)
    variables = jax.tree.map(lambda a: a.astype(jnp.float64), variables)
    weights, alphas = split_arch(variables["params"])
    alphas = jax.tree.map(lambda a: a + 0.3 * jax.random.normal(jax.random.key(1), a.shape, jnp.float64), alphas)
    train, val, bs = batch(), batch(), variables["batch_stats"]
    xi, momentum, wd = 0.5, 0.9, 3e-4
    trace = jax.tree.map(lambda w: 0.1 * jnp.ones_like(w), weights)
    exact, _ = jax.jit(bilevel.exact_alpha_grad, static_argnums=0)(model.apply, weights, alphas, bs, train, val, xi,
                                                                   trace, momentum, wd)
    objective = jax.jit(lambda a: bilevel.train_loss(model.apply, bilevel.unrolled_weights(
        model.apply, weights, a, bs, train, xi, trace, momentum, wd), a, bs, *val)[0])
    h = 1e-6
    for key in jax.random.split(jax.random.key(7), 3)[:2]:  # the directions measured above
      d = jax.tree.map(lambda a: jax.random.normal(key, a.shape, jnp.float64), alphas)
      step = lambda s: jax.tree.map(lambda a, b: a + s * h * b, alphas, d)
      numerical = (float(objective(step(1.0))) - float(objective(step(-1.0)))) / (2 * h)
      analytic = sum(float(jnp.vdot(g, v)) for g, v in zip(jax.tree_util.tree_leaves(exact), jax.tree_util.tree_leaves(d)))
      np.testing.assert_allclose(analytic, numerical, rtol=1e-5, atol=1e-8)


def make_state(model, weights, alphas, batch_stats, total_steps=10):
  w_cfg = ml_collections.ConfigDict(dict(name="sgd", learning_rate=0.025, schedule="cosine", final_learning_rate=0.001,
                                         momentum=0.9, weight_decay=3e-4, grad_clip_norm=5.0))
  a_cfg = ml_collections.ConfigDict(dict(name="adam", learning_rate=3e-4, b1=0.5, b2=0.999, weight_decay=1e-3))
  variables = {"params": {**weights, **alphas}, "batch_stats": batch_stats}
  state = bilevel.SearchState.create(model.apply, variables, optim.make_optimizer(w_cfg, total_steps),
                                     optim.make_optimizer(a_cfg, total_steps))
  return state, optim.make_schedule(w_cfg, total_steps)


@pytest.mark.slow  # minutes on 2 shared cores (compiles a supernet); DLBOOK_SLOW=1
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
  assert optax.tree.norm(trace) > 0


def test_first_order_gradient_is_the_validation_gradient():
  """First order: grad_alpha L_val at the current weights (no unrolling), checked by central differences
  on the smooth network (the supernet's loss is only piecewise smooth: see the slow test above)."""
  model, weights, alphas, batch_stats, train, val, _ = smooth_problem()
  grad, val_loss = bilevel.first_order_alpha_grad(model.apply, weights, alphas, batch_stats, val)
  loss = jax.jit(lambda a: bilevel.train_loss(model.apply, weights, a, batch_stats, *val)[0])
  np.testing.assert_allclose(val_loss, loss(alphas), rtol=1e-6)
  h = 1e-2
  e = jnp.zeros_like(alphas["alphas_normal"]).at[1, 2].set(h)
  fd = (loss(dict(alphas, alphas_normal=alphas["alphas_normal"] + e)) -
        loss(dict(alphas, alphas_normal=alphas["alphas_normal"] - e))) / (2 * h)
  np.testing.assert_allclose(grad["alphas_normal"][1, 2], fd, rtol=2e-3, atol=1e-6)
  assert abs(float(fd)) > 1e-3
  train_grad, _ = bilevel.first_order_alpha_grad(model.apply, weights, alphas, batch_stats, train)
  assert not np.allclose(train_grad["alphas_normal"], grad["alphas_normal"])  # it reads the batch it is given


def test_bad_settings_are_user_errors():
  with pytest.raises(DlbookError, match="order 3"):
    bilevel.check_settings(3, "exact")
  with pytest.raises(DlbookError, match="hessian 'newton'"):
    bilevel.make_search_step(2, optax.constant_schedule(0.1), 0.9, 0.0, hessian="newton")


@pytest.mark.slow  # 2 min on 2 cores (compiles the exact second-order step twice); DLBOOK_SLOW=1
def test_rematerialised_edges_give_the_same_exact_hypergradient():
  """`remat_edges` (what makes the exact second order fit in memory at batch 64) changes only what is
  kept for the backward pass: the exact hypergradient and the unrolled loss are the same."""
  rng = np.random.default_rng(0)
  train = (jnp.asarray(rng.standard_normal((4, 8, 8, 1)), jnp.float32), jnp.asarray(rng.integers(0, 3, 4), jnp.int32))
  val = (jnp.asarray(rng.standard_normal((4, 8, 8, 1)), jnp.float32), jnp.asarray(rng.integers(0, 3, 4), jnp.int32))
  results = []
  for remat in (False, True):
    model = models.build("darts_search", num_classes=3, init_channels=2, layers=3, steps=1, multiplier=1,
                         remat_edges=remat)
    variables = model.init({"params": jax.random.key(0)}, jnp.zeros((2, 8, 8, 1)), train=False)
    weights, alphas = split_arch(variables["params"])
    alphas = jax.tree.map(lambda a: a + 0.3 * jax.random.normal(jax.random.key(1), a.shape), alphas)
    trace = jax.tree.map(lambda w: 0.1 * jnp.ones_like(w), weights)
    results.append(jax.jit(bilevel.exact_alpha_grad, static_argnums=0)(
        model.apply, weights, alphas, variables["batch_stats"], train, val, 0.5, trace, 0.9, 3e-4))
  (g0, l0), (g1, l1) = results
  np.testing.assert_allclose(float(l1), float(l0), rtol=1e-6)
  assert float(optax.tree.norm(g0)) > 0
  for a, b in zip(jax.tree_util.tree_leaves(g0), jax.tree_util.tree_leaves(g1)):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-6)  # float32 rounding of a different op order


def test_shared_first_order_pass_equals_the_two_separate_passes():
  """passes="shared" (one scanned, differentiated program for the alpha and weight passes) gives the
  separate passes' alphas, weights, BatchNorm statistics, optimizer states and metrics over three steps."""
  model, weights, alphas, batch_stats, train, val, _ = smooth_problem()
  state, schedule = make_state(model, weights, alphas, batch_stats)
  tb, vb = [{"image": b[0], "label": b[1]} for b in (train, val)]
  runs = {}
  for passes in bilevel.PASSES:
    step = jax.jit(bilevel.make_search_step(1, schedule, 0.9, 3e-4, "exact", passes=passes))
    s, history = state, []
    for _ in range(3):
      s, m = step(s, tb, vb)
      history.append(m)
    runs[passes] = (s, history)
  (s_sep, m_sep), (s_sh, m_sh) = runs["separate"], runs["shared"]
  for a, b in zip(jax.tree_util.tree_leaves(s_sep), jax.tree_util.tree_leaves(s_sh)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=1e-6)
  for a, b in zip(m_sep, m_sh):
    for k in a:
      np.testing.assert_allclose(a[k], b[k], rtol=2e-5, atol=1e-6)
  assert not np.allclose(s_sh.alphas["alphas_normal"], state.alphas["alphas_normal"])   # both moved
  assert not np.allclose(s_sh.weights["classifier"]["kernel"], state.weights["classifier"]["kernel"])
  # the weight pass reads the alphas of the alpha pass: with the alpha update suppressed, weights differ
  frozen = state.replace(a_tx=optax.set_to_zero())
  s_frozen, _ = jax.jit(bilevel.make_search_step(1, schedule, 0.9, 3e-4, "exact", passes="shared"))(frozen, tb, vb)
  s_one, _ = jax.jit(bilevel.make_search_step(1, schedule, 0.9, 3e-4, "exact", passes="shared"))(state, tb, vb)
  assert not np.allclose(s_frozen.weights["stem"]["kernel"], s_one.weights["stem"]["kernel"], rtol=0, atol=1e-9)


def test_shared_passes_are_first_order_only():
  with pytest.raises(DlbookError, match="first order only"):
    bilevel.make_search_step(2, optax.constant_schedule(0.1), 0.9, 0.0, passes="shared")
  assert [bilevel.resolve_passes("auto", o, b) for o, b in ((1, "cpu"), (1, "gpu"), (2, "gpu"), (1, "tpu"))] == \
      ["separate", "shared", "separate", "shared"]
  with pytest.raises(DlbookError, match="passes must be one of"):
    bilevel.make_search_step(1, optax.constant_schedule(0.1), 0.9, 0.0, passes="fused")
