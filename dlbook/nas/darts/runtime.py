"""Process-level CPU settings for the DARTS launchers and benchmark (call before the first JAX computation).

Measured on the 2-core VM this project runs on (`benchmarks/darts_step.py` prints the effect):
- glibc serves allocations above 128 KiB-32 MiB with fresh `mmap`s and returns them on free, so every
  step page-faults its multi-megabyte activations back in; in this VM a page fault is expensive (writing
  a new 38 MB array took 150 ms against 8 ms with the heap reused). Raising the mmap and trim
  thresholds with `mallopt` keeps freed memory in the heap for the next step. The same variables
  (MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_) can be exported for any process.
- XLA's newer CPU fusion emitters compiled the DARTS graph more slowly and ran it more slowly than the
  classic ones (`--xla_cpu_use_fusion_emitters=false`).
These are process-wide; the library itself never calls this.
"""

import ctypes
import os

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
XLA_CPU_FLAGS = ("--xla_cpu_use_fusion_emitters=false",)


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
  keep_freed_memory()
  add_xla_flags()
