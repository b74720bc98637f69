"""Multi-process (multi-host) training on JAX's own runtime.

`initialize` starts `jax.distributed` (from explicit settings, or from the cluster's environment:
SLURM, Open MPI, Cloud TPU, ...), and on CPU selects JAX's gloo collectives so that processes on
one or several machines can train together. After it, `jax.devices()` lists every process's
devices: the data mesh spans them all, every process feeds its own rows of each global batch
(`local_rows`), the train state is replicated, and XLA all-reduces the gradients.

Only the primary process (index 0) writes: results, pictures, TensorBoard, history and the
checkpoints' digests; every process takes part in saving and restoring orbax checkpoints.
With one process every function here is a no-op or the identity.
"""

from typing import Optional

import jax
import numpy as np
from absl import logging

from dlbook.errors import require


def initialize(coordinator_address: Optional[str] = None, num_processes: Optional[int] = None,
               process_id: Optional[int] = None, auto: bool = False) -> None:
  """Connects this process to the others. With `auto`, JAX reads the cluster's environment; else
  `coordinator_address` (host:port of process 0), `num_processes` and `process_id` are all needed."""
  explicit = (coordinator_address, num_processes, process_id)
  if not auto and all(v is None for v in explicit):
    return
  if not auto:
    require(None not in explicit, "multi-process training needs --coordinator_address, --num_processes and "
            "--process_id together (or --distributed to read them from the cluster's environment)")
    require(int(num_processes) >= 1 and 0 <= int(process_id) < int(num_processes),
            f"--process_id must be in [0, --num_processes), got {process_id} of {num_processes}")
  jax.config.update("jax_cpu_collectives_implementation", "gloo")  # collectives between CPU processes
  if auto:
    jax.distributed.initialize()
  else:
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=int(num_processes),
                               process_id=int(process_id))
  logging.info("process %d of %d; %d local and %d global devices", jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())


def is_primary() -> bool:
  return jax.process_index() == 0


def multi_process() -> bool:
  return jax.process_count() > 1


def barrier(name: str) -> None:
  """Waits until every process has reached `name` (no-op with one process)."""
  if multi_process():
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


def local_rows(n: int) -> slice:
  """The rows of a global batch of `n` that this process feeds (equal shares, in process order)."""
  count, index = jax.process_count(), jax.process_index()
  require(n % count == 0, f"a global batch of {n} does not split evenly over {count} processes")
  share = n // count
  return slice(index * share, (index + 1) * share)


def gather(tree):
  """Host numpy copies of every array in `tree`, whole (sharded arrays are all-gathered)."""
  if not multi_process():
    return jax.device_get(tree)
  from jax.experimental import multihost_utils
  return jax.tree.map(lambda x: np.asarray(x) if x.is_fully_replicated else
                      np.asarray(multihost_utils.process_allgather(x, tiled=True)), tree)
