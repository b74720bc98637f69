"""Shared test settings: the `slow` marker (run only with DLBOOK_SLOW=1) and the repo root."""

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)
sys.modules.setdefault("conftest", sys.modules[__name__])  # `from conftest import ...` works too


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: long test; runs only with DLBOOK_SLOW=1")


def pytest_collection_modifyitems(config, items):
  run_slow = os.environ.get("DLBOOK_SLOW") == "1"
  skip_slow = pytest.mark.skip(reason="slow test; set DLBOOK_SLOW=1 to run it")
  for item in items:
    if not run_slow and "slow" in item.keywords:
      item.add_marker(skip_slow)


def run_launcher(module, *args, env=None, timeout=600):
  """Runs `python -m module args...` from the repo root; returns CompletedProcess."""
  import subprocess
  full_env = dict(os.environ, PYTHONPATH=ROOT, **(env or {}))
  return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=full_env,
                        capture_output=True, text=True, timeout=timeout)
