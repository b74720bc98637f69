"""Coarse-to-fine training with SSF / PSF selective freezing (book ch. 4): the grid of runs.

`run_grid(config, workdir)` trains the grid modes x train_fractions x seeds of the config. Per
(fraction, seed) the coarse phase (Algorithm 1/2, step III) is trained once in `coarse/` and every
mode fine-tunes from its last checkpoint in its own directory, each a unit on the shared runner.
Each unit writes a results.json; the grid's report (`report.write_report`) gives results.json with
every run, `table.md` (the layout of book Tables 4.1-4.6) and `psf_accuracy.png`.

Resume: rerunning skips finished units and continues an interrupted one from its latest checkpoint;
the phase (coarse, fine iteration i) and frozen window are a pure function of the global step, and
batches and keys are pure functions of (seed, step), so a resumed run ends bit-identical to an
uninterrupted one.
"""

import dataclasses
import os
import time
import json
from fractions import Fraction
from typing import Dict, List, Optional

import jax
import ml_collections
import numpy as np
from absl import logging

from dlbook import data as data_lib
from dlbook import models
from dlbook.errors import require
from dlbook.training import checkpoint, freezing, loop, optim, reporting, runner, sharding
from dlbook.training.state import create_train_state
from dlbook.training.steps import eval_step

GRID_KEYS = ("modes", "freeze_fractions", "train_fractions", "seeds", "log_every_steps")


@dataclasses.dataclass(frozen=True)
class Run:
  """One cell of the grid."""
  mode: str
  train_fraction: float
  seed: int
  freeze_fraction: float = 0.0

  @property
  def label(self) -> str:
    if self.mode != "psf":
      return self.mode
    f = Fraction(self.freeze_fraction).limit_denominator(100)
    return f"psf_{f.numerator}-{f.denominator}"

  def directory(self, workdir: str) -> str:
    return os.path.join(group_dir(workdir, self.train_fraction, self.seed), self.label)


def group_dir(workdir: str, fraction: float, seed: int) -> str:
  return os.path.join(workdir, f"data_{round(100 * fraction):d}", f"seed_{seed}")


def method_name(mode: str, freeze_fraction: float = 0.0) -> str:
  if mode == "traditional":
    return "Traditional training"
  if mode == "ssf":
    return "Coarse-to-fine with SSF"
  f = Fraction(freeze_fraction).limit_denominator(100)
  return f"Coarse-to-fine with PSF {f.numerator}/{f.denominator}"


def validate_config(config) -> None:
  """Rejects nonsensical grid values with a message naming the key and what is valid."""
  modes = tuple(config.modes)
  require(len(modes) > 0, "modes must name at least one of: " + ", ".join(freezing.MODES))
  for m in modes:
    require(m in freezing.MODES, f"unknown mode {m!r} in config.modes; valid: {', '.join(freezing.MODES)}")
  if "psf" in modes:
    require(len(config.freeze_fractions) > 0, "mode psf needs at least one freeze_fractions entry")
    for f in config.freeze_fractions:
      require(0 < float(f) <= 0.5, f"freeze_fractions entries must be in (0, 1/2], got {f}")
  require(len(config.train_fractions) > 0, "train_fractions must not be empty")
  for f in config.train_fractions:
    require(0 < float(f) <= 1, f"train_fractions entries must be in (0, 1], got {f}")
  require(len(config.seeds) > 0, "seeds must not be empty")
  require(len(set(config.seeds)) == len(config.seeds), f"seeds must be distinct, got {tuple(config.seeds)}")
  by_fraction = tuple(config.coarse_epochs_by_fraction)
  require(not by_fraction or len(by_fraction) == len(config.train_fractions),
          f"coarse_epochs_by_fraction has {len(by_fraction)} entries for {len(config.train_fractions)} "
          f"train_fractions; give one per fraction or none")
  for e in by_fraction + (config.coarse_epochs,):
    require(float(e) > 0, f"coarse epochs must be positive, got {e}")
  require(float(config.fine_epochs) > 0, f"fine_epochs must be positive, got {config.fine_epochs}")
  require(int(config.batch_size) > 0, f"batch_size must be positive, got {config.batch_size}")
  require(int(config.eval_batch_size) > 0, f"eval_batch_size must be positive, got {config.eval_batch_size}")
  require(int(config.checkpoint_every_steps) > 0, "checkpoint_every_steps must be positive")
  require(int(config.log_every_steps) > 0, "log_every_steps must be positive")
  require(float(config.aux_weight) >= 0, f"aux_weight must be >= 0, got {config.aux_weight}")


