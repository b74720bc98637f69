"""Writing files without ever following a planted link or leaving a half-written file.

`atomic_write` creates a new temporary file with a random name next to the target
(`tempfile.mkstemp`: ``O_CREAT | O_EXCL``, so an existing name or a symlink placed there is
never opened), writes it, flushes it to disk and renames it over the target (`os.replace`,
which replaces a symlink at the target itself rather than the file it points to). On any
failure the temporary file is removed and the target is left as it was.
"""

import os
import tempfile
from typing import Callable, Optional

from dlbook.errors import DlbookError


def _default_mode() -> int:
  """0o666 less the process umask (read from /proc, so the umask is never changed), else 0o644."""
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("Umask:"):
          return 0o666 & ~int(line.split()[1], 8)
  except (OSError, ValueError):
    pass
  return 0o644


def atomic_write(path: str, write: Callable, mode: Optional[int] = None) -> None:
  """Calls `write(binary_file)` on a fresh temporary file beside `path`, then renames it to `path`.

  `mode`: the new file's permissions (default: as `open` would create it, 0o666 less the
  umask; 0o600 for secrets). An `OSError` becomes a `DlbookError` naming `path`.
  """
  directory = os.path.dirname(os.path.abspath(path))
  tmp = None
  try:
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    with os.fdopen(fd, "wb") as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp, _default_mode() if mode is None else mode)
    os.replace(tmp, path)
    tmp = None
  except OSError as e:
    raise DlbookError(f"cannot write {path}: {e.strerror or e}") from None
  finally:
    if tmp is not None:
      try:
        os.unlink(tmp)
      except OSError:
        pass


def read_json(path: str, hint: str = "move it away to redo that part"):
  """A JSON record a run wrote earlier, or None where there is none; a corrupt one is one error line
  ending in `hint` (it is the user's to move away), never silently overwritten."""
  import json
  if not os.path.exists(path):
    return None
  try:
    with open(path) as fh:
      return json.load(fh)
  except ValueError:
    raise DlbookError(f"{path} is corrupt (not JSON); {hint}") from None
