"""The generation loop of the GA engine: evaluate, tell, ask until a stop criterion (book Fig. 2.1).

`evolve(ga, params, key, evaluate, state=None, callback=None)` runs a `GeneticAlgorithm` with a user
fitness function `evaluate(population, generation) -> fitness [n]` and calls `callback(state)` after
every generation (a search checkpoints there with `state_to_tree`). Resume is at generation
granularity: pass the state restored with `state_from_tree`; the key of each generation is a pure
function of (key, generation), so a resumed run reproduces an uninterrupted one exactly.
`compiled_steps(ga)` gives the jitted steps for a loop written by hand; `history_table` turns a state's
history into one record per generation.
"""

import functools
from typing import Any, Callable, NamedTuple, Optional, Tuple

import flax
import jax
import jax.numpy as jnp
import numpy as np

from dlbook.errors import DlbookError
from dlbook.evolution.algorithm import GAParams, GAState, GeneticAlgorithm
from dlbook.evolution.genome import Population, population_size, take


def generation_keys(key) -> Tuple[jax.Array, jax.Array]:
  """(init key, per-generation root); generation g asks with fold_in(root, g), so resume is exact."""
  return tuple(jax.random.split(key))


class Steps(NamedTuple):
  tell_initial: Callable
  ask: Callable
  tell: Callable
  parents: Callable


@functools.lru_cache(maxsize=16)
def compiled_steps(ga: GeneticAlgorithm) -> Steps:
  """`ga`'s methods jitted once and shared by every equal GA (a resume, a second run, a hand-written
  loop that also needs `parents`); each compiles on its first call."""
  return Steps(jax.jit(ga.tell_initial), jax.jit(ga.ask), jax.jit(ga.tell), jax.jit(ga.parents))


def _evaluate(ga: GeneticAlgorithm, evaluate, population: Population, generation: int):
  """Fitness of the alive rows; the dead rows of a shrinking population get -inf unevaluated."""
  total = population_size(population)
  n = ga.offspring_at(generation) if generation else total
  if n == total:
    return jnp.asarray(evaluate(population, generation))
  fitness = np.asarray(evaluate(take(population, np.arange(n)), generation), np.float32)
  return jnp.asarray(np.concatenate([fitness, np.full(total - n, -np.inf, np.float32)]))


def _require_finite(state: GAState) -> None:
  """A population whose every fitness is non-finite has nothing to select from: stop, saving nothing."""
  if not np.isfinite(np.asarray(jax.device_get(state.fitness))).any():
    raise DlbookError(f"generation {int(state.generation)}: every individual's fitness is non-finite (every "
                      "evaluation diverged or failed, e.g. a learning rate too large); the search stops "
                      "without recording this generation")


def evolve(ga: GeneticAlgorithm, params: GAParams, key, evaluate: Callable[[Population, int], Any],
           state: Optional[GAState] = None, callback: Optional[Callable[[GAState], None]] = None,
           initial_population: Optional[Population] = None) -> GAState:
  """Runs the GA until `should_stop`. `evaluate(population, generation) -> fitness [n]`.

  Pass a restored `state` to resume: the key of each generation is a pure function of (key,
  generation), so a resumed run reproduces an uninterrupted one. `callback(state)` runs after
  every generation (checkpointing, logging). A generation whose whole population has non-finite
  fitness raises `DlbookError` before its callback, so nothing saved earlier is overwritten.
  """
  init_key, gen_root = generation_keys(key)
  tell_initial, ask, tell, _ = compiled_steps(ga)
  if state is None:
    state = ga.init(init_key, params, initial_population)
    state = tell_initial(_evaluate(ga, evaluate, state.population, 0), state, params)
    _require_finite(state)
    if callback:
      callback(state)
  while not bool(ga.should_stop(state, params)):
    generation = int(state.generation) + 1
    offspring, state = ask(jax.random.fold_in(gen_root, generation), state, params)
    state = tell(offspring, _evaluate(ga, evaluate, offspring, generation), state, params)
    _require_finite(state)
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


def history_table(ga: GeneticAlgorithm, state: GAState, decode: Callable[[Population], Any],
                  genome_key: str = "best_genome") -> list:
  """One record per finished generation: the fitness of its (alive) population (None where non-finite),
  its max, mean and min over finite values, the best so far and `decode` of the best-so-far genome
  under `genome_key`."""
  h = jax.device_get(state.history)
  rows, best_g, best_i, best_f = [], 0, 0, -np.inf
  for g in range(int(state.generation) + 1):
    fit = np.asarray(h["fitness"][g], np.float64)[:ga.population_at(g)]
    i = int(np.argmax(fit))
    if fit[i] > best_f:
      best_g, best_i, best_f = g, i, float(fit[i])
    finite = fit[np.isfinite(fit)]
    genome = jax.tree.map(lambda x: x[best_g, best_i], h["population"])
    rows.append({"generation": g, "best_fitness": float(h["best_fitness"][g]),
                 "population_max": float(finite.max()) if finite.size else None,
                 "population_mean": float(finite.mean()) if finite.size else None,
                 "population_min": float(finite.min()) if finite.size else None,
                 "population_fitness": [float(f) if np.isfinite(f) else None for f in fit],
                 genome_key: decode(genome)})
  return rows
