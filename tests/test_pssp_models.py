"""PSSP models (book ch. 11): padding invariance, the hoisted-scan recurrences against flax's cells,
and the registry."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlbook import models
from dlbook.models import pssp

_CELL = {"gru": "GRUCell", "lstm": "LSTMCell", "simple": "SimpleCell"}
NAMES = ["pssp_cnn1d", "pssp_cascaded_cnn", "pssp_rnn", "pssp_brnn", "pssp_lstm", "pssp_blstm", "pssp_gru",
         "pssp_bgru", "pssp_inception_bgru", "pssp_attention_inception_bgru"]


def numpy_variables(model, *args, seed=0, **kwargs):
  """Random variables of `model` filled on the host: jitting `model.init` spends most of its compile
  time on the random initialisers, which these tests do not need. Variances stay positive."""
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), *args, **kwargs))
  rng = np.random.default_rng(seed)

  def fill(path, s):
    v = rng.normal(0.0, 0.5, s.shape).astype(np.float32)
    return jnp.asarray(1.0 + np.abs(v) if path[-1].key == "var" else v)

  return jax.tree_util.tree_map_with_path(fill, shapes)


def _flax_to_scan(cell, p):
  """flax cell parameters -> ScanRNN's stacked layout (same equations)."""
  if cell == "gru":
    return {"input_kernel": jnp.concatenate([p[n]["kernel"] for n in ("ir", "iz", "in")], -1),
            "input_bias": jnp.concatenate([p[n]["bias"] for n in ("ir", "iz", "in")]),
            "recurrent_kernel": jnp.concatenate([p[n]["kernel"] for n in ("hr", "hz", "hn")], -1),
            "recurrent_bias": jnp.concatenate([jnp.zeros(2 * p["hn"]["bias"].size), p["hn"]["bias"]])}
  if cell == "lstm":
    return {"input_kernel": jnp.concatenate([p[n]["kernel"] for n in ("ii", "if", "ig", "io")], -1),
            "input_bias": jnp.zeros(4 * p["hi"]["bias"].size),
            "recurrent_kernel": jnp.concatenate([p[n]["kernel"] for n in ("hi", "hf", "hg", "ho")], -1),
            "recurrent_bias": jnp.concatenate([p[n]["bias"] for n in ("hi", "hf", "hg", "ho")])}
  return {"input_kernel": p["i"]["kernel"], "input_bias": p["i"]["bias"], "recurrent_kernel": p["h"]["kernel"],
          "recurrent_bias": jnp.zeros_like(p["i"]["bias"])}


@pytest.mark.parametrize("cell", pssp.CELLS)
def test_scan_recurrence_equals_flax_rnn(cell):
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 9, 5))
  mask = (jnp.arange(9)[None] < jnp.array([9, 4, 1])[:, None]).astype(jnp.float32)
  ref = pssp.Recurrent(cell, 6, True, "flax")
  fast = pssp.Recurrent(cell, 6, True, "scan", unroll=2)

  variables = numpy_variables(ref, x, mask)

  @jax.jit
  def both(variables):  # one compile for everything
    p = variables["params"]
    scan_params = {"ScanRNN_0": _flax_to_scan(cell, p["forward_rnn"]["cell"] if "forward_rnn" in p else p[f"{_CELL[cell]}_0"]),
                   "ScanRNN_1": _flax_to_scan(cell, p["backward_rnn"]["cell"] if "backward_rnn" in p else p[f"{_CELL[cell]}_1"])}
    single = fast.apply({"params": scan_params}, x[1:2, 3:4], jnp.ones((1, 1)))
    return ref.apply(variables, x, mask), fast.apply({"params": scan_params}, x, mask), single

  y_ref, y, single = both(variables)
  m = mask[..., None] > 0
  np.testing.assert_allclose(jnp.where(m, y, 0), jnp.where(m, y_ref, 0), rtol=2e-5, atol=2e-5)
  # The backward direction of a 4-residue protein starts at residue 4: its last real output has seen
  # only that residue, so it equals a 1-residue run of the backward cell alone.
  np.testing.assert_allclose(y[1, 3, 6:], single[0, 0, 6:], rtol=2e-5, atol=2e-5)


