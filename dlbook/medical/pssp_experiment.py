"""The protein secondary-structure experiment of book chapter 11: every model family of Tables
11.1-11.3 x seeds, each trained on the shared runner, with early stopping on a validation split of
the training chains, and a report laid out like the book's tables (`pssp_report`).

`run_grid(config, workdir)` trains the grid `config.models` x `config.seeds`; each (model, seed) is a
unit in `workdir/<model>/seed_<seed>/` with its own checkpoints, TensorBoard events, history,
pictures and results.json. Rerunning skips finished units and resumes an interrupted one from its
latest checkpoint.

Early stopping (book section 11.3: "halt training when validation metrics ceased to improve") lives
in the runner's state: `Tracked` carries the train state, the best parameters so far, their validation
score, the evaluations since the best, and the step at which training stopped. An evaluation hook runs
at every evaluation point (a log point, so nothing is pending when it stops the run); once the
validation score has not improved for `patience_epochs`, every later step leaves the state unchanged
and logs nothing, so a resumed run (its `Tracked` restored from a checkpoint) stops exactly where an
uninterrupted one stopped. Test metrics are those of the best parameters (Keras' restore-best-weights).
"""

import dataclasses
import os
import time
from typing import Any, Dict, List, Optional, Tuple

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from dlbook import data as data_lib
from dlbook import models
from dlbook.data.proteins import SequenceData, check_not_leaky
from dlbook.errors import require
from dlbook.medical import pssp
from dlbook.metrics.sequence import SS3, SS8, to_q3
from dlbook.training import checkpoint, optim, reporting, runner
from dlbook.training.state import TrainState, count_params, create_train_state

CONV_WIDTHS = ("filters", "dropout", "bn_momentum")
RECURRENT_WIDTHS = ("units", "dropout")
INCEPTION_WIDTHS = ("inception_filters", "conv_filters", "units", "dense_units", "dropout", "bn_momentum")


@dataclasses.dataclass(frozen=True)
class Family:
  """One row of book Tables 11.1-11.3: the registry model, its structure, which config widths it
  takes, and the book's claimed accuracy (percent; None where the book gives none)."""
  key: str
  table: str
  method: str
  filter_sizes: str
  model_name: str
  structure: Tuple[Tuple[str, Any], ...]
  widths: Tuple[str, ...]
  book_q3: float
  book_q8: Optional[float] = None


