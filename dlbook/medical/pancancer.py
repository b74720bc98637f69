"""Pan-cancer classification from gene expression with an ensemble of CNNs (book ch. 12, §9.3).

`run(config, workdir)` runs the whole pipeline:

1. **Data.** An expression source (`dlbook.data.expression`: ``tcga_pancancer:PATH``, or a real
   stand-in such as ``chiaretti_all``) gives [samples, genes] values, labels, the patient of each
   sample and a gene annotation. The source's own held-out part is pooled back: every sample is
   tested exactly once per repeat of the cross-validation below.
2. **Splits.** For each repeat seed r, ``n_folds`` patient-grouped, stratified folds
   (`dlbook.data.splits.grouped_stratified_folds`); fold k is the test part, and one grouped,
   stratified ``val_fraction`` of the rest is the validation part. No patient is on two sides
   (checked for every split).
3. **Expression → image**, fitted on the training part of each split only
   (`dlbook.data.transforms.fit_expression_image`: log2(x+1) where the data is linear, the most
   variable genes of the training part, genome order, zero-padded square; book §12.2).
4. **Base models** (book §12.2.1): DenseNet-201, ResNet50, Inception-V3 and Xception from the backbone
   registry on 1-channel images, head GAP → dropout 0.5 → dense with an L2 penalty on its kernel,
   class weights n / (K · n_c) on the loss (book §12.3.1), Adam with the learning rate halved every 40
   epochs, early stopping with patience 7 on the validation loss (book §12.3). Each (split, model)
   is one unit on the shared runner: resumable, its results.json holds its validation and test
   probabilities.
5. **Aggregation** (`dlbook.medical.ensemble`): hard majority, average, "soft" Σ w_j d_j and weighted
   average Σ w_j d_j / Σ w_j, with w_j = each model's validation macro-F1.
6. **Baselines** a reviewer asks for: logistic regression and a linear SVM (scikit-learn) on the same
   fitted features (the image's genes, standardised on the training part), C chosen on validation
   macro-F1.
7. **Report** (`write_report`): every method's test metrics (mean ± sample std over splits), per-class
   table and confusion matrix of the pooled out-of-fold predictions, next to book Table 12.1.

Choices where the book is silent (also in docs/pancancer.md):
- early stopping monitors the validation cross-entropy (Keras' default ``val_loss``), and the model
  evaluated is the one of the best validation epoch (``restore_best_weights``);
- the L2 factor is Keras' default 0.01 on the head's kernel;
- the class-weighted loss is the batch mean of w_{y_i} · CE_i (Keras ``class_weight``).

Early stopping: the runner has no stop signal, so the end-of-epoch hook raises `_EarlyStop` carrying
the state; the best weights and the early-stopping counters live in the checkpointed state, so a
unit killed at any point and rerun replays to exactly the same stop and the same numbers.
"""

import dataclasses
import json
import os
import time
from typing import Any, Dict, List, Optional, Sequence

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from dlbook import models
from dlbook.data import load_raw
from dlbook.data.pipeline import Split, eval_batches, train_batch
from dlbook.data.splits import check_groups_disjoint, class_weights, grouped_stratified_folds
from dlbook.data.transforms import ExpressionImage, SCALES, fit_expression_image
from dlbook.errors import DlbookError, require
from dlbook.medical import ensemble
from dlbook.metrics import classification_metrics, roc_auc_ovr
from dlbook.training import checkpoint, reporting, runner
from dlbook.training.state import TrainState, count_params

BOOK_MODELS = ("densenet201", "resnet50", "inception_v3", "xception")
BASELINES = ("logistic_regression", "linear_svm")
LOG_TRANSFORMS = ("auto", "yes", "no")
GRID_KEYS = ("base_models", "baselines", "aggregators", "log_every_steps", "docs_name")
METHOD_NAMES = {"densenet201": "DenseNet-201", "resnet50": "ResNet50", "inception_v3": "Inception-V3",
                "xception": "Xception", "logistic_regression": "Logistic regression (baseline)",
                "linear_svm": "Linear SVM (baseline)"}


