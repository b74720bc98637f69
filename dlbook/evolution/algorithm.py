"""The genetic algorithm as a stateless ask/tell strategy in the evosax style (book ch. 2, Figs. 2.1-2.2).

`GeneticAlgorithm` holds only static settings; its methods are pure and jit/vmap-compatible, and the
state and the population are pytrees of arrays:

  state = ga.init(key, params)                        # A. random initial population (not evaluated)
  state = ga.tell_initial(fitness, state, params)     # C. fitness of the initial population
  offspring, state = ga.ask(key, state, params)       # D+E. selection, crossover, mutation
  state = ga.tell(offspring, fitness, state, params)  # F. replacement; global best; history
  ga.should_stop(state, params)                       # G. max generations / target / patience

`dlbook.evolution.driver.evolve` runs this loop with a fitness function. Besides the book's steady
state (offspring replace the worst), the strategy serves the searches of seeds 001 and 004:
- `replacement="elitism"`: the `num_elites` best survive, the offspring fill the other rows;
  `reevaluate_elites=True` hands the elites back with the offspring so their fitness is measured
  again each generation (seed 001's Gen-CNN re-trains its elite);
- `shrink_by`, `min_population` (with elitism): the population shrinks by `shrink_by` individuals per
  generation down to `min_population` (seed 001's Gen-Soup: 50 by 5 to 10). Arrays keep the initial
  size: the individuals alive in generation g are the first `population_at(g)` rows; `ask` selects
  only among them, and the driver evaluates only the first `offspring_at(g)` offspring (the others get
  fitness -inf: dead rows);
- `parents(key, state, params)`: the indices of each offspring's two parents, as `ask` with the same
  key draws them (an offspring that inherits weights, seed 001's Gen-Soup, needs them).

Choices where the sources are silent (docs/nas_evolution.md): fitness is maximised; NaN fitness (a
diverged run) is treated as -inf, never selected by roulette; replace_worst needs fewer offspring than
the population (default P // 2); elitism produces P - num_elites offspring; "improvement" for patience
means best fitness rising by > `min_delta`.
"""

import dataclasses
from typing import Any, Dict, Optional, Tuple

import chex
import flax
import jax
import jax.numpy as jnp
import numpy as np

from dlbook.errors import require
from dlbook.evolution.genome import GenomeSpec, Population, take
from dlbook.evolution.operators import CROSSOVERS, MUTATIONS, REPLACEMENTS, SELECTIONS


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
  fitness: jax.Array      # [P]; -inf until evaluated (and for dead rows of a shrinking population)
  best_genome: Population  # {name: [...]}, the best seen in ANY generation (book §2.2.2 H)
  best_fitness: jax.Array
  generation: jax.Array   # 0 for the initial population, +1 per tell
  stall: jax.Array        # generations since the best improved by more than min_delta
  history: Dict[str, Any]  # population [G+1, P, ...], fitness [G+1, P], best_fitness [G+1]


