"""A generic genetic algorithm in the style of evosax (book ch. 2, Figs. 2.1-2.2; SPEC §1 and §7).

The engine knows nothing about networks. A `GenomeSpec` lists genes of four kinds (integer, real,
log-real, categorical), each a scalar or a fixed-shape array. A population is ONE batched pytree,
``{gene_name: array[P, *gene_shape]}``, never a list of objects. `GeneticAlgorithm` is a stateless
strategy whose methods are pure and jit/vmap-compatible:

  state = ga.init(key, params)                        # A. random initial population (not evaluated)
  state = ga.tell_initial(fitness, state, params)     # C. fitness of the initial population
  offspring, state = ga.ask(key, state, params)       # D+E. selection, crossover, mutation
  state = ga.tell(offspring, fitness, state, params)  # F. replacement; global best; history
  ga.should_stop(state, params)                       # G. max generations / target / patience

`evolve` is the Python driver that runs this loop with a user fitness function and a callback
(the evolutionary NAS launcher checkpoints there).

Operators (registries; an unknown name is a `DlbookError` listing the valid ones):
- selection: ``roulette`` (book §2.2.2 D: p_i = f_i / Σ f), ``tournament`` (k = `tournament_size`;
  seed 004 uses k=2, seed 001 a binary tournament);
- crossover: ``uniform`` (book E: each gene from either parent; P(second parent) per gene =
  `gene_crossover_prob`, 0.5 by default), ``two_point`` (seed 004: the segment between two cut
  points comes from the second parent), ``arithmetic`` (seed 001 Eq. 3.5: fitness-weighted mean,
  applied per gene with probability `gene_crossover_prob`);
- mutation: ``point`` (book E: with probability `mutation_prob` one gene chosen uniformly is changed),
  ``uniform_reset`` (seed 001 Eq. 3.6: every gene is redrawn with its own `gene_mutation_prob`);
- replacement: ``replace_worst`` (book F: the offspring replace the lowest-fitness members),
  ``elitism`` (seed 001: the `num_elites` best survive, offspring fill the rest).

Choices where the sources are silent (also in docs/nas_evolution.md):
- Fitness is maximised. NaN fitness (a diverged run) is treated as -inf, never selected by roulette.
- Roulette needs non-negative fitness: when some fitness is negative, all are shifted by -min(f)
  (unchanged for accuracies, the book's case); if every weight is zero the draw is uniform.
- Both parents are drawn independently, so a parent may mate with itself (then the child is a copy
  before mutation).
- Point mutation of an integer/categorical gene always changes it (a uniform draw among the other
  values); a real gene is redrawn uniformly (log-uniformly for log-real) within its bounds.
- Arithmetic crossover: integer genes are rounded, log-real genes are averaged in log space, and a
  categorical gene (no mean exists) comes from parent 1 with probability w1 = f1 / (f1 + f2);
  w1 = ½ when f1 + f2 <= 0.
- Two-point crossover: cut points a < b drawn uniformly among the D-1 inner gene boundaries; genes
  [a, b) come from parent 2 (needs D >= 3 scalar genes).
- replace_worst needs fewer offspring than the population (default P // 2); elitism produces
  P - num_elites offspring. "Improvement" for patience means best fitness rising by > `min_delta`.
"""

import dataclasses
import math
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import chex
import flax
import jax
import jax.numpy as jnp
import numpy as np

from dlbook.errors import DlbookError, require
from dlbook.registry import Registry

INTEGER, REAL, LOG_REAL, CATEGORICAL = "integer", "real", "log_real", "categorical"
GENE_KINDS = (INTEGER, REAL, LOG_REAL, CATEGORICAL)
_KIND_CODE = {k: i for i, k in enumerate(GENE_KINDS)}

Population = Dict[str, jax.Array]


# ----------------------------------------------------------------------------- genome specification

