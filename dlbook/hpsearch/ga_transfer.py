"""GA transfer learning with DenseNet-121-SE (seed 004): the genome, the masked network and the population's
training as one compiled, vmapped program.

Seed 004 (*Genetic Algorithm for Transfer Learning in a deep CNN*) evolves four genes of a pretrained
DenseNet-121 with SE layers after each dense block (Hu et al., reduction 16): the number of dense layers
included (1-58), the number frozen (0-18), the learning rate (1e-6 to 1e-1) and the dropout rate (0.1-0.9),
trained with Adam; fitness is the negative loss.

Every individual is a set of masks over ONE fixed-shape network (`dlbook.models.backbones.densenet`), so the
whole population trains as one `jax.vmap` with its genes as traced per-individual values:
- ``included``: the backbone's `include` (layers after it contribute zeros; the head reads the block holding
  layer `include`; that network's unused BatchNorm statistics stay unchanged);
- ``frozen``: the stem and dense layers 1..frozen (and a transition once its whole block is frozen) get
  zero gradients and zero Adam updates, and their BatchNorm layers run in inference mode with their
  running statistics unchanged (`traced_frozen_batchnorm`), exactly as `freezing.make_freeze_train_step`
  runs a statically frozen prefix;
- ``learning_rate``: Adam's step size (PyTorch's defaults otherwise: betas 0.9/0.999, eps 1e-8);
- ``dropout``: the rate of the dropout before the new head (`TracedDropout`, `flax.linen.Dropout`'s rule).
SE layers and the new head are always trainable; the head and every SE layer without pretrained weights
are Kaiming-initialised (He normal) from the individual's key.

Choice (seed 004 is silent): the constraint frozen <= included is kept by repair, frozen = min(frozen,
included), applied to every genome the GA creates (initial sampling, crossover, mutation) before it is
stored or evaluated (`RepairedGA`).
An individual whose loss or parameters become non-finite stops updating there (its fitness is NaN, which
the GA never selects) instead of stopping the population's training.
"""

import contextlib
import dataclasses
import itertools
from typing import Any, Dict, List, Optional, Sequence, Tuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from dlbook import evolution
from dlbook.errors import require
from dlbook.models import weights
from dlbook.models.backbones import densenet
from dlbook.nas.fitness import per_individual_copy
from dlbook.training.steps import cross_entropy

GENES = ("included", "frozen", "learning_rate", "dropout")
# Seed 004's chromosome: included layers 1-58, frozen layers 0-18, learning rate 1e-6..0.1, dropout 0.1..0.9.
SEED_RANGES = {"included": (1, 58), "frozen": (0, 18), "learning_rate": (1e-6, 1e-1), "dropout": (0.1, 0.9)}
HEAD_INIT = nn.initializers.kaiming_normal()


# ------------------------------------------------------------------------------------------ genome

def genome_spec(num_layers: int = 58, max_frozen: int = 18, learning_rate=(1e-6, 1e-1),
                dropout=(0.1, 0.9)) -> evolution.GenomeSpec:
  """Seed 004's four genes; the learning rate log-uniform (**Choice**: the seed gives only the range)."""
  require(1 <= int(num_layers), f"the network needs at least one dense layer, got {num_layers}")
  require(0 <= int(max_frozen) <= int(num_layers), f"genes.frozen must lie in [0, {num_layers}] (the network's "
          f"dense layers), got an upper bound of {max_frozen}")
  require(0 < float(learning_rate[0]) < float(learning_rate[1]),
          f"genes.learning_rate must be 0 < low < high, got {tuple(learning_rate)}")
  require(0 <= float(dropout[0]) < float(dropout[1]) < 1, f"genes.dropout must be 0 <= low < high < 1, got {tuple(dropout)}")
  return evolution.GenomeSpec([evolution.integer("included", 1, int(num_layers)),
                               evolution.integer("frozen", 0, int(max_frozen)),
                               evolution.log_real("learning_rate", *map(float, learning_rate)),
                               evolution.real("dropout", *map(float, dropout))])


def repair(population):
  """frozen <= included, by clipping frozen (works on a population or one genome, traced or not)."""
  return dict(population, frozen=jnp.minimum(population["frozen"], population["included"]))