def grid_runs(config) -> List[Run]:
  """Seeds outermost, so a partial grid already has every cell of the first seeds."""
  runs = []
  for seed in config.seeds:
    for fraction in config.train_fractions:
      for mode in config.modes:
        fractions = config.freeze_fractions if mode == "psf" else (0.0,)
        runs += [Run(mode, float(fraction), int(seed), float(ff)) for ff in fractions]
  return runs


def coarse_epochs(config, fraction: float) -> float:
  if not config.coarse_epochs_by_fraction:
    return float(config.coarse_epochs)
  i = [float(f) for f in config.train_fractions].index(float(fraction))
  return float(config.coarse_epochs_by_fraction[i])


def run_config(config, fraction: float, seed: int, run: Optional[Run] = None):
  """The config one run (or, with run=None, one shared coarse phase) depends on."""
  c = ml_collections.ConfigDict(config.to_dict())
  for k in GRID_KEYS + ("coarse_epochs_by_fraction",):
    del c[k]
  c.seed = seed
  c.data.train_fraction = fraction
  c.coarse_epochs = coarse_epochs(config, fraction)
  if run is not None:
    c.mode = run.mode
    c.freeze_fraction = run.freeze_fraction
  return c


# --------------------------------------------------------------------------- one (fraction, seed) group

class Group:
  """Data, model, optimizer and compiled steps shared by all runs of one (fraction, seed).

  `cache` (one dict per grid) is keyed by the model/optimizer/augmentation config and holds the
  model, the optimizer of each total step count (one for all when the schedule is constant), one
  masked optimizer per (optimizer, frozen blocks) and one jitted step per frozen blocks, so each
  mask compiles once per distinct optimizer rather than once per run.
  """

  def __init__(self, config, fraction: float, seed: int, mesh, cache: Dict):
    self.config, self.fraction, self.seed, self.mesh, self.cache = config, fraction, seed, mesh, cache
    self.coarse_config = run_config(config, fraction, seed)
    self.dataset = data_lib.load(self.coarse_config.data, seed=seed)
    n = len(self.dataset.train)
    require(config.batch_size <= n, f"batch_size {config.batch_size} is larger than the {n} training examples "
            f"at train_fraction {fraction}")
    steps_per_epoch = n // config.batch_size
    self.coarse_steps = max(1, round(self.coarse_config.coarse_epochs * steps_per_epoch))
    self.fine_steps = max(1, round(float(config.fine_epochs) * steps_per_epoch))
    self.total_steps = self.coarse_steps + self.fine_steps
    # Everything the compiled steps and the optimizer depend on (not logging, checkpoints or the grid).
    self._prefix = json.dumps(dict(model_name=config.model_name, model=config.model.to_dict(),
                                   optimizer=config.optimizer.to_dict(), augment=config.data.get("augment"),
                                   aux_weight=config.aux_weight, label_smoothing=config.label_smoothing),
                              sort_keys=True, default=str)
    # The optimizer depends on the run length only through a decaying schedule.
    self.tx_key = self.total_steps if config.optimizer.get("schedule", "constant") != "constant" else None
    self.model = self._cached(("model", self.dataset.num_classes), lambda: models.build(
        config.model_name, num_classes=self.dataset.num_classes, **config.model.to_dict()))
    self.base_tx = self._cached(("tx", self.tx_key), lambda: optim.make_optimizer(config.optimizer,
                                                                                       self.total_steps))
    self.init_key, self.train_key = jax.random.split(jax.random.key(seed))
    self.shapes = jax.eval_shape(self.init_state)
    self.blocks = freezing.model_blocks(config.model_name, self.shapes.params)

  def _cached(self, key, make):
    key = (self._prefix, key)
    if key not in self.cache:
      self.cache[key] = make()
    return self.cache[key]

  def plan(self, run: Optional[Run]) -> List[freezing.Phase]:
    mode, ff = (run.mode, run.freeze_fraction) if run else ("traditional", 0.0)
    return freezing.phase_plan(mode, len(self.blocks), self.coarse_steps, self.fine_steps, ff)

  def init_state(self):
    return create_train_state(self.model, self.init_key, (1,) + self.dataset.image_shape, self.base_tx)

  def prefixes(self, phase: freezing.Phase):
    return freezing.frozen_prefixes(self.blocks, phase.frozen)

  def mask(self, phase: freezing.Phase):
    return freezing.trainable_mask(self.shapes.params, self.prefixes(phase))

  def retarget(self, state, phase: freezing.Phase):
    tx = self._cached(("masked_tx", self.tx_key, phase.frozen),
                      lambda: freezing.masked_optimizer(self.base_tx, self.mask(phase)))
    return freezing.retarget(state, tx)

  def train_step(self, phase: freezing.Phase):
    c = self.config
    return self._cached(("step", phase.frozen), lambda: jax.jit(freezing.make_freeze_train_step(
        self.mask(phase), self.prefixes(phase), c.data.get("augment"), float(c.aux_weight),
        float(c.label_smoothing)), donate_argnums=0))

  def evaluate(self, state) -> dict:
    c = self.config
    eval_fn = self._cached("eval", lambda: jax.jit(eval_step))
    # Without optimizer and tx the state's structure is the same in every phase: one compilation.
    bare = state.replace(tx=None, opt_state=None)
    out = {}
    for name, split in (("val", self.dataset.val), ("test", self.dataset.test)):
      if split is not None:
        m = loop.evaluate(eval_fn, bare, split, int(c.eval_batch_size), self.mesh, self.dataset.num_classes)
        out.update({f"{name}_accuracy": m["accuracy"], f"{name}_loss": m["loss"], f"{name}_f1_macro": m["f1_macro"]})
    return out


