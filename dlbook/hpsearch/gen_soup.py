"""Gen-Soup's genome and population training (thesis seed 001 ch. 5, §5.2).

Genes: the five of Gen-CNN (`dlbook.hpsearch.gen_cnn`: architecture, loss, optimizer, weight decay,
learning-rate scale, decoded linearly and keyed by name) plus the artificial astrocytes' ``strong`` (Str)
and ``weak`` (Weak) factors, each 0.5 + g in [0.5, 1.5] (thesis Table 5.2, ch. 4).

Every individual keeps its weights from generation to generation and trains ONE epoch per generation
(`PopulationTrainer`): the epoch is one `lax.scan` (`dlbook.nas.fitness.train_scan`) with the Gen-CNN
loss and optimizer of its genes, the astrocyte modulation of `dlbook.training.astrocytes` between
optimizer steps (Str and Weak of its genes), and a learning rate that follows one cosine decay to 0.1
of the gene's rate over the whole search (the thesis's Exp1; `cosine=False`: constant, Exp2). The
optimizer state starts afresh with every epoch (a new generation's optimizer, thesis §5.2.2). Then it
predicts the validation split (its fitness is the validation MCC).

Individuals that share an architecture (and, unless `traced_optimizer`, an optimizer) train as ONE
`jax.vmap` in one compiled program, their weights stacked, with the learning rate, weight decay, loss,
Str, Weak (and the optimizer index) as traced per-individual values; a group runs in chunks of
`group_size`, the last padded with copies, so each (architecture[, optimizer], image size) compiles
once. `traced_optimizer=True` computes the four optimizer updates and selects one (a select under
vmap): one program per architecture instead of four. `loop` trains the same per-individual function
one individual at a time (the reference; a test shows both agree).
"""

import functools
import math
from typing import Dict, List, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dlbook import evolution
from dlbook import models
from dlbook.errors import require
from dlbook.hpsearch import gen_cnn
from dlbook.nas.fitness import as_key_data, per_individual_copy, train_scan
from dlbook.training import astrocytes as astro_lib

GENES = gen_cnn.GENES + ("strong", "weak")
ASTROCYTE_FACTOR = (0.5, 1.5)
# Thesis Table 5.1, read in its code's gene order (the caption's order would average categorical genes).
CROSSOVER_PROB = {"architecture": 0.0, "loss": 0.0, "optimizer": 0.0, "weight_decay": 0.9, "learning_rate": 0.9,
                  "strong": 0.9, "weak": 0.9}
MUTATION_PROB = {"architecture": 0.0, "loss": 0.25, "optimizer": 0.25, "weight_decay": 0.25, "learning_rate": 0.25,
                 "strong": 0.15, "weak": 0.15}
# Thesis Table 5.2: architectures up to ~600 MFLOPs (dlbook's registry names).
THESIS_POOL = ("regnet_y_400mf", "regnet_x_400mf", "mobilenet_v3_large", "shufflenet_v2_x2_0", "mnasnet1_0",
               "squeezenet1_1")
OPTIMIZER_NAMES = tuple(gen_cnn.OPTIMIZERS)
COSINE_ALPHA = 0.1  # the learning rate decays to 0.1 x its gene's value (Gen-CNN's schedule)


def genome_spec() -> evolution.GenomeSpec:
  return evolution.GenomeSpec([evolution.real(n, 0.0, 1.0) for n in GENES])


def decode(genes: Dict[str, float], pool: Sequence[str]) -> dict:
  """Raw genes in [0, 1] -> hyperparameters: Gen-CNN's five, the optimizer's index, Str and Weak."""
  d = gen_cnn.decode({k: genes[k] for k in gen_cnn.GENES}, pool)
  lo, hi = ASTROCYTE_FACTOR
  d.update(optimizer_index=OPTIMIZER_NAMES.index(d["optimizer"]),
           strong=float(lo + float(genes["strong"]) * (hi - lo)), weak=float(lo + float(genes["weak"]) * (hi - lo)))
  return d


def host_genes(population) -> List[Dict[str, float]]:
  host = {k: np.asarray(jax.device_get(v), np.float64) for k, v in population.items()}
  return [{k: float(host[k][i]) for k in GENES} for i in range(len(host[GENES[0]]))]


