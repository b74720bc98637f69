"""Pan-cancer ensemble (book ch. 12): aggregators, splits and fitted transform, and the launcher end to end
on a generated TCGA Pan-Cancer folder (smoke preset), with resume after a simulated kill and bad input."""

import json
import os
import shutil

import numpy as np
import pytest

from configs import pancancer as pancancer_config
from dlbook.errors import DlbookError
from dlbook.medical import ensemble
from dlbook.medical import pancancer
from dlbook.medical.pancancer_report import f_score_check
from tests.conftest import run_launcher

# --------------------------------------------------------------------------- aggregators


def test_hard_vote_hand_worked_ties():
  # probs[model, sample, class]: 4 models, 3 samples, 3 classes.
  probs = np.array([
      [[0.7, 0.2, 0.1], [0.45, 0.45, 0.1], [0.90, 0.05, 0.05]],
      [[0.6, 0.2, 0.2], [0.10, 0.60, 0.3], [0.30, 0.30, 0.40]],
      [[0.3, 0.5, 0.2], [0.50, 0.40, 0.1], [0.30, 0.30, 0.40]],
      [[0.3, 0.6, 0.1], [0.40, 0.50, 0.1], [0.30, 0.30, 0.40]]])
  # Sample 0: votes 0, 0, 1, 1 (2-2); mean probability of class 0 = 0.475 > class 1 = 0.375 -> 0.
  # Sample 1: model 0's own tie 0.45/0.45 votes class 0 (argmax), so votes 0, 1, 0, 1 (2-2); means
  #   class 0 = 0.3625 < class 1 = 0.4875 -> 1.
  # Sample 2: votes 0, 2, 2, 2 -> 2, although class 0 has the larger mean (0.45 > 0.3125).
  pred, votes = ensemble.hard_vote(probs)
  np.testing.assert_array_equal(pred, [0, 1, 2])
  np.testing.assert_allclose(votes, [[0.5, 0.5, 0], [0.5, 0.5, 0], [0.25, 0, 0.75]])
  # Equal votes and equal mean probabilities: the lowest class index, whichever model votes which.
  tie = np.array([[[0.6, 0.4]], [[0.4, 0.6]]])
  assert ensemble.hard_vote(tie)[0].tolist() == [0]
  assert ensemble.hard_vote(tie[::-1])[0].tolist() == [0]
  # 2-2-0 votes: class 2 has the highest mean (0.49) but no vote, so it cannot win; classes 0 and 1 tie
  # on votes and on mean (0.255 each) -> class 0.
  two = np.array([[[0.51, 0.0, 0.49]], [[0.51, 0.0, 0.49]], [[0.0, 0.51, 0.49]], [[0.0, 0.51, 0.49]]])
  assert ensemble.hard_vote(two)[0].tolist() == [0]
  assert ensemble.hard_vote(two[:, :, [1, 0, 2]])[0].tolist() == [0]


def test_average_soft_and_weighted_average():
  probs = np.array([[[0.6, 0.4], [0.2, 0.8]], [[0.3, 0.7], [0.9, 0.1]]])
  pred, scores = ensemble.average_vote(probs)
  np.testing.assert_allclose(scores, [[0.45, 0.55], [0.55, 0.45]])
  assert pred.tolist() == [1, 0]
  w = [3.0, 1.0]  # model 0 weighs 3x: soft = 3 d_0 + d_1, weighted average = that / 4
  pred_s, s = ensemble.soft_vote(probs, w)
  pred_w, a = ensemble.weighted_average_vote(probs, w)
  np.testing.assert_allclose(s, [[2.1, 1.9], [1.5, 2.5]])
  np.testing.assert_allclose(a, s / 4)
  assert pred_s.tolist() == pred_w.tolist() == [0, 1]
  with pytest.raises(DlbookError, match="sum to 0"):
    ensemble.weighted_average_vote(probs, [0.0, 0.0])
  with pytest.raises(DlbookError, match="2 ensemble weights for 3 models"):
    ensemble.soft_vote(np.ones((3, 1, 2)) / 2, [1, 1])
  with pytest.raises(DlbookError, match="unknown aggregator 'max'"):
    ensemble.aggregate("max", probs)


def test_soft_and_weighted_average_always_agree():
  rng = np.random.default_rng(0)
  for _ in range(50):
    k, n, c = rng.integers(1, 6), rng.integers(1, 40), rng.integers(2, 12)
    probs = rng.dirichlet(np.ones(c) * 0.3, size=(k, n))
    w = rng.uniform(0, 1, k) * (rng.uniform(size=k) > 0.3)
    if w.sum() == 0:
      w[0] = 0.5
    ps, ss = ensemble.soft_vote(probs, w)
    pw, sw = ensemble.weighted_average_vote(probs, w)
    np.testing.assert_array_equal(ps, pw)
    np.testing.assert_allclose(sw * w.sum(), ss)
  # Uniform weights make the weighted average the plain average.
  np.testing.assert_allclose(ensemble.weighted_average_vote(probs, np.ones(k))[1], ensemble.average_vote(probs)[1])


