"""The CNGN experiment (thesis seed 001 ch. 4): moving-grid neighbourhoods, the Str = Weak = 1 cell equal
to the plain CNN, resume after a kill inside the moving grid, the launcher and bad input."""

import json
import os
import shutil

import jax
import numpy as np
import pytest

from configs import cngn as cngn_config
from dlbook import astro
from dlbook.errors import DlbookError
from dlbook.training import checkpoint
from tests.conftest import run_launcher


def test_moving_grid_neighbourhoods():
  square = astro.candidates((1.0, 1.0), 0.25, "square")
  assert square[0] == (1.0, 1.0) and len(square) == 9
  assert set(square) == {(a, b) for a in (0.75, 1.0, 1.25) for b in (0.75, 1.0, 1.25)}
  assert astro.candidates((1.0, 1.0), 0.25, "cross") == [(1.0, 1.0), (0.75, 1.0), (1.0, 0.75), (1.0, 1.25),
                                                         (1.25, 1.0)]
  # at the corner of [0.5, 1.5] the clipped repeats are dropped
  assert astro.candidates((1.5, 0.5), 0.25, "square") == [(1.5, 0.5), (1.25, 0.5), (1.25, 0.75), (1.5, 0.75)]


def mini_config():
  """The smoke preset cut down: 512 digits, 8 steps per epoch, 2 cells, 2 moving epochs of the cross."""
  c = cngn_config.get_config("smoke")
  c.data.limit_train = 640
  c.grid.strong = (1.0, 1.5)
  c.grid.weak = (1.0,)
  c.epochs = 1.0
  c.moving.epochs = 2
  c.checkpoint_every_steps = 4
  c.log_every_steps = 4
  return c


def _params(unit_dir):
  return checkpoint.Checkpointer(os.path.join(unit_dir, "checkpoints")).restore(None)["state"]["params"]


@pytest.mark.slow
def test_cngn_resumes_after_a_kill_in_the_moving_grid(tmp_path):
  config = mini_config()
  work = tmp_path / "w"
  reference = astro.run_experiment(config, str(work))
  summary = reference["summary"]
  cells = {(x["strong"], x["weak"]): x for x in summary["grid"]}
  assert cells[(1.0, 1.0)]["delta"] == [0.0]  # Str = Weak = 1 is the plain CNN, bit for bit
  assert cells[(1.5, 1.0)]["modulated_strong"][0] > 0 and cells[(1.5, 1.0)]["kernel_norm_ratio_median"][0] > 1.5
  assert [len(p["path"]) for p in reference["moving_paths"]] == [2]

  # A kill inside candidate 2 of the second moving epoch (which starts from epoch 0's best): its last
  # checkpoint and results.json are gone, and so is everything trained after it.
  epoch_1 = work / "moving" / "seed_0" / "epoch_1"
  kill_unit = epoch_1 / "cngn_2"
  final = _params(kill_unit)
  shutil.rmtree(kill_unit / "checkpoints" / "8")
  later = [kill_unit] + [epoch_1 / f"cngn_{k}" for k in (3, 4)] + [epoch_1 / f"cnn_{k}" for k in range(5)]
  for unit in later:
    (unit / "results.json").unlink()
  for unit in later[1:]:
    shutil.rmtree(unit)
  (work / "results.json").unlink()
  resumed = astro.run_experiment(config, str(work))
  by_unit = json.loads((kill_unit / "results.json").read_text())
  assert by_unit["resumed_from_step"] == 4
  jax.tree.map(np.testing.assert_array_equal, final, _params(kill_unit))
  assert json.dumps(resumed["summary"], sort_keys=True) == json.dumps(summary, sort_keys=True)
  assert resumed["moving_paths"] == reference["moving_paths"]
  for name in ("table.md", "grid_delta.png", "moving.png"):
    assert (work / name).exists()


def test_bad_values_fail_with_one_line_before_anything_is_written(tmp_path):
  for key, value, message in (("grid.strong", (0.4,), "grid.strong entries must be in"),
                              ("astro.mode", "paper", "unknown astro.mode"),
                              ("noise_seeds", (0,), "noise_seeds needs at least 2")):
    c = cngn_config.get_config("smoke")
    if "." in key:
      a, b = key.split(".")
      setattr(c[a], b, value)
    else:
      setattr(c, key, value)
    with pytest.raises(DlbookError, match=message):
      astro.run_experiment(c, str(tmp_path / "w"))
  assert not (tmp_path / "w").exists()
  out = run_launcher("experiments.cngn", "--config=configs/cngn.py:smoke", f"--workdir={tmp_path / 'w'}",
                     "--config.astro.ng=0")
  assert out.returncode == 2 and "error: astro.ng must be >= 1" in out.stderr, out.stderr[-2000:]
  assert not (tmp_path / "w").exists()


@pytest.mark.slow
def test_smoke_preset_through_the_launcher(tmp_path):
  out = run_launcher("experiments.cngn", "--config=configs/cngn.py:smoke", f"--workdir={tmp_path / 'w'}",
                     f"--docs_dir={tmp_path / 'docs'}")
  assert out.returncode == 0, out.stderr[-3000:]
  payload = json.loads((tmp_path / "w" / "results.json").read_text())
  assert payload["metrics"]["units_finished"] == payload["metrics"]["units_expected"] == 6
  assert (tmp_path / "docs" / "astrocytes_table.md").exists()
  assert (tmp_path / "docs" / "figures" / "astrocytes_grid_delta.png").exists()
  again = run_launcher("experiments.cngn", "--config=configs/cngn.py:smoke", f"--workdir={tmp_path / 'w'}")
  assert again.returncode == 0 and "units=6/6" in again.stdout