def image_sizes(start: int, end: int, generations: int, epochs_at_max: int) -> List[int]:
  """Image size of each of `generations` generations: linear from `start` to `end` over the first
  generations, then `epochs_at_max` generations at `end` (thesis Table 5.1: 224 -> 302, one epoch per
  size, 10 epochs at the largest)."""
  grow = max(0, generations - epochs_at_max)
  if grow == 0:
    return [int(end)] * generations
  return [int(round(start + (end - start) * min(g, grow) / grow)) for g in range(generations)]


def cosine_factor(step, total):
  """Cosine decay from 1 to `COSINE_ALPHA` over `total` steps (step and total may be traced)."""
  t = jnp.clip(step / jnp.maximum(total, 1), 0.0, 1.0)
  return COSINE_ALPHA + (1 - COSINE_ALPHA) * 0.5 * (1 + jnp.cos(math.pi * t))


def traced_optimizer(index, learning_rate, weight_decay, adam_weight_decay: bool) -> optax.GradientTransformation:
  """Gen-CNN's four optimizers in one transformation, `index` (maybe traced) choosing which one updates:
  `lax.switch` (under vmap a select over the four updates, all computed)."""
  txs = [gen_cnn.make_optimizer(n, learning_rate, weight_decay, 1, False, adam_weight_decay) for n in OPTIMIZER_NAMES]

  def init(params):
    return tuple(tx.init(params) for tx in txs)

  def update(grads, state, params=None):
    def branch(i):
      def fn(grads, state, params):
        updates, new = txs[i].update(grads, state[i], params)
        return updates, state[:i] + (new,) + state[i + 1:]
      return fn
    return jax.lax.switch(index, [branch(i) for i in range(len(txs))], grads, state, params)
  return optax.GradientTransformation(init, update)


def _astrocyte_zeros(model, image_shape):
  with astro_lib.astrocytes():
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1,) + tuple(image_shape)), train=False))
  tree = shapes.get(astro_lib.COLLECTION, {})
  return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), tree)


def make_epoch_fn(arch: str, optimizer: Optional[str], num_classes: int, image_shape, eval_batch_size: int, *,
                  cosine: bool, adam_weight_decay: bool, astrocytes: astro_lib.AstrocyteConfig):
  """`(variables, hp, key_data, batch_index, schedule, data) -> {variables, predictions, train_loss}`: one
  epoch of one individual of `arch` from `variables` over `batch_index` [steps, batch] of
  `data["train_images"]`, then its predictions on `data["eval_images"]`. `hp`: learning_rate,
  weight_decay, loss_index, optimizer_index, strong, weak; `schedule`: (global step at the epoch's
  start, total steps of the run) for the cosine decay. `optimizer` None: the optimizer is `hp`'s index."""
  model = models.build(arch, num_classes=num_classes)
  astro0 = _astrocyte_zeros(model, image_shape)

  def epoch(variables, hp, key_data, batch_index, schedule, data):
    offset, total = schedule
    lr = (lambda count: hp["learning_rate"] * cosine_factor(offset + count, total)) if cosine else hp["learning_rate"]
    if optimizer is None:
      tx = traced_optimizer(hp["optimizer_index"], lr, hp["weight_decay"], adam_weight_decay)
    else:
      tx = gen_cnn.make_optimizer(optimizer, lr, hp["weight_decay"], 1, False, adam_weight_decay)
    config = astro_lib.AstrocyteConfig(astrocytes.ng, astrocytes.sensitivity, hp["strong"], hp["weak"],
                                       astrocytes.mode)
    carried = {astro_lib.COLLECTION: astro0}
    if "batch_stats" in variables:
      carried["batch_stats"] = variables["batch_stats"]

    def loss_fn(params, carried, images, labels):
      with astro_lib.astrocytes():
        logits, updates = model.apply({"params": params, **carried}, images, train=True, mutable=list(carried))
      return gen_cnn.gen_cnn_loss(hp["loss_index"], logits, labels, num_classes), dict(carried, **updates)

    def modulate(params, carried):  # between optimizer steps (thesis ch. 4, Algorithm 3)
      params, astro, _ = astro_lib.modulate(params, carried[astro_lib.COLLECTION], config)
      return params, dict(carried, **{astro_lib.COLLECTION: astro})

    params, carried, losses = train_scan(loss_fn, tx, variables["params"], carried,
                                         dict(data, batch_index=batch_index), key_data, post_step=modulate)
    out = {"params": params}
    if "batch_stats" in carried:
      out["batch_stats"] = carried["batch_stats"]

    def predict(images):
      logits = model.apply(out, per_individual_copy(images, key_data), train=False)
      return jnp.argmax(logits, -1).astype(jnp.int32)

    images = data["eval_images"].reshape((-1, eval_batch_size) + data["eval_images"].shape[1:])
    tail = min(10, losses.shape[0])
    return {"variables": out, "predictions": jax.lax.map(predict, images).reshape(-1),
            "train_loss": losses[-tail:].mean()}

  return epoch