@dataclasses.dataclass(frozen=True)
class Gene:
  """One named gene: a scalar (shape ()) or a fixed-shape array of scalar genes of one kind.

  Integer genes hold values in [low, high]; real genes in [low, high); log-real genes in [low, high)
  drawn log-uniformly; categorical genes hold an index into `choices` (decode maps it to the value).
  """
  name: str
  kind: str
  low: float = 0.0
  high: float = 1.0
  choices: Optional[Tuple[Any, ...]] = None
  shape: Tuple[int, ...] = ()

  @property
  def size(self) -> int:
    return int(np.prod(self.shape, dtype=np.int64))

  @property
  def dtype(self):
    return jnp.int32 if self.kind in (INTEGER, CATEGORICAL) else jnp.float32


def integer(name: str, low: int, high: int, shape: Sequence[int] = ()) -> Gene:
  """Integer gene with values low..high inclusive."""
  return Gene(name, INTEGER, int(low), int(high), None, tuple(shape))


def real(name: str, low: float, high: float, shape: Sequence[int] = ()) -> Gene:
  return Gene(name, REAL, float(low), float(high), None, tuple(shape))


def log_real(name: str, low: float, high: float, shape: Sequence[int] = ()) -> Gene:
  """Real gene drawn log-uniformly (e.g. a learning rate in [1e-6, 1e-1], seed 004)."""
  return Gene(name, LOG_REAL, float(low), float(high), None, tuple(shape))


def categorical(name: str, choices: Sequence[Any], shape: Sequence[int] = ()) -> Gene:
  """Categorical gene; the genome stores the index 0..len(choices)-1."""
  choices = tuple(choices)
  return Gene(name, CATEGORICAL, 0, len(choices) - 1, choices, tuple(shape))


