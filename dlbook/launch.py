"""Shared plumbing for the absl launchers in `experiments/`.

`run(main)` runs an absl main so that bad input (a `DlbookError`) prints one
`error: ...` line and exits with status 2, with no traceback.
"""

import logging as pylogging
import os
import sys

from absl import app, logging

from dlbook.errors import DlbookError

EXIT_BAD_INPUT = 2
QUIET_LIBRARIES = ("orbax", "tensorstore", "jax/_src")


class _LibraryNoiseFilter(pylogging.Filter):
  """Drops INFO chatter of libraries (orbax logs a dozen lines per save)."""

  def filter(self, record):
    return record.levelno >= pylogging.WARNING or not any(s in record.pathname for s in QUIET_LIBRARIES)


def quiet_library_logs() -> None:
  pylogging.getLogger("absl").addFilter(_LibraryNoiseFilter())


def fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(EXIT_BAD_INPUT)


def run(main) -> None:
  """`app.run(main)` with user errors reported as one line and a non-zero exit."""

  def wrapped(argv):
    logging.set_verbosity(logging.INFO)
    quiet_library_logs()
    try:
      main(argv)
    except DlbookError as e:
      logging.flush()
      fail(str(e))
    except FileNotFoundError as e:
      fail(f"missing file: {e.filename or e}")

  try:
    app.run(wrapped)
  except DlbookError as e:  # raised while flags (and the config file) are parsed
    fail(str(e))


def require_flag(value, name: str):
  if not value:
    fail(f"--{name} is required")
  return value


def workdir_path(path: str) -> str:
  return os.path.abspath(os.path.expanduser(path))