FAMILIES: Dict[str, Family] = {f.key: f for f in (
    Family("cnn1d_2", "11.1", "1D-CNN with 2 layers", "3, 5", "pssp_cnn1d",
           (("num_layers", 2), ("kernel_sizes", (3, 5))), CONV_WIDTHS, 76.91),
    Family("cnn1d_3", "11.1", "1D-CNN with 3 layers", "3, 5", "pssp_cnn1d",
           (("num_layers", 3), ("kernel_sizes", (3, 5))), CONV_WIDTHS, 77.40),
    Family("cnn1d_3_357", "11.1", "1D-CNN with 3 layers", "3, 5, 7", "pssp_cnn1d",
           (("num_layers", 3), ("kernel_sizes", (3, 5, 7))), CONV_WIDTHS, 77.42),
    Family("cnn1d_4", "11.1", "1D-CNN with 4 layers", "3, 5", "pssp_cnn1d",
           (("num_layers", 4), ("kernel_sizes", (3, 5))), CONV_WIDTHS, 82.03),
    Family("cascaded_2", "11.1", "Cascaded 1D-CNN and 2D-CNN with 2 layers", "3, 5 and 3×1, 5×1",
           "pssp_cascaded_cnn", (("num_1d_layers", 4), ("num_2d_layers", 2)), CONV_WIDTHS + ("filters_2d",), 83.48),
    Family("cascaded_3", "11.1", "Cascaded 1D-CNN and 2D-CNN with 3 layers", "3, 5 and 3×1, 5×1",
           "pssp_cascaded_cnn", (("num_1d_layers", 4), ("num_2d_layers", 3)), CONV_WIDTHS + ("filters_2d",), 84.55),
    Family("rnn", "11.2", "Simple recurrent neural network", "", "pssp_rnn", (), RECURRENT_WIDTHS, 68.2),
    Family("brnn", "11.2", "Bidirectional recurrent neural network", "", "pssp_brnn", (), RECURRENT_WIDTHS, 73.1),
    Family("lstm", "11.2", "Long short-term memory network", "", "pssp_lstm", (), RECURRENT_WIDTHS, 77.9),
    Family("blstm", "11.2", "Bidirectional long short-term memory network", "", "pssp_blstm", (),
           RECURRENT_WIDTHS, 81.3),
    Family("gru", "11.2", "Gated recurrent unit", "", "pssp_gru", (), RECURRENT_WIDTHS, 78.5),
    Family("bgru", "11.2", "Bidirectional gate recurrent unit", "", "pssp_bgru", (), RECURRENT_WIDTHS, 82.5),
    Family("inception_bgru", "11.3", "Inception-BGRU", "", "pssp_inception_bgru", (), INCEPTION_WIDTHS, 86.4, 74.2),
    Family("attention_inception_bgru", "11.3", "Attention enhanced inception-BGRU", "",
           "pssp_attention_inception_bgru", (), INCEPTION_WIDTHS + ("key_features",), 87.5, 75.4),
)}
# Table 11.3's other rows are published methods the book compares with; they are not built here.
BOOK_ONLY_11_3 = (("2D-CNN and bidirectional LSTM", 85.4, 73.0), ("1D-CNN and bidirectional LSTM", 83.7, 72.9),
                  ("Inception inside Inception networks with 1D-CNN", 85.1, 70.5), ("Dilated 1D-CNN", 83.6, 71.1),
                  ("1D-CNN + 2D-CNN and bidirectional LSTM", 85.7, 70.5),
                  ("1D-CNN-2D-CNN-BGRU and data partitioning", 85.8, 74.1))
MONITORS = ("q8", "q3", "loss")
# Keys of the grid (not of a unit): a unit's recorded config has none of them.
GRID_KEYS = ("models", "seeds", "figure_model")


# --------------------------------------------------------------------------------- config and data
def validate_config(config) -> None:
  """Every bad value -> one `DlbookError` naming the key and what is valid, before anything is written."""
  models_ = tuple(config.models)
  require(len(models_) > 0, "models must name at least one of: " + ", ".join(FAMILIES))
  for m in models_:
    require(m in FAMILIES, f"unknown model {m!r} in config.models; valid: {', '.join(FAMILIES)}")
  require(len(set(models_)) == len(models_), f"models must be distinct, got {models_}")
  require(len(config.seeds) > 0, "seeds must not be empty")
  require(len(set(config.seeds)) == len(config.seeds), f"seeds must be distinct, got {tuple(config.seeds)}")
  for key in ("batch_size", "eval_batch_size", "max_epochs", "eval_every_epochs", "checkpoint_every_epochs",
              "max_checkpoints", "lr_decay_every_epochs"):
    require(int(config[key]) > 0, f"{key} must be a positive integer, got {config[key]}")
  es = config.early_stopping
  require(es.monitor in MONITORS, f"early_stopping.monitor must be one of {', '.join(MONITORS)}, got {es.monitor!r}")
  require(int(es.patience_epochs) >= int(config.eval_every_epochs),
          f"early_stopping.patience_epochs ({es.patience_epochs}) must be at least eval_every_epochs "
          f"({config.eval_every_epochs})")
  require(float(es.min_delta) >= 0, f"early_stopping.min_delta must be >= 0, got {es.min_delta}")
  require(int(config.checkpoint_every_epochs) % int(config.eval_every_epochs) == 0,
          f"checkpoint_every_epochs ({config.checkpoint_every_epochs}) must be a multiple of eval_every_epochs "
          f"({config.eval_every_epochs})")
  require(0.0 < float(config.data.val_fraction) < 1.0,
          f"data.val_fraction must be in (0, 1): early stopping needs a validation split of the training "
          f"chains, got {config.data.val_fraction}")
  w = config.widths
  for key in ("filters", "filters_2d", "units", "inception_filters", "conv_filters", "dense_units"):
    require(int(w[key]) > 0, f"widths.{key} must be positive, got {w[key]}")
  require(int(w.key_features) >= 0, f"widths.key_features must be >= 0 (0: the input width), got {w.key_features}")
  require(0.0 <= float(w.dropout) < 1.0, f"widths.dropout must be in [0, 1), got {w.dropout}")
  require(0.0 <= float(w.bn_momentum) < 1.0, f"widths.bn_momentum must be in [0, 1), got {w.bn_momentum}")
  require(0 <= float(config.label_smoothing) < 1, f"label_smoothing must be in [0, 1), got {config.label_smoothing}")
  require(int(config.strip_count) >= 0, f"strip_count must be >= 0, got {config.strip_count}")
  require(int(config.strip_max_length) > 0, f"strip_max_length must be positive, got {config.strip_max_length}")
  require(config.rnn_impl in ("flax", "scan"), f"rnn_impl must be 'flax' or 'scan', got {config.rnn_impl!r}")
  require(config.figure_model in FAMILIES, f"unknown figure_model {config.figure_model!r}; valid: "
          f"{', '.join(FAMILIES)}")
  if config.data.test:
    check_not_leaky(config.data.train, config.data.test)