class GenomeSpec:
  """An ordered set of genes; converts populations between the pytree and a flat [P, D] view.

  The flat view (float32, one column per scalar gene, genes in declared order, each in C order)
  is what the operators work on; integer and categorical values are exact in float32.
  """

  def __init__(self, genes: Sequence[Gene]):
    genes = tuple(genes)
    require(len(genes) > 0, "a genome spec needs at least one gene")
    names = [g.name for g in genes]
    require(len(set(names)) == len(names), f"gene names must be unique, got {names}")
    for g in genes:
      require(g.kind in GENE_KINDS, f"gene {g.name!r}: unknown kind {g.kind!r}; valid: {', '.join(GENE_KINDS)}")
      require(all(int(s) > 0 for s in g.shape), f"gene {g.name!r}: shape must be positive, got {g.shape}")
      if g.kind == CATEGORICAL:
        require(g.choices is not None and len(g.choices) >= 1, f"gene {g.name!r}: categorical needs choices")
      elif g.kind == INTEGER:
        require(g.low <= g.high, f"gene {g.name!r}: integer bounds need low <= high, got [{g.low}, {g.high}]")
      else:
        require(g.low < g.high and math.isfinite(g.low) and math.isfinite(g.high),
                f"gene {g.name!r}: real bounds need finite low < high, got [{g.low}, {g.high}]")
        require(g.kind != LOG_REAL or g.low > 0, f"gene {g.name!r}: log-real bounds must be > 0, got {g.low}")
    self.genes = genes
    self.names = tuple(names)
    self.sizes = tuple(g.size for g in genes)
    self.num_genes = int(sum(self.sizes))
    rep = lambda f: np.concatenate([np.full(g.size, f(g)) for g in genes])
    self.kinds = rep(lambda g: _KIND_CODE[g.kind]).astype(np.int32)
    self.lows = rep(lambda g: g.low).astype(np.float32)
    self.highs = rep(lambda g: g.high).astype(np.float32)
    self.gene_index = rep(lambda g: names.index(g.name)).astype(np.int32)  # flat slot -> gene

  def __repr__(self):
    genes = (f"{g.name}:{g.kind}{list(g.shape) if g.shape else ''}" for g in self.genes)
    return f"GenomeSpec({', '.join(genes)})"

  @property
  def discrete(self) -> np.ndarray:
    return (self.kinds == _KIND_CODE[INTEGER]) | (self.kinds == _KIND_CODE[CATEGORICAL])

  # -- conversions
  def to_flat(self, population: Population) -> jax.Array:
    """{name: [P, *shape]} -> float32 [P, D]."""
    cols = []
    for g in self.genes:
      v = jnp.asarray(population[g.name])
      cols.append(v.reshape(v.shape[:v.ndim - len(g.shape)] + (g.size,)).astype(jnp.float32))
    return jnp.concatenate(cols, axis=-1)

  def from_flat(self, flat: jax.Array) -> Population:
    """float32 [..., D] -> {name: [..., *shape]}; discrete genes rounded and clipped to bounds."""
    chex.assert_axis_dimension(flat, -1, self.num_genes)
    flat = self.clip(flat)
    out, start = {}, 0
    for g in self.genes:
      v = flat[..., start:start + g.size]
      start += g.size
      if g.kind in (INTEGER, CATEGORICAL):
        v = jnp.round(v).astype(jnp.int32)
      out[g.name] = v.reshape(v.shape[:-1] + g.shape)
    return out

  def clip(self, flat: jax.Array) -> jax.Array:
    return jnp.clip(flat, self.lows, self.highs)

  # -- sampling (step A)
  def sample_flat(self, key: jax.Array, n: int) -> jax.Array:
    """[n, D] genes drawn uniformly within bounds (log-uniformly for log-real)."""
    k_int, k_real = jax.random.split(key)
    u = jax.random.uniform(k_real, (n, self.num_genes))
    lows, highs = jnp.asarray(self.lows), jnp.asarray(self.highs)
    kinds = jnp.asarray(self.kinds)
    reals = lows + u * (highs - lows)
    log_reals = jnp.exp(jnp.log(jnp.maximum(lows, 1e-30)) +
                        u * (jnp.log(jnp.maximum(highs, 1e-30)) - jnp.log(jnp.maximum(lows, 1e-30))))
    ints = jnp.floor(lows + jax.random.uniform(k_int, (n, self.num_genes)) * (highs - lows + 1))
    ints = jnp.minimum(ints, highs)
    out = jnp.where(kinds == _KIND_CODE[LOG_REAL], log_reals, reals)
    out = jnp.where(jnp.asarray(self.discrete), ints, out)
    # A real draw may round up to `high` in float32; keep the half-open interval.
    return jnp.where(jnp.asarray(self.discrete), out, jnp.minimum(out, jnp.nextafter(highs, lows)))

  def sample(self, key: jax.Array, n: int) -> Population:
    return self.from_flat(self.sample_flat(key, n))

  # -- per-gene settings
  def per_gene(self, value, name: str = "value") -> np.ndarray:
    """Expands a scalar or ``{gene_name: value}`` (missing genes -> 0) to a float32 [D] vector."""
    if isinstance(value, dict) or hasattr(value, "to_dict"):
      value = dict(value)
      unknown = sorted(set(value) - set(self.names))
      require(not unknown, f"{name} names unknown genes {unknown}; valid: {', '.join(self.names)}")
      return np.asarray([float(value.get(self.names[i], 0.0)) for i in self.gene_index], np.float32)
    if np.ndim(value) == 0:
      return np.full(self.num_genes, float(value), np.float32)
    value = np.asarray(value, np.float32)
    require(value.shape == (self.num_genes,), f"{name} must be a scalar, a dict by gene, or length "
            f"{self.num_genes}; got shape {value.shape}")
    return value

  # -- human-readable values
  def encode(self, values: dict) -> Population:
    """One genome (no population axis) from readable values; categorical values are looked up.

    Raises `DlbookError` naming the gene and the valid values for anything out of the space.
    """
    missing = [n for n in self.names if n not in values]
    extra = sorted(set(values) - set(self.names))
    require(not missing and not extra, f"genome needs exactly genes {list(self.names)}; "
            f"missing {missing}, unknown {extra}")
    out = {}
    for g in self.genes:
      v = np.asarray(values[g.name], dtype=object).reshape(-1)
      require(v.size == g.size, f"gene {g.name!r} needs {g.size} value(s) (shape {g.shape}), got {v.size}")
      if g.kind == CATEGORICAL:
        idx = []
        for x in v:
          require(x in g.choices, f"gene {g.name!r}: {x!r} is not a valid choice; valid: {list(g.choices)}")
          idx.append(list(g.choices).index(x))
        arr = np.asarray(idx, np.int32)
      elif g.kind == INTEGER:
        require(all(float(x) == int(x) and g.low <= int(x) <= g.high for x in v),
                f"gene {g.name!r}: {list(v)} must be integers in [{int(g.low)}, {int(g.high)}]")
        arr = np.asarray([int(x) for x in v], np.int32)
      else:
        require(all(g.low <= float(x) <= g.high for x in v),
                f"gene {g.name!r}: {list(v)} must lie in [{g.low}, {g.high}]")
        arr = np.asarray([float(x) for x in v], np.float32)
      out[g.name] = jnp.asarray(arr.reshape(g.shape))
    return out

  def decode(self, genome) -> dict:
    """One genome (no population axis) -> {name: python value or tuple}; categoricals -> choices."""
    out = {}
    for g in self.genes:
      v = np.asarray(jax.device_get(genome[g.name])).reshape(-1)
      if g.kind == CATEGORICAL:
        vals = [g.choices[int(i)] for i in v]
      elif g.kind == INTEGER:
        vals = [int(i) for i in v]
      else:
        vals = [float(i) for i in v]
      out[g.name] = vals[0] if g.shape == () else tuple(vals)
    return out


