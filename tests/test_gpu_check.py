"""benchmarks/gpu_check.py, the one-call GPU check, run on the CPU at smoke size (it checks the script, not
the speed). The reference parts need torch and quark0/darts' cnn/ folder, given as $DLBOOK_REFERENCE_CNN."""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def gpu_check(*args, timeout=None):
  out = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--smoke", *args], cwd=ROOT,
                       capture_output=True, text=True, timeout=timeout)
  assert out.returncode == 0, out.stderr[-3000:]
  return out.stdout


def test_reference_part_gets_flags_the_reference_script_accepts(tmp_path):
  pytest.importorskip("torch")
  # An empty cnn/ folder: benchmarks/reference_darts.py parses every flag gpu_check passes, then refuses
  # the folder by name; gpu_check reports the failed part and prints no ratio.
  out = gpu_check(f"--reference_cnn={tmp_path}", "--parts=ref_search2", timeout=120)
  assert f"{tmp_path} lacks architect.py" in out
  assert "unrecognized arguments" not in out
  assert re.search(r"part=search2 reference_s=n/a dlbook_s=n/a .*dlbook_vs_reference_ratio=n/a", out)
  assert "reference:failed_rc=1" in out


def test_unknown_part_is_refused():
  out = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--parts=search3"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
  assert out.returncode != 0 and "unknown --parts search3" in out.stderr


@pytest.mark.slow  # compiles the DARTS steps and a GA population at smoke size: minutes on 2 cores
def test_smoke_run_prints_every_figure_side_by_side():
  cnn = os.environ.get("DLBOOK_REFERENCE_CNN")
  args = [f"--reference_cnn={cnn}"] if cnn else []
  out = gpu_check(*args, "--timeout_s=900", timeout=3600)
  summary = out[out.index("==== gpu_check summary"):]
  for part in ("search1", "search2", "eval"):
    line = re.search(rf"^part={part} .*$", summary, re.M).group(0)
    step, compile_s = (float(re.search(rf"{k}=([0-9.]+)", line).group(1)) for k in ("dlbook_s", "dlbook_compile_s"))
    assert step > 0 and compile_s > 0, line
    if cnn:
      ref = float(re.search(r"reference_s=([0-9.]+)", line).group(1))
      ratio = float(re.search(r"dlbook_vs_reference_ratio=([0-9.]+)", line).group(1))
      assert abs(ratio - step / ref) < 1e-3 * ratio + 1e-3, line
  for part in ("ga16", "ga64"):
    assert float(re.search(rf"^part={part} .*vmap_vs_loop_speedup=([0-9.]+)", summary, re.M).group(1)) > 0
  assert "mixed_precision=" in summary