@dataclasses.dataclass(frozen=True)
class RepairedGA(evolution.GeneticAlgorithm):
  """The GA engine's algorithm with every genome it creates repaired (`repair`) before it is stored."""

  def init(self, key, params, population=None):
    if population is None:
      population = self.spec.sample(key, self.population_size)
    return super().init(key, params, repair(population))

  def ask(self, key, state, params):
    offspring, state = super().ask(key, state, params)
    return repair(offspring), state


def make_ga(spec, population_size: int, generations: int, tournament_size: int = 2, gene_mutation_prob=0.25):
  """Seed 004's GA: tournament (k=2), two-point crossover of every pair, every offspring mutated (each gene
  redrawn with `gene_mutation_prob`). **Choice** (the seed says only that the next population is formed by
  selection, crossover and mutation): one elite survives and is trained again with the offspring, so every
  generation trains `population_size` individuals (one compiled program) and a lucky training is re-measured."""
  ga = RepairedGA(spec, population_size=int(population_size), selection="tournament", crossover="two_point",
                  mutation="uniform_reset", replacement="elitism", num_elites=1, reevaluate_elites=True,
                  tournament_size=int(tournament_size), max_generations=int(generations))
  return ga, ga.default_params(crossover_rate=1.0, gene_mutation_prob=gene_mutation_prob)


def block_ends(blocks: Sequence[int]) -> List[int]:
  return list(itertools.accumulate(int(b) for b in blocks))


def decode(genes: dict, blocks: Sequence[int]) -> dict:
  """One genome -> what it does to the network: where it is cut, what is frozen, the optimizer settings."""
  n, f = int(genes["included"]), int(genes["frozen"])
  ends = block_ends(blocks)
  cut = next(b for b, e in enumerate(ends) if n <= e) + 1
  start = ends[cut - 2] if cut > 1 else 0
  frozen_transitions = [b + 1 for b, e in enumerate(ends[:-1]) if e <= f and b + 1 < cut]
  return {"included": n, "frozen": f, "learning_rate": float(genes["learning_rate"]),
          "dropout": float(genes["dropout"]), "cut_block": cut, "layers_in_cut_block": n - start,
          "frozen_modules": (["stem"] if f else []) + ([f"dense layers 1-{f}"] if f else []) +
          [f"transition {t}" for t in frozen_transitions]}


def population_rows(population) -> List[dict]:
  """{name: [P]} -> one dict of plain values per individual (integers stay integers)."""
  host = {k: np.asarray(jax.device_get(v)) for k, v in population.items()}
  n = len(host[GENES[0]])
  return [{k: (int(host[k][i]) if k in ("included", "frozen") else float(host[k][i])) for k in GENES}
          for i in range(n)]


# ------------------------------------------------------------------------------------------ network

class TracedDropout(nn.Module):
  """`flax.linen.Dropout`'s rule (keep with probability 1 - rate, scale by 1 / (1 - rate)) with the rate a
  call argument, so it may be a traced per-individual value."""

  @nn.compact
  def __call__(self, x, rate, deterministic: bool):
    if deterministic:
      return x
    keep = 1.0 - jnp.asarray(rate, x.dtype)
    mask = jax.random.bernoulli(self.make_rng("dropout"), keep, x.shape)
    return jax.lax.select(mask, x / keep, jnp.zeros_like(x))


class GANet(nn.Module):
  """Input normalisation -> DenseNet(-SE) features (masked by `include`) -> dropout -> new dense head."""
  backbone: nn.Module      # a DenseNet built with features=True
  num_classes: int
  normalization: str       # a key of `weights.NORMALIZATIONS`; inputs are images in [0, 1]

  @nn.compact
  def __call__(self, x, include=None, dropout=0.0, train: bool = False):
    x = weights.NORMALIZATIONS[self.normalization](x)
    feats = self.backbone(x, train=train, include=include)
    feats = TracedDropout(name="dropout")(feats, dropout, deterministic=not train)
    return nn.Dense(self.num_classes, kernel_init=HEAD_INIT, name="head")(feats)


def module_depth(name: str, blocks: Sequence[int]) -> int:
  """The dense-layer number a top-level backbone module freezes with (`densenet.layer_depths`' rule)."""
  return int(traverse_util.flatten_dict(densenet.layer_depths({name: {"x": 0}}, blocks))[(name, "x")])


