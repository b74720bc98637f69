"""Artificial astrocytes (thesis seed 001 ch. 4): no-op settings are bit-identical to the plain CNN,
and a hand-built layer is scaled exactly when its counter crosses ±AS at step NG."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dlbook.errors import DlbookError
from dlbook.training import create_train_state, make_train_step
from dlbook.training.astrocytes import (AstrocyteConfig, create_astrocyte_train_state, kernel_norms,
                                        make_astrocyte_train_step, modulate)


class SmallCNN(nn.Module):
  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Conv(6, (3, 3), name="conv1")(x)
    x = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
    x = nn.relu(nn.Conv(5, (3, 3), strides=2)(x))
    x = nn.Dropout(0.3, deterministic=not train)(x.mean(axis=(1, 2)))
    return nn.Dense(3)(x)


def _batches(n=6):
  rng = np.random.default_rng(0)
  return [{"image": jnp.asarray(rng.normal(size=(8, 8, 8, 1)), jnp.float32),
           "label": jnp.asarray(rng.integers(0, 3, 8), jnp.int32)} for _ in range(n)]


def _train(state, step, batches):
  step = jax.jit(step)
  for i, batch in enumerate(batches):
    state, _ = step(state, batch, jax.random.PRNGKey(100 + i))
  return state


def test_noop_astrocytes_are_bit_identical_to_the_plain_cnn():
  model, tx, shape = SmallCNN(), optax.adam(1e-2), (1, 8, 8, 1)
  batches = _batches(5)  # crosses NG = 4 once
  plain = _train(create_train_state(model, jax.random.PRNGKey(0), shape, tx), make_train_step(), batches)
  for config in (AstrocyteConfig(strong=1.0, weak=1.0), AstrocyteConfig(strong=1.5, weak=0.5, mode="reference_noop")):
    astro_state = create_astrocyte_train_state(model, jax.random.PRNGKey(0), shape, tx)
    astro = _train(astro_state, make_astrocyte_train_step(config), batches)
    jax.tree.map(np.testing.assert_array_equal, plain.params, astro.params)
    jax.tree.map(np.testing.assert_array_equal, plain.batch_stats, astro.batch_stats)
    assert int(astro.astrocytes["conv1"]["count"]) == 1  # reset at step 4, then one more
    assert float(np.abs(astro.astrocytes["conv1"]["activity"]).sum()) > 0


class OneConv(nn.Module):
  @nn.compact
  def __call__(self, x, train: bool = False):
    y = nn.Conv(4, (1, 1), name="conv")(x)
    return nn.Dense(2)(y.mean(axis=(1, 2)))


def test_hand_built_layer_is_scaled_exactly_at_step_ng():
  # x = 1 everywhere, 1x1 kernel [5, -5, 0.05, -0.3], bias 0: per step the filters add
  # tanh(2*5) ~ +1, tanh(-10) ~ -1, tanh(0.1), tanh(-0.6) to A (batch of 2).
  config = AstrocyteConfig(ng=4, sensitivity=2.0, strong=1.25, weak=0.5)
  model = OneConv()
  state = create_astrocyte_train_state(model, jax.random.PRNGKey(0), (1, 3, 3, 1), optax.sgd(0.0))
  kernel = jnp.array([5.0, -5.0, 0.05, -0.3]).reshape(1, 1, 1, 4)
  params = dict(state.params, conv={"kernel": kernel, "bias": jnp.zeros(4)})
  state = state.replace(params=params)
  batch = {"image": jnp.ones((2, 3, 3, 1)), "label": jnp.array([0, 1])}
  step = jax.jit(make_astrocyte_train_step(config))
  per_step = np.tanh(2 * np.array([5.0, -5.0, 0.05, -0.3]))
  for i in range(1, 9):
    state, metrics = step(state, batch, jax.random.PRNGKey(i))
    a = np.asarray(state.astrocytes["conv"]["activity"])
    got = np.asarray(state.params["conv"]["kernel"]).ravel()
    if i < 4:  # counters past +-AS already at step 3, but nothing happens before step NG
      np.testing.assert_allclose(a, i * per_step, rtol=1e-6)
      np.testing.assert_array_equal(got, kernel.ravel())
      assert float(metrics["astro_fraction_strong"]) == 0.0
    elif i == 4:  # A = [~4, ~-4, 0.4, -2.2]: Str, Weak, unchanged, Weak; then reset
      np.testing.assert_array_equal(got, np.float32([5.0 * 1.25, -5.0 * 0.5, 0.05, -0.3 * 0.5]))
      np.testing.assert_array_equal(a, 0.0)
      assert float(metrics["astro_fraction_strong"]) == 0.25 and float(metrics["astro_fraction_weak"]) == 0.5
  np.testing.assert_array_equal(state.params["conv"]["bias"], 0.0)  # the bias is never modulated
  # second period (steps 5-8) with the scaled kernel: filters 0 and 1 cross again; filter 3 now adds
  # 4 tanh(-0.3) = -1.17 > -AS and stays.
  np.testing.assert_allclose(np.asarray(state.params["conv"]["kernel"]).ravel(),
                             [5.0 * 1.25 ** 2, -5.0 * 0.25, 0.05, -0.3 * 0.5], rtol=1e-6)
  norms = kernel_norms(state.params, state.astrocytes)["conv"]
  np.testing.assert_allclose(norms, np.abs(np.asarray(state.params["conv"]["kernel"]).ravel()), rtol=1e-6)


def test_modulate_is_pure_and_waits_for_ng():
  params = {"c": {"kernel": jnp.ones((1, 1, 1, 2)), "bias": jnp.ones(2)}}
  astro = {"c": {"activity": jnp.array([3.0, -3.0]), "count": jnp.array(3)}}
  p, a, _ = modulate(params, astro, AstrocyteConfig(strong=2.0, weak=0.5))
  np.testing.assert_array_equal(p["c"]["kernel"], params["c"]["kernel"])
  np.testing.assert_array_equal(a["c"]["activity"], [3.0, -3.0])  # not due yet: kept
  p, a, _ = modulate(params, {"c": dict(astro["c"], count=jnp.array(4))}, AstrocyteConfig(strong=2.0, weak=0.5))
  np.testing.assert_array_equal(p["c"]["kernel"].ravel(), [2.0, 0.5])
  np.testing.assert_array_equal(params["c"]["kernel"].ravel(), [1.0, 1.0])  # input untouched
  with pytest.raises(DlbookError, match="unknown astrocyte mode"):
    AstrocyteConfig(mode="paper")