# --------------------------------------------------------------------------- training one unit

def train_phases(group: Group, plan: List[freezing.Phase], phases: List[int], unit_dir: str, name: str,
                 initial_state, grid_progress: reporting.Progress, grid_done: List[int], started: float):
  """Trains `phases` of `plan` in `unit_dir` on the runner, resuming from its latest checkpoint,
  else from `initial_state()`. Each phase switches the optimizer mask and the compiled step, ends
  with a checkpoint and is evaluated. Returns (state, phase records, wall time of the unit)."""
  c = group.config
  first, last = plan[phases[0]], plan[phases[-1]]
  current = {"index": None}

  def template(step):  # a checkpoint at step s holds the state after step s-1, with that phase's optimizer
    return group.retarget(group.init_state(), plan[freezing.phase_index(plan, step - 1)])

  def step_fn(state, step):
    i = freezing.phase_index(plan, step)
    if current["index"] != i:
      current["index"] = i
      phase = plan[i]
      state = sharding.replicate(group.retarget(state, phase), group.mesh)
      logging.info("%s: %s, steps %d-%d, frozen blocks %s", name, phase.name, phase.start, phase.stop,
                   list(phase.frozen) or "none")
    grid_done[0] += 1
    batch = data_lib.train_batch(group.dataset.train, c.batch_size, group.seed, step)
    return group.train_step(plan[i])(state, sharding.shard_batch(batch, group.mesh),
                                     jax.random.fold_in(group.train_key, step))

  def evaluate(state, step, log):
    phase = plan[freezing.phase_index(plan, step - 1)]
    metrics = group.evaluate(state)
    log.write(step, metrics, prefix="eval/")
    logging.info("%s: after %s test accuracy %.4f", name, phase.name, metrics["test_accuracy"])

  stops = {plan[i].stop for i in phases}
  result = runner.train(initial_state(), step_fn, last.stop, unit_dir, log_every=int(c.log_every_steps),
                        checkpoint_every=int(c.checkpoint_every_steps), name=name, template=template,
                        initial_step=first.start, max_checkpoints=int(c.max_checkpoints), started=started,
                        checkpoint_at=stops.__contains__, hooks=[runner.Hook(stops.__contains__, evaluate)],
                        progress_extra=lambda step: grid_progress.line(grid_done[0]))
  log = result.log
  records = []
  for r in log.records:
    if "eval/test_accuracy" in r:
      phase = plan[freezing.phase_index(plan, r["step"] - 1)]
      records.append(dict(iteration=phase.iteration, name=phase.name, step=r["step"],
                          frozen_blocks=list(phase.frozen),
                          **{k[len("eval/"):]: v for k, v in r.items() if k.startswith("eval/")}))
  reporting.plot_curves(os.path.join(unit_dir, "curves.png"), log, [["train/loss"], ["train/accuracy",
                                                                                     "eval/test_accuracy"]], name)
  log.close()
  return result.state, records, result.wall_time_s(started)