def _rng(seed: int):
  # 'rbg' keys: threefry initialisers take XLA:CPU ~13 s to compile per program here.
  return jax.random.key(int(seed), impl="rbg")


# --------------------------------------------------------------------------- config

def validate_config(config) -> None:
  """Every bad value is one `DlbookError` naming the key, before anything is read or written."""
  names = set(models.names())
  require(len(config.base_models) >= 1, "base_models must name at least one model")
  for m in config.base_models:
    require(m in names, f"unknown base model {m!r} in config.base_models; valid: {', '.join(sorted(names))}")
  require(len(set(config.base_models)) == len(config.base_models), f"base_models repeat a model: "
                                                                   f"{tuple(config.base_models)}")
  for b in config.baselines:
    require(b in BASELINES, f"unknown baseline {b!r} in config.baselines; valid: {', '.join(BASELINES)}")
  for a in config.aggregators:
    require(a in ensemble.AGGREGATORS, f"unknown aggregator {a!r} in config.aggregators; valid: "
                                       f"{', '.join(ensemble.AGGREGATORS)}")
  s, t, h, tr = config.splits, config.transform, config.head, config.train
  require(int(s.n_folds) >= 2, f"splits.n_folds must be >= 2, got {s.n_folds}")
  require(len(s.repeats) >= 1 and len(set(s.repeats)) == len(s.repeats),
          f"splits.repeats must be distinct seeds, at least one, got {tuple(s.repeats)}")
  require(0 < float(s.val_fraction) < 1, f"splits.val_fraction must be in (0, 1), got {s.val_fraction}")
  require(t.log_transform in LOG_TRANSFORMS, f"unknown transform.log_transform {t.log_transform!r}; valid: "
                                             f"{', '.join(LOG_TRANSFORMS)}")
  require(t.scale in SCALES, f"unknown transform.scale {t.scale!r}; valid: {', '.join(SCALES)}")
  require(t.top_k is None or int(t.top_k) >= 1, f"transform.top_k must be >= 1, got {t.top_k}")
  require(t.top_k is None or t.variance_threshold is None, "give transform.top_k or transform.variance_threshold, "
                                                           "not both")
  require(0 <= float(h.dropout) < 1, f"head.dropout must be in [0, 1), got {h.dropout}")
  require(float(h.l2) >= 0, f"head.l2 must be >= 0, got {h.l2}")
  require(int(tr.batch_size) > 0, f"train.batch_size must be positive, got {tr.batch_size}")
  require(int(tr.eval_batch_size) > 0, f"train.eval_batch_size must be positive, got {tr.eval_batch_size}")
  require(float(tr.learning_rate) > 0, f"train.learning_rate must be positive, got {tr.learning_rate}")
  require(0 < float(tr.decay_factor) <= 1, f"train.decay_factor must be in (0, 1], got {tr.decay_factor}")
  require(int(tr.decay_every_epochs) > 0, f"train.decay_every_epochs must be positive, got {tr.decay_every_epochs}")
  require(int(tr.max_epochs) > 0, f"train.max_epochs must be positive, got {tr.max_epochs}")
  require(int(tr.patience) > 0, f"train.patience must be positive, got {tr.patience}")
  require(int(tr.checkpoint_every_epochs) > 0, "train.checkpoint_every_epochs must be positive")
  require(int(config.log_every_steps) > 0, f"log_every_steps must be positive, got {config.log_every_steps}")
  require(len(config.baseline_c_grid) >= 1 and all(float(c) > 0 for c in config.baseline_c_grid),
          f"baseline_c_grid must hold positive values, got {tuple(config.baseline_c_grid)}")


# --------------------------------------------------------------------------- data and splits

@dataclasses.dataclass(frozen=True)
class Expression:
  """All samples of the source (its train and test parts pooled)."""
  x: np.ndarray
  y: np.ndarray
  groups: np.ndarray
  samples: np.ndarray
  class_names: tuple
  features: dict
  info: dict


