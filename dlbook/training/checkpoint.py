"""Orbax checkpoints that survive a kill, and a guard that keeps a workdir to one config.

Orbax writes each step into a temporary directory and renames it when complete,
so a run killed mid-save leaves the previous checkpoint as the latest good one.
"""

import json
import os
from typing import Any, Optional

import orbax.checkpoint as ocp

from dlbook.errors import DlbookError


class Checkpointer:
  """Saves and restores one pytree per step under `directory`."""

  def __init__(self, directory: str, max_to_keep: int = 3):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                           enable_async_checkpointing=False)
    self.manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def save(self, step: int, tree: Any) -> None:
    if step in self.manager.all_steps():
      return
    self.manager.save(step, args=ocp.args.StandardSave(tree))
    self.manager.wait_until_finished()

  def restore(self, target: Any, step: Optional[int] = None) -> Any:
    """Restores into the structure of `target`; a mismatch is a `DlbookError`."""
    step = self.latest_step() if step is None else step
    try:
      return self.manager.restore(step, args=ocp.args.StandardRestore(target))
    except (ValueError, KeyError, TypeError) as e:
      raise DlbookError(f"checkpoint {self.directory}/{step} does not fit this model/config "
                        f"({str(e).splitlines()[0][:200]}); use a new --workdir") from None

  def close(self):
    self.manager.close()


def guard_workdir(workdir: str, config_dict: dict, ignore=("log_every_steps",)) -> None:
  """Records the config on a first run; a rerun with a different config is refused,
  so a resumed run never mixes two configs and a saved run is never overwritten."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, "config.json")
  current = json.loads(json.dumps(config_dict, default=str))
  if os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    flat_a, flat_b = _flatten(saved), _flatten(current)
    diff = sorted(k for k in set(flat_a) | set(flat_b)
                  if flat_a.get(k) != flat_b.get(k) and k.split(".")[-1] not in ignore)
    if diff:
      raise DlbookError(f"workdir {workdir} holds a run with a different config (differs in: "
                        f"{', '.join(diff[:8])}); use a new --workdir")
    return
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(current, f, indent=2, sort_keys=True)
  os.replace(tmp, path)


def _flatten(d, prefix=""):
  out = {}
  for k, v in d.items():
    key = f"{prefix}{k}"
    if isinstance(v, dict):
      out.update(_flatten(v, key + "."))
    else:
      out[key] = v
  return out
