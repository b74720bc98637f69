"""experiments/gan.py end to end: the DCGAN, WGAN-GP and ACGAN smoke presets, resume after a
lost checkpoint, the docs table, the workdir guard, and bad input (one line, exit 2)."""

import json
import os

import jax
import numpy as np
import pytest
from PIL import Image

from configs import gan as gan_config
from dlbook.errors import DlbookError
from dlbook.gan import report, train
from tests.conftest import run_launcher


def check_run_dir(workdir, gan):
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  assert results["config"]["gan"] == gan and results["total_steps"] == 4
  m = results["metrics"]
  assert np.isfinite(m["final_d_loss"]) and np.isfinite(m["final_g_loss"])
  assert results["wall_time_s"] > 0 and "command" in results and results["seed"] == 0
  grid = np.asarray(Image.open(os.path.join(workdir, "samples.png")))
  assert grid.ndim == 2 and grid.std() > 0  # grey-level grid of digits-sized samples, not blank
  assert sorted(os.listdir(os.path.join(workdir, "samples"))) == ["step_0000002.png", "step_0000004.png"]
  assert any(f.startswith("events") for f in os.listdir(os.path.join(workdir, "tensorboard")))
  with open(os.path.join(workdir, "history.jsonl")) as f:
    steps = [r["step"] for r in map(json.loads, f) if "train/d_loss" in r]
  assert steps == [2, 4]
  return results


@pytest.mark.parametrize("gan", ["dcgan", pytest.param("wgan_gp", marks=pytest.mark.slow),
                                 pytest.param("acgan", marks=pytest.mark.slow)])
def test_smoke_preset_runs_end_to_end(tmp_path, gan):
  workdir = str(tmp_path / gan)
  cache = tmp_path / "classifier_cache"
  extra = ["--config.eval.classifier_steps=20", f"--config.eval.cache_dir={cache}"] if gan == "acgan" else []
  args = ("experiments.gan", f"--config=configs/gan.py:{gan},smoke", f"--workdir={workdir}", *extra)
  proc = run_launcher(*args)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "steps/s" in proc.stderr and "ETA" in proc.stderr  # the progress line
  results = check_run_dir(workdir, gan)
  m = results["metrics"]
  if gan == "dcgan":
    check_docs_table_and_workdir_guard(tmp_path, workdir, results)
  if gan == "wgan_gp":
    assert results["loss"] == "wasserstein" and m["final_gradient_penalty"] > 0
    check_resume_repeats_the_run(workdir, results, args)
  if gan == "acgan":
    # 100 class-balanced samples: the overall consistency is the mean of the 10 per-class figures
    assert len(m["class_consistency_per_class"]) == 10
    assert m["class_consistency"] == pytest.approx(np.mean(list(m["class_consistency_per_class"].values())))
    assert m["classifier_test_accuracy"] > 0.3  # the reference classifier learnt digits (chance: 0.1)
    assert m["within_class_diversity"] > 0  # the samples of a class are not all identical
    assert len(list(cache.iterdir())) == 1  # the reference classifier, cached for later runs
    # one row per class in the grid: 10 rows of 8x8 tiles (+1 px padding), enlarged x7
    assert Image.open(os.path.join(workdir, "samples.png")).height == 7 * (10 * 9 + 1)


