"""PSSP train step and evaluation (book ch. 11) on a tiny model."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dlbook import data, models
from dlbook.data.proteins import SequenceSplit
from dlbook.medical import pssp
from dlbook.metrics.sequence import sequence_metrics
from dlbook.training.state import create_train_state


def _split(n=5, length=24, features=6, seed=0):
  rng = np.random.default_rng(seed)
  lengths = rng.integers(3, length + 1, n)
  mask = (np.arange(length)[None] < lengths[:, None]).astype(np.float32)
  labels = (rng.integers(0, 8, (n, length)) * mask).astype(np.int32)
  # Features carry the label so a model can learn it.
  x = np.eye(8, features, dtype=np.float32)[labels] + 0.1 * rng.normal(size=(n, length, features)).astype(np.float32)
  return SequenceSplit(x * mask[..., None], labels, mask, tuple(f"p{i}" for i in range(n)))


def test_masked_cross_entropy_ignores_padding():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(3, 7, 8)).astype(np.float32)
  labels = rng.integers(0, 8, (3, 7))
  mask = (np.arange(7)[None] < np.array([7, 2, 5])[:, None]).astype(np.float32)
  m = mask > 0
  log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  expected = -np.mean(np.take_along_axis(log_p, labels[..., None], -1)[..., 0][m])
  assert float(pssp.masked_cross_entropy(logits, labels, mask)) == pytest.approx(expected, rel=1e-5)
  noisy = np.where(m[..., None], logits, 50.0 * rng.normal(size=logits.shape)).astype(np.float32)
  assert float(pssp.masked_cross_entropy(noisy, labels, mask)) == pytest.approx(expected, rel=1e-5)


def test_train_step_learns_and_evaluate_reports_book_metrics():
  split = _split()
  model = models.build("pssp_cnn1d", num_layers=1, kernel_sizes=(3,), filters=8, dropout=0.0)
  state = create_train_state(model, jax.random.PRNGKey(0), (1, 24, 6), optax.adam(0.05))
  step = jax.jit(pssp.make_train_step())
  losses = []
  for i, (_, batch) in enumerate(data.train_batches(split, 4, seed=0, num_steps=25)):
    state, metrics = step(state, batch, jax.random.PRNGKey(i))
    losses.append(float(metrics["loss"]))
  assert losses[-1] < 0.5 * losses[0]
  eval_fn = jax.jit(pssp.eval_step)
  result = pssp.evaluate(state, data.eval_batches(split, 3), eval_fn)  # 5 proteins: the last batch is padded
  preds = np.concatenate([np.asarray(eval_fn(state, b)["pred"]) for b in data.eval_batches(split, 3)])[:5]
  expected = sequence_metrics(split.labels, preds, split.mask)
  for key in ("q8", "q3", "sov99_q3", "sov99_q8_pooled", "sov_book_q3", "confusion_q8"):
    assert result[key] == expected[key]
  assert result["proteins"] == 5 and result["residues"] == int(split.mask.sum())
  assert result["q8"] > 90.0
  baseline = pssp.majority_baseline(split, split)
  assert baseline["q8"] < result["q8"]


@pytest.mark.slow
def test_cnn_learns_real_pdb_dssp_chains():
  """Learning on real proteins: a 2-layer 1D-CNN on pdb_dssp beats the majority class on held-out chains."""
  from dlbook.data import build_pdb_dssp
  if not build_pdb_dssp.is_built(build_pdb_dssp.DEFAULT_DIR):
    pytest.skip("pdb_dssp not built; run python -m dlbook.data.build_pdb_dssp --fetch")
  d = data.load_raw("pdb_dssp", max_length=600)
  model = models.build("pssp_cnn1d", num_layers=2, dropout=0.4)
  state = create_train_state(model, jax.random.PRNGKey(0), (1, 600, d.num_features), optax.adam(3e-3))
  step = jax.jit(pssp.make_train_step())
  for i, batch in data.train_batches(d.train, 8, seed=0, num_steps=150):
    state, _ = step(state, batch, jax.random.PRNGKey(i))
  result = pssp.evaluate(state, data.eval_batches(d.test, 8))
  baseline = pssp.majority_baseline(d.train, d.test)
  print(f"pdb_dssp 1D-CNN: Q8 {result['q8']:.1f} Q3 {result['q3']:.1f} SOV'99 Q3 {result['sov99_q3']:.1f}; "
        f"majority Q8 {baseline['q8']:.1f} Q3 {baseline['q3']:.1f}")
  assert result["q8"] > baseline["q8"] + 5 and result["q3"] > baseline["q3"] + 5
