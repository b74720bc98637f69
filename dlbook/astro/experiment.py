"""CNGN experiments of the thesis (seed 001 ch. 4, §4.4.2) on the shared runner.

`run_experiment(config, workdir)` trains, each as one unit directory with its own checkpoints,
history and results.json:

- ``cnn/seed_<s>``: the plain CNN (no astrocytes) for every noise seed. Pairs of these give the
  CNN-vs-CNN noise floor: what changing only the seed does to the test accuracy.
- ``grid/seed_<s>/str_<a>_weak_<b>``: Exp 1, the Str x Weak grid, each cell from the same initial
  parameters, batches and keys as ``cnn/seed_<s>`` (so Str = Weak = 1 reproduces it bit for bit).
- ``moving/seed_<s>/epoch_<e>/{cngn,cnn}_<k>``: Exp 2, the greedy moving grid. Each epoch trains
  the candidates around the current centre (Str, Weak) for one epoch from the previous epoch's best
  parameters; the candidate with the best validation accuracy gives the next start and centre. The
  control arm trains the same number of plain CNNs per epoch (candidate k of both arms sees the
  same batches and keys) and keeps its best, so that selection over noise alone is measured too.

Resume: finished units are skipped and an interrupted one continues from its latest checkpoint;
batches and keys are pure functions of the unit's seed stream and step, so a resumed experiment
ends with the same numbers as an uninterrupted one. `report.write_report` turns the units'
results into results.json, table.md and pictures.
"""

import dataclasses
import itertools
import json
import os
import time
from typing import Callable, Dict, List, Optional, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from dlbook import data as data_lib
from dlbook import models
from dlbook.errors import require
from dlbook.training import checkpoint, loop, optim, reporting, runner, sharding
from dlbook.training.astrocytes import (MODES, AstrocyteConfig, create_astrocyte_train_state, kernel_norms,
                                        make_astrocyte_train_step)
from dlbook.training.state import TrainState, create_train_state
from dlbook.training.steps import eval_step, make_train_step

NEIGHBOURHOODS = ("square", "cross")
FACTOR_RANGE = (0.5, 1.5)  # thesis §4.4.2: Str, Weak in [0.5, 1.5]
NEAR_ZERO = 0.01  # a filter whose kernel norm fell below 1 % of its initial norm counts as pruned
# What a unit's training depends on (not the grid lists, logging or checkpoint spacing).
TOP_IGNORE = ("log_every_steps", "strong", "weak", "seeds", "noise_seeds", "epochs", "preset")
_COMPILED = {}  # compiled steps per experiment settings
UNIT_KEYS = ("data", "model_name", "model", "optimizer", "batch_size", "label_smoothing", "astro")


def validate_config(config) -> None:
  """Every bad value -> DlbookError naming the key, before anything is written."""
  lo, hi = FACTOR_RANGE
  require(config.astro.mode in MODES, f"unknown astro.mode {config.astro.mode!r}; valid: {', '.join(MODES)}")
  require(int(config.astro.ng) >= 1, f"astro.ng must be >= 1, got {config.astro.ng}")
  require(float(config.astro.sensitivity) > 0, f"astro.sensitivity must be > 0, got {config.astro.sensitivity}")
  for key in ("strong", "weak"):
    values = tuple(config.grid[key])
    require(len(values) > 0, f"grid.{key} must list at least one factor in [{lo}, {hi}]")
    for v in values:
      require(lo <= float(v) <= hi, f"grid.{key} entries must be in [{lo}, {hi}], got {v}")
  for key in ("seeds", "noise_seeds", "moving.seeds"):
    seeds = tuple(config.moving.seeds if key == "moving.seeds" else config[key])
    require(len(set(seeds)) == len(seeds), f"{key} must be distinct, got {seeds}")
    require(all(int(s) >= 0 for s in seeds), f"{key} must be >= 0, got {seeds}")
  require(len(config.noise_seeds) >= 2, f"noise_seeds needs at least 2 seeds for a noise floor, got "
          f"{tuple(config.noise_seeds)}")
  missing = sorted(set(config.seeds) - set(config.noise_seeds))
  require(not missing, f"every entry of seeds needs its plain CNN in noise_seeds; missing {missing}")
  require(float(config.epochs) > 0, f"epochs must be positive, got {config.epochs}")
  require(int(config.moving.epochs) >= 0, f"moving.epochs must be >= 0, got {config.moving.epochs}")
  require(0 < float(config.moving.step) <= hi - lo, f"moving.step must be in (0, {hi - lo}], got {config.moving.step}")
  require(config.moving.neighbourhood in NEIGHBOURHOODS,
          f"unknown moving.neighbourhood {config.moving.neighbourhood!r}; valid: {', '.join(NEIGHBOURHOODS)}")
  require(0 < float(config.data.val_fraction) < 1 or int(config.moving.epochs) == 0,
          f"the moving grid selects on validation accuracy: data.val_fraction must be in (0, 1), "
          f"got {config.data.val_fraction}")
  for key in ("batch_size", "eval_batch_size", "log_every_steps", "checkpoint_every_steps"):
    require(int(config[key]) > 0, f"{key} must be positive, got {config[key]}")
  require(0 <= float(config.label_smoothing) < 1, f"label_smoothing must be in [0, 1), got {config.label_smoothing}")