def module_needed_from(name: str, blocks: Sequence[int]) -> int:
  """The smallest `include` for which the network cut there uses module `name` (stem 0, layer k k, a
  transition once a layer after its block is included, the final BN once the last block is reached, SE
  of block b once a layer of b is)."""
  ends = block_ends(blocks)
  if name.startswith("layer_"):
    return int(name.split("_")[1])
  if name.startswith("transition_"):
    return ends[int(name.split("_")[1]) - 1] + 1
  if name == "norm_final":
    return (ends[-2] if len(ends) > 1 else 0) + 1
  if name.startswith("se_"):
    b = int(name.split("_")[1])
    return (ends[b - 2] if b > 1 else 0) + 1
  return 0


@contextlib.contextmanager
def traced_frozen_batchnorm(n_frozen, blocks: Sequence[int], max_frozen: int):
  """Inside a train-mode `apply` of a `GANet`: every backbone BatchNorm that is frozen when `n_frozen`
  (traced) layers are (its depth <= n_frozen) normalises with its running statistics, as
  `freezing.frozen_batchnorm` does for a static prefix; the others use the batch's. Modules deeper than
  `max_frozen` are never frozen and run unchanged. The statistics updates are undone by `keep_statistics`."""

  active = set()  # a GatedBatchNorm's call reaches nn.BatchNorm.__call__ again: intercept the outer call only

  def interceptor(next_fun, args, kwargs, context):
    module = context.module
    path = module.path
    if (context.method_name != "__call__" or not isinstance(module, nn.BatchNorm) or len(path) < 2
            or path[0] != "backbone" or path in active or module.is_initializing()
            or module.use_running_average is not False or kwargs.get("use_running_average")
            or module_depth(path[1], blocks) > max_frozen):
      return next_fun(*args, **kwargs)
    # a copy of the containers: the call below replaces the statistics in the module's mutable collection
    before = jax.tree.map(lambda a: a, {c: dict(module.variables[c]) for c in ("params", "batch_stats")
                                        if c in module.variables})
    active.add(path)
    try:
      y = next_fun(*args, **kwargs)
    finally:
      active.discard(path)
    inference = module.clone(parent=None, use_running_average=True).apply(before, *args, **kwargs)
    return jnp.where(module_depth(path[1], blocks) <= n_frozen, inference, y)

  with nn.intercept_methods(interceptor):
    yield


def _backbone_map(tree, fn, default):
  """A pytree like `tree` (nested dicts {backbone: {module: ...}, head: ...}) with fn(module name) at every
  leaf under 'backbone' and `default` elsewhere."""
  flat = traverse_util.flatten_dict(tree)
  return traverse_util.unflatten_dict({k: fn(k[1]) if k[0] == "backbone" else default for k in flat})


def trainable_mask(params, n_frozen, blocks: Sequence[int]):
  """True where a parameter trains: not in the stem / first `n_frozen` layers / their transitions."""
  return _backbone_map(params, lambda name: module_depth(name, blocks) > n_frozen, True)


def statistics_mask(batch_stats, n_frozen, include, blocks: Sequence[int]):
  """True where a BatchNorm statistic may change in training: its module trains and the network cut
  after `include` layers uses it."""
  return _backbone_map(batch_stats, lambda name: (module_depth(name, blocks) > n_frozen) &
                       (include >= module_needed_from(name, blocks)), True)


def _select(mask, new, old):
  return jax.tree.map(lambda m, a, b: jnp.where(m, a, b), mask, new, old)


@flax.struct.dataclass
class PopulationState:
  """The training state of a population (every leaf has the population axis first)."""
  params: Any
  batch_stats: Any
  opt_state: Any
  alive: jax.Array   # [P] False once an individual's loss or parameters became non-finite


def individual_step(model: GANet, blocks: Sequence[int], max_frozen: int):
  """`(params, stats, opt_state, alive, genes, images, labels, key) -> (..., metrics)` for ONE individual;
  `genes` = {included, frozen, learning_rate, dropout} (traced). The key is split as
  `freezing.make_freeze_train_step` splits it (no augmentation), so both train alike."""

  def step(params, stats, opt_state, alive, genes, images, labels, key):
    include, n_frozen, lr, rate = (genes[k] for k in GENES)
    _, dropout_key = jax.random.split(key)
    images = per_individual_copy(images, lr)

    def loss_fn(p):
      with traced_frozen_batchnorm(n_frozen, blocks, max_frozen):
        logits, updates = model.apply({"params": p, "batch_stats": stats}, images, include=include, dropout=rate,
                                      train=True, rngs={"dropout": dropout_key}, mutable=["batch_stats"])
      return cross_entropy(logits, labels), (logits, updates["batch_stats"])

    (loss, (logits, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    train = trainable_mask(params, n_frozen, blocks)
    zeros = lambda t: _select(train, t, jax.tree.map(jnp.zeros_like, t))  # noqa: E731
    updates, new_opt = optax.adam(lr).update(zeros(grads), opt_state, params)
    new_params = optax.apply_updates(params, zeros(updates))
    new_stats = _select(statistics_mask(stats, n_frozen, include, blocks), new_stats, stats)
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(new_params)]))
    ok = alive & jnp.isfinite(loss) & finite
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)  # noqa: E731
    metrics = {"loss": loss, "accuracy": jnp.mean(jnp.argmax(logits, -1) == labels)}
    return keep(new_params, params), keep(new_stats, stats), keep(new_opt, opt_state), ok, metrics

  return step


