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


HUGE_PAGES_SCRIPT = r"""
import os, sys
from dlbook import runtime
print("START", flush=True)                     # printed twice: before and after the restart
active = runtime.use_huge_pages()
import ctypes
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
p = libc.malloc(64 << 20)                      # 64 MiB from glibc (an mmap), touched (numpy would madvise itself)
ctypes.memset(p, 1, 64 << 20)
with open("/proc/self/smaps_rollup") as f:
  huge_kb = [int(l.split()[1]) for l in f if l.startswith("AnonHugePages:")][0]
print("HUGE", active, os.environ.get("GLIBC_TUNABLES"), huge_kb >= 32 << 10, sys.argv[1:])
"""


@pytest.mark.skipif(not runtime.huge_pages_possible(), reason="no transparent huge pages or not glibc >= 2.35")
def test_use_huge_pages_restarts_once_with_the_same_arguments_and_gets_huge_pages():
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  env.pop("GLIBC_TUNABLES", None)
  env.pop(runtime.HUGE_PAGES_ENV, None)
  proc = subprocess.run([sys.executable, "-c", HUGE_PAGES_SCRIPT, "--flag=1"], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = proc.stdout.splitlines()
  assert lines.count("START") == 2
  assert [l for l in lines if l.startswith("HUGE")] == ["HUGE True glibc.malloc.hugetlb=1 True ['--flag=1']"]
  env[runtime.HUGE_PAGES_ENV] = "0"     # turned off: no restart, small pages
  proc = subprocess.run([sys.executable, "-c", HUGE_PAGES_SCRIPT], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=120)
  lines = proc.stdout.splitlines()
  assert lines.count("START") == 1 and [l for l in lines if l.startswith("HUGE")] == ["HUGE False None False []"]
