"""The GA transfer-learning search (seed 004) and its random-search baseline, over several seeds, resumable.

One experiment directory holds:
- ``pretrain/`` (weights 'pretrain'): the backbone trained from scratch on `config.pretrain.data` as a
  resumable runner unit (`dlbook.training.transfer.pretrain`), the stand-in for ImageNet weights, shared
  by every seed;
- ``seed_<s>/ga/``: the GA, one runner unit per generation (``gen_<g>/``: the population's training,
  checkpointed every `train.checkpoint_every` steps, TensorBoard and history.jsonl, then its
  ``evaluation.json``), the GA state checkpointed after every generation, ``generations.json``,
  ``fitness.png``, ``genes.png``, ``results.json``;
- ``seed_<s>/random_search/``: the same number of trainings of the same length, genomes drawn uniformly
  (log-uniformly for the learning rate) and repaired alike, in batches of the population size
  (``batch_<b>/`` units), ``draws.json``, ``results.json``;
- ``results.json`` and ``table.md`` over the seeds (a copy of the table under `--docs_dir`).

A search killed at any moment resumes: a finished generation is read back from its evaluation.json, an
unfinished one from its training checkpoint, and the GA asks the next generation with the key of that
generation (`dlbook.evolution.evolve`), so the history equals an uninterrupted run's.
Fitness = -(mean validation cross-entropy) (**Choice**: validation; the seed says "negative loss"); the test
split is evaluated for every individual too, but never used for selection.
"""

import dataclasses
import os
import shutil
import time
from typing import Any, List, Optional

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from dlbook import data as data_lib
from dlbook import evolution
from dlbook.data.pipeline import train_batch
from dlbook.errors import require
from dlbook.hpsearch import ga_transfer as gt
from dlbook.training import checkpoint, reporting, runner
from dlbook.files import read_json

PRETRAIN = "pretrain"


def validate_config(config) -> None:
  """Every bad value -> one `DlbookError` line naming the key, before anything is written."""
  require(config.model in ("densenet121_se", "densenet_se"), f"model must be densenet121_se or densenet_se, got "
          f"{config.model!r}")
  g = config.genes
  for name in ("included", "frozen", "learning_rate", "dropout"):
    require(len(tuple(g[name])) == 2, f"genes.{name} must be a (low, high) pair, got {g[name]}")
  inc, frz = tuple(g.included), tuple(g.frozen)
  require(int(inc[0]) == 1 and int(inc[1]) >= 1, f"genes.included must be (1, number of dense layers), got {inc}")
  require(int(frz[0]) == 0 and 0 <= int(frz[1]) <= int(inc[1]), f"genes.frozen must be (0, n) with n <= "
          f"{int(inc[1])} (genes.included's upper bound), got {frz}")
  gt.genome_spec(int(inc[1]), int(frz[1]), tuple(g.learning_rate), tuple(g.dropout))
  a = config.ga
  require(int(a.population_size) >= 2, f"ga.population_size must be >= 2, got {a.population_size}")
  require(int(a.generations) >= 0, f"ga.generations must be >= 0, got {a.generations}")
  require(int(a.tournament_size) >= 1, f"ga.tournament_size must be >= 1, got {a.tournament_size}")
  require(0 <= float(a.gene_mutation_prob) <= 1, f"ga.gene_mutation_prob must be in [0, 1], got {a.gene_mutation_prob}")
  t = config.train
  for key in ("steps", "batch_size", "eval_batch_size", "checkpoint_every", "log_every"):
    require(int(t[key]) > 0, f"train.{key} must be positive, got {t[key]}")
  require(len(tuple(config.seeds)) >= 1 and all(int(s) >= 0 for s in config.seeds),
          f"seeds must be one or more non-negative integers, got {tuple(config.seeds)}")
  require(int(config.data.image_size) >= 8, f"data.image_size must be >= 8 (DenseNet's stem), got "
          f"{config.data.image_size}")
  require(int(config.data.channels) == 3, f"data.channels must be 3 (the backbone's input), got {config.data.channels}")
  require(config.data.normalization == "unit", "data.normalization must be 'unit': the network normalises "
          "its [0, 1] inputs as its weight file requires")
  require(float(config.data.val_fraction) > 0, "the fitness needs a validation split: set data.val_fraction > 0")
  if config.weights == PRETRAIN:
    p = config.pretrain
    for key in ("steps", "batch_size"):
      require(int(p[key]) > 0, f"pretrain.{key} must be positive, got {p[key]}")
  elif config.weights:
    from dlbook.training import transfer
    transfer.resolve_weights(config.model, config.weights)