def candidates(centre: Tuple[float, float], step: float, neighbourhood: str) -> List[Tuple[float, float]]:
  """(Str, Weak) around `centre`: the 3x3 square (9) or the cross of one-at-a-time moves (5), clipped to
  [0.5, 1.5] with repeats dropped; the centre first."""
  lo, hi = FACTOR_RANGE
  moves = [(0, 0)] + [m for m in itertools.product((-1, 0, 1), repeat=2) if m != (0, 0)]
  if neighbourhood == "cross":
    moves = [m for m in moves if 0 in m]
  out = []
  for da, db in moves:
    c = tuple(round(min(hi, max(lo, v + d * step)), 6) for v, d in zip(centre, (da, db)))
    if c not in out:
      out.append(c)
  return out


def factor_label(strong: float, weak: float) -> str:
  return f"str_{strong:g}_weak_{weak:g}"


def stream_seed(seed: int, epoch: int, k: int) -> int:
  """The data/key seed of moving-grid candidate k of epoch `epoch` (shared by both arms)."""
  return 1_000_000 + 10_000 * int(seed) + 100 * int(epoch) + int(k)


class Context:
  """Data, model, optimizers and the compiled steps shared by every unit of one experiment."""

  def __init__(self, config):
    c = self.config = config
    self.dataset = data_lib.load(c.data, seed=0)
    n = len(self.dataset.train)
    require(int(c.batch_size) <= n, f"batch_size {c.batch_size} is larger than the {n} training examples")
    self.steps_per_epoch = n // int(c.batch_size)
    self.grid_steps = max(1, round(float(c.epochs) * self.steps_per_epoch))
    self.moving_steps = self.steps_per_epoch * int(c.moving.epochs)
    self.mesh = sharding.data_mesh(c.get("num_devices", 0))
    sharding.check_divisible(int(c.batch_size), self.mesh)
    sharding.check_divisible(int(c.eval_batch_size), self.mesh, "eval_batch_size")
    self.astro = AstrocyteConfig(ng=int(c.astro.ng), sensitivity=float(c.astro.sensitivity), mode=c.astro.mode)
    self.input_shape = (1,) + self.dataset.image_shape
    self.unit_base = {k: (c[k].to_dict() if hasattr(c[k], "to_dict") else c[k]) for k in UNIT_KEYS}
    # The model and optimizers are static parts of the train state: reusing them (and the jitted steps)
    # lets equal experiments (a rerun, a resume in the same process) compile once.
    key = json.dumps(dict(self.unit_base, shape=self.input_shape, steps=(self.grid_steps, self.moving_steps),
                          moving=c.moving.schedule), sort_keys=True, default=str)
    if key not in _COMPILED:
      _COMPILED[key] = self._compile()
    (self.model, self.grid_tx, self.moving_tx, self.plain_step, self.astro_step, self.eval_fn) = _COMPILED[key]
    self._init_norms = {}
    # The conv layers the astrocytes wrap (their paths), from shapes only.
    self.astro_paths = jax.eval_shape(lambda: create_astrocyte_train_state(
        self.model, jax.random.key(0), self.input_shape, self.grid_tx)).astrocytes

  def _compile(self):
    c = self.config
    model = models.build(c.model_name, num_classes=self.dataset.num_classes, **c.model.to_dict())
    grid_tx = optim.make_optimizer(c.optimizer, self.grid_steps)
    moving_opt = ml_collections.ConfigDict(dict(c.optimizer.to_dict(), schedule=c.moving.schedule))
    moving_tx = optim.make_optimizer(moving_opt, max(1, self.moving_steps))
    augment, smoothing = c.data.get("augment"), float(c.label_smoothing)
    plain_step = jax.jit(make_train_step(augment, 0.0, smoothing), donate_argnums=0)

    def astro_step(state, batch, key, factors):  # Str and Weak are traced: one compilation for the grid
      cfg = dataclasses.replace(self.astro, strong=factors[0], weak=factors[1])
      return make_astrocyte_train_step(cfg, augment, smoothing)(state, batch, key)

    return model, grid_tx, moving_tx, plain_step, jax.jit(astro_step, donate_argnums=0), jax.jit(eval_step)

  def keys(self, seed: int):
    return jax.random.split(jax.random.key(int(seed)))  # init key, train key

  def init_state(self, seed: int, astro: bool, tx):
    make = create_astrocyte_train_state if astro else create_train_state
    return make(self.model, self.keys(seed)[0], self.input_shape, tx)

  def init_norms(self, seed: int) -> Dict[str, np.ndarray]:
    if seed not in self._init_norms:
      params = self.init_state(seed, False, self.grid_tx).params
      self._init_norms[seed] = jax.device_get(kernel_norms(params, self.astro_paths))
    return self._init_norms[seed]

  def evaluate(self, state) -> dict:
    bare = TrainState(step=state.step, apply_fn=state.apply_fn, params=state.params, tx=None, opt_state=None,
                      batch_stats=state.batch_stats)  # one compiled evaluation for both state types
    out = {}
    for name, split in (("val", self.dataset.val), ("test", self.dataset.test)):
      if split is not None:
        m = loop.evaluate(self.eval_fn, bare, split, int(self.config.eval_batch_size), self.mesh,
                          self.dataset.num_classes)
        out.update({f"{name}_{k}": m[k] for k in ("accuracy", "loss", "f1_macro", "mcc")})
    return out

  def kernel_stats(self, params, seed: int) -> dict:
    """Kernel-norm statistics of every conv filter, absolute and relative to the seed's initial filters."""
    final = jax.device_get(kernel_norms(params, self.astro_paths))
    init = self.init_norms(seed)
    norms = np.concatenate([np.asarray(final[k], np.float64) for k in sorted(final)])
    ratio = norms / np.concatenate([np.asarray(init[k], np.float64) for k in sorted(final)])
    return {"kernel_norm_mean": float(norms.mean()), "kernel_norm_max": float(norms.max()),
            "kernel_norm_ratio_median": float(np.median(ratio)), "kernel_norm_ratio_min": float(ratio.min()),
            "kernel_norm_ratio_max": float(ratio.max()),
            "filters_near_zero": float(np.mean(ratio < NEAR_ZERO)), "num_filters": int(norms.size)}


