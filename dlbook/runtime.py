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
- `tune_malloc`: restarts the process (same command line) with glibc tunables that keep freed memory
  for reuse (`MALLOC_TUNABLES`: mmap and trim thresholds of 64 GiB, one arena, transparent huge pages).
  XLA:CPU allocates a program's whole temporary buffer (4.8 GB for a MobileNetV2 training step at 224 px,
  batch 32) on every call from one of its worker threads; with glibc's defaults that is a fresh `mmap`
  each step, i.e. 1.4 million page faults whose zeroing and handling cost more than the arithmetic in
  this VM (MobileNetV2 224-px step 8.6 s; with the tunables 3.2-3.4 s and no page faults after the first
  step; `benchmarks/backbones.py --allocator`). `mallopt` from inside the process did not reach these
  allocations; the tunables must be set before the process starts, hence the restart. Launchers call it
  through `dlbook.launch.run`; `DLBOOK_TUNE_MALLOC=0` turns it off. The cost: the process keeps its peak
  heap until it exits.
  - XLA's newer CPU fusion emitters compiled the DARTS graph more slowly and ran it more slowly than
    the classic ones (`--xla_cpu_use_fusion_emitters=false`).
"""

import ctypes
import os
import sys
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


TUNE_MALLOC_ENV = "DLBOOK_TUNE_MALLOC"
# glibc tunables (names and meaning: glibc's manual, "Memory Allocation Tunables"). 64 GiB thresholds: every
# block below them is served from, and returned to, the heap instead of a fresh mmap; one arena, so that
# blocks freed by XLA's worker threads are reused by the next step's allocation.
MALLOC_TUNABLES = ("glibc.malloc.hugetlb=1", "glibc.malloc.mmap_threshold=68719476736",
                   "glibc.malloc.trim_threshold=68719476736", "glibc.malloc.arena_max=1")


def glibc_version():
  """(major, minor) of the C library when it is glibc, else None."""
  try:
    libc = ctypes.CDLL("libc.so.6")
    libc.gnu_get_libc_version.restype = ctypes.c_char_p
    return tuple(int(v) for v in libc.gnu_get_libc_version().decode().split(".")[:2])
  except (OSError, AttributeError, ValueError):
    return None


def tune_malloc_possible() -> bool:
  """glibc >= 2.35 (the release with the `hugetlb` tunable; the others are older)."""
  version = glibc_version()
  return version is not None and version >= (2, 35)


def tune_malloc() -> bool:
  """Re-executes this process (same command line) with `MALLOC_TUNABLES` in GLIBC_TUNABLES (see the
  module docstring); returns True when they are already in effect, False where they cannot be (not
  glibc >= 2.35, turned off with DLBOOK_TUNE_MALLOC=0, or no command line to repeat). Call it first
  thing: the process restarts."""
  tunables = os.environ.get("GLIBC_TUNABLES", "")
  if all(t in tunables for t in MALLOC_TUNABLES):
    return True
  if os.environ.get(TUNE_MALLOC_ENV, "1").strip().lower() in ("0", "off", "false", "no"):
    return False
  names = {t.split("=")[0] for t in tunables.split(":") if t}
  extra = [t for t in MALLOC_TUNABLES if t.split("=")[0] not in names]   # the user's own settings win
  argv = getattr(sys, "orig_argv", None)
  if not extra or not argv or not sys.executable or not tune_malloc_possible():
    return False
  os.environ["GLIBC_TUNABLES"] = ":".join(([tunables] if tunables else []) + extra)
  sys.stdout.flush()
  sys.stderr.flush()
  try:
    os.execv(sys.executable, [sys.executable] + list(argv[1:]))
  except OSError as e:  # exec refused: carry on with glibc's defaults
    if tunables:
      os.environ["GLIBC_TUNABLES"] = tunables
    else:
      os.environ.pop("GLIBC_TUNABLES")
    logging.warning("could not restart with the tuned allocator (%s); continuing without", e)
  return False


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
