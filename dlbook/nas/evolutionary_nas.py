"""Evolutionary NAS, the search run (book ch. 2, Figs. 2.1/2.2): a search space by name, the GA of
`dlbook.evolution` configured from `config.ga`, the population fitness of `dlbook.nas.fitness`, and a
resumable generation loop that writes its outputs (`dlbook.nas.report`).

Process-wide settings (the CPU device split of `config.cpu_devices`, the compilation cache) are the
launcher's business (`dlbook.runtime`), made before JAX starts; this module changes none.
"""

import os
import time
from typing import Callable, Tuple

import jax
import numpy as np
from absl import logging

from dlbook import data as data_lib
from dlbook import evolution
from dlbook.errors import DlbookError, require
from dlbook.nas import report
from dlbook.nas.fitness import (PopulationEvaluator, individual_keys, make_fitness_data, resolve_microbatch,
                                with_eval_split)
from dlbook.registry import Registry


def make_space(config):
  """The search space named by `config.name` with its options (registry `SPACES`)."""
  options = {k: tuple(v) if isinstance(v, list) else v for k, v in config.to_dict().items() if k != "name"}
  constructor = SPACES.get(config.name)
  try:
    return constructor(**options)
  except TypeError as e:  # a wrong option name is the user's error
    raise DlbookError(f"search space {config.name!r}: {e}") from None


def _chain_space(**kw):
  from dlbook.nas.chain_space import ChainSpace
  return ChainSpace(**kw)


def _cell_space(**kw):
  from dlbook.nas.cell_space import CellSpace
  return CellSpace(**kw)


SPACES: Registry[Callable] = Registry("search space")
SPACES.register("chain")(_chain_space)
SPACES.register("cell")(_cell_space)
EVALUATIONS = ("vmap", "sequential")


def make_ga(spec, c) -> Tuple[evolution.GeneticAlgorithm, evolution.GAParams]:
  """The GA and its parameters from `config.ga`."""
  ga = evolution.GeneticAlgorithm(
      spec, population_size=int(c.population_size), num_offspring=int(c.num_offspring),
      selection=c.selection, crossover=c.crossover, mutation=c.mutation, replacement=c.replacement,
      num_elites=int(c.num_elites), tournament_size=int(c.tournament_size), max_generations=int(c.max_generations),
      reevaluate_elites=bool(c.get("reevaluate_elites", False)), shrink_by=int(c.get("shrink_by", 0)),
      min_population=int(c.get("min_population", 0)))
  target = float(c.target_fitness)
  params = ga.default_params(crossover_rate=c.crossover_rate, gene_crossover_prob=c.gene_crossover_prob,
                             mutation_prob=c.mutation_prob, gene_mutation_prob=c.gene_mutation_prob,
                             target_fitness=None if np.isinf(target) else target, patience=int(c.patience),
                             min_delta=float(c.min_delta))
  return ga, params


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
                                  microbatch=resolve_microbatch(f.get("vmap_microbatch", 0)))
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
    if result.diverged.any():
      logging.warning("generation %d: %d individual(s) diverged (non-finite training loss)", generation,
                      int(result.diverged.sum()))
    return result.ga_fitness()

  def on_generation(state):
    g = int(state.generation)
    ckpt.save(g, evolution.state_to_tree(state))
    rows = report.generation_table(ga, state, space)
    reporting.write_json_atomic(os.path.join(workdir, "generations.json"), rows)
    r = rows[-1]
    log.write(g, {"best_fitness": r["best_fitness"], "population_mean": r["population_mean"],
                  "population_max": r["population_max"]}, prefix="evolve/")
    progress.log(g + 1, {"best": r["best_fitness"], "mean": r["population_mean"]})
    report.plot_generations(os.path.join(workdir, "fitness.png"), rows, title)

  state = evolution.evolve(ga, params, ga_key, evaluate, state=state, callback=on_generation)
  log.close()
  ckpt.close()
  rows = report.generation_table(ga, state, space)
  best = space.decode(state.best_genome)
  baseline = space.baseline_architecture()
  reporting.write_json_atomic(os.path.join(workdir, "best_architecture.json"), best)
  report.plot_architecture(os.path.join(workdir, "best_architecture.png"), space, best,
                    f"best {space.name} architecture, validation fitness {float(state.best_fitness):.4f}")
  report.plot_generations(os.path.join(workdir, "fitness.png"), rows, title)

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
    ddof = 1 if k > 1 else 0  # the sample standard deviation over seeds, as every dlbook table
    test = evaluate_fn(genomes, jax.random.split(final_root, 2 * k), test_data).fitness
    metrics.update({"best_test_accuracy_mean": float(test[:k].mean()),
                    "best_test_accuracy_std": float(test[:k].std(ddof=ddof)),
                    "baseline_test_accuracy_mean": float(test[k:].mean()),
                    "baseline_test_accuracy_std": float(test[k:].std(ddof=ddof)),
                    "best_test_accuracy_per_seed": test[:k].tolist(),
                    "baseline_test_accuracy_per_seed": test[k:].tolist(), "final_seeds": k,
                    "test_images": len(dataset.test)})
  if f.evaluation == "vmap":
    metrics["fitness_function_traces"] = evaluator.num_traces
    metrics["fitness_function_compilations"] = evaluator.num_compilations
  metrics["compile_seconds"] = evaluator.compile_seconds
  extra = {}
  if space.name == "chain":
    from dlbook.nas.chain_space import parameter_count
    extra["best_num_params"] = parameter_count(space, state.best_genome, dataset.image_shape, dataset.num_classes)
    extra["retrain_command"] = report.retrain_command(best, config.data.name)
  return reporting.write_results(
      workdir, config=config, seed=config.seed, dataset=dataset.info, metrics=metrics,
      wall_time_s=time.time() - t0, best_architecture=best, baseline_architecture=baseline,
      resumed_after_generation=start - 1 if start else None, devices_used=evaluator.num_devices,
      generation_log="generations.json", **extra)