@dataclasses.dataclass
class Context:
  config: Any
  data: Any                # the target dataset
  start: gt.Start
  spec: evolution.GenomeSpec
  step: Any                # the population's jitted step
  eval: Any                # the population's jitted inference
  progress: reporting.Progress
  trainings_done: int = 0


def _genes(population) -> dict:
  return {"included": jnp.asarray(population["included"], jnp.int32),
          "frozen": jnp.asarray(population["frozen"], jnp.int32),
          "learning_rate": jnp.asarray(population["learning_rate"], jnp.float32),
          "dropout": jnp.asarray(population["dropout"], jnp.float32)}




def train_unit(ctx: Context, unit_dir: str, population, keys, data_seed: int, name: str) -> dict:
  """Trains one population (genes {name: [P]}, keys [P]) as one runner unit in `unit_dir` and evaluates it
  on the validation and test splits; a unit that finished earlier is read back from its evaluation.json."""
  path = os.path.join(unit_dir, "evaluation.json")
  done = read_json(path)
  if done is not None:
    return done
  t0 = time.time()
  c = ctx.config.train
  genes = _genes(population)
  state = gt.init_population(ctx.start, keys)

  def step_fn(state, step):
    batch = train_batch(ctx.data.train, int(c.batch_size), data_seed, step)
    return ctx.step(state, genes, batch["image"], batch["label"], keys, jnp.int32(step))

  result = runner.train(state, step_fn, int(c.steps), unit_dir, log_every=int(c.log_every),
                        checkpoint_every=int(c.checkpoint_every), name=name, max_checkpoints=2, started=t0,
                        progress_keys=("loss", "accuracy", "alive"))
  val = gt.evaluate_population(ctx.eval, result.state, genes, ctx.data.val, int(c.eval_batch_size))
  test = gt.evaluate_population(ctx.eval, result.state, genes, ctx.data.test, int(c.eval_batch_size))
  for i in range(len(keys)):
    result.log.write(int(c.steps), {f"individual_{i}/val_loss": float(np.nan_to_num(val["loss"][i], nan=-1.0)),
                                    f"individual_{i}/val_accuracy": float(np.nan_to_num(val["accuracy"][i]))},
                     prefix="eval/")
  result.log.close()
  clean = lambda a: [None if not np.isfinite(x) else float(x) for x in a]  # noqa: E731
  record = {"val_loss": clean(val["loss"]), "val_accuracy": clean(val["accuracy"]), "test_loss": clean(test["loss"]),
            "test_accuracy": clean(test["accuracy"]), "alive": [bool(a) for a in jax.device_get(result.state.alive)],
            "steps": int(c.steps), "train_steps_per_s": result.steps_per_s,
            "wall_time_s": result.wall_time_s(t0), "resumed_from_step": result.start_step}
  reporting.write_json_atomic(path, record, indent=1)
  if not ctx.config.keep_unit_checkpoints:  # 3 x params per individual: kept only while the unit runs
    shutil.rmtree(os.path.join(unit_dir, "checkpoints"), ignore_errors=True)
  ctx.trainings_done += len(keys)
  ctx.progress.log(ctx.trainings_done, {"best_val_loss_this_unit": float(np.nanmin(val["loss"]))
                                        if np.isfinite(val["loss"]).any() else np.nan})
  return record


