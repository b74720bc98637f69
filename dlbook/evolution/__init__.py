"""The generic genetic-algorithm engine (book ch. 2, Figs. 2.1-2.2; seeds 001 and 004).

It knows nothing about networks; evolutionary NAS (`dlbook.nas`) and the hyperparameter searches use it.

- `genome`: genes (`integer`, `real`, `log_real`, `categorical`; scalar or fixed-shape) in a
  `GenomeSpec`, which samples, encodes and decodes populations. A population is one batched pytree
  ``{gene_name: [P, *shape]}``.
- `operators`: selection (roulette, tournament), crossover (uniform, two_point, arithmetic), mutation
  (point, uniform_reset) and replacement (replace_worst, elitism), each reached by name.
- `algorithm`: `GeneticAlgorithm`, a stateless ask/tell strategy in the evosax style, with `GAParams`
  (dynamic settings, per-gene probabilities by gene name) and `GAState`.
- `driver`: `evolve`, the generation loop with a fitness function, a callback and resume;
  `state_to_tree` / `state_from_tree` for checkpoints; `history_table`; `compiled_steps` (the jitted
  methods, for a loop written by hand).

A search defines its genome, picks operators and runs the driver:

  spec = evolution.GenomeSpec([evolution.log_real("lr", 1e-6, 1e-1), evolution.real("dropout", 0.1, 0.9)])
  ga = evolution.GeneticAlgorithm(spec, population_size=20, selection="tournament", crossover="two_point",
                                  mutation="uniform_reset", replacement="elitism", max_generations=10)
  params = ga.default_params(gene_mutation_prob={"lr": 0.2, "dropout": 0.2})
  state = evolution.evolve(ga, params, jax.random.key(0), fitness_fn, callback=save)
  spec.decode(state.best_genome)
"""

from dlbook.evolution.algorithm import GAParams, GAState, GeneticAlgorithm
from dlbook.evolution.driver import (Steps, compiled_steps, evolve, generation_keys, history_table, state_from_tree,
                                     state_to_tree)
from dlbook.evolution.genome import (CATEGORICAL, GENE_KINDS, INTEGER, LOG_REAL, REAL, Gene, GenomeSpec, Population,
                                     categorical, integer, log_real, population_size, real, stack, take)
from dlbook.evolution.operators import CROSSOVERS, MUTATIONS, REPLACEMENTS, SELECTIONS

__all__ = [
    "GAParams", "GAState", "GeneticAlgorithm", "Steps", "compiled_steps", "evolve", "generation_keys",
    "history_table", "state_from_tree", "state_to_tree", "CATEGORICAL", "GENE_KINDS", "INTEGER", "LOG_REAL", "REAL",
    "Gene", "GenomeSpec", "Population", "categorical", "integer", "log_real", "population_size", "real", "stack",
    "take", "CROSSOVERS", "MUTATIONS", "REPLACEMENTS", "SELECTIONS"]