def modulated_fractions(log, ng: int) -> dict:
  """Mean fraction of filters scaled by Str / by Weak per modulation (every NG steps), from the history."""
  out = {}
  for kind in ("strong", "weak"):
    key = f"train/astro_fraction_{kind}"
    prev, total, steps = 0, 0.0, 0
    for r in log.records:
      if key in r:
        total += r[key] * (r["step"] - prev)
        steps += r["step"] - prev
        prev = r["step"]
    out[f"modulated_{kind}"] = total / max(steps, 1) * ng
  return out


def train_unit(ctx: Context, path: str, record: dict, seed: int, initial_state: Callable, step_fn: Callable,
               steps: int, name: str, astro: bool) -> dict:
  """One unit on the runner: resumes, trains `steps`, evaluates, writes results.json (returned)."""
  t0 = time.time()
  c = ctx.config
  unit = checkpoint.Workdir(path, record)
  if unit.finished:
    return unit.results()
  unit.start()
  state = sharding.replicate(initial_state(), ctx.mesh)
  result = runner.train(state, step_fn, steps, unit.path, log_every=int(c.log_every_steps),
                        checkpoint_every=int(c.checkpoint_every_steps), max_checkpoints=2, started=t0, name=name)
  state, log = result.state, result.log
  metrics = ctx.evaluate(state)
  metrics.update(ctx.kernel_stats(state.params, seed))
  if astro:
    metrics.update(modulated_fractions(log, ctx.astro.ng))
  log.write(steps, {k: v for k, v in metrics.items() if isinstance(v, float)}, prefix="eval/")
  log.close()
  reporting.plot_curves(os.path.join(unit.path, "curves.png"), log, [["train/loss"], ["train/accuracy"]], name)
  logging.info("%s: val %.4f test %.4f, kernel-norm ratio median %.3g", name, metrics.get("val_accuracy", np.nan),
               metrics["test_accuracy"], metrics["kernel_norm_ratio_median"])
  return reporting.write_results(unit.path, config=record, seed=seed, dataset=ctx.dataset.info, metrics=metrics,
                                 wall_time_s=result.wall_time_s(t0), total_steps=steps,
                                 resumed_from_step=result.start_step, train_steps_per_s=result.steps_per_s,
                                 **{k: v for k, v in record.items() if k not in UNIT_KEYS + ("seed",)})