def individuals(population, record: dict, blocks) -> List[dict]:
  """Raw genes (as the GA holds them), decoded genes and the measured values of every individual."""
  out = []
  for i, raw in enumerate(gt.population_rows(population)):
    loss = record["val_loss"][i]
    out.append({"genes": raw, "decoded": gt.decode(raw, blocks), "fitness": None if loss is None else -loss,
                "val_loss": loss, "val_accuracy": record["val_accuracy"][i], "test_loss": record["test_loss"][i],
                "test_accuracy": record["test_accuracy"][i], "diverged": not record["alive"][i]})
  return out


def generation_rows(state, records: dict, blocks) -> list:
  """One record per finished generation: every individual (raw and decoded genes, fitness, validation and
  test scores), the population's fitness statistics and the best individual so far (by fitness)."""
  h = jax.device_get(state.history)
  rows, best = [], None
  for g in range(int(state.generation) + 1):
    people = individuals(jax.tree.map(lambda x: x[g], h["population"]), records[g], blocks)
    for i, p in enumerate(people):
      if p["fitness"] is not None and (best is None or p["fitness"] > best["fitness"]):
        best = dict(p, generation=g, index=i)
    fit = [p["fitness"] for p in people if p["fitness"] is not None]
    rows.append({"generation": g, "population_mean_fitness": float(np.mean(fit)) if fit else None,
                 "population_max_fitness": max(fit) if fit else None,
                 "best_fitness_so_far": None if best is None else best["fitness"], "best_so_far": best,
                 "individuals": people})
  return rows


def run_ga(ctx: Context, directory: str, seed: int) -> dict:
  """The GA of one seed in `directory` (resumable); returns its results payload."""
  t0 = time.time()
  done = read_json(os.path.join(directory, "results.json"))
  if done is not None:
    return done
  a = ctx.config.ga
  ga, params = gt.make_ga(ctx.spec, int(a.population_size), int(a.generations), int(a.tournament_size),
                          float(a.gene_mutation_prob))
  ga_key, unit_root = jax.random.split(jax.random.key(seed))
  key_root = jax.random.key(seed * 7919 + 1)  # threefry: the same bits under vmap as alone
  os.makedirs(directory, exist_ok=True)
  ckpt = checkpoint.Checkpointer(os.path.join(directory, "checkpoints"), max_to_keep=2)
  state = None
  if ckpt.latest_step() is not None:
    template = ga.init(ga_key, params)
    state = evolution.state_from_tree(template, ckpt.restore({"ga": evolution.state_to_tree(template)})["ga"])
    logging.info("GA seed %d resumed after generation %d", seed, int(state.generation))
  start = 0 if state is None else int(state.generation) + 1
  log = reporting.MetricsLog(directory, resume_step=max(0, start - 1))
  records = {}
  del unit_root

  def evaluate(population, generation):
    keys = jax.random.split(jax.random.fold_in(key_root, generation), ga.offspring_per_generation)
    rec = train_unit(ctx, os.path.join(directory, f"gen_{generation:03d}"), population, keys,
                     data_seed=seed * 1000 + generation, name=f"ga seed {seed} generation {generation}")
    records[generation] = rec
    return np.asarray([np.nan if v is None else -v for v in rec["val_loss"]], np.float32)

  def on_generation(state):
    g = int(state.generation)
    ckpt.save(g, {"ga": evolution.state_to_tree(state)})
    for k in range(g + 1):  # generations finished before a resume are read back
      records.setdefault(k, read_json(os.path.join(directory, f"gen_{k:03d}", "evaluation.json")))
    rows = generation_rows(state, records, ctx.start.blocks)
    reporting.write_json_atomic(os.path.join(directory, "generations.json"), rows, indent=1)
    r = rows[-1]
    nan = lambda v: np.nan if v is None else v  # noqa: E731
    log.write(g, {"population_mean_fitness": nan(r["population_mean_fitness"]),
                  "population_max_fitness": nan(r["population_max_fitness"]),
                  "best_fitness_so_far": nan(r["best_fitness_so_far"])}, prefix="ga/")

  if state is None or not bool(ga.should_stop(state, params)):
    state = evolution.evolve(ga, params, ga_key, evaluate, state=state, callback=on_generation)
  ckpt.close()
  log.close()
  for k in range(int(state.generation) + 1):
    records.setdefault(k, read_json(os.path.join(directory, f"gen_{k:03d}", "evaluation.json")))
  rows = generation_rows(state, records, ctx.start.blocks)
  best = rows[-1]["best_so_far"]
  budget = ga.population_size * (int(state.generation) + 1)
  metrics = {"trainings": budget, "generations": int(state.generation), "best_fitness": best and best["fitness"],
             "best_val_loss": best and best["val_loss"], "best_val_accuracy": best and best["val_accuracy"],
             "best_test_accuracy": best and best["test_accuracy"], "best_test_loss": best and best["test_loss"],
             "best_fitness_per_generation": [r["best_fitness_so_far"] for r in rows],
             "population_mean_fitness_per_generation": [r["population_mean_fitness"] for r in rows]}
  return reporting.write_results(directory, config=ctx.config, seed=seed, dataset=ctx.data.info, metrics=metrics,
                                 wall_time_s=time.time() - t0, best=best, generation_log="generations.json")


