"""End to end: the darts_search and darts_train launchers (smoke presets), resume, and bad input."""

import json
import os

import pytest

from dlbook.models.darts.genotypes import load_genotype
from tests.conftest import run_launcher

SEARCH = ("experiments.darts_search", "--config=configs/darts_search.py:smoke")
TRAIN = ("experiments.darts_train", "--config=configs/darts_train.py:smoke")


def one_error_line(proc):
  lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert lines[-1].startswith("error: ") and "Traceback" not in proc.stderr
  return lines[-1]


@pytest.mark.slow  # minutes on 2 shared cores (compiles a supernet); DLBOOK_SLOW=1
def test_search_smoke_writes_genotype_pictures_and_resumes(tmp_path):
  workdir = str(tmp_path / "search")
  proc = run_launcher(*SEARCH, f"--workdir={workdir}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  genotype = load_genotype(os.path.join(workdir, "genotype.json"))
  assert len(genotype.normal) == 4 and genotype.normal_concat == (2, 3)  # smoke: 2 nodes per cell
  for name in ("normal.png", "reduce.png", "alphas.png", "curves.png", "results.json"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  assert results["total_steps"] == 4 and results["genotype"]["normal"] == [list(e) for e in genotype.normal]
  assert 0.0 <= results["metrics"]["supernet_val_accuracy"] <= 1.0
  # The same command again resumes from the final checkpoint instead of starting over.
  again = run_launcher(*SEARCH, f"--workdir={workdir}")
  assert again.returncode == 0 and "resumed from checkpoint step 4" in again.stderr
  # A different config in the same workdir is refused.
  other = run_launcher(*SEARCH, f"--workdir={workdir}", "--config.batch_size=16")
  assert "different config" in one_error_line(other)


@pytest.mark.slow  # minutes on 2 shared cores (compiles a supernet); DLBOOK_SLOW=1
def test_train_smoke_with_published_genotype(tmp_path):
  workdir = str(tmp_path / "train")
  proc = run_launcher(*TRAIN, f"--workdir={workdir}", "--config.genotype=DARTS_V1")
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  assert 0.0 <= results["metrics"]["test_accuracy"] <= 1.0
  assert results["config"]["model"]["genotype"]["reduce"][0] == ["max_pool_3x3", 0]
  assert os.path.getsize(os.path.join(workdir, "normal.png")) > 0


@pytest.mark.parametrize("launcher,flag,message", [
    (TRAIN, "--config.genotype=DARTS_V9", "unknown genotype 'DARTS_V9'"),
    (TRAIN, "--config.genotype=/nonexistent/genotype.json", "does not exist"),
    (SEARCH, "--config.order=3", "unknown DARTS order 3"),
    (SEARCH, "--config.num_train_steps=-5", "num_train_steps must be >= 0"),
    (TRAIN, "--config.num_train_steps=-5", "num_train_steps must be >= 0"),
    (SEARCH, "--config.hessian=newton", "unknown DARTS hessian 'newton'"),
    (("experiments.darts_search", "--config=configs/darts_search.py:huge"), "", "unknown preset 'huge'"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, launcher, flag, message):
  args = [*launcher, f"--workdir={tmp_path / 'w'}"] + ([flag] if flag else [])
  assert message in one_error_line(run_launcher(*args))
  assert not (tmp_path / "w" / "genotype.json").exists() and not (tmp_path / "w" / "config.json").exists()


def test_invalid_genotype_file_is_refused(tmp_path):
  path = tmp_path / "genotype.json"
  path.write_text(json.dumps({"normal": [["sep_conv_3x3", 7]] * 8, "normal_concat": [2, 3, 4, 5],
                              "reduce": [["max_pool_3x3", 0]] * 8, "reduce_concat": [2, 3, 4, 5]}))
  line = one_error_line(run_launcher(*TRAIN, f"--workdir={tmp_path / 'w'}", f"--config.genotype={path}"))
  assert "invalid genotype" in line and "input index 7" in line