def test_validation_weights_and_fallback():
  w, fallback = ensemble.validation_weights({"a": 0.5, "b": 0.25}, ["b", "a"])
  assert w.tolist() == [0.25, 0.5] and not fallback
  w, fallback = ensemble.validation_weights({"a": 0.0, "b": 0.0}, ["a", "b"])
  assert w.tolist() == [1.0, 1.0] and fallback
  with pytest.raises(DlbookError, match=r"no validation macro-F1 for models \['c'\]"):
    ensemble.validation_weights({"a": 0.5}, ["a", "c"])


def test_book_table_f_scores():
  # F <= (P + R) / 2 under any averaging; ResNet50 and Xception of book Table 12.1 break it.
  assert "impossible" in f_score_check(91.05, 90.77, 91.22, 2)
  assert "impossible" in f_score_check(93.76, 93.45, 93.71, 2)
  assert f_score_check(87.32, 87.67, 87.44, 2) == "possible"
  assert f_score_check(93.53, 93.05, 93.15, 2) == "possible"
  assert f_score_check(97.2, 97.1, 97.15, 1) == "possible"


# --------------------------------------------------------------------------- splits and the fitted transform


def _toy(n_per_class=(12, 9, 6), genes=50, seed=0):
  rng = np.random.default_rng(seed)
  y = np.repeat(np.arange(len(n_per_class)), n_per_class).astype(np.int32)
  x = rng.gamma(2.0, 20.0, (len(y), genes)) * (1 + y[:, None] * (np.arange(genes) % 3 == 0))
  groups = np.array([f"P{i:03d}" for i in range(len(y))])
  return pancancer.Expression(x, y, groups, groups, ("A", "B", "C"),
                              {"chromosome": np.array([str(1 + g % 5) for g in range(genes)], dtype=object),
                               "start": np.arange(genes, dtype=np.float64)[::-1].copy()},
                              {"expression_scale": "linear"})


def test_splits_are_patient_disjoint_stratified_and_cover_every_patient():
  data = _toy()
  splits = pancancer.make_splits(data.y, data.groups, 3, (0, 1), 0.25)
  assert len(splits) == 6
  for r in (0, 1):
    tested = np.concatenate([s.test for s in splits if s.repeat == r])
    assert sorted(tested.tolist()) == list(range(len(data.y)))  # every patient tested once per repeat
  for s in splits:
    parts = [set(data.groups[getattr(s, p)]) for p in ("train", "val", "test")]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert set(data.y[s.train].tolist()) == {0, 1, 2}
  with pytest.raises(DlbookError, match="class 2 has 6 patients, fewer than splits.n_folds=7"):
    pancancer.make_splits(data.y, data.groups, 7, (0,), 0.25)


def test_a_test_sample_cannot_change_the_fitted_transform():
  data = _toy()
  split = pancancer.make_splits(data.y, data.groups, 3, (0,), 0.25)[0]
  cfg = pancancer_config.get_config("smoke").transform
  cfg.top_k = 10
  fitted = pancancer.fit_transform(data, split.train, cfg)
  x = data.x.copy()
  x[split.test] *= 1000.0  # outlying test (and validation) samples
  x[split.val] = 0.0
  refit = pancancer.fit_transform(pancancer.Expression(x, data.y, data.groups, data.samples, data.class_names,
                                                       data.features, data.info), split.train, cfg)
  np.testing.assert_array_equal(fitted.genes, refit.genes)
  np.testing.assert_array_equal(fitted.transform(data.x), refit.transform(data.x))
  everything = pancancer.fit_transform(pancancer.Expression(x, data.y, data.groups, data.samples, data.class_names,
                                                            data.features, data.info), np.arange(len(x)), cfg)
  assert not np.array_equal(np.sort(everything.genes), np.sort(fitted.genes))  # fitting on all would differ


# --------------------------------------------------------------------------- the launcher on a TCGA-layout folder

TYPES = (("BRCA", "A1"), ("LUAD", "B2"), ("KIRC", "C3"))