def run_coarse(group: Group, workdir: str, grid_progress, grid_done) -> dict:
  """The shared coarse phase of one (fraction, seed); returns its results payload."""
  t0 = time.time()
  unit = checkpoint.Workdir(os.path.join(group_dir(workdir, group.fraction, group.seed), "coarse"),
                            group.coarse_config.to_dict())
  if unit.finished:
    return unit.results()
  unit.start()
  plan = group.plan(None)
  _, records, wall = train_phases(group, plan, [0], unit.path, f"coarse {group.fraction:g}/s{group.seed}",
                                  group.init_state, grid_progress, grid_done, t0)
  p1 = freezing.parameter_costs(group.shapes.params, group.blocks, plan)["P1"]
  return reporting.write_results(
      unit.path, config=group.coarse_config, seed=group.seed, dataset=group.dataset.info,
      metrics=dict(records[-1]), wall_time_s=wall, phase="coarse", P1=p1, coarse_steps=group.coarse_steps,
      total_steps=group.total_steps, num_blocks=len(group.blocks))


def run_fine(group: Group, run: Run, workdir: str, coarse: dict, grid_progress, grid_done) -> dict:
  """Fine-tunes one mode from the shared coarse checkpoint; returns its results payload."""
  t0 = time.time()
  cfg = run_config(group.config, group.fraction, group.seed, run)
  unit = checkpoint.Workdir(run.directory(workdir), cfg.to_dict())
  if unit.finished:
    return unit.results()
  unit.start()
  plan = group.plan(run)
  coarse_dir = os.path.join(group_dir(workdir, group.fraction, group.seed), "coarse")

  def from_coarse():
    template = group.retarget(group.init_state(), plan[0])
    ckpt = checkpoint.Checkpointer(os.path.join(coarse_dir, "checkpoints"))
    require(ckpt.latest_step() == group.coarse_steps,
            f"{coarse_dir} has no checkpoint at the end of coarse training (step {group.coarse_steps})")
    tree = ckpt.restore({"state": runner.state_to_tree(template), "runner": {"wall_time_s": np.float64(0)}},
                        group.coarse_steps)
    ckpt.close()
    return runner.state_from_tree(template, tree["state"])

  _, records, wall = train_phases(group, plan, list(range(1, len(plan))), unit.path, run.label + f" "
                                  f"{group.fraction:g}/s{group.seed}", from_coarse, grid_progress, grid_done, t0)
  costs = freezing.parameter_costs(group.shapes.params, group.blocks, plan)
  k = len(plan[1].frozen) if run.mode == "psf" else None
  final = records[-1]
  metrics = {k2: v for k2, v in final.items() if k2.endswith(("accuracy", "loss", "f1_macro"))}
  metrics["coarse_test_accuracy"] = coarse["metrics"]["test_accuracy"]
  return reporting.write_results(
      unit.path, config=cfg, seed=group.seed, dataset=group.dataset.info, metrics=metrics,
      wall_time_s=wall + coarse["wall_time_s"], fine_wall_time_s=wall, coarse_wall_time_s=coarse["wall_time_s"],
      mode=run.mode, label=run.label, method=method_name(run.mode, run.freeze_fraction),
      freeze_fraction=run.freeze_fraction, train_fraction=group.fraction, psf_window=k,
      num_blocks=len(group.blocks), blocks=[b.name for b in group.blocks],
      P1=costs["P1"], P2=costs["P2"], average_params=costs["average"],
      coarse_steps=group.coarse_steps, fine_steps=group.fine_steps, total_steps=group.total_steps,
      coarse_epochs=cfg.coarse_epochs, fine_epochs=float(cfg.fine_epochs),
      iterations=[dict(r, P2=p2) for r, p2 in zip(records, costs["P2"])])


