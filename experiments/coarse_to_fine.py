"""Coarse-to-fine training with SSF / PSF selective freezing (book ch. 4, SPEC §3).

  python -m experiments.coarse_to_fine --config=configs/coarse_to_fine.py[:smoke|cpu|full] --workdir=DIR \
      [--config.key=value ...] [--report_only] [--docs_dir=docs]

Trains the grid modes x train_fractions x seeds of the config. Per (fraction, seed)
the coarse phase (Algorithm 1/2, step III) is trained once in `coarse/` and every
mode fine-tunes from its last checkpoint in its own directory. Each run writes a
results.json; the workdir gets results.json with every run, `table.md` (the layout
of book Tables 4.1-4.6, mean ± std over seeds) and `psf_accuracy.png`. With
`--docs_dir` the table and figure are also written to docs/coarse_to_fine_table.md
and docs/figures/psf_accuracy.png. `--report_only` regenerates them from the runs
that exist (a partial grid is labelled partial).

Resume: rerunning the same command skips finished runs and continues an
interrupted one from its latest checkpoint; the phase (coarse, fine iteration i)
and frozen window are a pure function of the global step, and batches and keys
are pure functions of (seed, step), so a resumed run ends bit-identical to an
uninterrupted one.
"""

import dataclasses
import glob
import json
import os
import shutil
import time
from fractions import Fraction
from typing import Dict, List, Optional

import jax
import ml_collections
import numpy as np
from absl import flags, logging
from ml_collections import config_flags

from dlbook import data as data_lib
from dlbook import launch, models
from dlbook.errors import require
from dlbook.training import checkpoint, freezing, optim, reporting, sharding
from dlbook.training.loop import evaluate, state_tree
from dlbook.training.state import create_train_state
from dlbook.training.steps import eval_step

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file, optionally with a :preset.")
flags.DEFINE_string("workdir", None, "Directory for the grid's checkpoints, logs and results.json.")
flags.DEFINE_bool("report_only", False, "Only regenerate table.md and psf_accuracy.png from existing runs.")
flags.DEFINE_string("docs_dir", None, "Also write coarse_to_fine_table.md and figures/psf_accuracy.png here.")

GRID_KEYS = ("modes", "freeze_fractions", "train_fractions", "seeds", "log_every_steps")
STATE_FILE = "phases.json"
_CACHE: Dict = {}  # see Group