def write_tcga_miniature(root, patients=12, genes=300, seed=0):
  """A TCGA Pan-Cancer folder: expression (genes x samples, SYMBOL|ENTREZ rows, barcode columns, RSEM
  values), sample_types.tsv and gene_annotation.tsv; one extra normal sample per type."""
  rng = np.random.default_rng(seed)
  columns, types = [], []
  for t, (kind, tss) in enumerate(TYPES):
    for p in range(patients):
      columns.append(f"TCGA-{tss}-{p:04d}-01A-11R-A29S-07")
      types.append((columns[-1][:15], kind))
    columns.append(f"TCGA-{tss}-{0:04d}-11A-11R-A29S-07")  # normal tissue: dropped by the loader
  label = np.array([next(i for i, (_, tss) in enumerate(TYPES) if c[5:7] == tss) for c in columns])
  shift = np.zeros((genes, len(TYPES)))
  n_marked = min(60, genes)
  shift[rng.choice(genes, n_marked, replace=False), rng.integers(0, len(TYPES), n_marked)] = 3.0  # type-specific genes
  log2 = rng.normal(5.0, 1.5, (genes, 1)) + rng.normal(0, 1.0, (genes, len(columns))) + shift[:, label]
  values = np.exp2(np.maximum(log2, 0.0)) - 1.0  # RSEM-like counts >= 0
  names = [f"G{g}|{1000 + g}" for g in range(genes)]
  with open(os.path.join(root, "expression.tsv"), "w") as f:
    f.write("gene_id\t" + "\t".join(columns) + "\n")
    f.writelines(n + "\t" + "\t".join(f"{v:.3f}" for v in row) + "\n" for n, row in zip(names, values))
  with open(os.path.join(root, "sample_types.tsv"), "w") as f:
    f.write("sample\tcancer_type\n" + "".join(f"{b}\t{k}\n" for b, k in types))
  with open(os.path.join(root, "gene_annotation.tsv"), "w") as f:
    f.write("gene_id\tchromosome\tstart\n" + "".join(f"{n}\t{1 + g % 22}\t{rng.integers(1, 10**8)}\n"
                                                    for g, n in enumerate(names)))


def smoke_args(data_dir, workdir, *extra):
  return ("--config=configs/pancancer.py:smoke", f"--config.data.name=tcga_pancancer:{data_dir}",
          f"--workdir={workdir}", *extra)