def population_step(model: GANet, blocks: Sequence[int], max_frozen: int):
  """The vmapped, jitted step `(state, genes, images, labels, keys, step) -> (state, metrics)`: every
  individual on the same batch with its own genes and its key folded with the step number; metrics are
  means over the individuals still alive."""
  one = jax.vmap(individual_step(model, blocks, max_frozen), in_axes=(0, 0, 0, 0, 0, None, None, 0))

  def step(state: PopulationState, genes, images, labels, keys, step):
    keys = jax.vmap(lambda k: jax.random.fold_in(k, step))(keys)
    params, stats, opt, alive, m = one(state.params, state.batch_stats, state.opt_state, state.alive, genes,
                                       images, labels, keys)
    n = jnp.maximum(alive.sum(), 1)
    metrics = {k: jnp.sum(jnp.where(alive, v, 0.0)) / n for k, v in m.items()}
    metrics["alive"] = alive.sum().astype(jnp.float32)
    return PopulationState(params, stats, opt, alive), metrics

  return jax.jit(step, donate_argnums=0)


def eval_fn(model: GANet):
  """Jitted `(params, stats, include, images) -> logits [P, B, K]` of the population in inference mode."""
  one = lambda p, s, n, x: model.apply({"params": p, "batch_stats": s}, per_individual_copy(x, n),  # noqa: E731
                                       include=n, train=False)
  return jax.jit(jax.vmap(one, in_axes=(0, 0, 0, None)))


