"""Checkpoints that survive a kill and detect corruption, and the workdir record of a run.

`Checkpointer.save(step, tree)` writes the tree with orbax into a hidden temporary directory,
adds a SHA-256 digest of every file (`dlbook_sha256.json`), and only then renames the directory to
`checkpoints/<step>`: a run killed at any moment leaves either no checkpoint of that step or a
complete one with its digest. A restore recomputes the digest, so a truncated or bit-flipped
checkpoint is detected instead of loaded. `restore_latest` falls back from an unreadable checkpoint
to the previous one, moves the bad one to `corrupt_checkpoints/` (never deletes it) and says so in
one line. The newest `max_to_keep` checkpoints are kept.

`Workdir` keeps a workdir to one config: it checks the directory and the recorded config before
anything runs, writes `config.json` only when a run really starts, and knows whether the run has
finished (its `results.json` exists), so a rerun of a finished run changes nothing.
"""

import hashlib
import json
import os
import shutil
import time
from typing import Any, Callable, Optional, Sequence, Tuple

import jax
import orbax.checkpoint as ocp
from absl import logging

from dlbook.errors import DlbookError, require
from dlbook.training import distributed
from dlbook.training.reporting import write_json_atomic

DIGEST_FILE = "dlbook_sha256.json"
TREE_DIR = "state"
CORRUPT_DIR = "corrupt_checkpoints"
DIVERGED_DIR = "diverged_checkpoints"


def digest_directory(directory: str, exclude: Sequence[str] = (DIGEST_FILE,)) -> str:
  """SHA-256 over the relative paths and contents of every file under `directory`."""
  h = hashlib.sha256()
  for root, dirs, files in os.walk(directory):
    dirs.sort()
    for name in sorted(files):
      if name in exclude:
        continue
      path = os.path.join(root, name)
      h.update(os.path.relpath(path, directory).encode() + b"\0")
      with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
          h.update(block)
      h.update(b"\0")
  return h.hexdigest()


class CorruptCheckpoint(DlbookError):
  """A checkpoint whose files do not match their recorded digest, or cannot be read."""