def hyperparameters(decoded: Sequence[dict], rows) -> dict:
  """The traced per-individual values of `rows`."""
  f32 = lambda k: jnp.asarray([decoded[i][k] for i in rows], jnp.float32)
  i32 = lambda k: jnp.asarray([decoded[i][k] for i in rows], jnp.int32)
  return {"learning_rate": f32("learning_rate"), "weight_decay": f32("weight_decay"), "loss_index": i32("loss_index"),
          "optimizer_index": i32("optimizer_index"), "strong": f32("strong"), "weak": f32("weak")}


def stack(trees):
  return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *trees)


_TRACES = {}  # traces of each vmapped program (a Python side effect: once per trace, never per call)


@functools.lru_cache(maxsize=None)
def _program(settings: tuple, key: tuple, image_shape: tuple, vmapped: bool):
  """The jitted epoch of group `key` (architecture[, optimizer]) at `image_shape`, shared by every trainer
  with the same settings in this process (a resumed or repeated search compiles nothing again)."""
  num_classes, eval_batch_size, cosine, adam_weight_decay, astrocytes = settings
  one = make_epoch_fn(key[0], key[1] if len(key) > 1 else None, num_classes, image_shape, eval_batch_size,
                      cosine=cosine, adam_weight_decay=adam_weight_decay, astrocytes=astrocytes)
  if not vmapped:
    return jax.jit(one)

  def batched(variables, hp, keys, batch_index, schedule, data):
    _TRACES[(settings, key, image_shape)] = _TRACES.get((settings, key, image_shape), 0) + 1
    return jax.vmap(one, in_axes=(0, 0, 0, 0, None, None))(variables, hp, keys, batch_index, schedule, data)
  return jax.jit(batched)


class PopulationTrainer:
  """One epoch for decoded individuals from their weights: grouped and vmapped (`__call__`) or one at a
  time (`loop`). Both return {row: {variables, predictions, train_loss}} as host arrays."""

  def __init__(self, num_classes: int, eval_batch_size: int, *, cosine: bool, adam_weight_decay: bool,
               astrocytes: astro_lib.AstrocyteConfig, traced_optimizer: bool, group_size: int):
    require(group_size > 0, f"group_size must be positive, got {group_size}")
    self.group_size = int(group_size)
    self.traced_optimizer = bool(traced_optimizer)
    self.settings = (int(num_classes), int(eval_batch_size), bool(cosine), bool(adam_weight_decay), astrocytes)
    self._programs = set()

  @property
  def num_traces(self) -> int:
    """Traces of the vmapped programs this trainer used (one per group key and image size when all is well)."""
    return sum(_TRACES.get(p, 0) for p in self._programs)

  def group_key(self, d: dict) -> tuple:
    return (d["architecture"],) if self.traced_optimizer else (d["architecture"], d["optimizer"])

  def _fn(self, key: tuple, image_shape: tuple, vmapped: bool):
    if vmapped:
      self._programs.add((self.settings, key, image_shape))
    return _program(self.settings, key, image_shape, vmapped)

  def chunks(self, decoded: Sequence[dict], rows: Sequence[int]) -> List[tuple]:
    """(group key, members) in a fixed order: groups by first appearance, chunks of `group_size`."""
    groups = {}
    for i in rows:
      groups.setdefault(self.group_key(decoded[i]), []).append(i)
    return [(key, members[s:s + self.group_size]) for key, members in groups.items()
            for s in range(0, len(members), self.group_size)]

  def __call__(self, decoded, variables, keys, batch_index, schedule, data, rows=None, skip=(), on_chunk=None):
    """`variables[i]`, `keys[i]`, `batch_index[i]` of every row i in `rows` (default all); chunks whose
    members are all in `skip` are not trained; `on_chunk(results)` after every trained chunk."""
    rows = list(range(len(decoded))) if rows is None else list(rows)
    keys = np.asarray(as_key_data(keys))
    shape = tuple(data["train_images"].shape[1:])
    schedule = tuple(jnp.asarray(x, jnp.int32) for x in schedule)
    results = {}
    for key, members in self.chunks(decoded, rows):
      if all(i in skip for i in members):
        continue
      idx = members + [members[-1]] * (self.group_size - len(members))
      out = jax.device_get(self._fn(key, shape, True)(
          stack([variables[i] for i in idx]), hyperparameters(decoded, idx), keys[np.asarray(idx)],
          np.stack([batch_index[i] for i in idx]), schedule, data))
      chunk = {i: jax.tree.map(lambda x, j=j: x[j], out) for j, i in enumerate(members)}
      results.update(chunk)
      if on_chunk is not None:
        on_chunk(chunk)
    return results

  def loop(self, decoded, variables, keys, batch_index, schedule, data, rows=None, skip=(), on_chunk=None):
    rows = list(range(len(decoded))) if rows is None else list(rows)
    keys = np.asarray(as_key_data(keys))
    shape = tuple(data["train_images"].shape[1:])
    schedule = tuple(jnp.asarray(x, jnp.int32) for x in schedule)
    results = {}
    for i in rows:
      if i in skip:
        continue
      hp = jax.tree.map(lambda x: x[0], hyperparameters(decoded, [i]))
      out = jax.device_get(self._fn(self.group_key(decoded[i]), shape, False)(
          variables[i], hp, keys[i], np.asarray(batch_index[i]), schedule, data))
      results[i] = out
      if on_chunk is not None:
        on_chunk({i: out})
    return results


