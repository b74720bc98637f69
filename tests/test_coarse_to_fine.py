"""The coarse-to-fine experiment: grid, resume mid-PSF, report tables, launcher and bad input."""

import json
import os

import numpy as np
import pytest

from configs import coarse_to_fine as c2f_config
from dlbook.errors import DlbookError
from dlbook.training import checkpoint
from dlbook import coarse_to_fine as c2f
from tests.conftest import run_launcher


def psf_config(**overrides):
  """The smoke preset cut to one PSF variant at one data fraction (4 blocks, K=1: 3 windows)."""
  c = c2f_config.get_config("smoke")
  c.modes = ("psf",)
  c.train_fractions = (1.0,)
  c.checkpoint_every_steps = 3
  for k, v in overrides.items():
    setattr(c, k, v)
  return c


class Killed(Exception):
  pass


def final_params(unit_dir):
  return checkpoint.Checkpointer(os.path.join(unit_dir, "checkpoints")).restore(None)["state"]["params"]


@pytest.mark.slow  # long: runs with DLBOOK_SLOW=1 (keeps the CI suite in its time budget)
def test_resume_in_the_middle_of_psf_matches_an_uninterrupted_run(tmp_path, monkeypatch):
  config = psf_config()
  reference = c2f.run_grid(config, str(tmp_path / "a"))
  run = reference["runs"][0]
  plan = [(it["iteration"], it["frozen_blocks"]) for it in run["iterations"]]
  assert plan == [(1, [0]), (2, [1]), (3, [2])]
  fine_2 = (run["coarse_steps"] + 8, run["coarse_steps"] + 15)  # 22 fine steps -> windows of 8, 7, 7
  kill_at = next(s for s in range(*fine_2) if s % config.checkpoint_every_steps == 0)
  assert fine_2[0] < kill_at < fine_2[1]

  save = checkpoint.Checkpointer.save

  def save_then_die(self, step, tree):
    save(self, step, tree)
    if "psf" in self.directory and step == kill_at:
      raise Killed(step)

  monkeypatch.setattr(checkpoint.Checkpointer, "save", save_then_die)
  with pytest.raises(Killed):
    c2f.run_grid(config, str(tmp_path / "b"))
  unit = tmp_path / "b" / "data_100" / "seed_0" / "psf_1-4"
  assert not (unit / "results.json").exists()
  evaluated = [json.loads(l)["step"] for l in (unit / "history.jsonl").read_text().splitlines()
               if "eval/test_accuracy" in l]
  assert evaluated == [run["iterations"][0]["step"]]  # killed inside the second window: iteration 1 only
  monkeypatch.setattr(checkpoint.Checkpointer, "save", save)

  resumed = c2f.run_grid(config, str(tmp_path / "b"))
  again = resumed["runs"][0]
  assert [(it["iteration"], it["frozen_blocks"]) for it in again["iterations"]] == plan
  for key in ("test_accuracy", "test_loss", "test_f1_macro"):
    assert [it[key] for it in again["iterations"]] == [it[key] for it in run["iterations"]]
  a, b = final_params(tmp_path / "a" / "data_100" / "seed_0" / "psf_1-4"), final_params(unit)
  for name in a:
    for leaf in a[name]:
      np.testing.assert_array_equal(a[name][leaf], b[name][leaf])
  # The history was trimmed to the checkpoint and continued: every step logged once.
  steps = [json.loads(l)["step"] for l in (unit / "history.jsonl").read_text().splitlines()
           if "train/loss" in l]
  assert steps == sorted(set(steps)) and steps[-1] == run["total_steps"]

  # The partial-grid report: the smoke grid expects 6 runs, 1 exists.
  payload = c2f.write_report(c2f_config.get_config("smoke"), str(tmp_path / "b"))
  assert payload["metrics"]["complete"] is False and payload["metrics"]["runs_finished"] == 1
  table = (tmp_path / "b" / "table.md").read_text()
  assert "PARTIAL RESULTS: 1 of 6 runs" in table
  assert "| Coarse-to-fine with PSF 1/4 (K=1) | 100 | 2nd 1/4 frozen | 1 |" in table