def stack(genomes: Sequence[Population]) -> Population:
  """A population from single genomes."""
  return jax.tree.map(lambda *xs: jnp.stack(xs), *genomes)


def take(population: Population, i) -> Population:
  """Individual `i` (or a sub-population for an index array)."""
  return jax.tree.map(lambda x: x[i], population)


def population_size(population: Population) -> int:
  return int(jax.tree.leaves(population)[0].shape[0])


# ----------------------------------------------------------------------------- operators

SELECTIONS: Registry[Callable] = Registry("selection")
CROSSOVERS: Registry[Callable] = Registry("crossover")
MUTATIONS: Registry[Callable] = Registry("mutation")
REPLACEMENTS: Registry[Callable] = Registry("replacement")


@SELECTIONS.register("roulette")
def roulette(key, fitness, num: int, ga=None) -> jax.Array:
  """Roulette wheel (book §2.2.2 D): P(i) = f_i / Σ_j f_j over evaluated individuals."""
  finite = jnp.isfinite(fitness)
  shift = jnp.minimum(0.0, jnp.min(jnp.where(finite, fitness, jnp.inf)))
  w = jnp.where(finite, fitness - shift, 0.0)
  total = w.sum()
  p = jnp.where(total > 0, w / jnp.where(total > 0, total, 1.0), 1.0 / fitness.shape[0])
  return jax.random.choice(key, fitness.shape[0], (num,), p=p)


@SELECTIONS.register("tournament")
def tournament(key, fitness, num: int, ga=None) -> jax.Array:
  """Tournament(k): k contestants drawn uniformly with replacement, the fittest wins (seeds 001, 004)."""
  k = 2 if ga is None else ga.tournament_size
  contestants = jax.random.randint(key, (num, k), 0, fitness.shape[0])
  return contestants[jnp.arange(num), jnp.argmax(fitness[contestants], axis=1)]


@CROSSOVERS.register("uniform")
def uniform_crossover(key, p1, p2, f1, f2, params, spec) -> jax.Array:
  """Uniform (book Fig. 2.6): gene d comes from parent 2 with probability gene_crossover_prob[d]."""
  take2 = jax.random.uniform(key, p1.shape) < params.gene_crossover_prob
  return jnp.where(take2, p2, p1)


