"""The Gen-CNN search (thesis seed 001 ch. 3) and its random-search baseline, resumable.

Phases, each resumable: (1) the GA, checkpointed after every generation (the GA state of
`dlbook.evolution` and the raw validation MCC of every individual so far); (2) random search with the same
number of low-fidelity trainings, recorded after every batch of `population_size`; (3) the best
individual of each (highest raw validation MCC over ALL generations / draws) retrained at high
fidelity (more epochs, cosine decay to 0.1·lr) and scored on the test split with the thesis metrics.

The GA (thesis §3.2): fitness = validation MCC min-max normalised within the generation; binary
tournament (`tournament_size` 2: one opponent; the author's code draws two opponents, size 3);
fitness-weighted arithmetic crossover and uniform-reset mutation with per-gene probabilities by gene
name; elitism of one, the elite re-trained with every generation.
"""

import os
import time

import jax
import numpy as np
from absl import logging

from dlbook import data as data_lib
from dlbook import evolution
from dlbook.errors import require
from dlbook.hpsearch import gen_cnn
from dlbook.metrics.classification import confusion_matrix, metrics_from_confusion
from dlbook.nas.fitness import individual_keys, make_fitness_data
from dlbook.files import read_json as reporting_read

EVALUATIONS = ("vmap", "loop")


def validate_config(config) -> None:
  from dlbook import models
  pool = tuple(config.pool)
  require(len(pool) >= 1, "pool must name at least one architecture")
  for name in pool:
    require(name in models.names(), f"pool: unknown architecture {name!r}; valid: {', '.join(models.names())}")
  g = config.ga
  require(int(g.population_size) >= 2, f"ga.population_size must be >= 2, got {g.population_size}")
  require(int(g.generations) >= 0, f"ga.generations must be >= 0, got {g.generations}")
  require(int(g.tournament_size) in (2, 3), f"ga.tournament_size must be 2 (one opponent) or 3 (the author's "
          f"two opponents), got {g.tournament_size}")
  for part in ("fitness", "final"):
    c = config[part]
    for key in ("epochs", "batch_size", "eval_batch_size") + (("group_size",) if part == "fitness" else ()):
      require(int(c[key]) > 0, f"{part}.{key} must be positive, got {c[key]}")
    require(int(c.image_size) >= 0, f"{part}.image_size must be >= 0 (0: the dataset's size), got {c.image_size}")
  require(config.evaluation in EVALUATIONS, f"unknown evaluation {config.evaluation!r}; valid: "
          f"{', '.join(EVALUATIONS)}")
  require(float(config.data.get("val_fraction", 0.0)) > 0,
          "Gen-CNN needs a validation split for its fitness: set data.val_fraction > 0")


def make_ga(config):
  g = config.ga
  ga = evolution.GeneticAlgorithm(
      gen_cnn.genome_spec(), population_size=int(g.population_size), selection="tournament",
      crossover="arithmetic", mutation="uniform_reset", replacement="elitism", num_elites=1,
      tournament_size=int(g.tournament_size), max_generations=int(g.generations), reevaluate_elites=True)
  params = ga.default_params(crossover_rate=1.0, gene_crossover_prob=dict(g.gene_crossover_prob),
                             gene_mutation_prob=dict(g.gene_mutation_prob))
  return ga, params


def _load(config, image_size):
  data = config.data.copy_and_resolve_references()
  with data.unlocked():
    data.image_size = int(image_size)
  return data_lib.load(data, seed=config.seed)


