"""Leukaemia pipeline (seed 003): subject-disjoint folds from the C-NMC layout or the labelled stand-in,
fold-restarting cosine schedule, the one-logit binary loss, the augmentations it adds, and the
launcher end to end (slow)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, log_loss, roc_auc_score

from configs import leukaemia as leukaemia_config
from dlbook.data import augment
from dlbook.errors import DlbookError
from dlbook.medical import leukaemia
from dlbook.training import optim, transfer
from dlbook.training.steps import binary_cross_entropy, predicted_labels
from tests.conftest import run_launcher
from tests.test_medical_images import make_cnmc


def test_cnmc_tree_uses_the_published_subject_disjoint_folds(tmp_path):
  make_cnmc(tmp_path)
  config = leukaemia_config.get_config("smoke")
  config.data.name = f"cnmc:{tmp_path}"
  config.data.options = dict(image_size=8)
  config.image_size = 16
  data = leukaemia.Data(config)
  assert data.x.shape == (12, 16, 16, 3) and data.test.images.shape == (3, 16, 16, 3)
  assert 0.0 <= data.x.min() and data.x.max() <= 1.0 and data.fold_source == "published fold assignment"
  assert len(data.folds) == 3 and data.stand_in == ""
  for k, (tr, va) in enumerate(data.folds):
    assert set(data.groups[va]) == {str(k + 1), f"H{k + 1}"}
    assert not set(data.groups[tr]) & set(data.groups[va])
  assert not set(data.groups) & set(data.test.groups)


def test_stand_in_folds_are_subject_disjoint_stratified_and_labelled():
  data = leukaemia.Data(leukaemia_config.get_config("smoke"))
  assert data.stand_in == "stand-in data" and data.info["stand_in"] == "stand-in data"
  assert data.x.shape == (192, 32, 32, 3) and sorted(np.bincount(data.y)) == [96, 96]
  seen = np.concatenate([va for _, va in data.folds])
  assert sorted(seen) == list(range(len(data.y)))  # every cell validates exactly once
  for tr, va in data.folds:
    assert not set(data.groups[tr]) & set(data.groups[va])
    assert set(data.y[va]) == {0, 1}
  assert not set(data.groups) & set(data.test.groups)


def test_bad_config_values_are_one_line_errors():
  config = leukaemia_config.get_config("smoke")
  config.models = ("mobilenet_v9",)
  with pytest.raises(DlbookError, match="unknown model 'mobilenet_v9'"):
    leukaemia.validate_config(config)
  config = leukaemia_config.get_config("smoke")
  config.modes = ("leaky",)
  with pytest.raises(DlbookError, match="modes must be"):
    leukaemia.validate_config(config)


def test_the_cosine_schedule_restarts_every_fold():
  c = optim_config = leukaemia_config.get_config("cpu").optimizer  # the thesis: Adam 0.01, cosine
  one = optim.make_schedule(optim_config, 10)
  three = optim.make_schedule(c, 30, cycles=3)
  for start in (0, 10, 20):
    for i in (0, 3, 9):
      assert float(three(start + i)) == pytest.approx(float(one(i)), rel=1e-6)
  assert float(three(0)) == pytest.approx(0.01)


def test_binary_loss_and_predictions_match_sklearn():
  rng = np.random.default_rng(0)
  logits = rng.normal(0, 2, (50, 1)).astype(np.float32)
  labels = rng.integers(0, 2, 50)
  p = 1 / (1 + np.exp(-logits[:, 0].astype(np.float64)))
  assert float(binary_cross_entropy(jnp.asarray(logits), jnp.asarray(labels))) == pytest.approx(
      log_loss(labels, p), rel=1e-5)
  np.testing.assert_array_equal(predicted_labels(jnp.asarray(logits)), (p > 0.5).astype(int))
  m = transfer.metrics_of(p, labels, groups=labels * 100 + np.arange(50) // 5)  # one label per subject
  assert m["accuracy"] == pytest.approx(accuracy_score(labels, p >= 0.5))
  assert m["f1_weighted"] == pytest.approx(f1_score(labels, p >= 0.5, average="weighted"))
  assert m["roc_auc"] == pytest.approx(roc_auc_score(labels, p))
  assert m["loss"] == pytest.approx(log_loss(labels, p), rel=1e-6)


def test_vertical_flip_and_zoom():
  x = jnp.asarray(np.random.default_rng(0).random((4, 9, 9, 2)), jnp.float32)
  flipped = augment.vertical_flip(jax.random.key(0), x, p=1.0)
  np.testing.assert_array_equal(flipped, x[:, ::-1])
  np.testing.assert_array_equal(augment.zoom(jax.random.key(0), x, 0.0), x)
  near = augment.zoom(jax.random.key(0), x, 1e-6)  # factor ~1: the same pixels
  np.testing.assert_allclose(near, x, atol=1e-4)
  zoomed = np.asarray(augment.zoom(jax.random.key(1), x, 1.0))
  np.testing.assert_allclose(zoomed[:, 4, 4], np.asarray(x)[:, 4, 4], atol=1e-5)  # the centre stays


@pytest.mark.slow
def test_launcher_smoke_both_fold_modes(tmp_path):
  workdir = tmp_path / "run"
  out = run_launcher("experiments.leukaemia", "--config=configs/leukaemia.py:smoke", f"--workdir={workdir}")
  assert out.returncode == 0, out.stderr[-3000:]
  report = json.loads((workdir / "results.json").read_text())
  assert report["stand_in"] == "stand-in data" and "stand-in data" in report["table"]
  assert "sequential (thesis): validation" in report["table"] and "fold ensemble" in report["table"]
  assert "sequential − independent validation (points)" in report["table"]
  probs = [np.load(workdir / "squeezenet1_1" / "independent" / f"fold_{k}" / "predictions.npz")["test_probs"]
           for k in range(3)]
  data = leukaemia.Data(leukaemia_config.get_config("smoke"))
  ens = np.mean(probs, axis=0)
  summary = report["summary"]["squeezenet1_1/independent/ensemble"]
  assert summary["accuracy"] == pytest.approx(accuracy_score(data.test.labels, ens >= 0.5))
  assert summary["roc_auc"] == pytest.approx(roc_auc_score(data.test.labels, ens))
  seq = json.loads((workdir / "squeezenet1_1" / "sequential" / "results.json").read_text())
  assert len(seq["val"]) == 3 and seq["total_steps"] == 12 and seq["stand_in"] == "stand-in data"
  for k in range(3):
    fold = json.loads((workdir / "squeezenet1_1" / "independent" / f"fold_{k}" / "results.json").read_text())
    assert set(leukaemia.METRICS) <= set(fold["val"][0]) and fold["total_steps"] == 4