class Checkpointer:
  """Saves and restores one pytree per step under `directory`, each with its digest."""

  def __init__(self, directory: str, max_to_keep: int = 3):
    self.directory = os.path.abspath(directory)
    self.max_to_keep = max_to_keep
    os.makedirs(self.directory, exist_ok=True)
    self._orbax = ocp.Checkpointer(ocp.StandardCheckpointHandler())

  def all_steps(self) -> Sequence[int]:
    return sorted(int(d) for d in os.listdir(self.directory)
                  if d.isdigit() and os.path.isdir(os.path.join(self.directory, d)))

  def latest_step(self) -> Optional[int]:
    steps = self.all_steps()
    return steps[-1] if steps else None

  def step_dir(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def save(self, step: int, tree: Any) -> None:
    """Every process calls it (orbax writes the shards); the primary one adds the digest and renames."""
    if step in self.all_steps():
      return
    primary = distributed.is_primary()
    tmp = os.path.join(self.directory, f".tmp-{step}")
    if primary:
      for name in os.listdir(self.directory):  # temporaries of killed saves
        if name.startswith(".tmp-"):
          shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)
      os.makedirs(tmp)
    distributed.barrier(f"checkpoint-{step}-start")
    try:
      self._orbax.save(os.path.join(tmp, TREE_DIR), args=ocp.args.StandardSave(tree))
      if primary:
        write_json_atomic(os.path.join(tmp, DIGEST_FILE), {"sha256": digest_directory(tmp)})
        os.rename(tmp, self.step_dir(step))  # the checkpoint appears complete, or not at all
    except BaseException:
      if primary:
        shutil.rmtree(tmp, ignore_errors=True)
      raise
    if primary:
      for old in self.all_steps()[:-self.max_to_keep]:
        shutil.rmtree(self.step_dir(old), ignore_errors=True)
    distributed.barrier(f"checkpoint-{step}-done")

  def verify(self, step: int) -> None:
    """Raises `CorruptCheckpoint` unless the files of `step` match their recorded digest."""
    path = self.step_dir(step)
    try:
      with open(os.path.join(path, DIGEST_FILE)) as f:
        recorded = json.load(f)["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
      raise CorruptCheckpoint(f"checkpoint {path} is corrupt: its digest file is missing or unreadable") from None
    if digest_directory(path) != recorded:
      raise CorruptCheckpoint(f"checkpoint {path} is corrupt: its files do not match their digest")

  def restore(self, target: Any, step: Optional[int] = None) -> Any:
    """Restores step `step` (default: the latest) into the structure of `target` (None: as saved),
    after checking its digest. A corrupt checkpoint is a `CorruptCheckpoint`; one that does not fit
    `target` (another model) a `DlbookError`."""
    step = self.latest_step() if step is None else step
    require(step is not None, f"no checkpoint in {self.directory}")
    self.verify(step)
    path = os.path.join(self.step_dir(step), TREE_DIR)
    try:
      if target is None:  # as saved, onto this process's first device (whatever topology wrote it)
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                              self._orbax.metadata(path).item_metadata.tree)
      return self._orbax.restore(path, args=ocp.args.StandardRestore(target))
    except (ValueError, KeyError, TypeError) as e:
      raise DlbookError(f"checkpoint {self.step_dir(step)} does not match this model "
                        f"({str(e).splitlines()[0][:200]})") from None
    except Exception as e:  # tensorstore and orbax raise many types for unreadable files
      raise CorruptCheckpoint(f"checkpoint {self.step_dir(step)} is unreadable "
                              f"({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''})") from None

  def restore_latest(self, target: Callable[[int], Any]) -> Tuple[Optional[int], Any]:
    """(step, tree) of the newest checkpoint that is intact, restored into `target(step)`; (None,
    None) when there is none. Corrupt newer checkpoints are moved to `../corrupt_checkpoints/`
    (kept, never deleted), each with a one-line warning."""
    for step in reversed(self.all_steps()):
      try:
        return step, self.restore(target(step), step)
      except CorruptCheckpoint as e:
        older = [s for s in self.all_steps() if s < step]
        aside = self.set_aside(step, CORRUPT_DIR)
        logging.warning("%s; moved to %s; %s", e, aside,
                        f"falling back to step {older[-1]}" if older else "no older checkpoint")
    if os.path.isdir(os.path.join(os.path.dirname(self.directory), CORRUPT_DIR)):
      raise DlbookError(f"no intact checkpoint left in {self.directory} (the corrupt ones are in "
                        f"{os.path.join(os.path.dirname(self.directory), CORRUPT_DIR)}); move them away to start "
                        f"this run again from scratch")
    return None, None

  def set_aside(self, step: int, folder: str) -> str:
    """Moves the checkpoint of `step` to `../folder/` (kept, never deleted); returns where it went."""
    root = os.path.join(os.path.dirname(self.directory), folder)
    dest = os.path.join(root, f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
    distributed.barrier(f"set-aside-{step}")  # every process has read the directory listing
    if distributed.is_primary():
      os.makedirs(root, exist_ok=True)
      shutil.move(self.step_dir(step), dest)
    distributed.barrier(f"set-aside-{step}-done")
    return dest

  def close(self):
    self._orbax.close()


class Workdir:
  """The directory of one run: its recorded config, its finished state and its results.

  `Workdir(path, config_dict)` checks, before anything runs, that `path` can hold a run and that a
  run already recorded there used the same config (keys in `ignore` may differ). `start()` records
  the config when the run really starts; `finished` says whether `results.json` exists."""

  CONFIG = "config.json"
  RESULTS = "results.json"

  def __init__(self, path: str, config_dict: dict, ignore: Sequence[str] = ("log_every_steps",)):
    self.path = os.path.abspath(os.path.expanduser(path))
    self.config = json.loads(json.dumps(config_dict, default=str))
    self.ignore = tuple(ignore)
    self._replace = False
    require(not os.path.exists(self.path) or os.path.isdir(self.path),
            f"workdir {self.path} is a file, not a directory")
    saved = self._read(self.CONFIG)
    if saved is not None:
      flat_a, flat_b = _flatten(saved), _flatten(self.config)
      diff = sorted(k for k in set(flat_a) | set(flat_b)
                    if flat_a.get(k) != flat_b.get(k) and k.split(".")[-1] not in self.ignore)
      if diff and (self.finished or has_checkpoints(self.path)):
        raise DlbookError(f"workdir {self.path} holds a run with a different config (differs in: "
                          f"{', '.join(diff[:8])}); use a new --workdir")
      self._replace = bool(diff)  # a run that saved nothing: its record may be replaced
    if not self.finished:  # a finished run is only read, so it may be read-only
      check_writable_dir(self.path)

  def _read(self, name: str):
    from dlbook.files import read_json
    return read_json(os.path.join(self.path, name), f"move it away to start a new run in {self.path}")

  def join(self, *parts) -> str:
    return os.path.join(self.path, *parts)

  @property
  def finished(self) -> bool:
    return os.path.exists(self.join(self.RESULTS))

  def results(self) -> dict:
    """The payload of the finished run (its results.json), unchanged."""
    payload = self._read(self.RESULTS)
    require(isinstance(payload, dict), f"{self.join(self.RESULTS)} is not a results record")
    logging.info("the run in %s has finished (results.json exists); nothing to do", self.path)
    return dict(payload, already_finished=True)

  def start(self) -> None:
    """Creates the directory and records the config (once): the run really starts now."""
    if not distributed.is_primary():
      distributed.barrier("workdir-start")
      return
    os.makedirs(self.path, exist_ok=True)
    if self._replace:
      logging.warning("%s: replacing the config of an earlier run that saved no checkpoint", self.path)
    if self._replace or not os.path.exists(self.join(self.CONFIG)):
      write_json_atomic(self.join(self.CONFIG), self.config, indent=2, sort_keys=True)
    distributed.barrier("workdir-start")


def check_writable_dir(path: str) -> None:
  """A clear error when `path` (or its nearest existing parent) cannot hold a run directory."""
  probe = path
  while not os.path.exists(probe):
    parent = os.path.dirname(probe)
    if parent == probe:
      break
    probe = parent
  require(os.path.isdir(probe), f"workdir {path}: {probe} is a file, not a directory")
  require(os.access(probe, os.W_OK | os.X_OK),
          f"workdir {path}: {probe} is not writable (permission denied)")


def has_checkpoints(path: str) -> bool:
  """Whether any `checkpoints/<step>` directory exists under `path`."""
  for root, dirs, _ in os.walk(path):
    if os.path.basename(root) == "checkpoints" and any(d.isdigit() for d in dirs):
      return True
  return False


def guard_workdir(workdir: str, config_dict: dict, ignore=("log_every_steps",)) -> None:
  """Checks `workdir` against `config_dict` and records the config (`Workdir` + `start`)."""
  Workdir(workdir, config_dict, ignore).start()


def _flatten(d, prefix=""):
  out = {}
  for k, v in d.items():
    key = f"{prefix}{k}"
    if isinstance(v, dict):
      out.update(_flatten(v, key + "."))
    else:
      out[key] = v
  return out
