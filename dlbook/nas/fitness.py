"""Evolutionary NAS fitness: validation accuracy after a short training run (book ch. 2, §2.2.2 C).

Every individual is a set of masks / one-hot selectors over a fixed-shape supernet
(`dlbook.nas.chain_space.ChainSpace`, `dlbook.nas.cell_space.CellSpace`), so one pure function
`train_and_evaluate(genome, key, data) -> {fitness, train_loss}` serves every individual:
it initialises the individual's own weights from `key`, trains them for `len(batch_index)` steps
with optax inside a `lax.scan`, and returns the accuracy on the evaluation images.

`PopulationEvaluator` runs it two ways:
- `__call__`: the whole population chunk as ONE `jax.vmap` in ONE jitted function, compiled once
  per run (`num_traces` counts traces); with several devices the population axis is sharded over
  them (the data are replicated);
- `sequential`: a Python loop over individuals through the same per-individual function (the
  reference path; tests check both give the same fitness for the same keys).

Choices where the book is silent (docs/nas_evolution.md): every individual sees the same batches
in the same order (common random numbers make fitness comparisons less noisy); only the weight
initialisation depends on the individual's key; no augmentation or dropout during the search.
"""

import dataclasses
import time
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import custom_batching
from jax.sharding import NamedSharding, PartitionSpec

from dlbook import data as data_lib
from dlbook import evolution
from dlbook.errors import DlbookError, require
from dlbook.training import sharding
from dlbook.training.steps import cross_entropy


def resolve_microbatch(value, backend: Optional[str] = None, num_devices: Optional[int] = None) -> int:
  """`fitness.vmap_microbatch` as an int. "auto": 1 (one individual at a time per device) on a CPU backend
  split into several devices (`cpu_devices`), the fastest measured there (docs/nas_evolution.md); 0 (the
  whole chunk in one vmap, batched kernels) on one CPU device and on GPUs/TPUs."""
  if isinstance(value, str) and value.strip().lower() == "auto":
    backend = jax.default_backend() if backend is None else backend
    num_devices = jax.local_device_count() if num_devices is None else num_devices
    return 1 if backend == "cpu" and num_devices > 1 else 0
  try:
    return int(value)
  except (TypeError, ValueError):
    raise DlbookError(f"fitness.vmap_microbatch must be \"auto\" or an integer >= 0, got {value!r}") from None


