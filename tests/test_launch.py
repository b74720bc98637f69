"""Launcher plumbing: the persistent compilation cache."""

import os
import subprocess
import sys

from tests.conftest import ROOT

SCRIPT = """
import jax, jax.numpy as jnp
from dlbook import launch
path = launch.enable_compilation_cache(min_compile_time_s=0)
print("cache_dir=%s" % path)
if path:
  jax.block_until_ready(jax.jit(lambda x: jnp.sin(x) * 2)(jnp.ones(3)))
"""


def run_with_cache_env(value):
  env = dict(os.environ, PYTHONPATH=ROOT, DLBOOK_COMPILATION_CACHE=value, JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  return out.stdout


def test_compilation_cache_writes_compiled_executables_to_the_configured_directory(tmp_path):
  cache = tmp_path / "xla_cache"
  out = run_with_cache_env(str(cache))
  assert f"cache_dir={cache}" in out
  assert cache.is_dir() and any(cache.iterdir()), "no compiled executable was cached"


def test_compilation_cache_can_be_turned_off(tmp_path):
  assert "cache_dir=None" in run_with_cache_env("off")