@pytest.mark.slow  # long: runs with DLBOOK_SLOW=1 (keeps the CI suite in its time budget)
def test_smoke_preset_end_to_end_then_launcher_skips_finished_runs(tmp_path):
  workdir = str(tmp_path / "grid")
  results = c2f.run_grid(c2f_config.get_config("smoke"), workdir)  # in-process: shares compiled steps
  assert results["metrics"]["complete"] and len(results["runs"]) == 6
  assert {r["label"] for r in results["runs"]} == {"traditional", "ssf", "psf_1-4"}
  by = {(r["label"], r["train_fraction"]): r for r in results["runs"]}
  for fraction in (0.6, 1.0):
    trad, ssf, psf = by[("traditional", fraction)], by[("ssf", fraction)], by[("psf_1-4", fraction)]
    assert trad["total_steps"] == ssf["total_steps"] == psf["total_steps"]  # equal epochs
    assert trad["P2"] == [trad["P1"]] and ssf["P2"][0] < ssf["P1"]
    assert ssf["average_params"] == [(ssf["P1"] + ssf["P2"][0]) / 2]
    assert trad["metrics"]["coarse_test_accuracy"] == ssf["metrics"]["coarse_test_accuracy"]  # shared coarse
    assert 0.5 < ssf["metrics"]["test_accuracy"] <= 1.0
    assert len(psf["iterations"]) == 3
  assert by[("ssf", 0.6)]["dataset"]["train_size"] < by[("ssf", 1.0)]["dataset"]["train_size"]
  table = open(os.path.join(workdir, "table.md")).read()
  assert "PARTIAL" not in table and "| Traditional training | 60 |" in table
  assert "| Coarse-to-fine with SSF | 100 |" in table
  assert os.path.getsize(os.path.join(workdir, "psf_accuracy.png")) > 1000
  unit = os.path.join(workdir, "data_60", "seed_0", "ssf")
  assert os.path.isdir(os.path.join(unit, "tensorboard")) and os.path.isdir(os.path.join(unit, "checkpoints"))

  docs = tmp_path / "docs"
  again = run_launcher("experiments.coarse_to_fine", "--config=configs/coarse_to_fine.py:smoke",
                       f"--workdir={workdir}", f"--docs_dir={docs}")
  assert again.returncode == 0, again.stderr[-3000:]
  assert "runs=6/6" in again.stdout
  assert "steps 0-" not in again.stderr  # nothing retrained
  assert (docs / "coarse_to_fine_table.md").read_text() == table
  assert (docs / "figures" / "psf_accuracy.png").exists()


@pytest.mark.parametrize("args,message", [
    (("--config=configs/coarse_to_fine.py:tiny",), "unknown preset 'tiny'"),
    (("--config=configs/coarse_to_fine.py:smoke", "--config.fine_epochs=-1"), "fine_epochs must be positive"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
  proc = run_launcher("experiments.coarse_to_fine", *args, f"--workdir={tmp_path}")
  assert proc.returncode == 2
  lines = proc.stderr.strip().splitlines()
  assert lines[-1].startswith("error: ") and message in lines[-1], proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr


def test_bad_grid_values_are_user_errors(tmp_path):
  with pytest.raises(DlbookError, match="unknown mode 'psf2'.*traditional, ssf, psf"):
    c2f.validate_config(psf_config(modes=("psf2",)))
  with pytest.raises(DlbookError, match=r"freeze_fractions entries must be in \(0, 1/2\], got 0.75"):
    c2f.validate_config(psf_config(freeze_fractions=(0.75,)))
  with pytest.raises(DlbookError, match="train_fractions entries"):
    c2f.validate_config(psf_config(train_fractions=(0.0,)))
  with pytest.raises(DlbookError, match="coarse_epochs_by_fraction has 2 entries for 1"):
    c2f.validate_config(psf_config(coarse_epochs_by_fraction=(1.0, 2.0)))
  with pytest.raises(DlbookError, match="no finished runs"):
    c2f.write_report(psf_config(), str(tmp_path))
  # A PSF window over half of the network's 3 blocks is refused before anything trains.
  config = psf_config(freeze_fractions=(0.5,))
  config.model.n_dense = 1
  with pytest.raises(DlbookError, match="freeze_fraction 0.5 gives a window of 2 of 3 blocks"):
    c2f.run_grid(config, str(tmp_path / "grid"))
  assert not os.path.exists(tmp_path / "grid" / "data_100")


@pytest.mark.slow
def test_launcher_resumes_after_sigkill_in_the_middle_of_psf(tmp_path):
  """A real SIGKILL of the launcher during the second PSF window; the rerun finishes with the
  same per-iteration accuracies and final parameters as an uninterrupted in-process run."""
  import signal
  import subprocess
  import sys
  import time
  from tests.conftest import ROOT
  overrides = ("--config.modes=('psf',)", "--config.train_fractions=(1.0,)", "--config.checkpoint_every_steps=3",
               "--config.log_every_steps=1")
  args = [sys.executable, "-m", "experiments.coarse_to_fine", "--config=configs/coarse_to_fine.py:smoke",
          f"--workdir={tmp_path / 'killed'}", *overrides]
  env = dict(os.environ, PYTHONPATH=ROOT)
  proc = subprocess.Popen(args, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 500
  for line in proc.stderr:
    if "psf_1-4 1/s0 step 11/22" in line:  # fine_2 is fine steps 8-15; step 10 was checkpointed
      proc.send_signal(signal.SIGKILL)
      break
    assert time.time() < deadline
  proc.wait()
  assert proc.returncode == -signal.SIGKILL
  unit = tmp_path / "killed" / "data_100" / "seed_0" / "psf_1-4"
  assert not (unit / "results.json").exists()
  resumed = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "resumed from checkpoint step" in resumed.stderr and "fine_2, steps" in resumed.stderr
  reference = c2f.run_grid(psf_config(), str(tmp_path / "reference"))["runs"][0]
  again = json.loads((unit / "results.json").read_text())
  for key in ("test_accuracy", "test_loss"):
    assert [it[key] for it in again["iterations"]] == [it[key] for it in reference["iterations"]]
  a, b = final_params(tmp_path / "reference" / "data_100" / "seed_0" / "psf_1-4"), final_params(unit)
  for name in a:
    for leaf in a[name]:
      np.testing.assert_array_equal(a[name][leaf], b[name][leaf])
