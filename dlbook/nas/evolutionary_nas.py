"""Evolutionary NAS fitness: validation accuracy after a short training run (book ch. 2, §2.2.2 C).

Every individual is a set of masks / one-hot selectors over a fixed-shape supernet
(`dlbook.nas.supernet.ChainSpace`, `dlbook.nas.cell_supernet.CellSpace`), so one pure function
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
import os
import time
from typing import Callable, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from jax import custom_batching
from jax.sharding import NamedSharding, PartitionSpec

from dlbook import data as data_lib
from dlbook.errors import DlbookError, require
from dlbook.nas import evolution
from dlbook.registry import Registry
from dlbook.training import sharding
from dlbook.training.steps import cross_entropy


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

    def step(carry, idx):
      params, stats, opt_state = carry
      (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
          params, stats, per_individual_copy(data["train_images"][idx], key_data), data["train_labels"][idx])
      updates, opt_state = tx.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), stats, opt_state), loss

    (params, stats, _), losses = jax.lax.scan(step, (params, stats, tx.init(params)), data["batch_index"])

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
    genomes, keys = jax.device_put((genomes, _key_data(keys)), self._population)
    return genomes, keys, self._placed(data)

  def compile(self, genomes, keys, data, path: str = "vmap"):
    """Compiles the vmapped function (for a chunk of `chunk_size`) or the single-individual one, once."""
    if path not in self._compiled:
      t0 = time.time()
      if path == "vmap":
        self._compiled[path] = self._batched.lower(*self._vmap_args(genomes, keys, data)).compile()
        self.num_compilations += 1
      else:
        self._compiled[path] = self._single.lower(evolution.take(genomes, 0), _key_data(keys)[0], data).compile()
      self.compile_seconds += time.time() - t0
    return self._compiled[path]

  def __call__(self, genomes: evolution.Population, keys, data: dict) -> Evaluation:
    """vmap path: chunks of `chunk_size` (the last padded with copies), one compiled call each."""
    n = evolution.population_size(genomes)
    keys = _key_data(keys)
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
    keys = _key_data(keys)
    data = jax.device_put(data, jax.devices()[0])  # once per call, as the vmap path does
    fn = self.compile(genomes, keys, data, "sequential")
    outs = [jax.device_get(fn(evolution.take(genomes, i), keys[i], data)) for i in range(n)]
    return Evaluation(np.asarray([o["fitness"] for o in outs], np.float32),
                      np.asarray([o["train_loss"] for o in outs], np.float32))


def _key_data(keys):
  keys = jnp.asarray(keys) if not isinstance(keys, jax.Array) else keys
  if jnp.issubdtype(keys.dtype, jax.dtypes.prng_key):
    return jax.random.key_data(keys)
  return keys


def individual_keys(root, generation: int, n: int):
  """Keys of generation `generation`'s individuals: a pure function of (root, generation)."""
  return jax.random.split(jax.random.fold_in(root, generation), n)


def make_space(config):
  """The search space named by `config.name` with its options (registry `SPACES`)."""
  options = {k: tuple(v) if isinstance(v, list) else v for k, v in config.to_dict().items() if k != "name"}
  constructor = SPACES.get(config.name)
  try:
    return constructor(**options)
  except TypeError as e:  # a wrong option name is the user's error
    raise DlbookError(f"search space {config.name!r}: {e}") from None


def _chain_space(**kw):
  from dlbook.nas.supernet import ChainSpace
  return ChainSpace(**kw)


def _cell_space(**kw):
  from dlbook.nas.cell_supernet import CellSpace
  return CellSpace(**kw)


SPACES: Registry[Callable] = Registry("search space")
SPACES.register("chain")(_chain_space)
SPACES.register("cell")(_cell_space)
EVALUATIONS = ("vmap", "sequential")


# ----------------------------------------------------------------------------- the search run

def make_ga(spec, c) -> Tuple[evolution.GeneticAlgorithm, evolution.GAParams]:
  """The GA and its parameters from `config.ga`."""
  ga = evolution.GeneticAlgorithm(
      spec, population_size=int(c.population_size), num_offspring=int(c.num_offspring),
      selection=c.selection, crossover=c.crossover, mutation=c.mutation, replacement=c.replacement,
      num_elites=int(c.num_elites), tournament_size=int(c.tournament_size), max_generations=int(c.max_generations))
  target = float(c.target_fitness)
  params = ga.default_params(crossover_rate=c.crossover_rate, gene_crossover_prob=c.gene_crossover_prob,
                             mutation_prob=c.mutation_prob, gene_mutation_prob=c.gene_mutation_prob,
                             target_fitness=None if np.isinf(target) else target, patience=int(c.patience),
                             min_delta=float(c.min_delta))
  return ga, params