def check_resume_repeats_the_run(workdir, results, args):
  """A run killed after its step-4 checkpoint was truncated on disk: rerunning the command says so in
  one line, falls back to the step-2 checkpoint, and ends exactly where the full run ended."""
  grid = np.asarray(Image.open(os.path.join(workdir, "samples.png")))
  step4 = os.path.join(workdir, "checkpoints", "4")
  files = [os.path.join(r, f) for r, _, fs in os.walk(step4) for f in fs if not f.startswith("dlbook_")]
  largest = max(files, key=os.path.getsize)
  with open(largest, "r+b") as f:
    f.truncate(os.path.getsize(largest) // 2)
  os.remove(os.path.join(workdir, "results.json"))
  proc = run_launcher(*args)
  assert proc.returncode == 0, proc.stderr[-3000:]
  notices = [l for l in proc.stderr.splitlines() if "falling back to step 2" in l]
  assert len(notices) == 1 and "checkpoints/4 is corrupt" in notices[0]
  assert os.listdir(os.path.join(workdir, "corrupt_checkpoints"))  # kept, not deleted
  assert "resumed from checkpoint step 2" in proc.stderr
  resumed = check_run_dir(workdir, results["config"]["gan"])
  assert resumed["resumed_from_step"] == 2
  np.testing.assert_array_equal(np.asarray(Image.open(os.path.join(workdir, "samples.png"))), grid)
  for key in ("final_d_loss", "final_g_loss", "final_gradient_penalty"):
    assert resumed["metrics"][key] == pytest.approx(results["metrics"][key], rel=1e-6)


def check_docs_table_and_workdir_guard(tmp_path, workdir, results):
  # the docs table is generated from results.json, and the grid is copied next to it
  docs = tmp_path / "gan.md"
  docs.write_text(f"# GANs\n\nintro\n\n{report.BEGIN}\nold\n{report.END}\n\nafter\n")
  report.update_docs([workdir], str(docs), str(tmp_path / "figures"))
  text = docs.read_text()
  assert "old" not in text and "intro" in text and "after" in text
  assert f"| dcgan | non_saturating | digits, {results['dataset']['train_size']:,} images |" in text
  assert f"{results['wall_time_s'] / 60:.1f} min" in text and "`python -m experiments.gan --config=" in text
  assert (tmp_path / "figures" / "gan_dcgan_digits.png").exists()
  # a different config in the same workdir is refused before anything is overwritten
  config = gan_config.get_config("dcgan,smoke")
  config.loss = "minimax"
  with pytest.raises(DlbookError, match="different config"):
    train.train_and_evaluate(config, workdir)


def test_divergence_stops_and_keeps_only_good_checkpoints(tmp_path):
  config = gan_config.get_config("dcgan,smoke")
  config.g_optimizer.learning_rate = config.d_optimizer.learning_rate = 1e38
  config.num_train_steps = 8
  with pytest.raises(DlbookError, match="non-finite.*stopped"):
    train.train_and_evaluate(config, str(tmp_path))
  assert not (tmp_path / "results.json").exists()
  from dlbook.training.checkpoint import Checkpointer
  ckpt = Checkpointer(str(tmp_path / "checkpoints"))
  for step in ckpt.all_steps():
    leaves = [np.asarray(x) for x in jax.tree.leaves(ckpt.restore(None, step)["state"])]
    assert all(np.isfinite(x).all() and np.abs(x).max() < 1e30 for x in leaves if x.dtype.kind == "f")


@pytest.mark.parametrize("override, message", [
    ({"loss": "wasserstein"}, "does not fit gan 'dcgan'"),
    ({"gan": "biggan"}, "unknown gan 'biggan'"),
    ({"n_critic": 0}, "n_critic must be a positive"),
    ({"ada.target": 1.5}, "ada.target must be in"),
    ({"acgan.aux_fake": "both"}, "unknown acgan.aux_fake"),
    ({"data.normalization": "standardize"}, "symmetric"),
])
def test_bad_config_values_are_named(tmp_path, override, message):
  config = gan_config.get_config("dcgan,smoke")
  for key, value in override.items():
    node = config
    *path, last = key.split(".")
    for p in path:
      node = node[p]
    node[last] = value
  with pytest.raises(DlbookError, match=message):
    train.validate_config(config)


def test_bad_input_exits_with_one_line(tmp_path):
  proc = run_launcher("experiments.gan", "--config=configs/gan.py:stylegan,smoke", f"--workdir={tmp_path}")
  assert proc.returncode == 2
  lines = proc.stderr.strip().splitlines()
  assert lines[-1].startswith("error: unknown config argument 'stylegan'") and "wgan_gp" in lines[-1]
  assert "Traceback" not in proc.stderr
  proc = run_launcher("experiments.gan", "--config=configs/gan.py:acgan,smoke", f"--workdir={tmp_path}",
                      "--config.loss=wasserstein")
  assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error: loss 'wasserstein'")