@CROSSOVERS.register("two_point")
def two_point_crossover(key, p1, p2, f1, f2, params, spec) -> jax.Array:
  """Two-point (seed 004 Fig. 13): genes in [a, b) from parent 2, the rest from parent 1."""
  d = p1.shape[-1]
  cuts = jnp.sort(jax.random.choice(key, d - 1, (2,), replace=False) + 1)
  pos = jnp.arange(d)
  return jnp.where((pos >= cuts[0]) & (pos < cuts[1]), p2, p1)


@CROSSOVERS.register("arithmetic")
def arithmetic_crossover(key, p1, p2, f1, f2, params, spec) -> jax.Array:
  """Fitness-weighted arithmetic mean (seed 001 Eq. 3.5), per gene with prob gene_crossover_prob."""
  k_gene, k_cat = jax.random.split(key)
  total = f1 + f2
  ok = jnp.isfinite(total) & (total > 0)
  w = jnp.where(ok, f1 / jnp.where(ok, total, 1.0), 0.5)
  kinds = jnp.asarray(spec.kinds)
  mean = w * p1 + (1 - w) * p2
  log_mean = jnp.exp(w * jnp.log(jnp.maximum(p1, 1e-30)) + (1 - w) * jnp.log(jnp.maximum(p2, 1e-30)))
  cat = jnp.where(jax.random.uniform(k_cat, p1.shape) < w, p1, p2)
  child = jnp.where(kinds == _KIND_CODE[INTEGER], jnp.round(mean), mean)
  child = jnp.where(kinds == _KIND_CODE[LOG_REAL], log_mean, child)
  child = jnp.where(kinds == _KIND_CODE[CATEGORICAL], cat, child)
  apply = jax.random.uniform(k_gene, p1.shape) < params.gene_crossover_prob
  return spec.clip(jnp.where(apply, child, p1))


def _redraw(key, genome, spec, force_change):
  """A fresh value for every gene; discrete genes differ from `genome` where `force_change`."""
  k_new, k_off = jax.random.split(key)
  fresh = spec.sample_flat(k_new, 1)[0]
  lows, highs = jnp.asarray(spec.lows), jnp.asarray(spec.highs)
  n = highs - lows + 1
  offset = jnp.floor(1 + jax.random.uniform(k_off, genome.shape) * (n - 1))  # 1..n-1
  other = lows + jnp.mod(genome - lows + offset, n)
  changed = jnp.where(n > 1, other, genome)
  return jnp.where(jnp.asarray(spec.discrete) & force_change, changed, fresh)


@MUTATIONS.register("point")
def point_mutation(key, genome, params, spec) -> jax.Array:
  """Point mutation (book Figs. 2.8-2.9): with prob mutation_prob, one uniformly chosen gene changes."""
  k_apply, k_pos, k_val = jax.random.split(key, 3)
  pos = jax.random.randint(k_pos, (), 0, genome.shape[-1])
  new = _redraw(k_val, genome, spec, force_change=True)
  hit = (jnp.arange(genome.shape[-1]) == pos) & (jax.random.uniform(k_apply) < params.mutation_prob)
  return jnp.where(hit, new, genome)


@MUTATIONS.register("uniform_reset")
def uniform_reset_mutation(key, genome, params, spec) -> jax.Array:
  """Uniform reset (seed 001 Eq. 3.6): gene d is redrawn within bounds with prob gene_mutation_prob[d]."""
  k_apply, k_val = jax.random.split(key)
  new = _redraw(k_val, genome, spec, force_change=False)
  return jnp.where(jax.random.uniform(k_apply, genome.shape) < params.gene_mutation_prob, new, genome)


@REPLACEMENTS.register("replace_worst")
def replace_worst(flat, fitness, off_flat, off_fitness, ga):
  """Book §2.2.2 F: the offspring take the places of the lowest-fitness members."""
  worst = jnp.argsort(fitness)[:off_flat.shape[0]]
  return flat.at[worst].set(off_flat), fitness.at[worst].set(off_fitness)


