"""Data parallelism through `jit` with shardings: the batch is split along a 'data'
mesh axis and the train state is replicated; XLA inserts the gradient all-reduce."""

from typing import Optional

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from dlbook.errors import require
from dlbook.training import distributed


def split_cpu(num_devices: int) -> int:
  """Splits JAX's CPU backend into `num_devices` XLA devices (`jax_num_cpu_devices`), so that work sharded
  over devices (e.g. a GA population, `PopulationEvaluator`) runs concurrently on the host's cores, one
  share per device. Returns the number of CPU devices in effect.

  It works only before the first JAX operation starts the backends. If they have already started with
  another count (a notebook that ran JAX first, a test process), it logs a warning and changes nothing:
  sharded results are the same on any device count, only the speed differs. 0 leaves the backend
  alone. An accelerator, when present, stays the default backend; this only splits the host.
  """
  require(int(num_devices) >= 0, f"cpu_devices must be >= 0, got {num_devices}")
  if num_devices:
    try:
      jax.config.update("jax_num_cpu_devices", int(num_devices))
    except RuntimeError:
      pass
  count = len(jax.devices("cpu"))
  if num_devices and count != num_devices:
    logging.warning("cpu_devices=%d not applied: JAX's CPU backend had already started with %d device(s) "
                    "(call jax.config.update('jax_num_cpu_devices', %d) before any JAX operation); "
                    "results are unchanged, only slower", num_devices, count, num_devices)
  return count


def data_mesh(num_devices: Optional[int] = None) -> Mesh:
  """A 1-D mesh over the first `num_devices` devices (all when None or 0)."""
  devices = jax.devices()
  n = num_devices or len(devices)
  require(1 <= n <= len(devices), f"num_devices={n} but only {len(devices)} device(s) exist")
  return Mesh(np.asarray(devices[:n]), ("data",))


def shard_batch(batch, mesh: Mesh):
  """Places every array of the global `batch` split along its leading axis over the mesh; with
  several processes, each one contributes only its own rows."""
  sharding = NamedSharding(mesh, P("data"))
  if jax.process_count() == 1:
    return jax.device_put(batch, sharding)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(
      sharding, np.asarray(x)[distributed.local_rows(len(x))]), batch)


def replicate(tree, mesh: Mesh):
  """`tree` with every array replicated over the mesh (every process holds the same values)."""
  sharding = NamedSharding(mesh, P())
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), tree)


def check_divisible(batch_size: int, mesh: Mesh, name: str = "batch_size") -> None:
  n = mesh.devices.size
  require(batch_size % n == 0, f"{name}={batch_size} must be divisible by the {n} devices in use")