def _steps(ctx: Context, data_seed: int, train_key, factors: Optional[Tuple[float, float]], offset: int = 0):
  """step_fn(state, step) of the plain CNN (factors None) or the CNGN (Str, Weak)."""
  c = ctx.config
  f = None if factors is None else jnp.asarray(factors, jnp.float32)

  def step_fn(state, step):
    batch = sharding.shard_batch(data_lib.train_batch(ctx.dataset.train, int(c.batch_size), data_seed, step),
                                 ctx.mesh)
    key = jax.random.fold_in(train_key, offset + step)
    return ctx.plain_step(state, batch, key) if f is None else ctx.astro_step(state, batch, key, f)

  return step_fn


def cnn_dir(workdir, seed):
  return os.path.join(workdir, "cnn", f"seed_{seed}")


def grid_dir(workdir, seed, strong, weak):
  return os.path.join(workdir, "grid", f"seed_{seed}", factor_label(strong, weak))


def moving_dir(workdir, seed, epoch, arm, k):
  return os.path.join(workdir, "moving", f"seed_{seed}", f"epoch_{epoch}", f"{arm}_{k}")


def run_cnn(ctx, workdir, seed):
  record = dict(ctx.unit_base, experiment="cnn", seed=int(seed), epochs=float(ctx.config.epochs))
  return train_unit(ctx, cnn_dir(workdir, seed), record, seed, lambda: ctx.init_state(seed, False, ctx.grid_tx),
                    _steps(ctx, seed, ctx.keys(seed)[1], None), ctx.grid_steps, f"cnn s{seed}", astro=False)


def run_cell(ctx, workdir, seed, strong, weak):
  record = dict(ctx.unit_base, experiment="grid", seed=int(seed), epochs=float(ctx.config.epochs),
                strong=float(strong), weak=float(weak))
  return train_unit(ctx, grid_dir(workdir, seed, strong, weak), record, seed,
                    lambda: ctx.init_state(seed, True, ctx.grid_tx),
                    _steps(ctx, seed, ctx.keys(seed)[1], (strong, weak)), ctx.grid_steps,
                    f"grid s{seed} {factor_label(strong, weak)}", astro=True)


def _restore_final(ctx, unit_dir: str, template):
  ckpt = checkpoint.Checkpointer(os.path.join(unit_dir, "checkpoints"))
  step = ckpt.latest_step()
  require(step == ctx.steps_per_epoch, f"{unit_dir} has no checkpoint at the end of its epoch (step "
          f"{ctx.steps_per_epoch})")
  tree = ckpt.restore({"state": runner.state_to_tree(template), "runner": {"wall_time_s": np.float64(0)}}, step)
  ckpt.close()
  return runner.state_from_tree(template, tree["state"])


