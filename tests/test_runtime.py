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


TUNE_MALLOC_SCRIPT = r"""
import ctypes, os, resource, sys
from dlbook import runtime
print("START", flush=True)                     # printed twice when the process restarts
active = runtime.tune_malloc()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 256 << 20                                # 256 MiB: above every glibc default threshold
p = libc.malloc(size); ctypes.memset(p, 1, size); libc.free(p)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
p = libc.malloc(size); ctypes.memset(p, 2, size)   # the next "step" allocates the same size again
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print("TUNED", active, os.environ.get("GLIBC_TUNABLES"), faults < 1000, faults > 10000, sys.argv[1:])
"""


@pytest.mark.skipif(not runtime.tune_malloc_possible(), reason="not glibc >= 2.35")
def test_tune_malloc_restarts_once_with_the_same_arguments_and_reuses_freed_memory():
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  env.pop("GLIBC_TUNABLES", None)
  env.pop(runtime.TUNE_MALLOC_ENV, None)
  proc = subprocess.run([sys.executable, "-c", TUNE_MALLOC_SCRIPT, "--flag=1"], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = proc.stdout.splitlines()
  assert lines.count("START") == 2
  # a freed 256 MiB block is reused without page faults (glibc's default: a fresh mmap, 65,536 faults)
  assert [l for l in lines if l.startswith("TUNED")] == [
      f"TUNED True {':'.join(runtime.MALLOC_TUNABLES)} True False ['--flag=1']"]
  env[runtime.TUNE_MALLOC_ENV] = "0"     # turned off: no restart, glibc's defaults
  proc = subprocess.run([sys.executable, "-c", TUNE_MALLOC_SCRIPT], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=120)
  lines = proc.stdout.splitlines()
  assert lines.count("START") == 1 and [l for l in lines if l.startswith("TUNED")] == ["TUNED False None False True []"]
  env.pop(runtime.TUNE_MALLOC_ENV)       # a user's own setting of one tunable is kept
  env["GLIBC_TUNABLES"] = "glibc.malloc.arena_max=4"
  proc = subprocess.run([sys.executable, "-c", TUNE_MALLOC_SCRIPT], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=120)
  tuned = [l for l in proc.stdout.splitlines() if l.startswith("TUNED")][0].split()[2]
  assert tuned.split(":")[:2] == ["glibc.malloc.arena_max=4", "glibc.malloc.hugetlb=1"]
  assert "glibc.malloc.arena_max=1" not in tuned