@REPLACEMENTS.register("elitism")
def elitism(flat, fitness, off_flat, off_fitness, ga):
  """Seed 001: the num_elites best survive (first rows), the offspring fill the other rows."""
  elites = jnp.argsort(-fitness)[:ga.num_elites]
  return (jnp.concatenate([flat[elites], off_flat]), jnp.concatenate([fitness[elites], off_fitness]))


# ----------------------------------------------------------------------------- strategy

@flax.struct.dataclass
class GAParams:
  """Dynamic settings (arrays, so a batch of settings can be vmapped, as in evosax)."""
  crossover_rate: jax.Array     # P(a pair is crossed at all); otherwise the child copies parent 1
  gene_crossover_prob: jax.Array  # [D] uniform: P(gene from parent 2); arithmetic: P(gene averaged)
  mutation_prob: jax.Array      # point mutation: P(offspring mutated)
  gene_mutation_prob: jax.Array  # [D] uniform_reset: P(gene redrawn)
  target_fitness: jax.Array     # stop once best >= target (inf: never)
  patience: jax.Array           # stop after this many generations without improvement (0: never)
  min_delta: jax.Array          # improvement threshold for patience


@flax.struct.dataclass
class GAState:
  population: Population  # {name: [P, ...]}
  fitness: jax.Array      # [P]; -inf until evaluated
  best_genome: Population  # {name: [...]}, the best seen in ANY generation (book §2.2.2 H)
  best_fitness: jax.Array
  generation: jax.Array   # 0 for the initial population, +1 per tell
  stall: jax.Array        # generations since the best improved by more than min_delta
  history: Dict[str, Any]  # population [G+1, P, ...], fitness [G+1, P], best_fitness [G+1]


