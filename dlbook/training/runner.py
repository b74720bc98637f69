"""The one resumable training loop of dlbook: `train(...)`.

Every method trains through `train`. It supplies its state, a step `step_fn(state, step) -> (state,
metrics)` (a jitted pure step called on the batch and key of global step `step`, both pure functions
of (seed, step)) and optional hooks (evaluation, pictures, best-model tracking) that run after given
steps. The runner owns the policy every method shares:

- **resume**: the newest intact checkpoint is restored (`Checkpointer.restore_latest`: a corrupt one
  is set aside with a one-line notice and the previous one restored);
- **metrics** are averaged between log points and checkpoints (so a resumed run logs exactly what
  an uninterrupted one logs), written to TensorBoard and `history.jsonl`, and shown with steps/s
  and ETA;
- **finiteness**: before every save, the averaged metrics and every float leaf of the state about
  to be saved must be finite; otherwise the run stops with one line and the last good checkpoint
  stays the latest;
- **checkpoints** every `checkpoint_every` steps and at the end, as `flax.serialization` state
  dicts (the one way a state becomes a checkpoint tree), together with the wall time so far;
- **wall time** accumulates over every segment of a resumed run.
"""

import dataclasses
import os
import time
from typing import Any, Callable, Optional, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from dlbook.errors import DlbookError, require
from dlbook.training.checkpoint import DIVERGED_DIR, Checkpointer
from dlbook.training.reporting import MetricsLog, Progress


@dataclasses.dataclass(frozen=True)
class Hook:
  """`fn(state, step, log) -> new state or None`, run after global step `step` when `when(step)`;
  `log` is the run's `MetricsLog` (for evaluation metrics)."""
  when: Callable[[int], bool]
  fn: Callable[[Any, int, MetricsLog], Any]


def every(n: int, also_at: Optional[int] = None, skip: Optional[int] = None) -> Callable[[int], bool]:
  """A `Hook.when`: steps divisible by `n`, plus `also_at` (e.g. the last step), minus `skip`."""
  return lambda step: (n > 0 and step % n == 0 or step == also_at) and step != skip


@dataclasses.dataclass
class Result:
  state: Any
  start_step: int               # where this segment started (`initial_step` for a fresh run)
  total_steps: int
  earlier_s: float              # wall time of the run's earlier segments (0 for a fresh run)
  steps_per_s: Optional[float]  # this segment's rate; None when it ran no step
  log: MetricsLog               # open: the caller adds its evaluation and closes it

  def wall_time_s(self, started: float) -> float:
    """Wall time of the whole run: earlier segments plus this one, which began at `started`."""
    return self.earlier_s + time.time() - started


def state_to_tree(state) -> dict:
  return flax.serialization.to_state_dict(state)


def state_from_tree(template, tree):
  return flax.serialization.from_state_dict(template, tree)


def all_finite(tree) -> bool:
  """Whether every floating-point leaf of `tree` is finite, checked on the host shard by shard (no XLA
  program: one jitted reduction over the ~6,000 leaves of a DenseNet-201 unit's state did not finish
  compiling on XLA:CPU in an hour). Each process checks the shards it holds."""
  for x in jax.tree.leaves(tree):
    if not (hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.inexact)):
      continue
    parts = [shard.data for shard in x.addressable_shards] if isinstance(x, jax.Array) else [x]
    if not all(np.isfinite(np.asarray(p)).all() for p in parts):
      return False
  return True


def mean_metrics(pending: Sequence[dict]) -> dict:
  """The mean of each metric over the steps since the last log point."""
  host = jax.device_get(list(pending))
  return {k: float(np.mean([np.asarray(m[k], np.float64) for m in host])) for k in host[0]}