# --------------------------------------------------------------------------- the grid

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

  The module-level cache, keyed by the model/optimizer/augmentation config, holds the model, the
  optimizer of each total step count (one for all when the schedule is constant), one
  masked optimizer per (optimizer, frozen blocks) and one jitted step per frozen blocks,
  so each mask compiles once per distinct optimizer rather than once per run.
  """

  def __init__(self, config, fraction: float, seed: int, mesh):
    self.config, self.fraction, self.seed, self.mesh = config, fraction, seed, mesh
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
    if key not in _CACHE:
      _CACHE[key] = make()
    return _CACHE[key]

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
        m = evaluate(eval_fn, bare, split, int(c.eval_batch_size), self.mesh, self.dataset.num_classes)
        out.update({f"{name}_accuracy": m["accuracy"], f"{name}_loss": m["loss"], f"{name}_f1_macro": m["f1_macro"]})
    return out


# --------------------------------------------------------------------------- training one unit

def _read_json(path: str, default=None):
  if not os.path.exists(path):
    return default
  with open(path) as f:
    return json.load(f)


def latest_step(unit_dir: str) -> int:
  ckpt_dir = os.path.join(unit_dir, "checkpoints")
  if not os.path.isdir(ckpt_dir):
    return 0
  steps = [int(d) for d in os.listdir(ckpt_dir) if d.isdigit()]
  return max(steps, default=0)


def train_phases(group: Group, plan: List[freezing.Phase], phases: List[int], unit_dir: str, name: str,
                 initial_state, grid_progress: reporting.Progress, grid_done: List[int]):
  """Trains `phases` of `plan` in `unit_dir`, resuming from its latest checkpoint, else from
  `initial_state()`. Evaluates at the end of every phase. Returns (state, phase records, wall s)."""
  c = group.config
  os.makedirs(unit_dir, exist_ok=True)
  ckpt = checkpoint.Checkpointer(os.path.join(unit_dir, "checkpoints"), int(c.max_checkpoints))
  saved = _read_json(os.path.join(unit_dir, STATE_FILE), {"records": [], "elapsed_s": 0.0})
  if ckpt.latest_step() is not None:
    step = int(ckpt.latest_step())
    # A checkpoint at step s holds the state after step s-1, with that phase's optimizer state.
    template = group.retarget(group.init_state(), plan[freezing.phase_index(plan, step - 1)])
    state = template.replace(**ckpt.restore(state_tree(template)))
    logging.info("%s: resumed at step %d (%s)", name, step, plan[freezing.phase_index(plan, step - 1)].name)
  else:
    state = initial_state()
    step = int(state.step)
  records = [r for r in saved["records"] if r["step"] <= step]
  elapsed0, t0 = float(saved["elapsed_s"]), time.time()
  log = reporting.MetricsLog(unit_dir, resume_step=step)

  def persist():
    reporting.write_json_atomic(os.path.join(unit_dir, STATE_FILE),
                                {"records": records, "elapsed_s": elapsed0 + time.time() - t0})

  first = plan[phases[0]].start
  progress = reporting.Progress(plan[phases[-1]].stop - first, step - first, name=name)
  for i in phases:
    phase = plan[i]
    if step < phase.stop:
      require(step >= phase.start, f"{unit_dir}: checkpoint step {step} precedes phase {phase.name}")
      state = sharding.replicate(group.retarget(state, phase), group.mesh)
      train_step = group.train_step(phase)
      logging.info("%s: %s, steps %d-%d, frozen blocks %s", name, phase.name, phase.start, phase.stop,
                   list(phase.frozen) or "none")
      pending = []
      for step_i, batch in data_lib.train_batches(group.dataset.train, c.batch_size, group.seed, step, phase.stop):
        state, metrics = train_step(state, sharding.shard_batch(batch, group.mesh),
                                    jax.random.fold_in(group.train_key, step_i))
        pending.append(metrics)
        step = step_i + 1
        grid_done[0] += 1
        if step % c.log_every_steps == 0 or step == phase.stop:
          means = {k: float(np.mean([jax.device_get(m[k]) for m in pending])) for k in pending[0]}
          pending = []
          require(np.isfinite(means["loss"]), f"{name}: loss became non-finite ({means['loss']}) before step "
                  f"{step}; lower optimizer.learning_rate")
          log.write(step, means, prefix="train/")
          logging.info("%s | %s", progress.line(step - first, means),
                       grid_progress.line(grid_done[0]))
        if step % c.checkpoint_every_steps == 0 or step == phase.stop:
          ckpt.save(step, state_tree(state))
          persist()
    if not any(r["iteration"] == phase.iteration for r in records):
      metrics = group.evaluate(state)
      log.write(step, {k: v for k, v in metrics.items() if k.endswith(("accuracy", "loss"))}, prefix="eval/")
      records.append(dict(iteration=phase.iteration, name=phase.name, step=step, frozen_blocks=list(phase.frozen),
                          **metrics))
      persist()
      logging.info("%s: after %s test accuracy %.4f", name, phase.name, metrics["test_accuracy"])
  log.close()
  ckpt.close()
  reporting.plot_curves(os.path.join(unit_dir, "curves.png"), log, [["train/loss"], ["train/accuracy",
                                                                                     "eval/test_accuracy"]], name)
  return state, records, elapsed0 + time.time() - t0


def run_coarse(group: Group, workdir: str, grid_progress, grid_done) -> dict:
  """The shared coarse phase of one (fraction, seed); returns its results payload."""
  unit_dir = os.path.join(group_dir(workdir, group.fraction, group.seed), "coarse")
  path = os.path.join(unit_dir, "results.json")
  if os.path.exists(path):
    return _read_json(path)
  checkpoint.guard_workdir(unit_dir, group.coarse_config.to_dict())
  plan = group.plan(None)
  _, records, wall = train_phases(group, plan, [0], unit_dir, f"coarse {group.fraction:g}/s{group.seed}",
                                  group.init_state, grid_progress, grid_done)
  p1 = freezing.parameter_costs(group.shapes.params, group.blocks, plan)["P1"]
  return reporting.write_results(
      unit_dir, config=group.coarse_config, seed=group.seed, dataset=group.dataset.info,
      metrics=dict(records[-1]), wall_time_s=wall, phase="coarse", P1=p1, coarse_steps=group.coarse_steps,
      total_steps=group.total_steps, num_blocks=len(group.blocks))


def run_fine(group: Group, run: Run, workdir: str, coarse: dict, grid_progress, grid_done) -> dict:
  """Fine-tunes one mode from the shared coarse checkpoint; returns its results payload."""
  unit_dir = run.directory(workdir)
  path = os.path.join(unit_dir, "results.json")
  if os.path.exists(path):
    return _read_json(path)
  cfg = run_config(group.config, group.fraction, group.seed, run)
  checkpoint.guard_workdir(unit_dir, cfg.to_dict())
  plan = group.plan(run)
  coarse_dir = os.path.join(group_dir(workdir, group.fraction, group.seed), "coarse")

  def from_coarse():
    template = group.retarget(group.init_state(), plan[0])
    ckpt = checkpoint.Checkpointer(os.path.join(coarse_dir, "checkpoints"))
    require(ckpt.latest_step() == group.coarse_steps,
            f"{coarse_dir} has no checkpoint at the end of coarse training (step {group.coarse_steps})")
    state = template.replace(**ckpt.restore(state_tree(template), group.coarse_steps))
    ckpt.close()
    return state

  _, records, wall = train_phases(group, plan, list(range(1, len(plan))), unit_dir, run.label + f" "
                                  f"{group.fraction:g}/s{group.seed}", from_coarse, grid_progress, grid_done)
  costs = freezing.parameter_costs(group.shapes.params, group.blocks, plan)
  k = len(plan[1].frozen) if run.mode == "psf" else None
  final = records[-1]
  metrics = {k2: v for k2, v in final.items() if k2.endswith(("accuracy", "loss", "f1_macro"))}
  metrics["coarse_test_accuracy"] = coarse["metrics"]["test_accuracy"]
  return reporting.write_results(
      unit_dir, config=cfg, seed=group.seed, dataset=group.dataset.info, metrics=metrics,
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
  t0 = time.time()
  validate_config(config)
  checkpoint.guard_workdir(workdir, config.to_dict(), ignore=GRID_KEYS)
  mesh = sharding.data_mesh(config.get("num_devices", 0))
  sharding.check_divisible(int(config.batch_size), mesh)
  sharding.check_divisible(int(config.eval_batch_size), mesh, "eval_batch_size")
  runs = grid_runs(config)
  groups = [(float(f), int(s)) for s in config.seeds for f in config.train_fractions]
  first = Group(config, *groups[0], mesh)
  for run in runs:  # every plan is built first, so a bad value fails before anything trains
    first.plan(run)
  logging.info("grid: %d runs over %d (fraction, seed) groups in %s; %d blocks: %s", len(runs), len(groups),
               workdir, len(first.blocks), ", ".join(b.name for b in first.blocks))
  total, done = _grid_work(config, workdir, first, runs)
  grid_progress = reporting.Progress(total, done, name="grid")
  grid_done = [done]
  for (fraction, seed) in groups:
    mine = [r for r in runs if r.train_fraction == fraction and r.seed == seed]
    if all(os.path.exists(os.path.join(r.directory(workdir), "results.json")) for r in mine):
      continue
    group = first if (fraction, seed) == (first.fraction, first.seed) else Group(config, fraction, seed, mesh)
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


# --------------------------------------------------------------------------- report

def collect_runs(workdir: str) -> List[dict]:
  """Every finished fine-tuning run's results.json under `workdir`."""
  out = []
  for path in sorted(glob.glob(os.path.join(workdir, "data_*", "seed_*", "*", "results.json"))):
    payload = _read_json(path)
    if payload.get("mode"):
      out.append(payload)
  return out


