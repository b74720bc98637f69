"""Shared plumbing for the absl launchers in `experiments/`.

`run(main)` runs an absl main so that bad input (a `DlbookError`) prints one
`error: ...` line and exits with status 2, with no traceback, and turns on JAX's persistent
compilation cache (`enable_compilation_cache`), so a resumed or repeated run skips the compiles
its previous run paid for (several minutes for the DARTS supernet on CPU).
"""

import logging as pylogging
import os
import sys

from absl import app, flags, logging

from dlbook.errors import DlbookError

EXIT_BAD_INPUT = 2

flags.DEFINE_string("coordinator_address", None, "Multi-process training: host:port of process 0's coordinator.")
flags.DEFINE_integer("num_processes", None, "Multi-process training: how many processes train together.")
flags.DEFINE_integer("process_id", None, "Multi-process training: this process's index, 0 .. num_processes-1.")
flags.DEFINE_bool("distributed", False, "Multi-process training with the settings read from the cluster's "
                  "environment (SLURM, Open MPI, Cloud TPU: jax.distributed.initialize()).")
CACHE_ENV = "DLBOOK_COMPILATION_CACHE"
DEFAULT_CACHE_DIR = os.path.join("~", ".cache", "dlbook", "jax_compilation_cache")
QUIET_LIBRARIES = ("orbax", "tensorstore", "jax/_src")


class _LibraryNoiseFilter(pylogging.Filter):
  """Drops INFO chatter of libraries (orbax logs a dozen lines per save)."""

  def filter(self, record):
    return record.levelno >= pylogging.WARNING or not any(s in record.pathname for s in QUIET_LIBRARIES)


def quiet_library_logs() -> None:
  logging.get_absl_handler().addFilter(_LibraryNoiseFilter())


def fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(EXIT_BAD_INPUT)


def enable_compilation_cache(min_compile_time_s: float = 2.0):
  """Points JAX's persistent compilation cache at $DLBOOK_COMPILATION_CACHE (default
  ~/.cache/dlbook/jax_compilation_cache; "off" or empty disables it) for compiles that take at least
  `min_compile_time_s`. Returns the directory, or None when disabled."""
  from dlbook import runtime  # noqa: PLC0415
  return runtime.enable_compilation_cache(min_compile_time_s)


def run(main) -> None:
  """`app.run(main)` with user errors reported as one line and a non-zero exit. The process first
  restarts itself with glibc tunables that keep freed memory for reuse (`dlbook.runtime.tune_malloc`)."""
  from dlbook import runtime  # noqa: PLC0415
  runtime.tune_malloc()

  def wrapped(argv):
    logging.set_verbosity(logging.INFO)
    quiet_library_logs()
    try:
      from dlbook.training import distributed
      FLAGS = flags.FLAGS
      distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                             auto=FLAGS.distributed)
      enable_compilation_cache()
      main(argv)
    except DlbookError as e:
      logging.flush()
      fail(one_line(e))
    except OSError as e:  # a missing config file surfaces here, when the config is first read
      logging.flush()
      fail(describe_os_error(e))

  app.run(wrapped, flags_parser=parse_flags)


def describe_os_error(e: OSError) -> str:
  """What went wrong with a file, in words: missing, not a directory, permission, disk full..."""
  import errno
  what = {errno.ENOENT: "missing file or directory", errno.EACCES: "permission denied",
          errno.EPERM: "operation not permitted", errno.ENOTDIR: "not a directory (a file is in the way)",
          errno.EISDIR: "is a directory, expected a file", errno.EROFS: "read-only file system",
          errno.ENOSPC: "no space left on the device", errno.EEXIST: "already exists"}.get(e.errno)
  if what is None and e.strerror is None:
    return one_line(e)
  what = what or e.strerror
  return f"{what}: {e.filename}" if e.filename else what


def one_line(error: BaseException) -> str:
  """The user-facing line of an error whose message may embed a traceback."""
  lines = [l.strip() for l in str(error).splitlines() if l.strip()]
  for l in reversed(lines):
    if "DlbookError: " in l:
      return l.split("DlbookError: ", 1)[1]
  if any(l.startswith("Traceback") for l in lines):
    return lines[-1]
  return " ".join(lines) or repr(error)


def parse_flags(argv):
  """absl's flag parsing, with a bad config (unknown preset, bad override) as one error line."""
  try:
    return flags.FLAGS(argv)
  except (AttributeError, KeyError) as e:  # --config.nokey=... names a key the config lacks
    fail(f"unknown config key {one_line(e).strip(chr(34))} in a --config override; see the config file for valid keys")
  except Exception as e:  # config_flags raises several types, with tracebacks in their messages
    fail(one_line(e))


def require_flag(value, name: str):
  if not value:
    fail(f"--{name} is required")
  return value


def workdir_path(path: str) -> str:
  return os.path.abspath(os.path.expanduser(path))