def load_expression(data_config) -> Expression:
  """Loads the source named by `data_config` and pools its parts (patients from its `groups`)."""
  options = {k: v for k, v in data_config.items() if k not in ("name", "data_dir") and v is not None}
  raw = load_raw(data_config.name, data_dir=data_config.get("data_dir"), **options)
  require(raw.features is not None and raw.x_train.ndim == 2,
          f"dataset {data_config.name!r} is not an expression source ([samples, genes] with a gene annotation)")
  x = np.concatenate([raw.x_train, raw.x_test])
  y = np.concatenate([raw.y_train, raw.y_test]).astype(np.int32)
  groups = np.concatenate([raw.groups_train, raw.groups_test])
  samples = np.concatenate([raw.samples_train, raw.samples_test])
  order = np.argsort(samples, kind="stable")  # the pooled order does not depend on the source's split
  return Expression(x[order], y[order], groups[order], samples[order], tuple(str(c) for c in raw.class_names),
                    raw.features, dict(raw.info))


@dataclasses.dataclass(frozen=True)
class SplitIndices:
  repeat: int
  fold: int
  train: np.ndarray
  val: np.ndarray
  test: np.ndarray

  @property
  def name(self) -> str:
    return f"repeat_{self.repeat}/fold_{self.fold}"


def make_splits(y, groups, n_folds: int, repeats: Sequence[int], val_fraction: float) -> List[SplitIndices]:
  """Per repeat seed, `n_folds` grouped stratified test folds; a grouped stratified `val_fraction`
  of the rest (one of round(1 / val_fraction) inner folds) validates. Patient-disjoint, checked."""
  y, groups = np.asarray(y), np.asarray(groups)
  counts = np.bincount(y)
  require(counts.min() >= n_folds, f"class {int(counts.argmin())} has {counts.min()} patients, fewer than "
                                   f"splits.n_folds={n_folds}: raise data.min_class_size or lower n_folds")
  n_val = max(2, int(round(1 / float(val_fraction))))
  out = []
  for r in repeats:
    for k, (rest, test) in enumerate(grouped_stratified_folds(y, groups, n_folds, seed=int(r))):
      tr, va = grouped_stratified_folds(y[rest], groups[rest], n_val, seed=1000 * int(r) + k + 1)[0]
      split = SplitIndices(int(r), k, np.sort(rest[tr]), np.sort(rest[va]), np.sort(test))
      check_groups_disjoint(groups, {"train": split.train, "val": split.val, "test": split.test})
      missing = sorted(set(range(len(counts))) - set(y[split.train].tolist()))
      require(not missing, f"split {split.name}: classes {missing} have no training patient; raise "
                           f"data.min_class_size")
      out.append(split)
  return out


def fit_transform(data: Expression, train_idx, transform_config) -> ExpressionImage:
  """The expression → image mapping fitted on the training rows `train_idx` only."""
  t = transform_config
  log = {"yes": True, "no": False}.get(t.log_transform, data.info.get("expression_scale") == "linear")
  return fit_expression_image(data.x[np.asarray(train_idx)], data.features.get("chromosome"),
                              data.features.get("start"), log_transform=log,
                              variance_threshold=t.variance_threshold, top_k=t.top_k, scale=t.scale)


def gene_features(fitted: ExpressionImage, images: np.ndarray) -> np.ndarray:
  """The kept genes of expression images (the padding dropped): the baselines' features."""
  return images.reshape(len(images), -1)[:, :len(fitted.genes)]


# --------------------------------------------------------------------------- one base model

@flax.struct.dataclass
class UnitState:
  """What a base-model unit checkpoints: the train state and the early-stopping record (the best
  validation epoch's weights, its loss, and the epochs since it)."""
  train: TrainState
  best_params: Any
  best_batch_stats: Any
  best_loss: jax.Array
  best_epoch: jax.Array
  stall: jax.Array


class _EarlyStop(Exception):
  def __init__(self, state):
    super().__init__("early stop")
    self.state = state


NO_LOSS = 1e30  # "no best yet": finite, so the runner's finiteness check accepts it