def _mean_std(values) -> str:
  v = 100 * np.asarray(values, np.float64)
  if len(v) == 1:
    return f"{v[0]:.2f} (1 seed)"
  return f"{v.mean():.2f} ± {v.std(ddof=1):.2f}"


def _params(x) -> str:
  return f"{x:,.0f}" if float(x) == int(x) else f"{x:,.1f}"


def _ordinal(i: int) -> str:
  return f"{i}{'th' if 10 <= i % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(i % 10, 'th')}"


def summarize(runs: List[dict]) -> dict:
  """Rows of the main table and the PSF per-iteration tables, mean ± std over seeds."""
  by_cell: Dict = {}
  for r in runs:
    by_cell.setdefault((r["label"], r["train_fraction"]), []).append(r)
  trad = {(r["train_fraction"], r["seed"]): r["metrics"]["test_accuracy"] for r in runs if r["mode"] == "traditional"}
  order = {"traditional": 0, "ssf": 1, "psf": 2}
  rows = []
  for (label, fraction), rs in sorted(by_cell.items(), key=lambda kv: (order[kv[1][0]["mode"]],
                                                                       -kv[1][0]["freeze_fraction"], kv[0][1])):
    r0 = rs[0]
    accs = [r["metrics"]["test_accuracy"] for r in rs]
    deltas = [r["metrics"]["test_accuracy"] - trad[(fraction, r["seed"])] for r in rs
              if (fraction, r["seed"]) in trad]
    rows.append(dict(label=label, method=r0["method"], mode=r0["mode"], fraction=fraction, P1=r0["P1"],
                     P2=float(np.mean(r0["P2"])), accuracy=accs, seeds=sorted(r["seed"] for r in rs),
                     coarse=[r["metrics"]["coarse_test_accuracy"] for r in rs], delta=deltas,
                     window=r0.get("psf_window"), iterations=[r["iterations"] for r in rs]))
  return {"rows": rows}