def generation_table(ga, state, space) -> list:
  """One record per finished generation: fitness of the population, the best so far and its genome."""
  h = jax.device_get(state.history)
  rows, best_g, best_i, best_f = [], 0, 0, -np.inf
  for g in range(int(state.generation) + 1):
    fit = np.asarray(h["fitness"][g], np.float64)
    i = int(np.argmax(fit))
    if fit[i] > best_f:
      best_g, best_i, best_f = g, i, float(fit[i])
    finite = fit[np.isfinite(fit)]
    genome = jax.tree.map(lambda x: x[best_g, best_i], h["population"])
    rows.append({"generation": g, "best_fitness": float(h["best_fitness"][g]),
                 "population_max": float(finite.max()) if finite.size else None,
                 "population_mean": float(finite.mean()) if finite.size else None,
                 "population_min": float(finite.min()) if finite.size else None,
                 "population_fitness": [float(f) for f in fit], "best_architecture": space.decode(genome)})
  return rows


def plot_generations(path: str, rows: list, title: str) -> None:
  """Best-so-far and population fitness per generation (every individual as a dot)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6, 4))
  for r in rows:
    fit = [f for f in r["population_fitness"] if np.isfinite(f)]
    ax.scatter([r["generation"]] * len(fit), fit, s=10, color="0.6", zorder=1)
  gens = [r["generation"] for r in rows]
  ax.plot(gens, [r["population_mean"] for r in rows], "o--", color="tab:blue", label="population mean", zorder=2)
  ax.plot(gens, [r["best_fitness"] for r in rows], "o-", color="tab:red", label="best so far (global)", zorder=3)
  ax.set_xlabel("generation")
  ax.set_ylabel("fitness (validation accuracy)")
  ax.set_xticks(gens)
  ax.grid(alpha=0.3)
  ax.legend(loc="lower right")
  ax.set_title(title, fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plot_architecture(path: str, space, architecture: dict, title: str) -> None:
  """The best genome as a picture: a cell DAG with one labelled edge per op, or the layer chain."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  if space.name == "cell":
    cells = architecture["cells"]
    size = (1.8 * space.num_nodes, 1.2 * space.num_nodes * len(cells))
    fig, axes = plt.subplots(len(cells), 1, figsize=size, squeeze=False)
    for ax, cell in zip(axes[:, 0], cells):
      n = space.num_nodes
      for op, i, j in cell:
        if op == "none":
          continue
        rad = 0.3 * (j - i - 1)
        ax.annotate("", xy=(j - 0.13, 0), xytext=(i + 0.13, 0), arrowprops=dict(
            arrowstyle="-|>", connectionstyle=f"arc3,rad={-rad}", color="tab:blue", shrinkA=0, shrinkB=0))
        ax.text((i + j) / 2, rad * (j - i) / 2 + 0.03, op, ha="center", fontsize=8)
      for k in range(n):
        ax.add_patch(plt.Circle((k, 0), 0.12, color="lightgray" if 0 < k < n - 1 else "tab:orange", zorder=3))
        ax.text(k, 0, "in" if k == 0 else ("out" if k == n - 1 else str(k)), ha="center", va="center",
                fontsize=8, zorder=4)
      ax.set_xlim(-0.3, n - 0.7)
      ax.set_ylim(-0.2, 0.15 * n * (n - 1) / 2 + 0.2)
      ax.set_aspect("equal")
      ax.axis("off")
  else:
    a = architecture
    layers = [f"conv {f}@{k}x{k}" for f, k in zip(a["conv_filters"], a["conv_kernel"])]
    layers += ["flatten"] + [f"dense {u}" for u in a["dense_units"]] + ["classifier"]
    fig, ax = plt.subplots(figsize=(1.5 * len(layers) + 1, 1.8))
    for i, name in enumerate(layers):
      ax.text(i, 0, name, ha="center", va="center", fontsize=8,
              bbox=dict(boxstyle="round", facecolor="lightyellow" if "conv" in name else "lightblue"))
      if i:
        ax.annotate("", xy=(i - 0.42, 0), xytext=(i - 0.58, 0), arrowprops=dict(arrowstyle="->"))
    ax.text(len(layers) / 2 - 0.5, -0.6, f"activation: {a['activation']}", ha="center", fontsize=8)
    ax.set_xlim(-0.7, len(layers) - 0.3)
    ax.set_ylim(-0.9, 0.5)
    ax.axis("off")
  fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def retrain_command(architecture: dict, data_name: str) -> str:
  """The experiments.train command that trains a chain architecture as a plain chain_cnn."""
  preset = "fashion_mnist" if data_name == "fashion_mnist" else f"cpu --config.data.name={data_name}"
  tup = lambda v: "'(" + ",".join(str(int(x)) for x in v) + ",)'"
  a = architecture
  return (f"python -m experiments.train --config=configs/classify.py:{preset} --config.model.n_conv={a['n_conv']} "
          f"--config.model.conv_filters={tup(a['conv_filters'])} --config.model.conv_kernel={tup(a['conv_kernel'])} "
          f"--config.model.n_dense={a['n_dense']} --config.model.dense_units={tup(a['dense_units'])} "
          f"--config.model.activation={a['activation']} --workdir=runs/retrain_best_chain")