def evaluate_population(fn, state: PopulationState, genes, split, batch_size: int) -> Dict[str, np.ndarray]:
  """Mean cross-entropy and accuracy of every individual on `split` ([P] each; NaN for a dead individual)."""
  from dlbook.data.pipeline import eval_batches
  loss_sum, correct, count = 0.0, 0.0, 0.0
  for batch in eval_batches(split, batch_size):
    logits = np.asarray(fn(state.params, state.batch_stats, genes["included"], batch["image"]), np.float64)
    logp = logits - logits.max(-1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
    mask = batch["mask"][None] > 0
    labels = batch["label"]
    loss_sum = loss_sum + np.where(mask, -logp[:, np.arange(len(labels)), labels], 0.0).sum(1)
    correct = correct + np.where(mask, logits.argmax(-1) == labels[None], False).sum(1)
    count += float(mask.sum())
  alive = np.asarray(jax.device_get(state.alive))
  loss, acc = loss_sum / count, correct / count
  return {"loss": np.where(alive & np.isfinite(loss), loss, np.nan), "accuracy": np.where(alive, acc, np.nan)}


# ------------------------------------------------------------------------------------------ initial state

@dataclasses.dataclass
class Start:
  """What every individual starts from: the network, the shared (pretrained) variables and which
  parameter leaves each individual draws afresh (the head, and SE layers the weight file lacks)."""
  model: GANet
  params: Any                    # shared initial parameters (fresh leaves hold placeholders)
  batch_stats: Any
  fresh: Tuple[Tuple[str, ...], ...]   # flat paths of the leaves drawn per individual
  blocks: Tuple[int, ...]
  info: dict

  @property
  def num_layers(self) -> int:
    return int(sum(self.blocks))


def fresh_leaf(key, path: Tuple[str, ...], like):
  """Kaiming (He normal, fan-in) kernels, zero biases (seed 004: PyTorch's Kaiming scheme)."""
  if path[-1] == "kernel":
    return HEAD_INIT(key, like.shape, like.dtype)
  return jnp.zeros(like.shape, like.dtype)


def init_population(start: Start, keys) -> PopulationState:
  """P individuals: the shared variables, the fresh leaves drawn from each individual's key, Adam's state."""
  flat = traverse_util.flatten_dict(start.params)
  P = len(keys)
  per = {}
  for path, leaf in flat.items():
    if path in start.fresh:
      j = start.fresh.index(path)
      per[path] = jnp.stack([fresh_leaf(jax.random.fold_in(keys[i], j), path, leaf) for i in range(P)])
    else:
      per[path] = jnp.broadcast_to(leaf, (P,) + leaf.shape)
  params = traverse_util.unflatten_dict(per)
  stats = jax.tree.map(lambda x: jnp.broadcast_to(x, (P,) + x.shape), start.batch_stats)
  opt = jax.vmap(optax.adam(1.0).init)(params)  # Adam's state does not depend on the learning rate
  return jax.device_put(PopulationState(params, stats, opt, jnp.ones((P,), bool)))


def load_start(model_name: str, *, num_classes: int, image_size: int, weights_spec: str = "",
               backbone_kwargs: Optional[dict] = None, seed: int = 0) -> Start:
  """The GA's network from a weight file (or random initialisation, weights_spec ''), read through
  `dlbook.training.transfer.build_network`: a DenseNet-SE file gives every backbone leaf; a plain DenseNet
  file (torchvision, Keras or dlbook layout) gives all but the SE layers, which are then drawn per
  individual. The network keeps the file's layout settings (BN epsilon, padding, input normalisation)."""
  from dlbook import models
  from dlbook.training import transfer
  path = transfer.resolve_weights(model_name, weights_spec)
  source = model_name
  if path is not None and weights.layout_of(path) == "dlbook":
    source = weights._own_metadata(path).get("model")
    require(source in ("densenet121", "densenet121_se", "densenet_se", model_name),
            f"{path} holds {source!r} weights; GA transfer learning needs a DenseNet-121(-SE) file")
  elif path is not None:
    source = "densenet121"  # torchvision and Keras DenseNet-121 files have no SE layers
  require(model_name in ("densenet121_se", "densenet_se"),
          f"GA transfer learning evolves DenseNet-SE masks; model must be densenet121_se or densenet_se, "
          f"got {model_name!r}")
  kwargs = dict(backbone_kwargs or {})
  net = transfer.build_network(source, num_outputs=num_classes, image_size=image_size, weights_spec=path or "",
                               backbone_kwargs=kwargs if path is None or source == model_name else {}, seed=seed)
  file_backbone = net.model.backbone
  require(isinstance(file_backbone, densenet.DenseNet), f"{source} is not a DenseNet")
  backbone = file_backbone.clone(se_reduction=file_backbone.se_reduction or 16, blocks=tuple(file_backbone.blocks),
                                 features=True, parent=None, name=None)
  if path is not None and source != model_name and model_name == "densenet121_se":
    require(tuple(backbone.blocks) == densenet.DENSENET_BLOCKS["densenet121"],
            f"{path}: a {source} file with blocks {backbone.blocks} is not DenseNet-121")
  model = GANet(backbone, int(num_classes), net.normalization)
  x = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
  shapes = jax.eval_shape(lambda: model.init({"params": jax.random.key(0, impl="rbg")}, x))
  target = traverse_util.flatten_dict(dict(shapes["params"]))
  loaded = {("backbone",) + k: v for k, v in traverse_util.flatten_dict(net.variables["params"]["backbone"]).items()}
  for k, v in loaded.items():
    require(k in target and target[k].shape == v.shape, f"weights {path or '(random)'}: leaf {'/'.join(k)} "
            f"{v.shape} does not fit the GA network")
  fresh = tuple(k for k in target if k not in loaded)
  lacking = [k for k in fresh if not (k[0] == "head" or (k[0] == "backbone" and k[1].startswith("se_")))]
  require(not lacking, f"weights {path}: backbone leaf {'/'.join(lacking[0]) if lacking else ''} is missing")
  params = traverse_util.unflatten_dict({k: loaded.get(k, jnp.zeros(target[k].shape, target[k].dtype))
                                         for k in target})
  stats = {"backbone": net.variables["batch_stats"]["backbone"]}
  info = dict(net.info(), source_model=source, fresh_leaves=["/".join(k) for k in fresh],
              blocks=list(backbone.blocks), growth=backbone.growth, init_features=backbone.init_features)
  del models
  return Start(model, params, stats, fresh, tuple(backbone.blocks), info)