def _resolve(name: str, data_dir: Optional[str]) -> str:
  """'kind:PATH' with PATH taken relative to data_dir (when given and PATH is relative)."""
  if ":" not in name:
    return name
  kind, path = name.split(":", 1)
  path = os.path.expanduser(path)
  if data_dir and not os.path.isabs(path):
    path = os.path.join(os.path.expanduser(data_dir), path)
  return f"{kind}:{path}"


def load_data(config) -> SequenceData:
  """Training (with a validation split of its chains) and test proteins. `data.test` names a
  separate test set (CB513); empty: the training source's own test split. The leaky pair
  CB6133 (unfiltered) -> CB513 is refused before any file is read."""
  c = config.data
  train_name = _resolve(c.train, c.data_dir)
  options = dict(features=c.features, val_fraction=float(c.val_fraction))
  if c.train.split(":", 1)[0] == "pdb_dssp":
    options["max_length"] = int(c.max_length)
  if c.test:
    check_not_leaky(c.train, c.test)
  data = data_lib.load_raw(train_name, data_dir=c.data_dir, **options)
  require(isinstance(data, SequenceData), f"data.train {c.train!r} is not a protein data set; valid: "
          "pdb_dssp, cb6133:PATH, cb6133_filtered:PATH, cullpdb5926:PATH, cullpdb5926_filtered:PATH")
  require(data.train is not None and len(data.train) > 0, f"data.train {c.train!r} has no training proteins")
  require(data.val is not None and len(data.val) > 0, f"data.train {c.train!r} gave no validation proteins "
          f"at val_fraction {c.val_fraction}")
  test, test_info = data.test, {}
  if c.test:
    other = data_lib.load_raw(_resolve(c.test, c.data_dir), data_dir=c.data_dir, features=c.features)
    require(isinstance(other, SequenceData) and other.test is not None,
            f"data.test {c.test!r} has no test proteins (use cb513:PATH)")
    test, test_info = other.test, other.info
  require(test is not None and len(test) > 0, f"no test proteins: {c.train!r} has no test split; set data.test "
          "(e.g. cb513:PATH)")
  require(int(config.batch_size) <= len(data.train), f"batch_size {config.batch_size} is larger than the "
          f"{len(data.train)} training proteins")
  info = dict(data.info, test_source=test_info or None, splits={"train": len(data.train), "val": len(data.val),
                                                               "test": len(test)},
              residues={"train": int(data.train.mask.sum()), "val": int(data.val.mask.sum()),
                        "test": int(test.mask.sum())})
  return SequenceData(data.train, data.val, test, data.feature_names, info)


def unit_config(config, family: str, seed: int) -> ml_collections.ConfigDict:
  """What one unit depends on: the config without the grid keys, plus its model and seed."""
  c = ml_collections.ConfigDict(config.to_dict())
  for k in GRID_KEYS:
    del c[k]
  c.model = family
  c.seed = int(seed)
  return c