@pytest.mark.slow
def test_smoke_end_to_end_through_the_launcher_then_resume(tmp_path):
  """The smoke preset with the book's four base models (their XLA:CPU compiles take minutes)."""
  data_dir, workdir = tmp_path / "tcga", tmp_path / "run"
  data_dir.mkdir()
  write_tcga_miniature(data_dir)
  env = {"DLBOOK_COMPILATION_CACHE": str(tmp_path / "cache")}
  proc = run_launcher("experiments.pancancer", *smoke_args(data_dir, workdir, f"--docs_dir={tmp_path / 'docs'}"),
                      env=env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "units=12/12" in proc.stdout
  first = json.loads((workdir / "results.json").read_text())
  m = first["metrics"]
  assert m["complete"] and m["soft_equals_weighted_average"]
  assert set(m["methods"]) == {"densenet201", "resnet50", "inception_v3", "xception", "hard", "average", "soft",
                               "weighted_average", "logistic_regression", "linear_svm"}
  assert all(len(v["accuracy"]) == 2 for v in m["methods"].values())
  assert m["methods"]["soft"]["accuracy"] == m["methods"]["weighted_average"]["accuracy"]
  assert np.mean(m["methods"]["logistic_regression"]["accuracy"]) > 0.8  # the generated types are separable
  table = (workdir / "table.md").read_text()
  for row in ("| DenseNet-201 |", "| Xception |", "| Hard (majority) voting |", "| Weighted average voting |",
              "| Logistic regression (baseline) |", "| Linear SVM (baseline) |", "**impossible**",
              "| true \\ predicted | BRCA | KIRC | LUAD |"):
    assert row in table, row
  assert "PARTIAL" not in table
  assert (tmp_path / "docs" / "pancancer_smoke.md").read_text() == table
  unit = workdir / "repeat_0" / "fold_1" / "xception"
  before = json.loads((unit / "results.json").read_text())
  assert before["dataset"]["class_names"] == ["BRCA", "KIRC", "LUAD"]
  assert before["config"]["transform_fitted"] == {"genes": 256, "side": 16}
  assert len(before["test_probs"]) == len(before["test_labels"]) == len(before["test_samples"])
  for s in before["test_samples"]:  # one tumour sample per patient; no normal sample
    assert s[13:15] == "01"

  # Simulated kill: the unit's last checkpoint and results.json are gone; the rerun retrains only it.
  steps = sorted(int(d) for d in os.listdir(unit / "checkpoints") if d.isdigit())
  shutil.rmtree(unit / "checkpoints" / str(steps[-1]))
  os.remove(unit / "results.json")
  again = run_launcher("experiments.pancancer", *smoke_args(data_dir, workdir), env=env)
  assert again.returncode == 0, again.stderr[-3000:]
  after = json.loads((unit / "results.json").read_text())
  assert after["test_probs"] == before["test_probs"] and after["metrics"] == before["metrics"]
  assert after["best_epoch"] == before["best_epoch"] and after["epochs_trained"] == before["epochs_trained"]
  assert json.loads((workdir / "results.json").read_text())["metrics"] == m
  assert "repeat_0/fold_0 densenet201" not in again.stderr  # the finished units did not train again


def test_one_cheap_model_end_to_end_through_the_launcher_then_resume(tmp_path):
  """The whole pipeline (split, fitted transform, base model, the four aggregators, both baselines,
  report) with one cheap registry model in place of the book's four, then a simulated kill."""
  data_dir, workdir = tmp_path / "tcga", tmp_path / "run"
  data_dir.mkdir()
  write_tcga_miniature(data_dir)
  env = {"DLBOOK_COMPILATION_CACHE": str(tmp_path / "cache")}
  args = smoke_args(data_dir, workdir, "--config.base_models=('chain_cnn',)")
  proc = run_launcher("experiments.pancancer", *args, f"--docs_dir={tmp_path / 'docs'}", env=env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "units=6/6" in proc.stdout
  m = json.loads((workdir / "results.json").read_text())["metrics"]
  assert m["complete"] and m["soft_equals_weighted_average"]
  assert set(m["methods"]) == {"chain_cnn", "hard", "average", "soft", "weighted_average", "logistic_regression",
                               "linear_svm"}
  # One base model: every aggregator is that model's argmax.
  for a in ("hard", "average", "soft", "weighted_average"):
    assert m["methods"][a]["accuracy"] == m["methods"]["chain_cnn"]["accuracy"]
  assert np.mean(m["methods"]["logistic_regression"]["accuracy"]) > 0.8  # the generated types are separable
  table = (workdir / "table.md").read_text()
  assert "| Linear SVM (baseline) |" in table and "| true \\ predicted | BRCA | KIRC | LUAD |" in table
  assert (tmp_path / "docs" / "pancancer_smoke.md").read_text() == table
  assert (tmp_path / "docs" / "figures" / "pancancer_smoke_confusion.png").stat().st_size > 1000
  unit = workdir / "repeat_0" / "fold_0" / "chain_cnn"
  before = json.loads((unit / "results.json").read_text())
  assert before["dataset"]["class_names"] == ["BRCA", "KIRC", "LUAD"]
  assert all(s[13:15] == "01" for s in before["test_samples"])  # one tumour sample per patient, no normal
  steps = sorted(int(d) for d in os.listdir(unit / "checkpoints") if d.isdigit())
  shutil.rmtree(unit / "checkpoints" / str(steps[-1]))
  os.remove(unit / "results.json")
  os.remove(workdir / "results.json")
  again = run_launcher("experiments.pancancer", *args, env=env)
  assert again.returncode == 0, again.stderr[-3000:]
  after = json.loads((unit / "results.json").read_text())
  assert after["test_probs"] == before["test_probs"] and after["metrics"] == before["metrics"]
  assert after["resumed_from_step"] == steps[-2] if len(steps) > 1 else after["resumed_from_step"] is None
  assert json.loads((workdir / "results.json").read_text())["metrics"] == m


@pytest.mark.parametrize("case,message", [
    ("model", "unknown base model 'densenet999' in config.base_models; valid: "),
    ("tcga", "is not SYMBOL|ENTREZ"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, case, message):
  data_dir, workdir = tmp_path / "tcga", tmp_path / "run"
  data_dir.mkdir()
  write_tcga_miniature(data_dir, patients=6, genes=20)
  extra = ()
  if case == "model":
    extra = ("--config.base_models=('resnet50','densenet999')",)
  else:
    text = (data_dir / "expression.tsv").read_text().replace("G3|1003", "G3", 1)
    (data_dir / "expression.tsv").write_text(text)
  proc = run_launcher("experiments.pancancer", *smoke_args(data_dir, workdir, *extra))
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = proc.stderr.strip().splitlines()
  assert lines[-1].startswith("error: ") and message in lines[-1], proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr
  assert not workdir.exists()


def test_config_errors_name_the_key():
  c = pancancer_config.get_config("smoke")
  c.aggregators = ("hard", "max")
  with pytest.raises(DlbookError, match="unknown aggregator 'max' in config.aggregators"):
    pancancer.validate_config(c)
  c = pancancer_config.get_config("smoke")
  c.baselines = ("random_forest",)
  with pytest.raises(DlbookError, match="unknown baseline 'random_forest'"):
    pancancer.validate_config(c)
  c = pancancer_config.get_config("cpu")
  c.transform.variance_threshold = 1.2
  with pytest.raises(DlbookError, match="top_k or transform.variance_threshold, not both"):
    pancancer.validate_config(c)
