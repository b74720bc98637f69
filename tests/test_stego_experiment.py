"""The stego launcher end to end (smoke presets), bad input, and the generated tables."""

import json
import os

import pytest

from conftest import run_launcher
from dlbook.errors import DlbookError


def _smoke_config(path, **overrides):
  import importlib
  module = importlib.import_module(path)
  c = module.get_config("smoke")
  for k, v in overrides.items():
    target = c
    *parents, leaf = k.split(".")
    for p in parents:
      target = target[p]
    target[leaf] = v
  return c


def test_two_stage_smoke_launcher_end_to_end_and_tables(tmp_path):
  workdir = tmp_path / "runs" / "two_stage_1bpp_s0"
  r = run_launcher("experiments.stego", "--config=configs/stego_two_stage.py:smoke", f"--workdir={workdir}")
  assert r.returncode == 0, r.stderr[-3000:]
  assert "psnr=" in r.stdout and "xunet_error=" in r.stdout
  with open(workdir / "results.json") as f:
    results = json.load(f)
  m = results["metrics"]
  assert results["config"]["method"] == "two_stage" and results["seed"] == 0
  assert m["bits_per_message"] == [4096] and m["payload_bpp_measured"] == 1.0
  assert 0 <= m["extraction_accuracy"] <= 100 and 0 <= m["steganalyzer_error"] <= 100
  assert 0 <= m["xunet_error"] <= 100 and m["xunet_pairs"]["test"] == 16
  # The book-style figure is the same MSE read with MAX=255 on [0, 1] images: +20·log10(255) dB.
  assert m["psnr_book_style_max255_unit_range"] == pytest.approx(m["psnr"] + 48.1308, abs=1e-3)
  for name in ("examples.png", "curves.png", "config.json", "history.jsonl", "xunet/curves.png"):
    assert (workdir / name).exists(), name
  assert os.listdir(workdir / "checkpoints") and os.listdir(workdir / "tensorboard")

  # A different config in the same workdir is refused with one line.
  r = run_launcher("experiments.stego", "--config=configs/stego_two_stage.py:smoke", f"--workdir={workdir}",
                   "--config.payload_bpp=2")
  assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("error: workdir")

  # Tables are generated from the results.json files.
  docs = tmp_path / "docs"
  r = run_launcher("experiments.stego", f"--tables_from={tmp_path / 'runs'}", f"--docs={docs}")
  assert r.returncode == 0, r.stderr[-2000:]
  table = (docs / "stego_table_7_1.md").read_text()
  assert f"{m['psnr']:.2f}" in table and "not run" in table and "two_stage_1bpp" in table
  assert (docs / "figures" / "stego_two_stage_1bpp.png").exists()
  assert "not run" in (docs / "stego_tables_8.md").read_text()


@pytest.mark.slow  # ~1 min of CPU; shapes and LSB exactness are also pinned in test_stego_models.py
def test_multi_message_and_lsb_smoke_through_the_library(tmp_path):
  from dlbook.stego import training
  c = _smoke_config("configs.stego_multi", **{"xunet.enabled": False, "embedding": "mid"})
  m = training.train_and_evaluate(c, str(tmp_path / "multi"))["metrics"]
  assert m["bits_per_message"] == [4096, 4096]
  assert {"extraction_accuracy_1", "extraction_accuracy_2", "steganalyzer_error"} <= set(m)
  c = _smoke_config("configs.stego_two_stage", **{"xunet.enabled": False, "method": "lsb", "payload_bpp": 3.0})
  m = training.train_and_evaluate(c, str(tmp_path / "lsb"))["metrics"]
  assert m["extraction_accuracy"] == 100.0  # LSB replacement is exact
  # At 3 bpp each channel value's LSB is replaced: half change by one level, MSE ≈ 0.5, PSNR ≈ 51.1 dB.
  assert m["psnr"] == pytest.approx(51.14, abs=0.3)
  assert "steganalyzer_error" not in m


@pytest.mark.parametrize("args, message", [
    (["--config=configs/stego_two_stage.py:tiny"], "unknown preset 'tiny'"),
    (["--config=configs/stego_multi.py:smoke", "--config.embedding=middle"], "unknown embedding 'middle'"),
])
def test_bad_input_exits_with_one_line(tmp_path, args, message):
  r = run_launcher("experiments.stego", *args, f"--workdir={tmp_path / 'w'}")
  assert r.returncode == 2, r.stderr[-2000:]
  last = r.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and message in last, last
  assert not (tmp_path / "w" / "results.json").exists()


@pytest.mark.parametrize("overrides, message", [
    ({"method": "magic"}, "unknown method 'magic'"),
    ({"payload_bpp": 0.3}, "does not split"),
    ({"payload_bpp": 0.03125}, "cannot be reshaped"),
    ({"payload_bpp": -1.0}, "payload_bpp must be positive"),
    ({"num_messages": 2}, "needs method='multi_message'"),
    ({"loss.distance": "cosine"}, "unknown loss.distance"),
    ({"loss.message_loss": "hinge"}, "unknown loss.message_loss 'hinge'"),
    ({"loss.lambda_d": 0.0}, "lambda_d must be > 0"),
    ({"stage1_depth": 5}, "stage1_depth"),
    ({"data.name": "nowhere"}, "unknown dataset 'nowhere'"),
    ({"data.normalization": "standardize"}, "symmetric"),
    ({"cover_augment": "mirror"}, "unknown cover_augment 'mirror'"),
])
def test_bad_config_values_are_refused_before_training(tmp_path, overrides, message):
  from dlbook.stego import training
  c = _smoke_config("configs.stego_two_stage", **overrides)
  with pytest.raises(DlbookError, match=message):
    training.train_and_evaluate(c, str(tmp_path / "w"))
  assert not (tmp_path / "w" / "results.json").exists()


def test_tables_refuse_an_empty_runs_directory(tmp_path):
  r = run_launcher("experiments.stego", f"--tables_from={tmp_path}", f"--docs={tmp_path / 'docs'}")
  assert r.returncode == 2 and "no results.json" in r.stderr.strip().splitlines()[-1]