def validate_config(config) -> None:
  f = config.fitness
  require(int(f.train_steps) > 0, f"fitness.train_steps must be positive, got {f.train_steps}")
  require(int(f.batch_size) > 0, f"fitness.batch_size must be positive, got {f.batch_size}")
  require(int(f.eval_batch_size) > 0, f"fitness.eval_batch_size must be positive, got {f.eval_batch_size}")
  require(f.evaluation in EVALUATIONS,
          f"unknown fitness.evaluation {f.evaluation!r}; valid: {', '.join(EVALUATIONS)}")
  require(int(config.final_seeds) >= 0, f"final_seeds must be >= 0, got {config.final_seeds}")
  require(float(config.data.get("val_fraction", 0.0)) > 0,
          "evolutionary NAS needs a validation split for fitness: set data.val_fraction > 0")


def search(config, workdir: str) -> dict:
  """Runs evolutionary NAS (book Figs. 2.1/2.2) into `workdir` and returns the results.json payload.

  Resumes from the last finished generation found in `workdir/checkpoints`. Writes
  generations.json (best fitness per generation), fitness.png, best_architecture.png/json,
  TensorBoard events and results.json.
  """
  from dlbook.training import checkpoint, optim, reporting

  t0 = time.time()
  validate_config(config)
  sharding.split_cpu(int(config.get("cpu_devices", 0)))  # before the first JAX operation
  os.makedirs(workdir, exist_ok=True)
  checkpoint.guard_workdir(workdir, config.to_dict())
  dataset = data_lib.load(config.data, seed=config.seed)
  space = make_space(config.space)
  ga, params = make_ga(space.spec, config.ga)
  f = config.fitness
  steps = int(f.train_steps)
  tx = optim.make_optimizer(config.optimizer, steps)
  chunk = ga.offspring_per_generation
  evaluator = PopulationEvaluator(space, dataset.num_classes, dataset.image_shape, tx, chunk_size=chunk,
                                  eval_batch_size=int(f.eval_batch_size), num_devices=config.num_devices,
                                  microbatch=int(f.get("vmap_microbatch", 0)))
  fit_data = make_fitness_data(dataset.train.images, dataset.train.labels, dataset.val.images, dataset.val.labels,
                               batch_size=int(f.batch_size), num_steps=steps, seed=config.seed,
                               eval_batch_size=int(f.eval_batch_size))
  evaluate_fn = evaluator if f.evaluation == "vmap" else evaluator.sequential
  root = jax.random.key(config.seed)
  ga_key, eval_root, final_root = jax.random.split(root, 3)

  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=2)
  state = None
  if ckpt.latest_step() is not None:
    template = ga.init(ga_key, params)
    state = evolution.state_from_tree(template, ckpt.restore(evolution.state_to_tree(template)))
    logging.info("resumed after generation %d from %s", int(state.generation), ckpt.directory)
  start = 0 if state is None else int(state.generation) + 1
  log = reporting.MetricsLog(workdir, resume_step=max(0, start - 1))
  progress = reporting.Progress(ga.max_generations + 1, start, name="generation")
  title = f"{space.name} space on {config.data.name}: P={ga.population_size}, {chunk} offspring/generation"
  logging.info("evolutionary NAS, %s space (%d genes), P=%d, %d offspring per generation, up to %d generations; "
               "fitness = %s accuracy after %d steps; %s evaluation on %d device(s)", space.name,
               space.spec.num_genes, ga.population_size, chunk, ga.max_generations, "validation", steps,
               f.evaluation, evaluator.num_devices)

  def evaluate(population, generation):
    n = evolution.population_size(population)
    result = evaluate_fn(population, individual_keys(eval_root, generation, n), fit_data)
    if not np.isfinite(result.train_loss).all():
      logging.warning("generation %d: %d individual(s) diverged (non-finite training loss)", generation,
                      int((~np.isfinite(result.train_loss)).sum()))
    return result.fitness

  def on_generation(state):
    g = int(state.generation)
    ckpt.save(g, evolution.state_to_tree(state))
    rows = generation_table(ga, state, space)
    reporting.write_json_atomic(os.path.join(workdir, "generations.json"), rows)
    r = rows[-1]
    log.write(g, {"best_fitness": r["best_fitness"], "population_mean": r["population_mean"],
                  "population_max": r["population_max"]}, prefix="evolve/")
    progress.log(g + 1, {"best": r["best_fitness"], "mean": r["population_mean"]})
    plot_generations(os.path.join(workdir, "fitness.png"), rows, title)

  state = evolution.evolve(ga, params, ga_key, evaluate, state=state, callback=on_generation)
  log.close()
  ckpt.close()
  rows = generation_table(ga, state, space)
  best = space.decode(state.best_genome)
  baseline = space.baseline_architecture()
  reporting.write_json_atomic(os.path.join(workdir, "best_architecture.json"), best)
  plot_architecture(os.path.join(workdir, "best_architecture.png"), space, best,
                    f"best {space.name} architecture, validation fitness {float(state.best_fitness):.4f}")
  plot_generations(os.path.join(workdir, "fitness.png"), rows, title)

  metrics = {"best_fitness": float(state.best_fitness),
             "initial_population_mean_fitness": rows[0]["population_mean"],
             "initial_population_max_fitness": rows[0]["population_max"],
             "final_population_mean_fitness": rows[-1]["population_mean"],
             "generations": int(state.generation), "stop_reason": ga.stop_reason(state, params),
             "best_fitness_per_generation": [r["best_fitness"] for r in rows]}
  k = int(config.final_seeds)
  if k:  # Best genome vs the book baseline, each retrained with k seeds, on the test split.
    test_data = with_eval_split(fit_data, dataset.test.images, dataset.test.labels, int(f.eval_batch_size))
    genomes = evolution.stack([state.best_genome] * k + [space.encode(baseline)] * k)
    test = evaluate_fn(genomes, jax.random.split(final_root, 2 * k), test_data).fitness
    metrics.update({"best_test_accuracy_mean": float(test[:k].mean()), "best_test_accuracy_std": float(test[:k].std()),
                    "baseline_test_accuracy_mean": float(test[k:].mean()),
                    "baseline_test_accuracy_std": float(test[k:].std()),
                    "best_test_accuracy_per_seed": test[:k].tolist(),
                    "baseline_test_accuracy_per_seed": test[k:].tolist(), "final_seeds": k,
                    "test_images": len(dataset.test)})
  if f.evaluation == "vmap":
    metrics["fitness_function_traces"] = evaluator.num_traces
    metrics["fitness_function_compilations"] = evaluator.num_compilations
  metrics["compile_seconds"] = evaluator.compile_seconds
  extra = {}
  if space.name == "chain":
    from dlbook.nas.supernet import parameter_count
    extra["best_num_params"] = parameter_count(space, state.best_genome, dataset.image_shape, dataset.num_classes)
    extra["retrain_command"] = retrain_command(best, config.data.name)
  return reporting.write_results(
      workdir, config=config, seed=config.seed, dataset=dataset.info, metrics=metrics,
      wall_time_s=time.time() - t0, best_architecture=best, baseline_architecture=baseline,
      resumed_after_generation=start - 1 if start else None, devices_used=evaluator.num_devices,
      generation_log="generations.json", **extra)
