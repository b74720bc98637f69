"""The Gen-Soup search (thesis seed 001 ch. 5) and its baselines at an equal epoch budget, resumable.

One unit per GA seed (`search`), in phases, each resumable:
1. Gen-Soup (thesis §5.2): a population of `ga.population_size` shrinking by `ga.shrink_by` per
   generation to `ga.min_population`; every individual trains one epoch per generation from its weights
   at the generation's image size (growing from `train.image_size_start` to `train.image_size_end`, then
   `train.epochs_at_max` generations at the largest); fitness = validation MCC min-max normalised within
   the generation; binary tournament, fitness-weighted crossover and uniform-reset mutation with the
   per-gene probabilities of thesis Table 5.1 by gene name; elitism of one. An offspring takes the
   better parent's architecture gene, and its weights by Eq. 5.1 (`dlbook.hpsearch.soup.inherit`): the
   fitness-weighted average of both parents' parameters and BatchNorm statistics when they share the
   architecture (optionally with re-estimated statistics), else the better parent's; the elite passes
   with its weights unchanged and trains on. Checkpoints: after every generation (GA state, every
   individual's MCC, the population's weights, the best individual's weights) and after every trained
   chunk inside a generation (the weights and MCC of the individuals trained so far).
2. The uniform soup: `uniform_soup.ingredients` copies of one configuration from ONE shared
   initialisation, each on its own data order, trained in the Gen-Soup regime (one epoch per call, the
   optimizer restarting, the same cosine decay over its run) at the largest image size for budget /
   ingredients epochs each, then averaged uniformly. Checkpointed after every epoch.
3. Gen-CNN and random search (`dlbook.hpsearch.search` in `gen_cnn/`) at the same number of epochs:
   `gen_cnn.population_size` x (generations + 1) low-fidelity trainings of `gen_cnn.epochs` epochs at
   the first image size, plus the high-fidelity retraining of the winner at the largest size for the
   remaining epochs.
4. The test split: Gen-Soup's best individual (highest validation MCC over all generations, thesis
   §5.3), the uniform soup and its best ingredient.

Budget: epochs counted as passes of one network over the training split; Gen-Soup spends
Σ_g population_at(g) of them (the re-trained elite included).
"""

import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from dlbook import data as data_lib
from dlbook import evolution
from dlbook import models
from dlbook.errors import require
from dlbook.hpsearch import gen_cnn, gen_soup, soup
from dlbook.metrics.classification import confusion_matrix, metrics_from_confusion
from dlbook.nas.fitness import individual_keys, make_fitness_data
from dlbook.training import astrocytes as astro_lib
from dlbook.files import read_json

EVALUATIONS = ("vmap", "loop")
INHERIT = ("init", "elite", "copy", "better_parent", "average")
PARTIAL = 100000  # partial checkpoint step = generation * PARTIAL + individuals trained


def make_ga(config):
  g = config.ga
  ga = evolution.GeneticAlgorithm(
      gen_soup.genome_spec(), population_size=int(g.population_size), selection="tournament",
      crossover="arithmetic", mutation="uniform_reset", replacement="elitism", num_elites=1,
      tournament_size=int(g.tournament_size), max_generations=int(g.generations), reevaluate_elites=True,
      shrink_by=int(g.shrink_by), min_population=int(g.min_population))
  params = ga.default_params(crossover_rate=1.0, gene_crossover_prob=dict(g.gene_crossover_prob),
                             gene_mutation_prob=dict(g.gene_mutation_prob))
  return ga, params