def launch_command(command: str) -> str:
  """`python -m experiments.coarse_to_fine ...` from the recorded argv (absl sees the file path)."""
  parts = command.split(" ", 2)
  if len(parts) >= 2 and parts[1].endswith("experiments/coarse_to_fine.py"):
    return " ".join(["python -m experiments.coarse_to_fine"] + parts[2:])
  return command


def table_markdown(config, runs: List[dict], expected: int) -> str:
  rows = summarize(runs)["rows"]
  c = config
  lines = [f"# Coarse-to-fine training with selective freezing on {c.data.name} (generated)", ""]
  if len(runs) < expected:
    lines += [f"**PARTIAL RESULTS: {len(runs)} of {expected} runs of the grid have finished.** "
              "Rows show whatever seeds exist so far.", ""]
  r0 = runs[0] if runs else {}
  walls = [r["fine_wall_time_s"] for r in runs]
  coarse_walls = {(r["train_fraction"], r["seed"]): r["coarse_wall_time_s"] for r in runs}
  commands = sorted({launch_command(r["command"]) for r in runs})
  lines += [
      "- Command: " + "; ".join(f"`{cmd}`" for cmd in commands),
      f"- Network: `{c.model_name}` {json.dumps(c.model.to_dict())}; {r0.get('num_blocks', '?')} blocks "
      f"({', '.join(r0.get('blocks', []))})",
      f"- Data: `{c.data.name}`, train fractions {list(c.train_fractions)}, limit_train={c.data.limit_train}, "
      f"val_fraction={c.data.val_fraction}; accuracy is on the full test split "
      f"({r0.get('dataset', {}).get('test_size', '?')} images)",
      f"- Epochs: coarse {c.coarse_epochs if not c.coarse_epochs_by_fraction else list(c.coarse_epochs_by_fraction)}"
      f" + fine {c.fine_epochs} (traditional trains the same total without freezing; PSF splits the fine "
      f"epochs evenly over its iterations); batch {c.batch_size}; optimizer {c.optimizer.name} lr "
      f"{c.optimizer.learning_rate} {c.optimizer.schedule} over the whole run, weight decay "
      f"{c.optimizer.weight_decay}",
      f"- Seeds: {sorted({r['seed'] for r in runs})}; accuracy is mean ± sample std over seeds; Δ is the "
      f"paired difference to traditional training with the same seed and data (same coarse phase)",
      f"- Wall time: {sum(coarse_walls.values()) + sum(walls):.0f} s in total "
      f"({sum(coarse_walls.values()):.0f} s shared coarse phases, {sum(walls):.0f} s fine-tuning), "
      f"on {r0.get('backend', '?')} {r0.get('devices', [''])[0] if r0 else ''}",
      "", "## Traditional vs coarse-to-fine (layout of book Tables 4.1-4.3)", "",
      "| Training method | Data (%) | P1 | P2 | (P1+P2)/2 | Accuracy (%) | Δ vs traditional (pp) | "
      "After coarse only (%) |",
      "|---|---|---|---|---|---|---|---|"]
  for r in rows:
    p2 = "—" if r["mode"] == "traditional" else _params(r["P2"])
    avg = r["P1"] if r["mode"] == "traditional" else (r["P1"] + r["P2"]) / 2
    name = r["method"] + (" (last iteration)" if r["mode"] == "psf" else "")
    delta = "—" if r["mode"] == "traditional" or not r["delta"] else _mean_std(r["delta"]).replace(" (1 seed)", "")
    lines.append(f"| {name} | {round(100 * r['fraction'])} | {_params(r['P1'])} | {p2} | {_params(avg)} | "
                 f"{_mean_std(r['accuracy'])} | {delta} | {_mean_std(r['coarse'])} |")
  psf = [r for r in rows if r["mode"] == "psf"]
  if psf:
    lines += ["", "## PSF accuracy per iteration (layout of book Tables 4.4-4.6)", "",
              "| Variant | Data (%) | Iteration | Frozen blocks | P1 | P2 | (P1+P2)/2 | Accuracy (%) |",
              "|---|---|---|---|---|---|---|---|"]
    for r in psf:
      f = Fraction(r["label"].split("_")[1].replace("-", "/"))
      n_iter = len(r["iterations"][0])
      for i in range(n_iter):
        its = [it[i] for it in r["iterations"]]
        fb = its[0]["frozen_blocks"]
        lines.append(f"| {r['method']} (K={r['window']}) | {round(100 * r['fraction'])} | {_ordinal(i + 1)} "
                     f"{f} frozen | {fb[0] if len(fb) == 1 else f'{fb[0]}-{fb[-1]}'} | {_params(r['P1'])} | {_params(its[0]['P2'])} | "
                     f"{_params((r['P1'] + its[0]['P2']) / 2)} | {_mean_std([it['test_accuracy'] for it in its])} |")
  lines += ["", "P1: parameters trained in coarse training (all); P2: parameters trained while fine-tuning "
            "(per iteration for PSF; the main table gives their mean); counts are exact, not millions.", ""]
  return "\n".join(lines)