def model_kwargs(config, family: Family) -> dict:
  kwargs = dict(family.structure)
  for key in family.widths:
    value = config.widths[key]
    kwargs[key] = (int(value) or None) if key == "key_features" else value
  if "units" in family.widths:
    kwargs["rnn_impl"] = config.rnn_impl
  return kwargs


# ------------------------------------------------------------------------------- early stopping
@flax.struct.dataclass
class Tracked:
  """The runner's state: the train state plus early stopping's record (all checkpointed)."""
  train: TrainState
  best_params: Any
  best_batch_stats: Any
  best_score: jax.Array  # the monitored validation score, higher is better (-loss for "loss")
  best_step: jax.Array
  stale_evals: jax.Array  # evaluations since the best
  stopped_step: jax.Array  # 0 while training; the step at which early stopping halted it

  @classmethod
  def create(cls, state: TrainState) -> "Tracked":
    # A finite "minus infinity": the runner refuses to checkpoint non-finite leaves.
    return cls(state, state.params, state.batch_stats, jnp.float32(np.finfo(np.float32).min), jnp.int32(0),
               jnp.int32(0), jnp.int32(0))

  def best_state(self) -> TrainState:
    return self.train.replace(params=self.best_params, batch_stats=self.best_batch_stats)


def score(metrics: dict, monitor: str) -> float:
  return -float(metrics["loss"]) if monitor == "loss" else float(metrics[monitor])


# ----------------------------------------------------------------------------------- the grid
class Grid:
  """Data, optimizer, models and compiled steps shared by the units of one grid, so each model
  compiles its train and evaluation steps once for all seeds."""

  def __init__(self, config, data: SequenceData):
    self.config, self.data = config, data
    self.steps_per_epoch = len(data.train) // int(config.batch_size)
    self.total_steps = int(config.max_epochs) * self.steps_per_epoch
    self.eval_every = int(config.eval_every_epochs) * self.steps_per_epoch
    self.patience_evals = int(config.early_stopping.patience_epochs) // int(config.eval_every_epochs)
    opt = ml_collections.ConfigDict(config.optimizer.to_dict())
    if opt.schedule == "step":  # the book's "lr x 0.5 every 40 epochs", in steps of this data set
      opt.decay_every_steps = int(config.lr_decay_every_epochs) * self.steps_per_epoch
    self.tx = optim.make_optimizer(opt, self.total_steps)
    self.eval_fn = jax.jit(pssp.eval_step)
    self._models: Dict[str, Any] = {}
    self._steps: Dict[str, Any] = {}
    self._inits: Dict[str, Any] = {}

  def model(self, key: str):
    if key not in self._models:
      family = FAMILIES[key]
      self._models[key] = models.build(family.model_name, **model_kwargs(self.config, family))
      self._steps[key] = jax.jit(pssp.make_train_step(float(self.config.label_smoothing)))
    return self._models[key]

  def train_step(self, key: str):
    self.model(key)
    return self._steps[key]

  def init_state(self, key: str, seed: int) -> TrainState:
    """The initial train state, initialised in one compiled call (parameter shapes do not depend on
    the protein length, so a short one is enough)."""
    if key not in self._inits:
      model, shape = self.model(key), (1, 8, self.data.num_features)
      # A strongly typed step counter: a state restored from a checkpoint has one, so a resumed run
      # reuses the compiled steps instead of compiling them again for a weakly typed counter.
      self._inits[key] = jax.jit(lambda k: create_train_state(model, k, shape, self.tx).replace(
          step=jnp.zeros((), jnp.int32)))
    return self._inits[key](jax.random.split(jax.random.key(seed))[0])

  def predict(self, state, split) -> np.ndarray:
    """Inference-mode 8-state predictions [N, L] of a whole split."""
    bs = int(self.config.eval_batch_size)
    preds = [np.asarray(self.eval_fn(state, b)["pred"]) for b in data_lib.eval_batches(split, bs)]
    return np.concatenate(preds)[:len(split)]

  def evaluate(self, state, split, per_protein: bool = False) -> dict:
    return pssp.evaluate(state, data_lib.eval_batches(split, int(self.config.eval_batch_size)), self.eval_fn,
                         per_protein=per_protein)