def best_candidate(results: List[dict]) -> int:
  """Index of the highest validation accuracy (the first on ties)."""
  return int(np.argmax([r["metrics"]["val_accuracy"] for r in results]))


def run_moving(ctx, workdir, seed) -> dict:
  """Exp 2 for one seed: both arms, epoch by epoch; returns the path of centres and chosen units."""
  c = ctx.config
  centre = (1.0, 1.0)
  prev = {"cngn": None, "cnn": None}
  path = []
  for epoch in range(int(c.moving.epochs)):
    cands = candidates(centre, float(c.moving.step), c.moving.neighbourhood)
    chosen = {}
    for arm in ("cngn", "cnn"):
      astro = arm == "cngn"
      results = []
      for k, factors in enumerate(cands):
        stream = stream_seed(seed, epoch, k)
        start = prev[arm]

        def initial(start=start, astro=astro):
          template = ctx.init_state(seed, astro, ctx.moving_tx)
          return template if start is None else _restore_final(ctx, start, template)

        record = dict(ctx.unit_base, experiment="moving", arm=arm, seed=int(seed), moving_epoch=epoch,
                      candidate=k, stream=stream, start_from=None if start is None else os.path.relpath(start, workdir),
                      schedule=c.moving.schedule, moving_epochs=int(c.moving.epochs),
                      **({"strong": factors[0], "weak": factors[1]} if astro else {}))
        # Global step offset keeps the keys distinct across epochs; batches come from the candidate's stream.
        step_fn = _steps(ctx, stream, jax.random.key(stream), factors if astro else None)
        results.append(train_unit(ctx, moving_dir(workdir, seed, epoch, arm, k), record, seed, initial, step_fn,
                                  ctx.steps_per_epoch, f"moving s{seed} e{epoch} {arm}_{k}", astro=astro))
      b = best_candidate(results)
      chosen[arm] = dict(candidate=b, val_accuracy=results[b]["metrics"]["val_accuracy"],
                         test_accuracy=results[b]["metrics"]["test_accuracy"])
      prev[arm] = moving_dir(workdir, seed, epoch, arm, b)
      if astro:
        centre = cands[b]
        chosen[arm]["centre"] = list(centre)
    path.append(dict(epoch=epoch, candidates=[list(x) for x in cands], **chosen))
    logging.info("moving s%d epoch %d: CNGN centre %s val %.4f | CNN val %.4f", seed, epoch, centre,
                 chosen["cngn"]["val_accuracy"], chosen["cnn"]["val_accuracy"])
  return dict(seed=int(seed), path=path)


def run_experiment(config, workdir: str, docs_dir: Optional[str] = None) -> dict:
  """Trains every unit that has no results.json yet, then writes the report."""
  from dlbook.astro.report import write_report
  validate_config(config)
  # Units record what they depend on, so the grid lists may grow between reruns; finished units are skipped.
  top = checkpoint.Workdir(workdir, config.to_dict(), ignore=TOP_IGNORE)
  ctx = Context(config)
  top.start()
  units = (len(config.noise_seeds) + len(config.seeds) * len(config.grid.strong) * len(config.grid.weak))
  logging.info("cngn: %d plain/grid units of %d steps, moving grid %d epochs x %d seeds, in %s", units,
               ctx.grid_steps, int(config.moving.epochs), len(config.moving.seeds), workdir)
  for seed in config.noise_seeds:
    run_cnn(ctx, workdir, int(seed))
  for seed in config.seeds:
    for strong in config.grid.strong:
      for weak in config.grid.weak:
        run_cell(ctx, workdir, int(seed), float(strong), float(weak))
  paths = [run_moving(ctx, workdir, int(seed)) for seed in config.moving.seeds] if int(config.moving.epochs) else []
  return write_report(config, workdir, paths, dataset=ctx.dataset.info, docs_dir=docs_dir)