@functools.lru_cache(maxsize=None)
def _init_fn(arch: str, num_classes: int, image_shape: tuple):
  model = models.build(arch, num_classes=num_classes)
  return jax.jit(lambda key: model.init(key, jnp.zeros((1,) + image_shape, jnp.float32), train=False))


def init_variables(arch: str, num_classes: int, image_shape, key) -> dict:
  """Fresh {params, batch_stats} of `arch` from `key` (host arrays)."""
  v = jax.device_get(_init_fn(arch, int(num_classes), tuple(image_shape))(key))
  return {k: v[k] for k in ("params", "batch_stats") if k in v}


@functools.lru_cache(maxsize=None)
def _predict_fn(arch: str, num_classes: int, eval_batch_size: int):
  model = models.build(arch, num_classes=num_classes)

  @jax.jit
  def predict(variables, images):
    chunks = images.reshape((-1, eval_batch_size) + images.shape[1:])
    return jax.lax.map(lambda x: jnp.argmax(model.apply(variables, x, train=False), -1), chunks).reshape(-1)
  return predict


def predict(arch: str, num_classes: int, variables: dict, images: np.ndarray, eval_batch_size: int) -> np.ndarray:
  """Class predictions of a model of `arch` for `images` (padded to a multiple of the batch)."""
  n = len(images)
  pad = -n % eval_batch_size
  images = np.concatenate([images, np.zeros((pad,) + images.shape[1:], images.dtype)])
  return np.asarray(_predict_fn(arch, int(num_classes), int(eval_batch_size))(variables, images))[:n]


def fixed_individual(architecture: str, optimizer: str, loss: str, learning_rate_scale: float, weight_decay: float,
                     strong: float = 1.0, weak: float = 1.0) -> dict:
  """A decoded individual given by its hyperparameters (the uniform soup's one configuration)."""
  require(optimizer in OPTIMIZER_NAMES, f"unknown optimizer {optimizer!r}; valid: {', '.join(OPTIMIZER_NAMES)}")
  require(loss in gen_cnn.LOSSES, f"unknown loss {loss!r}; valid: {', '.join(gen_cnn.LOSSES)}")
  return {"architecture": architecture, "architecture_index": 0, "loss": loss, "loss_index": gen_cnn.LOSSES.index(loss),
          "optimizer": optimizer, "optimizer_index": OPTIMIZER_NAMES.index(optimizer),
          "weight_decay": float(weight_decay), "learning_rate_scale": float(learning_rate_scale),
          "learning_rate": gen_cnn.OPTIMIZERS[optimizer] * float(learning_rate_scale), "strong": float(strong),
          "weak": float(weak)}