@dataclasses.dataclass(frozen=True)
class GeneticAlgorithm:
  """Stateless GA; `init`, `tell_initial`, `ask`, `tell`, `should_stop` are pure and jittable."""
  spec: GenomeSpec
  population_size: int
  num_offspring: int = 0  # 0: P // 2 for replace_worst, P - num_elites for elitism
  selection: str = "roulette"
  crossover: str = "uniform"
  mutation: str = "point"
  replacement: str = "replace_worst"
  num_elites: int = 1
  tournament_size: int = 2
  max_generations: int = 10

  def __post_init__(self):
    for registry, name in ((SELECTIONS, self.selection), (CROSSOVERS, self.crossover),
                           (MUTATIONS, self.mutation), (REPLACEMENTS, self.replacement)):
      registry.get(name)
    p = int(self.population_size)
    require(p >= 2, f"population_size must be >= 2, got {p}")
    require(int(self.max_generations) >= 0, f"max_generations must be >= 0, got {self.max_generations}")
    require(int(self.tournament_size) >= 1, f"tournament_size must be >= 1, got {self.tournament_size}")
    if self.replacement == "elitism":
      require(1 <= self.num_elites < p, f"num_elites must be in [1, population_size-1], got {self.num_elites}")
      require(self.num_offspring in (0, p - self.num_elites),
              f"with elitism num_offspring is population_size - num_elites = {p - self.num_elites}, "
              f"got {self.num_offspring}")
    else:
      require(0 <= self.num_offspring < p,
              f"replace_worst needs 1 <= num_offspring < population_size ({p}), got {self.num_offspring}")
    require(self.crossover != "two_point" or self.spec.num_genes >= 3,
            f"two_point crossover needs >= 3 scalar genes, the genome has {self.spec.num_genes}")

  @property
  def offspring_per_generation(self) -> int:
    if self.replacement == "elitism":
      return self.population_size - self.num_elites
    return self.num_offspring or max(1, self.population_size // 2)

  def default_params(self, crossover_rate=1.0, gene_crossover_prob=None, mutation_prob=0.4,
                     gene_mutation_prob=0.0, target_fitness=None, patience=0, min_delta=0.0) -> GAParams:
    """Book defaults: uniform crossover with P(parent 2) = ½ per gene, point mutation p = 0.4."""
    if gene_crossover_prob is None:
      gene_crossover_prob = 0.5 if self.crossover == "uniform" else 1.0
    require(0 <= float(crossover_rate) <= 1, f"crossover_rate must be in [0, 1], got {crossover_rate}")
    require(0 <= float(mutation_prob) <= 1, f"mutation_prob must be in [0, 1], got {mutation_prob}")
    require(int(patience) >= 0, f"patience must be >= 0, got {patience}")
    gcp = self.spec.per_gene(gene_crossover_prob, "gene_crossover_prob")
    gmp = self.spec.per_gene(gene_mutation_prob, "gene_mutation_prob")
    require(((gcp >= 0) & (gcp <= 1)).all() and ((gmp >= 0) & (gmp <= 1)).all(),
            "per-gene crossover/mutation probabilities must lie in [0, 1]")
    target = np.inf if target_fitness is None else float(target_fitness)
    return GAParams(jnp.float32(crossover_rate), jnp.asarray(gcp), jnp.float32(mutation_prob), jnp.asarray(gmp),
                    jnp.float32(target), jnp.int32(patience), jnp.float32(min_delta))

  # -- A: initial population
  def init(self, key, params: GAParams, population: Optional[Population] = None) -> GAState:
    """A random initial population (or the given one), not yet evaluated."""
    del params
    if population is None:
      population = self.spec.sample(key, self.population_size)
    p, g = self.population_size, self.max_generations + 1
    fitness = jnp.full((p,), -jnp.inf, jnp.float32)
    history = {"population": jax.tree.map(lambda x: jnp.zeros((g,) + x.shape, x.dtype), population),
               "fitness": jnp.full((g, p), -jnp.inf, jnp.float32),
               "best_fitness": jnp.full((g,), -jnp.inf, jnp.float32)}
    return GAState(population, fitness, take(population, 0), jnp.float32(-jnp.inf), jnp.int32(0), jnp.int32(0),
                   history)

  def tell_initial(self, fitness, state: GAState, params: GAParams) -> GAState:
    """C for generation 0: records the initial population's fitness."""
    chex.assert_shape(fitness, (self.population_size,))
    fitness = _sanitize(fitness)
    state = state.replace(fitness=fitness)
    return self._update_best(state.population, fitness, state, params, count_stall=False)

  # -- D + E: selection, crossover, mutation
  def ask(self, key, state: GAState, params: GAParams) -> Tuple[Population, GAState]:
    """Offspring [num_offspring] from the current population; the state is unchanged."""
    n = self.offspring_per_generation
    k1, k2, k_rate, k_cx, k_mut = jax.random.split(key, 5)
    flat = self.spec.to_flat(state.population)
    select = SELECTIONS.get(self.selection)
    i1 = select(k1, state.fitness, n, self)
    i2 = select(k2, state.fitness, n, self)
    cross = CROSSOVERS.get(self.crossover)
    f1, f2 = state.fitness[i1], state.fitness[i2]
    children = jax.vmap(lambda k, a, b, fa, fb: cross(k, a, b, fa, fb, params, self.spec))(
        jax.random.split(k_cx, n), flat[i1], flat[i2], f1, f2)
    crossed = jax.random.uniform(k_rate, (n, 1)) < params.crossover_rate
    children = jnp.where(crossed, children, flat[i1])
    mutate = MUTATIONS.get(self.mutation)
    children = jax.vmap(lambda k, c: mutate(k, c, params, self.spec))(jax.random.split(k_mut, n), children)
    return self.spec.from_flat(children), state

  # -- F: replacement, global best, history
  def tell(self, offspring: Population, fitness, state: GAState, params: GAParams) -> GAState:
    n = self.offspring_per_generation
    chex.assert_shape(fitness, (n,))
    fitness = _sanitize(fitness)
    replace = REPLACEMENTS.get(self.replacement)
    flat, fit = replace(self.spec.to_flat(state.population), state.fitness, self.spec.to_flat(offspring),
                        fitness, self)
    state = state.replace(population=self.spec.from_flat(flat), fitness=fit, generation=state.generation + 1)
    return self._update_best(offspring, fitness, state, params, count_stall=True)

  def _update_best(self, candidates, fitness, state, params, count_stall):
    i = jnp.argmax(fitness)
    better = fitness[i] > state.best_fitness
    improved = fitness[i] > state.best_fitness + params.min_delta
    best_genome = jax.tree.map(lambda b, c: jnp.where(better, c[i], b), state.best_genome, candidates)
    best = jnp.where(better, fitness[i], state.best_fitness)
    stall = jnp.where(improved, 0, state.stall + 1).astype(jnp.int32) if count_stall else jnp.int32(0)
    g = jnp.minimum(state.generation, self.max_generations)
    h = state.history
    history = {"population": jax.tree.map(lambda hp, p: hp.at[g].set(p), h["population"], state.population),
               "fitness": h["fitness"].at[g].set(state.fitness),
               "best_fitness": h["best_fitness"].at[g].set(best)}
    return state.replace(best_genome=best_genome, best_fitness=best, stall=stall, history=history)

  # -- G: termination
  def should_stop(self, state: GAState, params: GAParams) -> jax.Array:
    return ((state.generation >= self.max_generations) | (state.best_fitness >= params.target_fitness)
            | ((params.patience > 0) & (state.stall >= params.patience)))

  def stop_reason(self, state: GAState, params: GAParams) -> str:
    if float(state.best_fitness) >= float(params.target_fitness):
      return "target_fitness"
    if int(params.patience) > 0 and int(state.stall) >= int(params.patience):
      return "patience"
    if int(state.generation) >= self.max_generations:
      return "max_generations"
    return "running"


def _sanitize(fitness):
  fitness = jnp.asarray(fitness, jnp.float32)
  return jnp.where(jnp.isnan(fitness), -jnp.inf, fitness)


def generation_keys(key) -> Tuple[jax.Array, jax.Array]:
  """(init key, per-generation root); generation g asks with fold_in(root, g), so resume is exact."""
  return tuple(jax.random.split(key))


def evolve(ga: GeneticAlgorithm, params: GAParams, key, evaluate: Callable[[Population, int], Any],
           state: Optional[GAState] = None, callback: Optional[Callable[[GAState], None]] = None,
           initial_population: Optional[Population] = None) -> GAState:
  """Runs the GA until `should_stop`. `evaluate(population, generation) -> fitness [n]`.

  Pass a restored `state` to resume: the key of each generation is a pure function of (key,
  generation), so a resumed run reproduces an uninterrupted one. `callback(state)` runs after
  every generation (checkpointing, logging).
  """
  init_key, gen_root = generation_keys(key)
  ask, tell = jax.jit(ga.ask), jax.jit(ga.tell)
  if state is None:
    state = ga.init(init_key, params, initial_population)
    state = jax.jit(ga.tell_initial)(jnp.asarray(evaluate(state.population, 0)), state, params)
    if callback:
      callback(state)
  while not bool(ga.should_stop(state, params)):
    generation = int(state.generation) + 1
    offspring, state = ask(jax.random.fold_in(gen_root, generation), state, params)
    fitness = jnp.asarray(evaluate(offspring, generation))
    state = tell(offspring, fitness, state, params)
    if callback:
      callback(state)
  return state


def state_to_tree(state: GAState) -> dict:
  """A plain nested dict for orbax."""
  return flax.serialization.to_state_dict(state)


def state_from_tree(template: GAState, tree: dict) -> GAState:
  try:
    return flax.serialization.from_state_dict(template, tree)
  except (ValueError, KeyError) as e:
    raise DlbookError(f"saved GA state does not fit this genome/GA config: {e}") from None