def unit_dir(workdir: str, family: str, seed: int) -> str:
  return os.path.join(workdir, family, f"seed_{seed}")


def train_unit(grid: Grid, family: str, seed: int, workdir: str, progress: str = "") -> dict:
  """Trains one (model, seed) on the runner with early stopping; returns its results payload."""
  t0 = time.time()
  c = grid.config
  cfg = unit_config(c, family, seed)
  unit = checkpoint.Workdir(unit_dir(workdir, family, seed), cfg.to_dict())
  if unit.finished:
    return unit.results()
  name = f"{family}/s{seed}"
  train_split, val_split = grid.data.train, grid.data.val
  state = Tracked.create(grid.init_state(family, seed))
  num_params = count_params(state.train.params)
  train_key = jax.random.split(jax.random.key(seed))[1]
  step = grid.train_step(family)
  monitor, min_delta = c.early_stopping.monitor, float(c.early_stopping.min_delta)
  unit.start()
  logging.info("%s%s: %s, %d parameters, %d steps (%d epochs of %d), early stopping on validation %s",
               progress, name, FAMILIES[family].model_name, num_params, grid.total_steps, int(c.max_epochs),
               grid.steps_per_epoch, monitor)

  def step_fn(tracked: Tracked, i: int):
    if int(tracked.stopped_step):  # early stopping halted the run: the rest of the steps change nothing
      return tracked, {}
    batch = data_lib.train_batch(train_split, int(c.batch_size), seed, i)
    new, metrics = step(tracked.train, batch, jax.random.fold_in(train_key, i))
    return tracked.replace(train=new), metrics

  def validate(tracked: Tracked, i: int, log):
    if int(tracked.stopped_step):
      return None
    m = grid.evaluate(tracked.train, val_split)
    log.write(i, {"loss": m["loss"], "q8": m["q8"], "q3": m["q3"]}, prefix="val/")
    s = score(m, monitor)
    if s > float(tracked.best_score) + min_delta:
      tracked = tracked.replace(best_params=tracked.train.params, best_batch_stats=tracked.train.batch_stats,
                                best_score=jnp.float32(s), best_step=jnp.int32(i), stale_evals=jnp.int32(0))
    else:
      tracked = tracked.replace(stale_evals=tracked.stale_evals + 1)
    if int(tracked.stale_evals) >= grid.patience_evals and i < grid.total_steps:
      logging.info("%s: early stopping at epoch %d: validation %s has not improved for %d epochs (best at "
                   "epoch %d)", name, i // grid.steps_per_epoch, monitor, int(c.early_stopping.patience_epochs),
                   int(tracked.best_step) // grid.steps_per_epoch)
      tracked = tracked.replace(stopped_step=jnp.int32(i))
    return tracked

  # Evaluations are log points (log_every = eval_every), so no training metrics are pending when a
  # hook stops the run, and checkpoints fall on evaluations.
  result = runner.train(state, step_fn, grid.total_steps, unit.path, log_every=grid.eval_every,
                        checkpoint_every=int(c.checkpoint_every_epochs) * grid.steps_per_epoch, name=name,
                        hooks=[runner.Hook(runner.every(grid.eval_every, also_at=grid.total_steps), validate)],
                        max_checkpoints=int(c.max_checkpoints), started=t0, progress_keys=("loss", "q8"))
  tracked, log = result.state, result.log
  best = tracked.best_state()
  test = grid.evaluate(best, grid.data.test, per_protein=True)
  val = grid.evaluate(best, val_split)
  last = int(tracked.stopped_step) or grid.total_steps
  log.write(last, {"q8": test["q8"], "q3": test["q3"], "sov99_q3": test["sov99_q3"], "sov99_q8": test["sov99_q8"]},
            prefix="test/")
  reporting.plot_curves(os.path.join(unit.path, "curves.png"), log, [["train/loss", "val/loss"],
                                                                      ["train/q8", "val/q8", "val/q3"]],
                        f"{name} (best validation {monitor} at step {int(tracked.best_step)})")
  log.close()
  reporting.plot_confusion(os.path.join(unit.path, "confusion_q8.png"), test["confusion_q8"], SS8,
                           f"{name}: 8 states, test")
  reporting.plot_confusion(os.path.join(unit.path, "confusion_q3.png"), test["confusion_q3"], SS3,
                           f"{name}: 3 states, test")
  strips = strip_records(grid.data.test, grid.predict(best, grid.data.test), int(c.strip_count),
                         int(c.strip_max_length))
  from dlbook.medical.pssp_report import plot_strips
  plot_strips(os.path.join(unit.path, "strips.png"), strips, f"{name}: test proteins")
  spe = grid.steps_per_epoch
  metrics = dict(test, val_q8=val["q8"], val_q3=val["q3"], val_loss=val["loss"], best_epoch=int(tracked.best_step) // spe,
                 epochs_trained=last // spe, stopped_early=bool(int(tracked.stopped_step)))
  return reporting.write_results(
      unit.path, config=cfg, seed=int(seed), dataset=grid.data.info, metrics=metrics,
      wall_time_s=result.wall_time_s(t0), model=family, model_name=FAMILIES[family].model_name,
      model_kwargs=model_kwargs(c, FAMILIES[family]), num_params=num_params, total_steps=grid.total_steps,
      steps_per_epoch=spe, resumed_from_step=result.start_step, train_steps_per_s=result.steps_per_s,
      strips=strips)


def strip_records(split, preds: np.ndarray, count: int, max_length: int = 150) -> List[dict]:
  """True and predicted 8-state strings of `count` test proteins for the strip picture: the longest
  distinct sequences of at most `max_length` residues (the whole protein when none is that short)."""
  lengths = split.lengths
  seqs = [split.features[i, :n].argmax(-1).tobytes() for i, n in enumerate(lengths)]
  order = sorted(range(len(split)), key=lambda i: (lengths[i] > max_length, -lengths[i] if lengths[i] <= max_length
                                                   else lengths[i], i))
  out, seen = [], set()
  for i in order:
    if seqs[i] in seen:
      continue
    seen.add(seqs[i])
    n = int(lengths[i])
    name = split.names[i] if split.names else f"protein_{i}"
    out.append({"name": name, "true": "".join(SS8[k] for k in split.labels[i, :n]),
                "pred": "".join(SS8[k] for k in preds[i, :n])})
    if len(out) == count:
      break
  return out


def run_grid(config, workdir: str, docs_dir: Optional[str] = None) -> dict:
  """Trains every (model, seed) of the grid without a results.json, then writes the report."""
  from dlbook.medical.pssp_report import write_report
  t0 = time.time()
  validate_config(config)
  grid_dir = checkpoint.Workdir(workdir, config.to_dict(), ignore=GRID_KEYS)
  data = load_data(config)
  grid = Grid(config, data)
  baseline = pssp.majority_baseline(data.train, data.test)
  grid_dir.start()
  units = [(family, int(seed)) for seed in config.seeds for family in config.models]
  logging.info("grid: %d units (%d models x %d seeds) in %s; data %s: %s proteins, %s residues; majority "
               "class Q8 %.2f Q3 %.2f", len(units), len(config.models), len(config.seeds), workdir,
               config.data.train, data.info["splits"], data.info["residues"], baseline["q8"], baseline["q3"])
  for n, (family, seed) in enumerate(units):
    train_unit(grid, family, seed, workdir, progress=f"unit {n + 1}/{len(units)} ")
  return write_report(config, workdir, data.info, baseline, docs_dir, wall_time_s=time.time() - t0)


def report_only(config, workdir: str, docs_dir: Optional[str] = None) -> dict:
  """The report from the units that exist (the data is read again for the baseline)."""
  from dlbook.medical.pssp_report import write_report
  validate_config(config)
  data = load_data(config)
  return write_report(config, workdir, data.info, pssp.majority_baseline(data.train, data.test), docs_dir)
