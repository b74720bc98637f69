"""User-facing errors.

A `DlbookError` is a problem with what the user asked for (an unknown name, a
missing file, an invalid config value). Launchers print its message as one line
and exit non-zero, without a traceback; everything else is a bug and keeps its
traceback.
"""


class DlbookError(ValueError):
  """Bad input from the user: the message names the bad value and valid ones."""


def require(condition: bool, message: str) -> None:
  """Raises `DlbookError(message)` unless `condition` holds."""
  if not condition:
    raise DlbookError(message)