@dataclasses.dataclass(frozen=True)
class GeneticAlgorithm:
  """Stateless GA; `init`, `tell_initial`, `ask`, `tell`, `parents`, `should_stop` are pure and jittable."""
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
  reevaluate_elites: bool = False  # elitism: the elites are evaluated again with the offspring
  shrink_by: int = 0  # elitism: the population loses this many individuals per generation ...
  min_population: int = 0  # ... down to this size

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
      require(not self.reevaluate_elites and not self.shrink_by,
              "reevaluate_elites and shrink_by need replacement='elitism'")
    require(int(self.shrink_by) >= 0, f"shrink_by must be >= 0, got {self.shrink_by}")
    if self.shrink_by:
      require(self.num_elites < int(self.min_population) <= p,
              f"a shrinking population needs num_elites ({self.num_elites}) < min_population <= "
              f"population_size ({p}), got min_population={self.min_population}")
    require(self.crossover != "two_point" or self.spec.num_genes >= 3,
            f"two_point crossover needs >= 3 scalar genes, the genome has {self.spec.num_genes}")

  @property
  def offspring_per_generation(self) -> int:
    """Rows `ask` returns (the elites first when `reevaluate_elites`)."""
    if self.replacement == "elitism":
      return self.population_size if self.reevaluate_elites else self.population_size - self.num_elites
    return self.num_offspring or max(1, self.population_size // 2)

  @property
  def num_children(self) -> int:
    """New individuals bred per generation."""
    return self.offspring_per_generation - (self.num_elites if self.reevaluate_elites else 0)

  def population_at(self, generation):
    """Individuals alive in `generation` (the first rows); a Python int or a traced one."""
    if not self.shrink_by:
      return self.population_size
    size = jnp.maximum(self.min_population, self.population_size - self.shrink_by * generation)
    return int(size) if isinstance(generation, (int, np.integer)) else size

  def offspring_at(self, generation: int) -> int:
    """How many of the offspring of `generation` are alive, hence evaluated (the first rows)."""
    if not self.shrink_by:
      return self.offspring_per_generation
    return self.population_at(generation) - (0 if self.reevaluate_elites else self.num_elites)

  def default_params(self, crossover_rate=1.0, gene_crossover_prob=None, mutation_prob=0.4,
                     gene_mutation_prob=0.0, target_fitness=None, patience=0, min_delta=0.0) -> GAParams:
    """Book defaults: uniform crossover with P(parent 2) = ½ per gene, point mutation p = 0.4.

    Per-gene probabilities are a scalar, a vector over the flat genes, or ``{gene_name: p}``
    (missing genes 0), so settings published in another gene order stay attached to their genes."""
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
  def _elites(self, fitness):
    return jnp.argsort(-fitness)[:self.num_elites]

  def _select(self, k1, k2, state: GAState):
    """Parent indices of the `num_children` children."""
    select = SELECTIONS.get(self.selection)
    size = {"size": self.population_at(state.generation)} if self.shrink_by else {}
    return (select(k1, state.fitness, self.num_children, self, **size),
            select(k2, state.fitness, self.num_children, self, **size))

  def parents(self, key, state: GAState, params: GAParams) -> Tuple[jax.Array, jax.Array]:
    """Rows of `state.population` that are the two parents of each offspring `ask(key, ...)` returns
    ([offspring_per_generation] each; a re-evaluated elite is its own two parents)."""
    del params
    k1, k2 = jax.random.split(key, 5)[:2]
    i1, i2 = self._select(k1, k2, state)
    if self.reevaluate_elites:
      elites = self._elites(state.fitness)
      i1, i2 = jnp.concatenate([elites, i1]), jnp.concatenate([elites, i2])
    return i1, i2

  def ask(self, key, state: GAState, params: GAParams) -> Tuple[Population, GAState]:
    """Offspring [offspring_per_generation] from the current population; the state is unchanged."""
    n = self.num_children
    k1, k2, k_rate, k_cx, k_mut = jax.random.split(key, 5)
    flat = self.spec.to_flat(state.population)
    i1, i2 = self._select(k1, k2, state)
    cross = CROSSOVERS.get(self.crossover)
    f1, f2 = state.fitness[i1], state.fitness[i2]
    children = jax.vmap(lambda k, a, b, fa, fb: cross(k, a, b, fa, fb, params, self.spec))(
        jax.random.split(k_cx, n), flat[i1], flat[i2], f1, f2)
    crossed = jax.random.uniform(k_rate, (n, 1)) < params.crossover_rate
    children = jnp.where(crossed, children, flat[i1])
    mutate = MUTATIONS.get(self.mutation)
    children = jax.vmap(lambda k, c: mutate(k, c, params, self.spec))(jax.random.split(k_mut, n), children)
    if self.reevaluate_elites:
      children = jnp.concatenate([flat[self._elites(state.fitness)], children])
    return self.spec.from_flat(children), state

  # -- F: replacement, global best, history
  def tell(self, offspring: Population, fitness, state: GAState, params: GAParams) -> GAState:
    chex.assert_shape(fitness, (self.offspring_per_generation,))
    fitness = _sanitize(fitness)
    off_flat = self.spec.to_flat(offspring)
    if self.reevaluate_elites:  # the elites come back as the first offspring rows, re-evaluated
      flat, fit = off_flat, fitness
    else:
      replace = REPLACEMENTS.get(self.replacement)
      flat, fit = replace(self.spec.to_flat(state.population), state.fitness, off_flat, fitness, self)
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