def validate_config(config) -> None:
  pool = tuple(config.pool)
  require(len(pool) >= 1, "pool must name at least one architecture")
  for name in pool:
    require(name in models.names(), f"pool: unknown architecture {name!r}; valid: {', '.join(models.names())}")
  g = config.ga
  for key in ("architecture",):
    require(float(g.gene_crossover_prob.get(key, 0)) == 0 and float(g.gene_mutation_prob.get(key, 0)) == 0,
            f"ga.gene_crossover_prob and ga.gene_mutation_prob of {key!r} must be 0: an offspring inherits the "
            f"weights, hence the architecture, of its better parent")
  require(int(g.tournament_size) in (2, 3), f"ga.tournament_size must be 2 (one opponent) or 3 (the author's "
          f"two opponents), got {g.tournament_size}")
  make_ga(config)  # population sizes, probabilities in [0, 1], gene names
  t = config.train
  for key in ("batch_size", "eval_batch_size", "group_size", "image_size_start", "image_size_end"):
    require(int(t[key]) > 0, f"train.{key} must be positive, got {t[key]}")
  require(int(t.epochs_at_max) >= 0, f"train.epochs_at_max must be >= 0, got {t.epochs_at_max}")
  require(int(t.bn_reestimate_batches) >= 0, f"train.bn_reestimate_batches must be >= 0, got "
          f"{t.bn_reestimate_batches}")
  a = config.astrocytes
  astro_lib.AstrocyteConfig(int(a.ng), float(a.sensitivity), 1.0, 1.0, str(a.mode))
  require(config.evaluation in EVALUATIONS, f"unknown evaluation {config.evaluation!r}; valid: "
          f"{', '.join(EVALUATIONS)}")
  require(float(config.data.get("val_fraction", 0.0)) > 0,
          "Gen-Soup needs a validation split for its fitness: set data.val_fraction > 0")
  require(len(tuple(config.seeds)) >= 1, "seeds must name at least one GA seed")
  u = config.uniform_soup
  if u.enabled:
    require(u.architecture in models.names(), f"uniform_soup.architecture: unknown architecture "
            f"{u.architecture!r}; valid: {', '.join(models.names())}")
    require(int(u.ingredients) >= 1, f"uniform_soup.ingredients must be >= 1, got {u.ingredients}")
    gen_soup.fixed_individual(u.architecture, u.optimizer, u.loss, u.learning_rate_scale, u.weight_decay)
    require(epoch_budget(config) // int(u.ingredients) >= 1, f"the budget of {epoch_budget(config)} epochs "
            f"gives none to each of {u.ingredients} uniform-soup ingredients")
  if config.gen_cnn.enabled:
    gen_cnn_config(config, 0)


def epoch_budget(config) -> int:
  """Epochs Gen-Soup trains: Σ over generations of the population alive."""
  ga, _ = make_ga(config)
  return sum(ga.population_at(g) for g in range(ga.max_generations + 1))


def sizes(config) -> list:
  t = config.train
  return gen_soup.image_sizes(int(t.image_size_start), int(t.image_size_end), int(config.ga.generations) + 1,
                              int(t.epochs_at_max))


def gen_cnn_config(config, seed: int):
  """The Gen-CNN / random-search config at Gen-Soup's epoch budget: population x (generations + 1) x
  epochs low-fidelity epochs at the first image size, the rest (>= final_min_epochs) for the winner."""
  import ml_collections
  b = config.gen_cnn
  budget, s = epoch_budget(config), sizes(config)
  per_generation = int(b.population_size) * int(b.epochs)
  require(per_generation > 0 and int(b.final_min_epochs) > 0, "gen_cnn.population_size, epochs and "
          "final_min_epochs must be positive")
  generations = (budget - int(b.final_min_epochs)) // per_generation - 1
  require(generations >= 0, f"the budget of {budget} epochs is too small for the Gen-CNN baseline: one "
          f"generation of {per_generation} epochs plus {b.final_min_epochs} final epochs; lower "
          f"gen_cnn.population_size or gen_cnn.epochs")
  c = ml_collections.ConfigDict()
  c.preset = config.preset
  c.seed = int(seed)
  c.data = config.data.copy_and_resolve_references()
  c.pool = tuple(config.pool)
  c.ga = ml_collections.ConfigDict(dict(population_size=int(b.population_size), generations=int(generations),
                                        tournament_size=int(config.ga.tournament_size),
                                        gene_crossover_prob=dict(gen_cnn.CROSSOVER_PROB),
                                        gene_mutation_prob=dict(gen_cnn.MUTATION_PROB)))
  t = config.train
  c.fitness = ml_collections.ConfigDict(dict(epochs=int(b.epochs), batch_size=int(t.batch_size),
                                             eval_batch_size=int(t.eval_batch_size), image_size=s[0],
                                             group_size=int(b.group_size)))
  c.final = ml_collections.ConfigDict(dict(epochs=budget - per_generation * (generations + 1),
                                           batch_size=int(t.batch_size), eval_batch_size=int(t.eval_batch_size),
                                           image_size=s[-1]))
  c.adam_weight_decay = bool(config.adam_weight_decay)
  c.evaluation = config.evaluation
  c.random_search = True
  return c