def make_fitness_data(train_images, train_labels, eval_images, eval_labels, *, batch_size: int,
                      num_steps: int, seed: int, eval_batch_size: int, eval_size: Optional[int] = None) -> dict:
  """Arrays for `train_and_evaluate`: the training subset, the batch indices of every step (a pure
  function of `seed`: shuffled epochs, drop-remainder), and the evaluation images padded to
  `eval_size` (a multiple of `eval_batch_size`) with a 0/1 mask."""
  n = len(train_labels)
  require(0 < batch_size <= n, f"batch_size {batch_size} must be between 1 and the {n} training images")
  require(num_steps > 0, f"train_steps must be positive, got {num_steps}")
  require(eval_batch_size > 0, f"eval_batch_size must be positive, got {eval_batch_size}")
  per_epoch = n // batch_size
  epochs = -(-num_steps // per_epoch)
  order = np.concatenate([data_lib.epoch_permutation(n, seed, e)[:per_epoch * batch_size] for e in range(epochs)])
  batch_index = order[:num_steps * batch_size].reshape(num_steps, batch_size).astype(np.int32)
  v = len(eval_labels)
  size = max(v, eval_size or 0)
  size = -(-size // eval_batch_size) * eval_batch_size
  pad = size - v
  images = np.concatenate([eval_images, np.zeros((pad,) + eval_images.shape[1:], eval_images.dtype)])
  labels = np.concatenate([eval_labels, np.zeros(pad, eval_labels.dtype)]).astype(np.int32)
  mask = np.concatenate([np.ones(v, np.float32), np.zeros(pad, np.float32)])
  return {"train_images": np.asarray(train_images, np.float32), "train_labels": np.asarray(train_labels, np.int32),
          "batch_index": batch_index, "eval_images": images.astype(np.float32), "eval_labels": labels,
          "eval_mask": mask}


def with_eval_split(data: dict, eval_images, eval_labels, eval_batch_size: int) -> dict:
  """The same training arrays with other evaluation images (same padded size, so no recompile)."""
  size = data["eval_labels"].shape[0]
  require(len(eval_labels) <= size, f"evaluation split of {len(eval_labels)} images exceeds the compiled "
          f"size {size}; set data.limit_test (or pad the validation split) so they match")
  fresh = make_fitness_data(data["train_images"][:1], data["train_labels"][:1], eval_images, eval_labels,
                            batch_size=1, num_steps=1, seed=0, eval_batch_size=eval_batch_size, eval_size=size)
  return dict(data, eval_images=fresh["eval_images"], eval_labels=fresh["eval_labels"], eval_mask=fresh["eval_mask"])


@custom_batching.custom_vmap
def per_individual_copy(images, individual):
  """`images`; under a `jax.vmap` over which `individual` (any per-individual array, e.g. its key)
  is batched, every individual gets its own copy of shared (unbatched) images, so the whole network
  runs population-major. (A batching rule runs only when some input is batched, hence `individual`.)

  Left shared, the first layer's matmul folds the population into its output columns
  ([n, h, w, P, c]) and XLA transposes that full-resolution activation back to population-major
  in several places of every training step (seen in the optimized HLO; docs/nas_evolution.md). Copying the
  small input batch instead costs P x its size, once per step. Only for data: no gradient flows
  through it."""
  return images


@per_individual_copy.def_vmap
def _per_individual_copy_rule(axis_size, in_batched, images, individual):
  del individual
  if in_batched[0]:
    return images, True
  return jnp.broadcast_to(images, (axis_size,) + images.shape), True


def train_scan(loss_fn: Callable, tx: optax.GradientTransformation, params, stats, data, key_data,
               post_step: Optional[Callable] = None):
  """One individual's training as one `lax.scan` over `data["batch_index"]`: `loss_fn(params, stats, images,
  labels) -> (loss, new_stats)` is differentiated and `tx` applied at every step; the shared batch images
  reach the individual through `per_individual_copy`. `post_step(params, stats) -> (params, stats)`, if
  given, runs after every optimizer step (Gen-Soup's astrocyte modulation). Returns the trained params,
  the stats (BatchNorm statistics, or whatever `loss_fn` carries) and the per-step losses. Shared by the
  NAS fitness and the Gen-CNN and Gen-Soup hyperparameter searches."""

  def step(carry, idx):
    params, stats, opt_state = carry
    (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, stats, per_individual_copy(data["train_images"][idx], key_data), data["train_labels"][idx])
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    if post_step is not None:
      params, stats = post_step(params, stats)
    return (params, stats, opt_state), loss

  (params, stats, _), losses = jax.lax.scan(step, (params, stats, tx.init(params)), data["batch_index"])
  return params, stats, losses


def make_train_and_evaluate(space, num_classes: int, image_shape, tx: optax.GradientTransformation,
                            eval_batch_size: int) -> Callable:
  """The per-individual fitness function `(genome, key_data, data) -> {fitness, train_loss}`."""
  model = space.model(num_classes)

  def train_and_evaluate(genome, key_data, data):
    key = jax.random.wrap_key_data(key_data)
    arch = space.arch(genome)
    variables = space.init(model, key, image_shape, genome)
    params, stats = variables["params"], variables.get("batch_stats", {})

    def loss_fn(params, stats, images, labels):
      logits, updates = model.apply({"params": params, "batch_stats": stats}, images, arch, train=True,
                                    mutable=["batch_stats"])
      return cross_entropy(logits, labels), updates.get("batch_stats", stats)

    params, stats, losses = train_scan(loss_fn, tx, params, stats, data, key_data)

    def eval_chunk(chunk):
      images, labels, mask = chunk
      logits = model.apply({"params": params, "batch_stats": stats}, per_individual_copy(images, key_data), arch,
                           train=False)
      return jnp.sum((jnp.argmax(logits, -1) == labels) * mask)

    shape = lambda x: x.reshape((-1, eval_batch_size) + x.shape[1:])
    correct = jax.lax.map(eval_chunk, (shape(data["eval_images"]), shape(data["eval_labels"]),
                                       shape(data["eval_mask"])))
    tail = min(10, losses.shape[0])
    return {"fitness": correct.sum() / data["eval_mask"].sum(), "train_loss": losses[-tail:].mean()}

  return train_and_evaluate


@dataclasses.dataclass
class Evaluation:
  fitness: np.ndarray
  train_loss: np.ndarray

  @property
  def diverged(self) -> np.ndarray:
    """Individuals whose training loss went non-finite."""
    return ~np.isfinite(self.train_loss)

  def ga_fitness(self) -> np.ndarray:
    """The fitness the GA sees: NaN for a diverged individual, whose accuracy (that of NaN logits) is no
    fitness; the GA never selects it, and a population that all diverged stops the search."""
    return np.where(self.diverged, np.float32(np.nan), self.fitness) if self.diverged.any() else self.fitness


class PopulationEvaluator:
  """Fitness of populations: vmapped (compiled once, sharded over devices) or sequential.

  Both paths are compiled ahead of time on first use (`compile`), so compile time is separate
  from run time and a call with other shapes fails instead of silently compiling again.
  """

  def __init__(self, space, num_classes: int, image_shape, tx, *, chunk_size: int, eval_batch_size: int,
               num_devices: int = 0, microbatch: int = 0):
    require(chunk_size > 0, f"population chunk size must be positive, got {chunk_size}")
    require(microbatch >= 0, f"fitness.vmap_microbatch must be 0 (the whole chunk at once) or positive, got "
            f"{microbatch}")
    self.space = space
    self.chunk_size = int(chunk_size)
    self.mesh = sharding.data_mesh(num_devices)
    require(self.chunk_size % self.mesh.devices.size == 0,
            f"the evaluated population chunk ({self.chunk_size} individuals) must be divisible by the "
            f"{self.mesh.devices.size} devices in use; change ga.num_offspring, num_devices or cpu_devices")
    self.num_traces = 0  # traces of the vmapped function (a Python counter inside it)
    self.num_compilations = 0  # XLA compilations of the vmapped function
    self.compile_seconds = 0.0
    one = make_train_and_evaluate(space, num_classes, tuple(image_shape), tx, eval_batch_size)

    per_device = self.chunk_size // self.mesh.devices.size
    require(not microbatch or per_device % microbatch == 0,
            f"fitness.vmap_microbatch ({microbatch}) must be 0 (the whole chunk at once) or divide the "
            f"{per_device} individuals each of the {self.mesh.devices.size} device(s) evaluates")
    self.microbatch = int(microbatch) if 0 < microbatch < per_device else 0

    def local(genomes, keys, data):  # one device's share of the population
      if self.microbatch:  # vmap over groups of `microbatch` individuals, a scan over the groups
        return jax.lax.map(lambda gk: one(gk[0], gk[1], data), (genomes, keys), batch_size=self.microbatch)
      return jax.vmap(one, in_axes=(0, 0, None))(genomes, keys, data)

    def batched(genomes, keys, data):
      self.num_traces += 1  # Python side effect: runs once per trace, never per call
      # shard_map: every device runs `local` on its own individuals, with no communication (the
      # per-device scan of `microbatch` groups would otherwise scan over a sharded axis).
      return jax.shard_map(local, mesh=self.mesh, in_specs=(PartitionSpec("data"), PartitionSpec("data"),
                                                            PartitionSpec()),
                           out_specs=PartitionSpec("data"), check_vma=False)(genomes, keys, data)

    self._population = NamedSharding(self.mesh, PartitionSpec("data"))
    self._replicated = NamedSharding(self.mesh, PartitionSpec())
    self._batched = jax.jit(batched, in_shardings=(self._population, self._population, self._replicated),
                            out_shardings=self._population)
    self._single = jax.jit(one)
    self._compiled = {}
    self._data_cache = (None, None)

  @property
  def num_devices(self) -> int:
    return int(self.mesh.devices.size)

  def _placed(self, data):
    if self._data_cache[0] is not data:  # put the (large) arrays on the devices once
      self._data_cache = (data, jax.device_put(data, self._replicated))
    return self._data_cache[1]

  def _vmap_args(self, genomes, keys, data):
    """One chunk's arguments placed as the vmapped function expects (population axis sharded)."""
    genomes, keys = jax.device_put((genomes, as_key_data(keys)), self._population)
    return genomes, keys, self._placed(data)

  def compile(self, genomes, keys, data, path: str = "vmap"):
    """Compiles the vmapped function (for a chunk of `chunk_size`) or the single-individual one, once."""
    if path not in self._compiled:
      t0 = time.time()
      if path == "vmap":
        self._compiled[path] = self._batched.lower(*self._vmap_args(genomes, keys, data)).compile()
        self.num_compilations += 1
      else:
        self._compiled[path] = self._single.lower(evolution.take(genomes, 0), as_key_data(keys)[0], data).compile()
      self.compile_seconds += time.time() - t0
    return self._compiled[path]

  def __call__(self, genomes: evolution.Population, keys, data: dict) -> Evaluation:
    """vmap path: chunks of `chunk_size` (the last padded with copies), one compiled call each."""
    n = evolution.population_size(genomes)
    keys = as_key_data(keys)
    require(keys.shape[0] == n, f"{n} genomes but {keys.shape[0]} keys")
    outs = []
    for start in range(0, n, self.chunk_size):
      idx = np.minimum(np.arange(start, start + self.chunk_size), n - 1)
      args = self._vmap_args(evolution.take(genomes, idx), keys[idx], data)
      outs.append(jax.device_get(self.compile(*args, "vmap")(*args)))
    out = {k: np.concatenate([o[k] for o in outs])[:n] for k in outs[0]}
    return Evaluation(out["fitness"].astype(np.float32), out["train_loss"].astype(np.float32))

  def sequential(self, genomes: evolution.Population, keys, data: dict) -> Evaluation:
    """Reference path: one individual at a time through the same per-individual function."""
    n = evolution.population_size(genomes)
    keys = as_key_data(keys)
    data = jax.device_put(data, jax.devices()[0])  # once per call, as the vmap path does
    fn = self.compile(genomes, keys, data, "sequential")
    outs = [jax.device_get(fn(evolution.take(genomes, i), keys[i], data)) for i in range(n)]
    return Evaluation(np.asarray([o["fitness"] for o in outs], np.float32),
                      np.asarray([o["train_loss"] for o in outs], np.float32))


def as_key_data(keys):
  """Raw uint32 key data of typed PRNG keys (unchanged if already raw), as the vmapped fitness takes them."""
  keys = jnp.asarray(keys) if not isinstance(keys, jax.Array) else keys
  if jnp.issubdtype(keys.dtype, jax.dtypes.prng_key):
    return jax.random.key_data(keys)
  return keys


def individual_keys(root, generation: int, n: int):
  """Keys of generation `generation`'s individuals: a pure function of (root, generation)."""
  return jax.random.split(jax.random.fold_in(root, generation), n)