def run_grid(config, workdir: str, docs_dir: Optional[str] = None) -> dict:
  """Trains every run of the grid that has no results.json yet, then writes the report."""
  from dlbook.coarse_to_fine.report import write_report
  t0 = time.time()
  validate_config(config)
  grid_dir = checkpoint.Workdir(workdir, config.to_dict(), ignore=GRID_KEYS)
  cache = {}
  mesh = sharding.data_mesh(config.get("num_devices", 0))
  sharding.check_divisible(int(config.batch_size), mesh)
  sharding.check_divisible(int(config.eval_batch_size), mesh, "eval_batch_size")
  runs = grid_runs(config)
  groups = [(float(f), int(s)) for s in config.seeds for f in config.train_fractions]
  first = Group(config, *groups[0], mesh, cache)
  for run in runs:  # every plan is built first, so a bad value fails before anything trains
    first.plan(run)
  grid_dir.start()
  logging.info("grid: %d runs over %d (fraction, seed) groups in %s; %d blocks: %s", len(runs), len(groups),
               workdir, len(first.blocks), ", ".join(b.name for b in first.blocks))
  total, done = _grid_work(config, workdir, first, runs)
  grid_progress = reporting.Progress(total, done, name="grid")
  grid_done = [done]
  for (fraction, seed) in groups:
    mine = [r for r in runs if r.train_fraction == fraction and r.seed == seed]
    if all(os.path.exists(os.path.join(r.directory(workdir), "results.json")) for r in mine):
      continue
    group = first if (fraction, seed) == (first.fraction, first.seed) else Group(config, fraction, seed, mesh, cache)
    coarse = run_coarse(group, workdir, grid_progress, grid_done)
    for run in mine:
      run_fine(group, run, workdir, coarse, grid_progress, grid_done)
    logging.info("grid: (data %g, seed %d) done; %s", fraction, seed,
                 grid_progress.line(grid_done[0]))
  return write_report(config, workdir, docs_dir, wall_time_s=time.time() - t0)


def _grid_work(config, workdir: str, group: Group, runs: List[Run]):
  """(total, already done) training steps of the grid, for the grid-level ETA. Step counts of
  other fractions are scaled from this group's by the fraction (a close estimate)."""
  total = done = 0
  for (fraction, seed) in {(r.train_fraction, r.seed) for r in runs}:
    scale = fraction / group.fraction
    c_steps = round(group.coarse_steps * scale * coarse_epochs(config, fraction) / group.coarse_config.coarse_epochs)
    f_steps = round(group.fine_steps * scale)
    total += c_steps
    coarse_dir = os.path.join(group_dir(workdir, fraction, seed), "coarse")
    done += c_steps if os.path.exists(os.path.join(coarse_dir, "results.json")) else latest_step(coarse_dir)
    for r in runs:
      if (r.train_fraction, r.seed) == (fraction, seed):
        total += f_steps
        d = r.directory(workdir)
        done += f_steps if os.path.exists(os.path.join(d, "results.json")) else max(0, latest_step(d) - c_steps)
  return total, min(done, total)


def latest_step(unit_dir: str) -> int:
  ckpt_dir = os.path.join(unit_dir, "checkpoints")
  if not os.path.isdir(ckpt_dir):
    return 0
  steps = [int(d) for d in os.listdir(ckpt_dir) if d.isdigit()]
  return max(steps, default=0)