class _Data:
  """The dataset at each image size (the two most recent kept), with its fitness arrays."""

  def __init__(self, config, seed: int):
    self.config, self.seed, self.cache = config, seed, {}

  def __call__(self, size: int):
    if size not in self.cache:
      data = self.config.data.copy_and_resolve_references()
      with data.unlocked():
        data.image_size = int(size)
      ds = data_lib.load(data, seed=self.seed)
      t = self.config.train
      steps = max(1, len(ds.train) // int(t.batch_size))
      fit = make_fitness_data(ds.train.images, ds.train.labels, ds.val.images, ds.val.labels,
                              batch_size=int(t.batch_size), num_steps=steps, seed=self.seed,
                              eval_batch_size=int(t.eval_batch_size))
      fit.pop("batch_index")
      while len(self.cache) >= 2:
        self.cache.pop(next(iter(self.cache)))
      self.cache[size] = (ds, fit)
    return self.cache[size]


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> np.ndarray:
  """Batch indices of one shuffled epoch (drop-remainder), a pure function of (seed, epoch)."""
  per_epoch = max(1, n // batch_size)
  return data_lib.epoch_permutation(n, seed, epoch)[:per_epoch * batch_size].reshape(per_epoch, batch_size)


def better_parent(i1, i2, fitness) -> np.ndarray:
  """Row of each offspring's better parent (parent 1 on a tie), whose architecture gene it takes."""
  fitness = np.asarray(fitness, np.float64)
  return np.where(fitness[i2] > fitness[i1], i2, i1)


def _mcc(results, rows, fit, num_classes):
  preds = np.stack([results[i]["predictions"] for i in rows])
  losses = np.asarray([results[i]["train_loss"] for i in rows], np.float32)
  return gen_cnn.mcc_scores(preds, fit, num_classes, losses), losses


def _key(row: int) -> str:
  return f"{row:03d}"


def _test_metrics(arch, nc, variables, ds, eval_batch_size):
  preds = gen_soup.predict(arch, nc, variables, ds.test.images, eval_batch_size)
  return metrics_from_confusion(confusion_matrix(ds.test.labels, preds, nc))


def _val_mcc(arch, nc, variables, ds, eval_batch_size):
  from dlbook.metrics.classification import matthews_corrcoef
  preds = gen_soup.predict(arch, nc, variables, ds.val.images, eval_batch_size)
  return float(matthews_corrcoef(confusion_matrix(ds.val.labels, preds, nc)))


def _reestimate(config, arch, nc, variables, ds, seed):
  k = int(config.train.bn_reestimate_batches)
  if not k:
    return variables
  idx = epoch_batches(len(ds.train), int(config.train.batch_size), seed, 0)[:k]
  return soup.reestimate_batch_stats(models.build(arch, num_classes=nc), variables,
                                     [ds.train.images[i] for i in idx])


def generation_rows(ga, state, hist, pool, image_sizes) -> list:
  """One record per finished generation: every alive individual's raw and decoded genes, validation MCC,
  GA fitness, training loss, parents and how it got its weights; population statistics; the best so far."""
  h = jax.device_get(state.history)
  rows, best = [], None
  for g in range(int(state.generation) + 1):
    n = ga.population_at(g)
    genes = gen_soup.host_genes({k: v[g][:n] for k, v in h["population"].items()})
    people = []
    for i in range(n):
      mcc, fit = float(hist["mcc"][g, i]), float(h["fitness"][g][i])
      p = {"row": i, "genes": genes[i], "decoded": gen_soup.decode(genes[i], pool),
           "mcc": mcc if np.isfinite(mcc) else None, "fitness": fit if np.isfinite(fit) else None,
           "train_loss": float(hist["loss"][g, i]), "parents": [int(x) for x in hist["parents"][g, i]],
           "weights_from": INHERIT[int(hist["inherit"][g, i])]}
      if p["mcc"] is not None and (best is None or p["mcc"] > best["mcc"]):
        best = dict(p, generation=g)
      people.append(p)
    finite = [p["mcc"] for p in people if p["mcc"] is not None]
    archs = {}
    for p in people:
      archs[p["decoded"]["architecture"]] = archs.get(p["decoded"]["architecture"], 0) + 1
    rows.append({"generation": g, "image_size": image_sizes[g], "population": n,
                 "population_mean_mcc": float(np.mean(finite)) if finite else None,
                 "population_max_mcc": max(finite) if finite else None, "best_mcc_so_far": best and best["mcc"],
                 "architectures": archs, "best_so_far": best, "individuals": people})
  return rows


def search(config, workdir: str, on_chunk=None) -> dict:
  """One GA seed (`config.seed`) of Gen-Soup and its baselines into `workdir`; returns results.json's
  payload. `on_chunk(generation, rows)` runs after every chunk of individuals trained (progress; a test
  interrupts the search there)."""
  from dlbook.hpsearch import report, search as gen_cnn_search
  from dlbook.training import checkpoint, reporting

  t0 = time.time()
  validate_config(config)
  run_dir = checkpoint.Workdir(workdir, config.to_dict())
  if run_dir.finished:
    return run_dir.results()
  pool, seed, t = tuple(config.pool), int(config.seed), config.train
  ga, params = make_ga(config)
  P, G = ga.population_size, ga.max_generations
  image_size = sizes(config)
  data = _Data(config, seed)
  ds0, _ = data(image_size[0])
  nc, n_train = ds0.num_classes, len(ds0.train)
  per_epoch = max(1, n_train // int(t.batch_size))
  a = config.astrocytes
  trainer = gen_soup.PopulationTrainer(
      nc, int(t.eval_batch_size), cosine=bool(t.cosine), adam_weight_decay=bool(config.adam_weight_decay),
      astrocytes=astro_lib.AstrocyteConfig(int(a.ng), float(a.sensitivity), 1.0, 1.0, str(a.mode)),
      traced_optimizer=bool(t.traced_optimizer), group_size=int(t.group_size))
  train_fn = trainer if config.evaluation == "vmap" else trainer.loop
  ga_key, init_root, soup_key = jax.random.split(jax.random.key(seed), 3)
  init_key, gen_root = evolution.generation_keys(ga_key)
  tell_initial, ask, tell, parents_fn = evolution.compiled_steps(ga)
  budget = epoch_budget(config)
  run_dir.start()

  # -- phase 1: Gen-Soup
  ckpt = checkpoint.Checkpointer(run_dir.join("checkpoints"), max_to_keep=2)
  partial = checkpoint.Checkpointer(run_dir.join("partial"), max_to_keep=1)
  hist = {"mcc": np.full((G + 1, P), np.nan, np.float32), "loss": np.full((G + 1, P), np.nan, np.float32),
          "parents": np.full((G + 1, P, 2), -1, np.int32), "inherit": np.zeros((G + 1, P), np.int32)}
  state, weights, best = None, None, None
  if ckpt.latest_step() is not None:
    tree = ckpt.restore(None)
    state = evolution.state_from_tree(ga.init(init_key, params), tree["ga"])
    hist = {k: np.array(tree[k], hist[k].dtype) for k in hist}  # writable copies
    weights = {int(k): v for k, v in tree["weights"].items()}
    best = tree["best"]
    logging.info("Gen-Soup resumed after generation %d", int(state.generation))
  start = 0 if state is None else int(state.generation) + 1
  log = reporting.MetricsLog(run_dir.path, resume_step=max(0, start - 1))
  epochs_before = lambda g: sum(ga.population_at(k) for k in range(g))  # epochs of the generations before g
  progress = reporting.Progress(budget * per_epoch, epochs_before(start) * per_epoch, name="gen_soup")

  def train_generation(g, decoded, inherited, rows):
    """Trains `rows` one epoch from `inherited`, resuming a partial generation; (weights, mcc, loss)."""
    ds, fit = data(image_size[g])
    done = {}
    if partial.latest_step() is not None and partial.latest_step() // PARTIAL == g:
      tree = partial.restore(None)
      done = {int(k): {"variables": v, "mcc": float(tree["mcc"][int(k)]), "train_loss": float(tree["loss"][int(k)])}
              for k, v in tree["weights"].items()}
      logging.info("generation %d: resuming with %d of %d individuals trained", g, len(done), len(rows))
    batch = epoch_batches(n_train, int(t.batch_size), seed, g)
    keys = individual_keys(init_root, g, P)

    def save(chunk):
      mcc, loss = _mcc(chunk, list(chunk), fit, nc)
      for j, i in enumerate(chunk):
        done[i] = {"variables": chunk[i]["variables"], "mcc": float(mcc[j]), "train_loss": float(loss[j])}
      m = np.full(P, np.nan, np.float32)
      lo = np.full(P, np.nan, np.float32)
      for i, d in done.items():
        m[i], lo[i] = d["mcc"], d["train_loss"]
      partial.save(g * PARTIAL + len(done), {"weights": {_key(i): d["variables"] for i, d in done.items()},
                                             "mcc": m, "loss": lo})
      progress.log((epochs_before(g) + len(done)) * per_epoch, {"generation": g, "image_size": image_size[g],
                                                           "mean_mcc": np.nanmean(m)})
      if on_chunk is not None:
        on_chunk(g, sorted(chunk))

    train_fn(decoded, inherited, keys, {i: batch for i in rows}, (g * per_epoch, (G + 1) * per_epoch), fit,
             rows=rows, skip=set(done), on_chunk=save)
    return ({i: done[i]["variables"] for i in rows}, np.asarray([done[i]["mcc"] for i in rows], np.float32),
            np.asarray([done[i]["train_loss"] for i in rows], np.float32))

  def finish_generation(g, decoded, trained, mcc, loss, n):
    nonlocal best
    hist["mcc"][g, :n], hist["loss"][g, :n] = mcc, loss
    if not np.isfinite(mcc).all():
      logging.warning("generation %d: %d individual(s) diverged", g, int((~np.isfinite(mcc)).sum()))
    best_mcc = np.nanmax(np.where(np.isfinite(hist["mcc"][:g]), hist["mcc"][:g], -np.inf)) if g else -np.inf
    if np.isfinite(mcc).any() and np.nanmax(mcc) > best_mcc:
      best = trained[int(np.nanargmax(mcc))]
    fitness = np.full(P, -np.inf, np.float32)
    fitness[:n] = gen_cnn.min_max(mcc)
    return jnp.asarray(fitness)

  def checkpoint_generation(state, trained):
    g = int(state.generation)
    ckpt.save(g, {"ga": evolution.state_to_tree(state), **hist,
                  "weights": {_key(i): v for i, v in trained.items()}, "best": best})
    rows = generation_rows(ga, state, hist, pool, image_size)
    reporting.write_json_atomic(run_dir.join("generations.json"), rows, indent=1)
    r = rows[-1]
    log.write(g, {"population_mean_mcc": r["population_mean_mcc"] or np.nan,
                  "population_max_mcc": r["population_max_mcc"] or np.nan,
                  "best_mcc_so_far": r["best_mcc_so_far"] or np.nan, "image_size": image_size[g],
                  "population": r["population"]}, prefix="gen_soup/")

  if state is None:
    state = ga.init(init_key, params)
    decoded = [gen_soup.decode(x, pool) for x in gen_soup.host_genes(state.population)]
    keys = individual_keys(init_root, 0, P)
    inherited = {i: gen_soup.init_variables(decoded[i]["architecture"], nc, ds0.image_shape, keys[i])
                 for i in range(P)}
    trained, mcc, loss = train_generation(0, decoded, inherited, list(range(P)))
    state = tell_initial(finish_generation(0, decoded, trained, mcc, loss, P), state, params)
    require(np.isfinite(np.asarray(state.fitness)).any(), "generation 0: every individual diverged")
    weights = trained
    checkpoint_generation(state, weights)
  while not bool(ga.should_stop(state, params)):
    g = int(state.generation) + 1
    key = jax.random.fold_in(gen_root, g)
    offspring, _ = ask(key, state, params)
    i1, i2 = (np.asarray(x) for x in parents_fn(key, state, params))
    f = np.asarray(state.fitness, np.float64)
    offspring = dict(offspring, architecture=jnp.asarray(state.population["architecture"])[better_parent(i1, i2, f)])
    n = ga.offspring_at(g)
    parents_decoded = [gen_soup.decode(x, pool) for x in gen_soup.host_genes(state.population)]
    decoded = [gen_soup.decode(x, pool) for x in gen_soup.host_genes(offspring)]
    ds, _ = data(image_size[g])
    inherited = {}
    for r in range(n):
      a1, a2 = int(i1[r]), int(i2[r])
      w, how = soup.inherit(weights[a1], weights[a2], f[a1], f[a2],
                            parents_decoded[a1]["architecture"] == parents_decoded[a2]["architecture"], a1 == a2)
      if how == "average":
        w = _reestimate(config, decoded[r]["architecture"], nc, w, ds, seed + g)
      inherited[r] = w
      hist["parents"][g, r] = (a1, a2)
      hist["inherit"][g, r] = INHERIT.index("elite" if r < ga.num_elites else how)
    trained, mcc, loss = train_generation(g, decoded, inherited, list(range(n)))
    state = tell(offspring, finish_generation(g, decoded, trained, mcc, loss, n), state, params)
    require(np.isfinite(np.asarray(state.fitness)).any(), f"generation {g}: every individual diverged")
    weights = trained
    checkpoint_generation(state, weights)
  ckpt.close()
  partial.close()
  rows = generation_rows(ga, state, hist, pool, image_size)
  final_path = run_dir.join("final.json")
  final = read_json(final_path) or {}
  b = rows[-1]["best_so_far"]
  if "gen_soup" not in final:
    ds, _ = data(image_size[b["generation"]])
    final["gen_soup"] = {"validation_mcc": b["mcc"], "generation": b["generation"], "row": b["row"],
                         "image_size": image_size[b["generation"]], "decoded": b["decoded"], "genes": b["genes"],
                         "test": _test_metrics(b["decoded"]["architecture"], nc, best, ds, int(t.eval_batch_size))}
    reporting.write_json_atomic(final_path, final, indent=1)

  # -- phase 2: the uniform soup
  u = config.uniform_soup
  if u.enabled and "uniform_soup" not in final:
    final.update(_uniform_soup(config, run_dir, trainer if config.evaluation == "vmap" else trainer.loop,
                               data(image_size[-1])[0], data(image_size[-1])[1], soup_key, budget, per_epoch))
    reporting.write_json_atomic(final_path, final, indent=1)
  log.close()

  # -- phase 3: Gen-CNN and random search at the same budget
  gc = None
  if config.gen_cnn.enabled:
    gc = gen_cnn_search.search(gen_cnn_config(config, seed), run_dir.join("gen_cnn"))
    for arm in ("gen_cnn", "random_search"):
      if arm in gc.get("final", {}):
        final[arm] = dict(gc["final"][arm], epochs=budget)
    reporting.write_json_atomic(final_path, final, indent=1)

  title = f"Gen-Soup on {config.data.name}: P={P} shrinking to {ga.min_population or P}, {G + 1} generations, " \
          f"seed {seed}"
  report.plot_soup_generations(run_dir.join("fitness.png"), rows, title)
  report.plot_gene_histograms(run_dir.join("genes.png"), rows, genes=gen_soup.GENES)
  metrics = {"epoch_budget": budget, "generations": G, "image_sizes": image_size,
             "population_sizes": [ga.population_at(g) for g in range(G + 1)],
             "gen_soup_best_validation_mcc": rows[-1]["best_mcc_so_far"],
             "best_mcc_per_generation": [r["best_mcc_so_far"] for r in rows],
             "final_architectures": rows[-1]["architectures"]}
  for name, r in final.items():
    if "test" in r:
      metrics[f"{name}_test_mcc"] = r["test"]["mcc"]
      metrics[f"{name}_test_accuracy"] = r["test"]["accuracy"]
  return reporting.write_results(
      run_dir.path, config=config, seed=seed, dataset=ds0.info, metrics=metrics, wall_time_s=time.time() - t0,
      final=final, steps_per_epoch=per_epoch, resumed_after_generation=start - 1 if start else None,
      vmapped_traces=trainer.num_traces, generation_log="generations.json",
      gen_cnn_budget=None if gc is None else {"population": gc["config"]["ga"]["population_size"],
                                              "generations": gc["metrics"]["generations"],
                                              "low_fidelity_epochs": gc["config"]["fitness"]["epochs"],
                                              "final_epochs": gc["config"]["final"]["epochs"]})


def _uniform_soup(config, run_dir, train_fn, ds, fit, key, budget, per_epoch) -> dict:
  """K ingredients of one configuration from one shared initialisation, each with its own data order,
  budget // K epochs each in the Gen-Soup regime, then uniformly averaged; resumable after every epoch."""
  from dlbook.training import checkpoint
  u, t = config.uniform_soup, config.train
  K, epochs = int(u.ingredients), budget // int(u.ingredients)
  one = gen_soup.fixed_individual(u.architecture, u.optimizer, u.loss, u.learning_rate_scale, u.weight_decay)
  decoded, nc, seed = [one] * K, ds.num_classes, int(config.seed)
  ckpt = checkpoint.Checkpointer(run_dir.join("uniform_soup"), max_to_keep=1)
  if ckpt.latest_step() is not None:
    start, tree = ckpt.latest_step(), ckpt.restore(None)
    weights = {int(k): v for k, v in tree["weights"].items()}
  else:
    start = 0
    shared = gen_soup.init_variables(u.architecture, nc, ds.image_shape, jax.random.fold_in(key, 0))
    weights = {k: shared for k in range(K)}
  keys = jax.random.split(jax.random.fold_in(key, 1), K)
  results = None
  for e in range(start, epochs):
    batches = {k: epoch_batches(len(ds.train), int(t.batch_size), seed * 1000 + 7 + k, e) for k in range(K)}
    results = train_fn(decoded, weights, keys, batches, (e * per_epoch, epochs * per_epoch), fit)
    weights = {k: results[k]["variables"] for k in range(K)}
    ckpt.save(e + 1, {"weights": {_key(k): w for k, w in weights.items()}})
    logging.info("uniform soup: epoch %d/%d of %d ingredients", e + 1, epochs, K)
  ckpt.close()
  eb = int(t.eval_batch_size)
  val = [_val_mcc(u.architecture, nc, weights[k], ds, eb) for k in range(K)]
  mixed = _reestimate(config, u.architecture, nc, soup.uniform([weights[k] for k in range(K)]), ds, seed + 99)
  k_best = int(np.nanargmax(val))
  common = {"decoded": one, "ingredients": K, "epochs_per_ingredient": epochs, "epochs": K * epochs,
            "image_size": int(ds.image_shape[0])}
  return {"uniform_soup": dict(common, validation_mcc=_val_mcc(u.architecture, nc, mixed, ds, eb),
                               ingredient_validation_mcc=val,
                               test=_test_metrics(u.architecture, nc, mixed, ds, eb)),
          "best_ingredient": dict(common, validation_mcc=val[k_best], ingredient=k_best,
                                  test=_test_metrics(u.architecture, nc, weights[k_best], ds, eb))}




def run(config, workdir: str, docs_dir=None, command: str = "") -> dict:
  """Every GA seed of `config.seeds` (one unit `seed{s}/` each, resumable), then the table over seeds
  (`table.md`; with `docs_dir` also `gen_soup_{preset}_table.md` and seed 0's pictures under figures/)."""
  import shutil
  from dlbook.hpsearch import report
  from dlbook.training import checkpoint, reporting

  t0 = time.time()
  validate_config(config)
  top = checkpoint.Workdir(workdir, config.to_dict())
  if top.finished and not docs_dir:
    return top.results()
  top.start()
  payloads = []
  for s in config.seeds:
    unit = config.copy_and_resolve_references()
    with unit.unlocked():
      unit.seed = int(s)
    payloads.append(search(unit, top.join(f"seed{int(s)}")))
  command = command or f"python -m experiments.gen_soup --config=configs/gen_soup.py:{config.preset}"
  text = f"# Gen-Soup against its baselines ({config.preset} preset)\n\n" + report.soup_comparison_markdown(
      payloads, command)
  reporting.write_text_atomic(top.join("table.md"), text)
  if docs_dir:
    os.makedirs(os.path.join(docs_dir, "figures"), exist_ok=True)
    shutil.copyfile(top.join("table.md"), os.path.join(docs_dir, f"gen_soup_{config.preset}_table.md"))
    first = top.join(f"seed{int(config.seeds[0])}")
    for name in ("fitness", "genes"):
      shutil.copyfile(os.path.join(first, f"{name}.png"),
                      os.path.join(docs_dir, "figures", f"gen_soup_{config.preset}_{name}_seed{int(config.seeds[0])}.png"))
  metrics = {}
  for arm, _ in report.SOUP_ARMS:
    vals = [p["final"][arm]["test"]["mcc"] for p in payloads if arm in p.get("final", {})]
    if vals:
      metrics[f"{arm}_test_mcc_mean"] = float(np.mean(vals))
      metrics[f"{arm}_test_mcc_per_seed"] = vals
  return reporting.write_results(top.path, config=config, seed=list(config.seeds), dataset=payloads[0]["dataset"],
                                 metrics=metrics, wall_time_s=time.time() - t0, table="table.md",
                                 units=[f"seed{int(s)}" for s in config.seeds])
