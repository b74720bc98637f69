"""Process-wide setup: JAX's compilation cache, the CPU device split, XLA flags and the allocator.

Every function here changes settings of the whole process, and most work only before JAX starts its
backends (the first JAX computation). Launchers, benchmarks and tests call them first thing; the
library never does.

- `enable_compilation_cache`: JAX's persistent compilation cache, so a resumed or repeated run skips
  the compiles its previous run paid for (several minutes for the DARTS supernet on CPU).
- `split_cpu(n)`: n XLA CPU devices, so work sharded over devices (a GA population) runs on the
  host's cores concurrently (a config's `cpu_devices`).
- `configure_cpu`: the allocator and XLA CPU flags measured on the 2-core VM this project runs on
  (`benchmarks/darts_step.py` prints the effect):
  - glibc serves allocations above 128 KiB-32 MiB with fresh `mmap`s and returns them on free, so
    every step page-faults its multi-megabyte activations back in; in this VM a page fault is
    expensive (writing a new 38 MB array took 150 ms against 8 ms with the heap reused). Raising the
    mmap and trim thresholds with `mallopt` keeps freed memory in the heap for the next step. The same
    variables (MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_) can be exported for any process.
  - XLA's newer CPU fusion emitters compiled the DARTS graph more slowly and ran it more slowly than
    the classic ones (`--xla_cpu_use_fusion_emitters=false`).
"""

import ctypes
import os
from typing import Optional

from absl import logging

from dlbook.errors import require

CACHE_ENV = "DLBOOK_COMPILATION_CACHE"
DEFAULT_CACHE_DIR = os.path.join("~", ".cache", "dlbook", "jax_compilation_cache")
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
XLA_CPU_FLAGS = ("--xla_cpu_use_fusion_emitters=false",)


def enable_compilation_cache(min_compile_time_s: float = 2.0) -> Optional[str]:
  """Points JAX's persistent compilation cache at $DLBOOK_COMPILATION_CACHE (default
  ~/.cache/dlbook/jax_compilation_cache; "off" or empty disables it) for compiles that take at least
  `min_compile_time_s`. Returns the directory, or None when disabled."""
  path = os.environ.get(CACHE_ENV, DEFAULT_CACHE_DIR).strip()
  if path.lower() in ("", "off", "0", "none"):
    return None
  import jax  # noqa: PLC0415 (importing JAX does not start its backends; XLA flags set later still apply)
  path = os.path.abspath(os.path.expanduser(path))
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_time_s)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  return path


def split_cpu(num_devices: int) -> int:
  """Splits JAX's CPU backend into `num_devices` XLA devices (`jax_num_cpu_devices`), so that work sharded
  over devices (e.g. a GA population, `dlbook.nas.fitness.PopulationEvaluator`) runs concurrently on the
  host's cores, one share per device. Returns the number of CPU devices in effect.

  It works only before the first JAX operation starts the backends. If they have already started with
  another count (a notebook that ran JAX first, a test process), it logs a warning and changes nothing:
  sharded results are the same on any device count, only the speed differs. 0 leaves the backend
  alone. An accelerator, when present, stays the default backend; this only splits the host.
  """
  import jax  # noqa: PLC0415
  require(int(num_devices) >= 0, f"cpu_devices must be >= 0, got {num_devices}")
  if num_devices:
    try:
      jax.config.update("jax_num_cpu_devices", int(num_devices))
    except RuntimeError:
      pass
  count = len(jax.devices("cpu"))
  if num_devices and count != num_devices:
    logging.warning("cpu_devices=%d not applied: JAX's CPU backend had already started with %d device(s) "
                    "(call dlbook.runtime.split_cpu(%d) before any JAX operation); "
                    "results are unchanged, only slower", num_devices, count, num_devices)
  return count


def keep_freed_memory(threshold_bytes: int = 1 << 30) -> bool:
  """Stops glibc from returning large freed blocks to the OS; False where glibc is absent."""
  try:
    libc = ctypes.CDLL("libc.so.6")
  except OSError:
    return False
  return bool(libc.mallopt(M_MMAP_THRESHOLD, threshold_bytes)) and bool(libc.mallopt(M_TRIM_THRESHOLD, threshold_bytes))


def add_xla_flags(flags=XLA_CPU_FLAGS) -> None:
  """Appends XLA flags (only effective before JAX initialises its CPU backend); user-set ones win."""
  current = os.environ.get("XLA_FLAGS", "")
  names = {f.split("=")[0] for f in current.split()}
  extra = [f for f in flags if f.split("=")[0] not in names]
  os.environ["XLA_FLAGS"] = " ".join([current] + extra).strip()


def configure_cpu() -> None:
  """The allocator and XLA CPU settings of the module docstring."""
  keep_freed_memory()
  add_xla_flags()