def _steps(n_train, c) -> int:
  return int(c.epochs) * max(1, n_train // int(c.batch_size))


def _individuals(population, mcc, fitness, pool):
  host = {k: np.asarray(jax.device_get(v), np.float64) for k, v in population.items()}
  decoded = gen_cnn.decode_population(population, pool)
  return [{"genes": {k: float(host[k][i]) for k in gen_cnn.GENES}, "decoded": decoded[i],
           "mcc": None if not np.isfinite(mcc[i]) else float(mcc[i]),
           "fitness": None if not np.isfinite(fitness[i]) else float(fitness[i])} for i in range(len(decoded))]


def generation_rows(state, mcc_history, pool) -> list:
  """One record per finished generation: every individual's raw and decoded genes, raw validation MCC and
  GA fitness; the population's MCC statistics and the best individual so far (by raw MCC)."""
  h = jax.device_get(state.history)
  rows, best = [], None
  for g in range(int(state.generation) + 1):
    pop = jax.tree.map(lambda x: x[g], h["population"])
    people = _individuals(pop, mcc_history[g], np.asarray(h["fitness"][g]), pool)
    for p in people:
      if p["mcc"] is not None and (best is None or p["mcc"] > best["mcc"]):
        best = dict(p, generation=g)
    finite = [p["mcc"] for p in people if p["mcc"] is not None]
    rows.append({"generation": g, "population_mean_mcc": float(np.mean(finite)) if finite else None,
                 "population_max_mcc": max(finite) if finite else None, "best_mcc_so_far": best and best["mcc"],
                 "best_so_far": best, "individuals": people})
  return rows


def search(config, workdir: str) -> dict:
  """Runs Gen-CNN and random search into `workdir`; returns the results.json payload."""
  from dlbook.hpsearch import report
  from dlbook.training import checkpoint, reporting

  t0 = time.time()
  validate_config(config)
  run_dir = checkpoint.Workdir(workdir, config.to_dict())
  if run_dir.finished:
    return run_dir.results()
  pool = tuple(config.pool)
  low = _load(config, config.fitness.image_size)
  high = low if int(config.final.image_size) == int(config.fitness.image_size) else _load(
      config, config.final.image_size)
  nc = low.num_classes
  f, fin = config.fitness, config.final
  low_steps, high_steps = _steps(len(low.train), f), _steps(len(high.train), fin)
  fit_data = make_fitness_data(low.train.images, low.train.labels, low.val.images, low.val.labels,
                               batch_size=int(f.batch_size), num_steps=low_steps, seed=config.seed,
                               eval_batch_size=int(f.eval_batch_size))
  final_data = make_fitness_data(high.train.images, high.train.labels, high.test.images, high.test.labels,
                                 batch_size=int(fin.batch_size), num_steps=high_steps, seed=config.seed + 1,
                                 eval_batch_size=int(fin.eval_batch_size))
  adam_wd = bool(config.adam_weight_decay)
  evaluator = gen_cnn.GroupEvaluator(nc, low.image_shape, low_steps, int(f.eval_batch_size),
                                     adam_weight_decay=adam_wd, group_size=int(f.group_size))
  ga, params = make_ga(config)
  P, G = ga.population_size, ga.max_generations
  ga_key, eval_root, rs_key, rs_eval_root, final_root = jax.random.split(jax.random.key(config.seed), 5)
  run_dir.start()

  def low_fidelity(decoded, keys):
    fn = evaluator if config.evaluation == "vmap" else evaluator.loop
    preds, losses = fn(decoded, keys, fit_data)
    return gen_cnn.mcc_scores(preds, fit_data, nc, losses)

  # -- phase 1: the GA
  ckpt = checkpoint.Checkpointer(run_dir.join("checkpoints"), max_to_keep=2)
  mcc_history = np.full((G + 1, P), np.nan, np.float32)  # float32: as restored
  state = None
  if ckpt.latest_step() is not None:
    template = ga.init(ga_key, params)
    tree = ckpt.restore({"ga": evolution.state_to_tree(template), "mcc": mcc_history})
    state = evolution.state_from_tree(template, tree["ga"])
    mcc_history = np.asarray(tree["mcc"], np.float32)
    logging.info("Gen-CNN resumed after generation %d", int(state.generation))
  start = 0 if state is None else int(state.generation) + 1
  log = reporting.MetricsLog(run_dir.path, resume_step=max(0, start - 1))
  progress = reporting.Progress(G + 1, start, name="generation")

  def evaluate(population, generation):
    decoded = gen_cnn.decode_population(population, pool)
    raw = low_fidelity(decoded, individual_keys(eval_root, generation, len(decoded)))
    if not np.isfinite(raw).all():
      logging.warning("generation %d: %d individual(s) diverged", generation, int((~np.isfinite(raw)).sum()))
    mcc_history[generation] = raw
    return gen_cnn.min_max(mcc_history[generation])

  def on_generation(state):
    g = int(state.generation)
    ckpt.save(g, {"ga": evolution.state_to_tree(state), "mcc": mcc_history})
    rows = generation_rows(state, mcc_history, pool)
    reporting.write_json_atomic(run_dir.join("generations.json"), rows, indent=1)
    r = rows[-1]
    log.write(g, {"population_mean_mcc": r["population_mean_mcc"] or np.nan,
                  "population_max_mcc": r["population_max_mcc"] or np.nan,
                  "best_mcc_so_far": r["best_mcc_so_far"] or np.nan}, prefix="gen_cnn/")
    progress.log(g + 1, {"best_mcc": r["best_mcc_so_far"] or np.nan, "mean_mcc": r["population_mean_mcc"] or np.nan})

  if state is None or not bool(ga.should_stop(state, params)):
    state = evolution.evolve(ga, params, ga_key, evaluate, state=state, callback=on_generation)
  ckpt.close()
  rows = generation_rows(state, mcc_history, pool)
  budget = P * (int(state.generation) + 1)  # low-fidelity trainings of the GA (elites re-trained included)

  # -- phase 2: random search, same budget, in batches of P
  rs_path = run_dir.join("random_search.json")
  rs = reporting_read(rs_path) or {"genes": [], "mcc": []}
  spec = gen_cnn.genome_spec()
  if config.random_search:
    while len(rs["mcc"]) < budget:
      b = len(rs["mcc"]) // P
      pop = spec.sample(jax.random.fold_in(rs_key, b), P)
      decoded = gen_cnn.decode_population(pop, pool)
      raw = low_fidelity(decoded, individual_keys(rs_eval_root, b, P))
      people = _individuals(pop, raw, raw, pool)
      rs["genes"] += [p["genes"] for p in people]
      rs["mcc"] += [p["mcc"] for p in people]
      reporting.write_json_atomic(rs_path, rs, indent=1)
      log.write(G + 1 + b, {"best_mcc_so_far": max([m for m in rs["mcc"] if m is not None] or [np.nan])},
                prefix="random_search/")
      logging.info("random search: %d/%d trainings", len(rs["mcc"]), budget)
  log.close()

  # -- phase 3: the best of each retrained at high fidelity, scored on the test split
  final_eval = gen_cnn.GroupEvaluator(nc, high.image_shape, high_steps, int(fin.eval_batch_size), cosine=True,
                                      adam_weight_decay=adam_wd, group_size=1)
  arms = {"gen_cnn": rows[-1]["best_so_far"]}
  if config.random_search:
    finite = [i for i, m in enumerate(rs["mcc"]) if m is not None]
    if finite:
      i = max(finite, key=lambda j: rs["mcc"][j])
      arms["random_search"] = {"genes": rs["genes"][i], "mcc": rs["mcc"][i], "draw": i,
                               "decoded": gen_cnn.decode(rs["genes"][i], pool)}
  final_path = run_dir.join("final.json")
  final = reporting_read(final_path) or {}
  valid = np.asarray(final_data["eval_mask"]) > 0
  for k, (name, best) in enumerate(arms.items()):
    if name in final or best is None:
      continue
    preds, losses = final_eval([best["decoded"]], jax.random.split(jax.random.fold_in(final_root, k), 1), final_data)
    cm = confusion_matrix(np.asarray(final_data["eval_labels"])[valid], preds[0][valid], nc)
    final[name] = {"validation_mcc_low_fidelity": best["mcc"], "decoded": best["decoded"], "genes": best["genes"],
                   "final_train_loss": float(losses[0]), "test": metrics_from_confusion(cm)}
    reporting.write_json_atomic(final_path, final, indent=1)

  title = f"Gen-CNN on {config.data.name}: P={P}, {int(state.generation)} generations, seed {config.seed}"
  report.plot_generations(run_dir.join("fitness.png"), rows, rs["mcc"] if config.random_search else None, P, title)
  report.plot_gene_histograms(run_dir.join("genes.png"), rows, rs["genes"] if config.random_search else None)
  metrics = {"budget_low_fidelity_trainings": budget, "generations": int(state.generation),
             "gen_cnn_best_validation_mcc": rows[-1]["best_mcc_so_far"],
             "initial_population_mean_mcc": rows[0]["population_mean_mcc"],
             "final_population_mean_mcc": rows[-1]["population_mean_mcc"],
             "best_mcc_per_generation": [r["best_mcc_so_far"] for r in rows]}
  for name, r in final.items():
    metrics[f"{name}_test_mcc"] = r["test"]["mcc"]
    metrics[f"{name}_test_accuracy"] = r["test"]["accuracy"]
    if name == "random_search":
      metrics["random_search_best_validation_mcc"] = r["validation_mcc_low_fidelity"]
  return reporting.write_results(
      run_dir.path, config=config, seed=config.seed, dataset=low.info, metrics=metrics,
      wall_time_s=time.time() - t0, final=final, low_fidelity_steps=low_steps, high_fidelity_steps=high_steps,
      resumed_after_generation=start - 1 if start else None, vmapped_traces=evaluator.num_traces,
      generation_log="generations.json")


