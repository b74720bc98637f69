"""The PSSP experiment (book ch. 11): the smoke preset through the launcher on the real pdb_dssp chains
with its table and pictures; resume after a simulated kill and early stopping; bad input."""

import json
import os
import re
import shutil

import numpy as np
import pytest

from configs import pssp as pssp_config
from dlbook.data import build_pdb_dssp as bp
from dlbook.data import load_raw
from dlbook.data.proteins import SequenceData, SequenceSplit
from dlbook.medical import pssp_experiment as pe
from dlbook.errors import DlbookError
from dlbook.medical import pssp_report
from dlbook.medical.pssp_report import FIGURES
from dlbook.metrics.sequence import SS8
from tests.conftest import run_launcher

IN_CI = os.environ.get("CI") == "true"  # CI's set-up builds pdb_dssp: never skip there


def checkpoint_steps(unit):
  return sorted(int(d) for d in os.listdir(unit / "checkpoints") if d.isdigit())


@pytest.mark.skipif(not bp.is_built(bp.DEFAULT_DIR) and not IN_CI, reason="pdb_dssp not built; run "
                    "'python -m dlbook.data.build_pdb_dssp --fetch' (.ci/setup does)")
def test_smoke_preset_through_the_launcher(tmp_path):
  workdir, docs = tmp_path / "grid", tmp_path / "docs"
  args = ("--config=configs/pssp.py:smoke", f"--workdir={workdir}", f"--docs_dir={docs}")
  env = {"DLBOOK_COMPILATION_CACHE": "off"}  # measure and test the compiling run
  proc = run_launcher("experiments.pssp", *args, env=env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "runs=1/1" in proc.stdout

  # The majority-class baseline row, computed here from the label counts of the training chains.
  d = load_raw("pdb_dssp", val_fraction=0.1)
  assert not set(d.val.names) & set(d.train.names) and len(d.val.names) > 0
  majority = np.bincount(d.train.labels[d.train.mask > 0], minlength=8).argmax()
  test_labels = d.test.labels[d.test.mask > 0]
  q8 = 100 * np.mean(test_labels == majority)
  table = (workdir / "table.md").read_text()
  assert (docs / "pssp_results.md").read_text() == table
  assert "| Majority class (baseline) | — | " in table and f" | {q8:.2f} | " in table
  assert f"most frequent state, {SS8[majority]}," in table
  assert "| 1D-CNN with 2 layers | 3, 5 |" in table and "| 76.91 |" in table  # the book's claim beside ours
  assert "Recurrent networks" not in table  # only the tables of the models run
  for name in FIGURES:
    assert (docs / "figures" / name).stat().st_size > 5000, name

  unit = workdir / "cnn1d_2" / "seed_0"
  for name in ("curves.png", "confusion_q8.png", "confusion_q3.png", "strips.png"):
    assert (unit / name).stat().st_size > 5000, name
  assert any((unit / "tensorboard").iterdir())
  first = json.loads((unit / "results.json").read_text())
  m = first["metrics"]
  assert first["total_steps"] == 6 and m["epochs_trained"] == 2 and not m["stopped_early"]
  assert m["residues"] == len(test_labels) and m["proteins"] == len(d.test)
  cm = np.array(m["confusion_q8"])
  assert cm.sum() == len(test_labels) and np.trace(cm) / cm.sum() * 100 == pytest.approx(m["q8"])
  assert [s["name"] for s in first["strips"]] == ["4CUP_A", "2OFG_X"]  # the longest distinct ones <= 150
  grid = json.loads((workdir / "results.json").read_text())
  assert grid["metrics"]["complete"] and grid["metrics"]["baseline"]["q8"] == pytest.approx(q8)
  assert checkpoint_steps(unit) == [3, 6]


def _synthetic(n=10, length=24, seed=0):
  """Proteins whose residues carry their label, so a tiny CNN learns them."""
  rng = np.random.default_rng(seed)
  lengths = rng.integers(8, length + 1, n)
  mask = (np.arange(length)[None] < lengths[:, None]).astype(np.float32)
  labels = (rng.integers(0, 8, (n, length)) * mask).astype(np.int32)
  x = np.eye(8, 21, dtype=np.float32)[labels] * mask[..., None]
  return SequenceSplit(x, labels, mask, tuple(f"p{i}_A" for i in range(n)))


class Killed(Exception):
  pass


@pytest.mark.slow  # long: runs with DLBOOK_SLOW=1 (keeps the CI suite in its time budget)
def test_resume_after_a_kill_and_early_stopping_give_identical_numbers(tmp_path, monkeypatch):
  """On small synthetic proteins (one compilation for every run): early stopping halts training,
  restores the best epoch's parameters, and a run killed before or after the stop ends identical.
  The pictures are left out here (the smoke test checks them)."""
  for module, name in ((pe.reporting, "plot_curves"), (pe.reporting, "plot_confusion"),
                       (pssp_report, "plot_strips")):
    monkeypatch.setattr(module, name, lambda *args, **kwargs: None)
  config = pssp_config.get_config("smoke")
  config.models = ("cnn1d_2",)
  config.batch_size = config.eval_batch_size = 4
  config.max_epochs = 6
  config.checkpoint_every_epochs = 1
  # min_delta above any Q8 gain: the first evaluation stays the best, the second one stops the run.
  config.early_stopping.patience_epochs = 1
  config.early_stopping.min_delta = 1000.0
  pe.validate_config(config)
  data = SequenceData(_synthetic(8), _synthetic(3, seed=1), _synthetic(4, seed=2), tuple("x" * 21), {})
  grid = pe.Grid(config, data)  # 2 steps per epoch, 12 steps; compiled once for the three runs below
  keys = ("q8", "q3", "sov99_q3", "sov99_q8", "loss", "confusion_q8", "val_q8", "val_loss", "best_epoch",
          "epochs_trained", "stopped_early")

  a = tmp_path / "a"
  first = pe.train_unit(grid, "cnn1d_2", 0, str(a))
  m = first["metrics"]
  assert m["stopped_early"] and m["best_epoch"] == 1 and m["epochs_trained"] == 2
  unit = a / "cnn1d_2" / "seed_0"
  records = [json.loads(l) for l in (unit / "history.jsonl").read_text().splitlines()]
  assert [r["step"] for r in records if "train/loss" in r] == [2, 4]  # nothing trained after the stop
  assert [r["step"] for r in records if "val/q8" in r] == [2, 4]
  best_val = next(r for r in records if r["step"] == 2 and "val/q8" in r)
  assert m["val_q8"] == pytest.approx(best_val["val/q8"])  # test metrics of the best epoch's parameters
  assert checkpoint_steps(unit) == [10, 12]

  # Killed after the stop: remove the last checkpoint and the results, rerun.
  shutil.rmtree(unit / "checkpoints" / "12")
  os.remove(unit / "results.json")
  again = pe.train_unit(grid, "cnn1d_2", 0, str(a))
  assert again["resumed_from_step"] == 10 and first["resumed_from_step"] == 0
  assert {k: again["metrics"][k] for k in keys} == {k: m[k] for k in keys}
  assert again["strips"] == first["strips"]

  # Killed during training, right after the checkpoint of epoch 1, before the stop.
  save = pe.checkpoint.Checkpointer.save

  def save_then_die(self, step, tree):
    save(self, step, tree)
    if step == 2:
      raise Killed(step)

  monkeypatch.setattr(pe.checkpoint.Checkpointer, "save", save_then_die)
  with pytest.raises(Killed):
    pe.train_unit(grid, "cnn1d_2", 0, str(tmp_path / "b"))
  monkeypatch.setattr(pe.checkpoint.Checkpointer, "save", save)
  assert not (tmp_path / "b" / "cnn1d_2" / "seed_0" / "results.json").exists()
  resumed = pe.train_unit(grid, "cnn1d_2", 0, str(tmp_path / "b"))
  assert resumed["resumed_from_step"] == 2
  assert {k: resumed["metrics"][k] for k in keys} == {k: m[k] for k in keys}


def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path):
  workdir = tmp_path / "run"
  proc = run_launcher("experiments.pssp", "--config=configs/pssp.py:smoke",
                      "--config.models=('cnn1d_2', 'cnn1d_9')", f"--workdir={workdir}",
                      env={"DLBOOK_COMPILATION_CACHE": "off"})
  assert proc.returncode == 2, proc.stderr[-2000:]
  errors = [l for l in proc.stderr.splitlines() if l.startswith("error: ")]
  assert len(errors) == 1 and proc.stderr.strip().splitlines()[-1] == errors[0]
  assert "unknown model 'cnn1d_9' in config.models; valid: cnn1d_2," in errors[0]
  assert "Traceback" not in proc.stderr and not workdir.exists()


@pytest.mark.parametrize("overrides,message", [
    (dict(train="cb6133:cullpdb+profile_6133.npy.gz"), "training on 'cb6133' and testing on CB513 leaks test proteins"),
    (dict(data_dir="/nonexistent/pssp"), "missing data file /nonexistent/pssp/cullpdb+profile_6133_filtered.npy.gz"),
])
def test_full_preset_refuses_a_leaky_pair_and_missing_files(overrides, message):
  """The same DlbookError the launcher turns into its one `error:` line, before anything is written."""
  config = pssp_config.get_config("full")
  config.data.update(overrides)
  with pytest.raises(DlbookError, match=re.escape(message)):
    pe.validate_config(config)
    pe.load_data(config)