def _loss_fn(params, batch_stats, apply_fn, images, labels, weights, key, l2):
  outputs, updates = apply_fn({"params": params, "batch_stats": batch_stats}, images, train=True,
                              rngs={"dropout": key}, mutable=["batch_stats"])
  ce = optax.softmax_cross_entropy_with_integer_labels(outputs, labels)
  loss = jnp.mean(weights * ce)  # Keras class_weight: per-sample weight, batch mean
  penalty = l2 * jnp.sum(jnp.square(params["classifier"]["kernel"]))  # Keras L2 on the head's kernel
  return loss + penalty, (outputs, updates.get("batch_stats", batch_stats), jnp.mean(ce))


class BaseModel:
  """A base model's module and compiled programs, shared by every split of one process (the image
  shape and the number of classes are the same in every split; the learning rate enters as an
  argument, so one optimizer serves every split length)."""

  def __init__(self, name: str, kwargs: dict, num_classes: int, image_shape, head):
    self.name = name
    self.kwargs = dict(kwargs)
    model = models.build(name, num_classes=num_classes, dropout=float(head.dropout), **self.kwargs)
    if hasattr(model, "in_channels"):  # the backbones' stem width; other registry models infer it
      model = model.clone(in_channels=image_shape[-1])
    self.model = model
    self.image_shape = tuple(image_shape)
    self.tx = optax.scale_by_adam()  # Adam; the step multiplies by -lr (Adam = scale_by_adam, scale(-lr))
    l2 = float(head.l2)
    model, tx = self.model, self.tx

    def init(key):
      variables = model.init({"params": key, "dropout": key}, jnp.zeros((1,) + self.image_shape), train=False)
      params = variables["params"]
      return TrainState.create(apply_fn=model.apply, params=params, tx=tx, batch_stats=variables.get("batch_stats", {}))

    def step(state, images, labels, weights, lr, key):
      grad_fn = jax.value_and_grad(_loss_fn, has_aux=True)
      (loss, (logits, batch_stats, ce)), grads = grad_fn(state.params, state.batch_stats, state.apply_fn, images,
                                                         labels, weights, key, l2)
      updates, opt_state = tx.update(grads, state.opt_state, state.params)
      params = optax.apply_updates(state.params, jax.tree.map(lambda u: -lr * u, updates))
      state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, batch_stats=batch_stats)
      return state, {"loss": loss, "cross_entropy": ce, "accuracy": jnp.mean(jnp.argmax(logits, -1) == labels)}

    def predict(params, batch_stats, images):
      return jax.nn.softmax(model.apply({"params": params, "batch_stats": batch_stats}, images, train=False), -1)

    self.init, self.step, self.predict = jax.jit(init), jax.jit(step), jax.jit(predict)
    shapes = jax.eval_shape(self.init, _rng(0))
    require("classifier" in shapes.params and "kernel" in shapes.params["classifier"],
            f"base model {name!r} has no dense 'classifier' head (GAP -> dropout -> dense) for the L2 penalty")
    self.num_params = count_params(shapes.params)

  def probabilities(self, params, batch_stats, images: np.ndarray, batch_size: int) -> np.ndarray:
    split = Split(images, np.zeros(len(images), np.int32))
    out = [np.asarray(self.predict(params, batch_stats, b["image"]))[b["mask"] > 0]
           for b in eval_batches(split, batch_size)]
    return np.concatenate(out).astype(np.float64)


def _metrics(y, probs_or_pred, num_classes: int, scores=None) -> dict:
  """Test metrics of a method: from probabilities [N, K] (argmax) or predictions [N] with `scores`."""
  a = np.asarray(probs_or_pred)
  pred = a.argmax(-1) if a.ndim == 2 else a
  scores = a if a.ndim == 2 else scores
  m = classification_metrics(y, pred, num_classes)
  if scores is not None:
    m.update(roc_auc_ovr(y, scores))
  return m


def _cross_entropy(probs, y) -> float:
  return float(-np.mean(np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, None))))


class _History:
  """The run's history.jsonl as the `series` that `reporting.plot_curves` reads."""

  def __init__(self, path):
    with open(path) as f:
      self.records = [json.loads(line) for line in f if line.strip()]

  def series(self, key):
    pts = [(r["step"], r[key]) for r in self.records if key in r]
    return [p[0] for p in pts], [p[1] for p in pts]