def plot_psf(path: str, runs: List[dict]) -> None:
  """Test accuracy after coarse training (iteration 0) and after each PSF iteration, per data
  fraction, mean ± std over seeds; traditional and SSF as horizontal lines."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  rows = summarize(runs)["rows"]
  fractions = sorted({r["fraction"] for r in rows})
  fig, axes = plt.subplots(1, max(1, len(fractions)), figsize=(4.5 * max(1, len(fractions)), 3.6), squeeze=False)
  for ax, fraction in zip(axes[0], fractions):
    for r in rows:
      if r["fraction"] != fraction:
        continue
      if r["mode"] == "psf":
        acc = 100 * np.array([[run_coarse] + [it["test_accuracy"] for it in its]
                              for run_coarse, its in zip(r["coarse"], r["iterations"])])
        xs = np.arange(acc.shape[1])
        std = acc.std(0, ddof=1) if len(acc) > 1 else np.zeros(acc.shape[1])
        ax.errorbar(xs, acc.mean(0), yerr=std, marker="o", capsize=3, label=f"PSF {r['label'][4:]} (K={r['window']})")
      else:
        ax.axhline(100 * np.mean(r["accuracy"]), ls="--" if r["mode"] == "traditional" else ":",
                   color="k" if r["mode"] == "traditional" else "tab:red", label=r["method"])
    ax.set_title(f"{round(100 * fraction)}% of the training data")
    ax.set_xlabel("PSF iteration (0 = after coarse training)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def write_report(config, workdir: str, docs_dir: Optional[str] = None, wall_time_s: float = 0.0) -> dict:
  """results.json with every run, table.md and psf_accuracy.png, from whatever runs exist."""
  runs = collect_runs(workdir)
  expected = len(grid_runs(config))
  require(bool(runs), f"no finished runs under {workdir}; train first (without --report_only)")
  table = table_markdown(config, runs, expected)
  with open(os.path.join(workdir, "table.md"), "w") as f:
    f.write(table)
  plot_psf(os.path.join(workdir, "psf_accuracy.png"), runs)
  if docs_dir:
    os.makedirs(os.path.join(docs_dir, "figures"), exist_ok=True)
    shutil.copyfile(os.path.join(workdir, "table.md"), os.path.join(docs_dir, "coarse_to_fine_table.md"))
    shutil.copyfile(os.path.join(workdir, "psf_accuracy.png"), os.path.join(docs_dir, "figures", "psf_accuracy.png"))
  rows = summarize(runs)["rows"]
  metrics = {"complete": len(runs) == expected, "runs_finished": len(runs), "runs_expected": expected,
             "summary": [{k: r[k] for k in ("label", "fraction", "P1", "P2", "accuracy", "delta", "seeds")}
                         for r in rows]}
  return reporting.write_results(workdir, config=config, seed=list(config.seeds),
                                 dataset={"name": config.data.name}, metrics=metrics,
                                 wall_time_s=wall_time_s or sum(r["fine_wall_time_s"] for r in runs),
                                 runs=runs)


def main(argv):
  del argv
  config = launch.require_flag(FLAGS.config, "config")
  workdir = launch.workdir_path(launch.require_flag(FLAGS.workdir, "workdir"))
  if FLAGS.report_only:
    validate_config(config)
    payload = write_report(config, workdir, FLAGS.docs_dir)
  else:
    payload = run_grid(config, workdir, FLAGS.docs_dir)
  m = payload["metrics"]
  print(f"runs={m['runs_finished']}/{m['runs_expected']} table={workdir}/table.md results={workdir}/results.json")


def cli():
  launch.run(main)


if __name__ == "__main__":
  cli()
