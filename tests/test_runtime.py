"""Process-wide setup (dlbook/runtime.py): the CPU device split and XLA flags."""

import os
import subprocess
import sys

import jax
import pytest

from dlbook import runtime
from dlbook.errors import DlbookError
from tests.conftest import ROOT

SPLIT_CPU_SCRIPT = r"""
from dlbook import runtime
before = runtime.split_cpu(2)  # a fresh process: JAX has not started yet
import jax
print("SPLIT", before, jax.device_count(), len(jax.devices("cpu")))
"""


def test_split_cpu_before_jax_starts_makes_that_many_devices():
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  proc = subprocess.run([sys.executable, "-c", SPLIT_CPU_SCRIPT], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert [l for l in proc.stdout.splitlines() if l.startswith("SPLIT")] == ["SPLIT 2 2 2"]


def test_split_cpu_after_jax_started_warns_and_changes_nothing(caplog):
  count = len(jax.devices("cpu"))  # this test process's backend is running
  assert runtime.split_cpu(0) == count
  with caplog.at_level("WARNING"):
    assert runtime.split_cpu(count + 1) == count
  assert f"cpu_devices={count + 1} not applied" in caplog.text
  assert len(jax.devices("cpu")) == count
  with pytest.raises(DlbookError, match="cpu_devices must be >= 0"):
    runtime.split_cpu(-1)


def test_add_xla_flags_appends_and_leaves_user_flags_alone(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_use_fusion_emitters=true --xla_dump_to=/tmp/x")
  runtime.add_xla_flags(("--xla_cpu_use_fusion_emitters=false", "--xla_force_host_platform_device_count=3"))
  assert os.environ["XLA_FLAGS"].split() == ["--xla_cpu_use_fusion_emitters=true", "--xla_dump_to=/tmp/x",
                                             "--xla_force_host_platform_device_count=3"]