def train_base_model(config, unit_config: dict, base: BaseModel, data: Expression, split: SplitIndices,
                     images: Dict[str, np.ndarray], unit_dir: str, seed: int, prefix: str = "") -> dict:
  """Trains one base model on one split (a resumable unit) and returns its results payload."""
  t0 = time.time()
  unit = checkpoint.Workdir(unit_dir, unit_config)
  if unit.finished:
    return unit.results()
  tr = config.train
  k = len(data.class_names)
  y_train, y_val, y_test = data.y[split.train], data.y[split.val], data.y[split.test]
  batch_size = int(tr.batch_size)
  require(batch_size <= len(y_train), f"train.batch_size {batch_size} is larger than the {len(y_train)} training "
                                      f"patients of split {split.name}")
  spe = len(y_train) // batch_size  # drop-remainder epochs
  total = int(tr.max_epochs) * spe
  cw = class_weights(y_train, k) if tr.class_weights else np.ones(k)
  train_split = Split(images["train"], y_train.astype(np.int32))
  key = _rng(seed)
  init_key, train_key = jax.random.split(key)
  first = base.init(init_key)
  state = UnitState(first, first.params, first.batch_stats, jnp.float32(NO_LOSS), jnp.int32(0), jnp.int32(0))
  unit.start()
  name = f"{prefix}{base.name}"
  lr0, factor, every = float(tr.learning_rate), float(tr.decay_factor), int(tr.decay_every_epochs)

  def step_fn(state, step):
    lr = lr0 * factor ** ((step // spe) // every)  # staircase: halved every `every` epochs (book §12.3)
    batch = train_batch(train_split, batch_size, seed, step)
    new, metrics = base.step(state.train, batch["image"], batch["label"], np.float32(cw[batch["label"]]),
                             np.float32(lr), jax.random.fold_in(train_key, step))
    return state.replace(train=new), metrics

  def end_of_epoch(state, step, log):
    epoch = step // spe
    probs = base.probabilities(state.train.params, state.train.batch_stats, images["val"], int(tr.eval_batch_size))
    val_loss = np.float32(_cross_entropy(probs, y_val))
    m = classification_metrics(y_val, probs.argmax(-1), k)
    log.write(step, {"val_loss": val_loss, "val_accuracy": m["accuracy"], "val_f1_macro": m["f1_macro"],
                     "epoch": epoch}, prefix="eval/")
    if val_loss < np.float32(state.best_loss):
      state = state.replace(best_params=state.train.params, best_batch_stats=state.train.batch_stats,
                            best_loss=jnp.float32(val_loss), best_epoch=jnp.int32(epoch), stall=jnp.int32(0))
    else:
      state = state.replace(stall=state.stall + 1)
    if int(state.stall) >= int(tr.patience):
      logging.info("%s: early stop after epoch %d (best epoch %d, val loss %.4f)", name, epoch,
                   int(state.best_epoch), float(state.best_loss))
      raise _EarlyStop(state)
    return state

  hooks = [runner.Hook(lambda step: step % spe == 0, end_of_epoch)]
  ckpt_dir = os.path.join(unit.path, "checkpoints")
  resumed = max((int(d) for d in os.listdir(ckpt_dir) if d.isdigit()), default=None) if os.path.isdir(ckpt_dir) \
      else None
  stopped = False
  try:
    result = runner.train(state, step_fn, total, unit.path, log_every=min(int(config.log_every_steps), spe),
                          checkpoint_every=int(tr.checkpoint_every_epochs) * spe, name=name, hooks=hooks,
                          started=t0, max_checkpoints=2)
    state, rate, wall = result.state, result.steps_per_s, result.wall_time_s(t0)
    result.log.close()
  except _EarlyStop as stop:  # the wall time is this process's part of the run
    state, stopped, rate, wall = stop.state, True, None, time.time() - t0
  history = _History(os.path.join(unit.path, "history.jsonl"))
  epochs_run = max([int(r["eval/epoch"]) for r in history.records if "eval/epoch" in r], default=0)
  reporting.plot_curves(os.path.join(unit.path, "curves.png"), history,
                        [["train/loss", "eval/val_loss"], ["train/accuracy", "eval/val_accuracy"]], name)
  val_probs = base.probabilities(state.best_params, state.best_batch_stats, images["val"], int(tr.eval_batch_size))
  test_probs = base.probabilities(state.best_params, state.best_batch_stats, images["test"], int(tr.eval_batch_size))
  val = classification_metrics(y_val, val_probs.argmax(-1), k)
  metrics = _metrics(y_test, test_probs, k)
  metrics.update(val_f1_macro=val["f1_macro"], val_accuracy=val["accuracy"], val_loss=float(state.best_loss))
  return reporting.write_results(
      unit.path, config=unit_config, seed=seed, dataset=_dataset_record(data), metrics=metrics,
      wall_time_s=wall, method=base.name,
      kind="base_model", split=split.name, num_params=base.num_params, steps_per_epoch=spe,
      max_steps=total, epochs_trained=epochs_run, best_epoch=int(state.best_epoch), stopped_early=stopped,
      resumed_from_step=resumed, train_steps_per_s=rate, class_weights=cw.tolist(),
      val_labels=y_val.tolist(), val_probs=val_probs.tolist(), test_samples=[str(s) for s in data.samples[split.test]],
      test_labels=y_test.tolist(), test_probs=test_probs.tolist())


# --------------------------------------------------------------------------- baselines

def _baseline(name: str, c: float, seed: int):
  from sklearn.linear_model import LogisticRegression
  from sklearn.pipeline import make_pipeline
  from sklearn.preprocessing import StandardScaler
  from sklearn.svm import LinearSVC
  if name == "logistic_regression":
    clf = LogisticRegression(C=c, class_weight="balanced", max_iter=5000)
  else:
    clf = LinearSVC(C=c, class_weight="balanced", max_iter=20000, random_state=seed)
  return make_pipeline(StandardScaler(), clf)


def train_baseline(config, unit_config: dict, name: str, data: Expression, split: SplitIndices,
                   feats: Dict[str, np.ndarray], unit_dir: str, seed: int) -> dict:
  """Logistic regression or a linear SVM on the fitted genes (standardised on the training part;
  class_weight='balanced' = n / (K · n_c)); C from `baseline_c_grid` by validation macro-F1 (ties:
  the smaller C), refitted on the training part only."""
  t0 = time.time()
  unit = checkpoint.Workdir(unit_dir, unit_config)
  if unit.finished:
    return unit.results()
  unit.start()
  k = len(data.class_names)
  y_train, y_val, y_test = data.y[split.train], data.y[split.val], data.y[split.test]
  trials = []
  for c in sorted(float(v) for v in config.baseline_c_grid):
    clf = _baseline(name, c, seed).fit(feats["train"], y_train)
    trials.append((classification_metrics(y_val, clf.predict(feats["val"]), k)["f1_macro"], -c, clf))
  best_f1, neg_c, clf = max(trials, key=lambda t: t[:2])
  scores = clf.predict_proba(feats["test"]) if name == "logistic_regression" else clf.decision_function(feats["test"])
  scores = scores if scores.ndim == 2 else np.stack([-scores, scores], -1)  # binary decision function
  metrics = _metrics(y_test, clf.predict(feats["test"]), k, scores=scores)
  metrics.update(val_f1_macro=best_f1, C=-neg_c)
  return reporting.write_results(
      unit.path, config=unit_config, seed=seed, dataset=_dataset_record(data), metrics=metrics,
      wall_time_s=time.time() - t0, method=name, kind="baseline", split=split.name,
      c_grid=[{"C": -t[1], "val_f1_macro": t[0]} for t in trials], test_samples=[str(s) for s in data.samples[split.test]],
      test_labels=y_test.tolist(), test_pred=clf.predict(feats["test"]).tolist())


# --------------------------------------------------------------------------- the grid

def _dataset_record(data: Expression) -> dict:
  keep = ("source", "dataset", "label", "expression_scale", "gene_order", "dropped_classes", "num_samples",
          "num_genes")
  return dict({k: data.info[k] for k in keep if k in data.info}, class_names=list(data.class_names))


def unit_config(config, split: SplitIndices, method: str) -> dict:
  """What one unit depends on: data, transform, split, training (and its own model's settings)."""
  c = config.to_dict()
  out = {k: c[k] for k in ("data", "transform", "train", "head") if k in c}
  out["splits"] = dict(c["splits"], repeat=split.repeat, fold=split.fold)
  del out["splits"]["repeats"]
  out["method"] = method
  if method in BASELINES:
    out = {k: out[k] for k in ("data", "transform", "splits", "method")}
    out["baseline_c_grid"] = list(c["baseline_c_grid"])
  else:
    out["model_kwargs"] = dict(c["model_kwargs"].get(method, {}))
  return out


def unit_seed(split: SplitIndices, method_index: int) -> int:
  return 100000 * split.repeat + 100 * split.fold + method_index


def _method_dir(workdir: str, split: SplitIndices, method: str) -> str:
  return os.path.join(workdir, f"repeat_{split.repeat}", f"fold_{split.fold}", method)


def run(config, workdir: str, docs_dir: Optional[str] = None) -> dict:
  """Trains every unit that has no results.json yet (base models, baselines), then writes the report."""
  t0 = time.time()
  validate_config(config)
  data = load_expression(config.data)
  splits = make_splits(data.y, data.groups, int(config.splits.n_folds), tuple(config.splits.repeats),
                       float(config.splits.val_fraction))
  grid = checkpoint.Workdir(workdir, config.to_dict(), ignore=GRID_KEYS)
  methods = list(config.base_models) + list(config.baselines)
  todo = [(s, m) for s in splits for m in methods
          if not os.path.exists(os.path.join(_method_dir(workdir, s, m), "results.json"))]
  bases: Dict[str, BaseModel] = {}
  if todo:
    shape = fit_transform(data, splits[0].train, config.transform).transform(data.x[:1]).shape[1:]
    for m in config.base_models:  # builds and checks every model before anything is written
      bases[m] = BaseModel(m, config.model_kwargs.get(m, {}), len(data.class_names), shape, config.head)
  grid.start()
  logging.info("pancancer: %d samples, %d classes %s, %d splits x %d methods, %d units to run", len(data.y),
               len(data.class_names), list(data.class_names), len(splits), len(methods), len(todo))
  done = 0
  for split in splits:
    mine = [m for (s, m) in todo if s is split]
    if not mine:
      continue
    fitted = fit_transform(data, split.train, config.transform)
    images = {part: fitted.transform(data.x[getattr(split, part)]) for part in ("train", "val", "test")}
    for m in mine:
      index = methods.index(m)
      cfg = unit_config(config, split, m)
      cfg["transform_fitted"] = {"genes": len(fitted.genes), "side": fitted.side}
      if m in BASELINES:
        train_baseline(config, cfg, m, data, split, {p: gene_features(fitted, v) for p, v in images.items()},
                       _method_dir(workdir, split, m), unit_seed(split, index))
      else:
        train_base_model(config, cfg, bases[m], data, split, images, _method_dir(workdir, split, m),
                         unit_seed(split, index), prefix=f"{split.name} ")
      done += 1
      logging.info("pancancer: unit %d/%d done (%s %s), %s elapsed", done, len(todo), split.name, m,
                   reporting.format_duration(time.time() - t0))
  from dlbook.medical.pancancer_report import write_report
  return write_report(config, workdir, data, splits, docs_dir, wall_time_s=time.time() - t0)


def report_only(config, workdir: str, docs_dir: Optional[str] = None) -> dict:
  """Regenerates the report from the finished units (nothing trains)."""
  validate_config(config)
  data = load_expression(config.data)
  splits = make_splits(data.y, data.groups, int(config.splits.n_folds), tuple(config.splits.repeats),
                       float(config.splits.val_fraction))
  from dlbook.medical.pancancer_report import write_report
  return write_report(config, workdir, data, splits, docs_dir)