def run_random(ctx: Context, directory: str, seed: int, budget: int) -> dict:
  """Random search of one seed: `budget` trainings in batches of the population size (resumable)."""
  t0 = time.time()
  done = read_json(os.path.join(directory, "results.json"))
  if done is not None:
    return done
  P = int(ctx.config.ga.population_size)
  draw_key = jax.random.key(seed * 7919 + 2)
  key_root = jax.random.key(seed * 7919 + 3)
  draws: List[dict] = []
  for b in range(-(-budget // P)):
    population = gt.repair(ctx.spec.sample(jax.random.fold_in(draw_key, b), P))
    keys = jax.random.split(jax.random.fold_in(key_root, b), P)
    rec = train_unit(ctx, os.path.join(directory, f"batch_{b:03d}"), population, keys,
                     data_seed=seed * 1000 + 500 + b, name=f"random search seed {seed} batch {b}")
    for i, p in enumerate(individuals(population, rec, ctx.start.blocks)):
      draws.append(dict(p, batch=b, index=i))
  draws = draws[:budget]
  reporting.write_json_atomic(os.path.join(directory, "draws.json"), draws, indent=1)
  finite = [d for d in draws if d["fitness"] is not None]
  best = max(finite, key=lambda d: d["fitness"]) if finite else None
  so_far, top = [], None
  for d in draws:
    if d["fitness"] is not None and (top is None or d["fitness"] > top):
      top = d["fitness"]
    so_far.append(top)
  metrics = {"trainings": len(draws), "best_fitness": best and best["fitness"], "best_val_loss": best and best["val_loss"],
             "best_val_accuracy": best and best["val_accuracy"], "best_test_accuracy": best and best["test_accuracy"],
             "best_test_loss": best and best["test_loss"], "best_fitness_so_far": so_far}
  return reporting.write_results(directory, config=ctx.config, seed=seed, dataset=ctx.data.info, metrics=metrics,
                                 wall_time_s=time.time() - t0, best=best, draw_log="draws.json")


def _pretrain(config, workdir: str) -> dict:
  """The pretraining unit (shared by every seed): its weight file and results."""
  from dlbook.training import transfer
  p = config.pretrain
  ds = data_lib.load(p.data, seed=0)
  path, payload = transfer.pretrain(config.model, ds, os.path.join(workdir, PRETRAIN), steps=int(p.steps),
                                    batch_size=int(p.batch_size), optimizer_config=p.optimizer, seed=0,
                                    backbone_kwargs=dict(config.backbone), eval_batch_size=int(p.eval_batch_size),
                                    log_every=int(config.train.log_every),
                                    checkpoint_every=int(p.checkpoint_every))
  return {"weights": path, "dataset": ds.info, "test_accuracy": payload["metrics"].get("test_accuracy"),
          "val_accuracy": payload["metrics"].get("val_accuracy"), "steps": int(p.steps),
          "wall_time_s": payload.get("wall_time_s")}


def make_context(config, weights_path: str, total_trainings: int) -> Context:
  ds = data_lib.load(config.data, seed=0)
  start = gt.load_start(config.model, num_classes=ds.num_classes, image_size=int(config.data.image_size),
                        weights_spec=weights_path, backbone_kwargs=dict(config.backbone), seed=0)
  g = config.genes
  require(int(g.included[1]) == start.num_layers, f"genes.included's upper bound {int(g.included[1])} must be the "
          f"network's {start.num_layers} dense layers")
  spec = gt.genome_spec(start.num_layers, int(g.frozen[1]), tuple(g.learning_rate), tuple(g.dropout))
  step = gt.population_step(start.model, start.blocks, int(g.frozen[1]))
  return Context(config, ds, start, spec, step, gt.eval_fn(start.model),
                 reporting.Progress(total_trainings, 0, name="trainings"))


def run(config, workdir: str, docs_dir: Optional[str] = None, report_only: bool = False) -> dict:
  """The whole experiment (pretraining, GA and random search for every seed, the table); returns the
  results.json payload. `report_only`: trains nothing and writes the table of the seeds finished so far
  (labelled partial when some are missing)."""
  from dlbook.hpsearch import ga_transfer_report as report
  t0 = time.time()
  validate_config(config)
  run_dir = checkpoint.Workdir(workdir, config.to_dict())
  if run_dir.finished and not report_only:
    return run_dir.results()
  require(not report_only or os.path.isdir(run_dir.path), f"workdir {run_dir.path} holds no run to report")
  if not report_only:
    run_dir.start()
  pre = _pretrain(config, run_dir.path) if config.weights == PRETRAIN else None
  weights_path = pre["weights"] if pre else config.weights
  P, G = int(config.ga.population_size), int(config.ga.generations)
  budget = P * (G + 1)
  seeds = [int(s) for s in config.seeds]
  ctx = make_context(config, weights_path, budget * len(seeds) * (2 if config.random_search else 1))
  per_seed = []
  for seed in seeds:
    sdir = run_dir.join(f"seed_{seed}")
    if report_only:
      ga, rs = (read_json(os.path.join(sdir, arm, "results.json")) for arm in ("ga", "random_search"))
      if ga is None or (config.random_search and rs is None):
        continue
    else:
      ga = run_ga(ctx, os.path.join(sdir, "ga"), seed)
      rs = run_random(ctx, os.path.join(sdir, "random_search"), seed, ga["metrics"]["trainings"]) \
          if config.random_search else None
    report.plot_seed(os.path.join(sdir, "ga"), ga, rs, P, f"GA transfer learning, seed {seed}")
    per_seed.append({"seed": seed, "ga": ga, "random_search": rs})
  require(bool(per_seed), f"no seed of {run_dir.path} has finished its GA and random search yet")
  table = report.table(config, per_seed, pre, ctx.start.info, ctx.data.info, total_seeds=len(seeds))
  reporting.write_text_atomic(run_dir.join("table.md"), table)
  if docs_dir:
    os.makedirs(os.path.abspath(docs_dir), exist_ok=True)
    reporting.write_text_atomic(os.path.join(os.path.abspath(docs_dir), f"ga_transfer_{config.preset}_table.md"), table)
  summary = report.summary(per_seed)
  if report_only:
    return {"metrics": summary, "seeds_finished": [s["seed"] for s in per_seed]}
  return reporting.write_results(run_dir.path, config=config, seed=seeds, dataset=ctx.data.info, metrics=summary,
                                 wall_time_s=time.time() - t0, pretrain=pre, network=ctx.start.info,
                                 per_seed=[{"seed": s["seed"], "ga": s["ga"]["metrics"],
                                            "random_search": s["random_search"] and s["random_search"]["metrics"]}
                                           for s in per_seed])
