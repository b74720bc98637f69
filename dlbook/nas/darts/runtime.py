"""The DARTS launchers' CPU settings, now in `dlbook.runtime` (one module for process-wide setup);
this name stays until the launchers import it from there."""

from dlbook.runtime import M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, XLA_CPU_FLAGS, add_xla_flags, configure_cpu, keep_freed_memory  # noqa: F401