def test_bidirectional_model_ignores_padding_length():
  model = models.build("pssp_attention_inception_bgru", inception_filters=4, conv_filters=6, units=5,
                       dense_units=7, dropout=0.0)
  n = 250
  protein = jax.random.normal(jax.random.PRNGKey(2), (n, 21))
  other = jax.random.normal(jax.random.PRNGKey(3), (700, 21))

  def batch(length):
    x = jnp.zeros((2, length, 21)).at[0, :n].set(protein).at[1].set(other[:length])
    mask = jnp.zeros((2, length)).at[0, :n].set(1).at[1, :120].set(1)
    return x * mask[..., None], mask

  def run(variables, x, mask):
    eval_out = model.apply(variables, x, mask, train=False)
    train_out, updates = model.apply(variables, x, mask, train=True, mutable=["batch_stats"])
    return eval_out, train_out, updates["batch_stats"]

  # Random running statistics and a non-zero alpha, so that every path matters.
  variables = numpy_variables(model, *batch(300))

  @jax.jit
  def both(variables, b300, b700):  # one compile: train and eval mode at both paddings
    return run(variables, *b300), run(variables, *b700)

  (e300, t300, s300), (e700, t700, s700) = both(variables, batch(300), batch(700))
  np.testing.assert_allclose(e300[0, :n], e700[0, :n], rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(t300[0, :n], t700[0, :n], rtol=1e-4, atol=1e-4)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), s300, s700)
  assert not np.allclose(e300[0, :n], e300[1, :n])


def test_attention_block_starts_as_identity():
  block = pssp.AttentionBlock()
  x = jax.random.normal(jax.random.PRNGKey(5), (2, 6, 4))
  mask = jnp.ones((2, 6))

  @jax.jit
  def init_apply(key):
    variables = block.init(key, x, mask, train=False)
    return variables["params"]["alpha"], block.apply(variables, x, mask, train=False)

  alpha, y = init_apply(jax.random.PRNGKey(6))
  assert alpha == 0
  np.testing.assert_allclose(y, x)


def _count(name, features=42, **kwargs):
  model = models.build(name, **kwargs)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, features))))
  return sum(int(np.prod(v.shape)) for v in jax.tree_util.tree_leaves(shapes["params"])), shapes


def test_registry_and_table_11_1_widths():
  for name in NAMES:
    assert name in models.names()
  # 2 layers of parallel Conv(3) + Conv(5), 42 filters each, on 42 features; BN scale and bias; dense to 8.
  n, _ = _count("pssp_cnn1d", num_layers=2)
  assert n == (3 * 42 * 42 + 5 * 42 * 42 + 4 * 42) + (3 * 84 * 42 + 5 * 84 * 42 + 4 * 42) + (84 * 8 + 8)
  n3, _ = _count("pssp_cnn1d", num_layers=3, kernel_sizes=(3, 5, 7))
  assert n3 == (15 * 42 * 42 + 6 * 42) + 2 * (15 * 126 * 42 + 6 * 42) + (126 * 8 + 8)
  # flax's cells: GRU 3 gates + 4 biases (input r, z, n and hidden n), LSTM 4 gates + 4 biases, simple
  # 1 gate + 1 bias; a bidirectional layer doubles them. The hoisted scan has 2 biases per gate.
  for name, gates, biases, directions in (("pssp_gru", 3, 4, 1), ("pssp_blstm", 4, 4, 2), ("pssp_rnn", 1, 1, 1)):
    n, _ = _count(name, units=10, features=21)
    assert n == directions * (gates * (21 * 10 + 10 * 10) + biases * 10) + (directions * 10 * 8 + 8)
    n, _ = _count(name, units=10, features=21, rnn_impl="scan")
    assert n == directions * gates * (21 * 10 + 10 * 10 + 2 * 10) + (directions * 10 * 8 + 8)
  _, shapes = _count("pssp_attention_inception_bgru", units=16)
  assert shapes["params"]["Dense_0"]["kernel"].shape == (4 * 16, 128)  # two attended BGRU outputs concatenated