def train(state, step_fn: Callable, total_steps: int, directory: str, *, log_every: int, checkpoint_every: int,
          name: str = "train", prefix: str = "train/", hooks: Sequence[Hook] = (), max_checkpoints: int = 3,
          template: Optional[Callable[[int], Any]] = None, initial_step: int = 0, started: Optional[float] = None,
          progress_keys: Optional[Sequence[str]] = None, progress_extra: Optional[Callable[[int], str]] = None,
          checkpoint_at: Optional[Callable[[int], bool]] = None) -> Result:
  """Trains `state` from its latest checkpoint in `directory` (else from `initial_step`) up to
  `total_steps` and returns the `Result`.

  `step_fn(state, step)` runs global step `step` (0-based). `template(step)` gives the state
  structure a checkpoint of `step` restores into (default: `state`; a method whose optimizer
  changes between phases supplies its own). `started` is when this process started the run (for
  the wall time; default now). `checkpoint_at(step)` asks for extra checkpoints (e.g. at the end of
  each phase); every checkpoint is also a log point. The progress line counts the steps from
  `initial_step`.
  """
  started = time.time() if started is None else started
  require(int(total_steps) > 0, f"{name}: the number of training steps must be positive, got {total_steps}")
  require(int(log_every) > 0, f"log_every_steps must be positive, got {log_every}")
  require(int(checkpoint_every) > 0, f"checkpoint_every_steps must be positive, got {checkpoint_every}")
  template = template or (lambda step: state)
  ckpt = Checkpointer(os.path.join(directory, "checkpoints"), max_checkpoints)
  wrap = lambda s, wall: {"state": state_to_tree(s), "runner": {"wall_time_s": np.float64(wall)}}
  step, tree = ckpt.restore_latest(lambda s: wrap(template(s), 0.0))
  earlier_s = 0.0
  if step is None:
    step = int(initial_step)
  else:
    state = state_from_tree(template(step), tree["state"])
    earlier_s = float(tree["runner"]["wall_time_s"])
    logging.info("%s: resumed from checkpoint step %d in %s", name, step, ckpt.directory)
  start = step
  log = MetricsLog(directory, resume_step=start)
  progress = Progress(total_steps - initial_step, start - initial_step, name=name)
  # A checkpoint counts as good once the step after it computed finite metrics from it.
  unconfirmed = start if start > initial_step else None
  pending = []
  try:
    while step < total_steps:
      state, metrics = step_fn(state, step)
      pending.append(metrics)
      step += 1
      if unconfirmed is not None:
        if not all(np.isfinite(v) for v in mean_metrics([metrics]).values()):
          aside = ckpt.set_aside(unconfirmed, DIVERGED_DIR)
          _stop(name, f"the metrics of step {step}, computed from the checkpoint of step {unconfirmed}, became "
                f"non-finite (that checkpoint was moved to {aside})", ckpt)
        unconfirmed = None
      save = step % checkpoint_every == 0 or step == total_steps or bool(checkpoint_at and checkpoint_at(step))
      if step % log_every == 0 or save:
        means = mean_metrics(pending)
        pending = []
        bad = sorted(k for k, v in means.items() if not np.isfinite(v))
        if bad:
          _stop(name, f"{', '.join(bad)} became non-finite by step {step}", ckpt)
        log.write(step, means, prefix=prefix)
        shown = means if progress_keys is None else {k: means[k] for k in progress_keys if k in means}
        line = progress.line(step - initial_step, shown)
        logging.info(line + (" | " + progress_extra(step) if progress_extra else ""))
      for hook in hooks:
        if hook.when(step):
          new = hook.fn(state, step, log)
          state = state if new is None else new
      if save:
        if not all_finite(state):
          _stop(name, f"the model state (parameters or optimizer state) became non-finite by step {step}", ckpt)
        ckpt.save(step, wrap(state, earlier_s + time.time() - started))
        unconfirmed = step
  except BaseException:
    log.close()
    raise
  finally:
    ckpt.close()
  rate = progress.rate(step - initial_step) if step > start else None
  return Result(state, start, int(total_steps), earlier_s, rate, log)


def _stop(name: str, what: str, ckpt: Checkpointer) -> None:
  steps = ckpt.all_steps()
  kept = (f"the last good checkpoint (step {steps[-1]}) is kept" if steps else "no good checkpoint had been saved")
  raise DlbookError(f"{name}: {what}; stopped, {kept}; lower the learning rate or clip gradients")
