"""Leukaemia, ALL against healthy (HEM) cells (seed 003, *Leukaemia Detection Using MobileNet V2*).

The thesis fine-tunes an ImageNet MobileNetV2 (head: global average pooling -> dropout 0.25 -> one
sigmoid output, binary cross-entropy), with VGG19, InceptionV3 and ResNet101V2 as baselines, Adam
lr 0.01 with cosine decay, batch 32, 3 folds of C-NMC 2019 (`dlbook.data.medical_images.cnmc`), and
reports accuracy and weighted F1 (thesis Table 5.2). Here, per model:

- ``independent`` folds (the default): one fresh network per fold, trained on the other folds and
  validated on its own; the preliminary test set is scored by every fold model and by their ensemble
  (the mean of the fold models' probabilities).
- ``sequential`` folds (the thesis's procedure, an option): ONE network trained fold after fold, its
  learning-rate schedule restarting each fold; fold k is validated after training on the others, but
  it was already trained on in the earlier folds' segments, which inflates validation (the leak the
  table shows against independent folds).

Metrics (`dlbook.metrics.binary_metrics`, class 1 = ALL positive): accuracy, weighted F1, binary F1,
precision, recall, specificity, ROC-AUC, and subject-level accuracy (`subject_level`: the mean
probability of each subject's cells). Folds are subject-disjoint: the published fold assignment when
the source has one (C-NMC), else subject-grouped stratified folds; both are checked.

Units on the shared runner: `workdir/<model>/independent/fold_<k>/` and `workdir/<model>/sequential/`,
each resumable; the report (`results.json`, `table.md`) is over their results.json. A stand-in
dataset (`dlbook.data.standins`) is named as such in every output.
"""

import os
import time
from typing import Dict, List

import numpy as np
from absl import logging

from dlbook import models
from dlbook.data.pipeline import Split
from dlbook.data.sources import load_raw
from dlbook.data.splits import check_groups_disjoint, patient_folds
from dlbook.errors import require
from dlbook.tables import STD_NOTE, mean_std
from dlbook.training import checkpoint, reporting, transfer

MODES = ("independent", "sequential")
METRICS = ("accuracy", "f1_weighted", "f1", "precision", "recall", "specificity", "roc_auc", "subject_accuracy")
REPORT_KEYS = ("models", "modes", "log_every_steps", "report_to")


def validate_config(config) -> None:
  """Every bad value raises a one-line DlbookError naming the key, before anything is written."""
  names = tuple(config.models)
  require(len(names) > 0, "models must name at least one backbone")
  for name in names:
    require(name in models.names(), f"unknown model {name!r} in models; valid: {', '.join(models.names())}")
  require(len(config.modes) > 0 and all(m in MODES for m in config.modes),
          f"modes must be a non-empty subset of {MODES}, got {tuple(config.modes)}")
  transfer.validate_fold_settings(config)
  for name in config.weights:
    require(name in names, f"weights.{name}: {name!r} is not one of models {names}")


# ------------------------------------------------------------------------------------ data

class Data:
  """Training cells with their subjects, the subject-disjoint folds, and the preliminary test set."""

  def __init__(self, config):
    c = config.data
    options = dict(c.options.to_dict()) if "options" in c else {}
    raw = load_raw(c.name, data_dir=c.get("data_dir"), **options)
    require(raw.x_train.ndim == 4, f"dataset {c.name!r} is not an image set")
    require(set(np.unique(raw.y_train)) <= {0, 1} and set(np.unique(raw.y_test)) <= {0, 1},
            f"dataset {c.name!r} is not binary (labels 0 = HEM / negative, 1 = ALL / positive)")
    require(raw.groups_train is not None and raw.groups_test is not None,
            f"dataset {c.name!r} names no subjects; the leukaemia pipeline needs subject-disjoint folds")
    size = int(config.image_size)
    prep = lambda x: transfer.rgb_images(x, raw.max_value, size)  # noqa: E731
    self.x, self.y, self.groups = prep(raw.x_train), raw.y_train.astype(np.int32), np.asarray(raw.groups_train)
    self.test = Split(prep(raw.x_test), raw.y_test.astype(np.int32), np.asarray(raw.groups_test))
    self.folds, self.fold_source = patient_folds(self.y, self.groups, raw.folds_train, int(config.num_folds),
                                                 int(config.split_seed), unit="subject")
    check_groups_disjoint(np.concatenate([self.groups, self.test.groups]),
                          {"training": np.arange(len(self.y)), "test": len(self.y) + np.arange(len(self.test))})
    self.class_names = tuple(raw.class_names)
    self.stand_in = raw.info.get("stand_in", "")
    self.info = dict(raw.info, name=c.name, image_size=size, train_size=int(len(self.y)),
                     test_size=int(len(self.test)), num_subjects_train=int(len(set(self.groups))),
                     num_subjects_test=int(len(set(self.test.groups))), folds=self.fold_source,
                     fold_sizes=[int(len(va)) for _, va in self.folds])

  def split(self, idx) -> Split:
    return Split(self.x[idx], self.y[idx], self.groups[idx])


# ------------------------------------------------------------------------------------ units

def _network(config, model_name: str, seed: int, image_size: int) -> transfer.Network:
  return transfer.build_network(model_name, num_outputs=1, image_size=image_size,
                                weights_spec=config.weights.get(model_name, ""), dropout=float(config.dropout),
                                backbone_kwargs=config.backbone.get(model_name, {}), seed=seed)


def _unit_config(config, model_name: str, mode: str, fold=None):
  c = config.copy_and_resolve_references()
  with c.unlocked():
    for k in ("models", "modes", "report_to"):
      del c[k]
    c.model_name, c.mode = model_name, mode
    weights, backbone = c.weights.get(model_name, ""), c.backbone.get(model_name, {})
    del c["weights"], c["backbone"]
    c.weights, c.backbone = weights, backbone
    if fold is not None:
      c.fold = int(fold)
  return c


def _fit_kwargs(config, seed: int, t0: float, name: str) -> dict:
  return dict(batch_size=int(config.batch_size), seed=seed, augment_config=config.augment, num_classes=2,
              eval_batch_size=int(config.eval_batch_size), eval_every=int(config.eval_every_steps),
              log_every=int(config.log_every_steps), checkpoint_every=int(config.checkpoint_every_steps),
              max_checkpoints=int(config.max_checkpoints), started=t0, name=name)


def _finish(unit, config, cfg, data: Data, net, fit, val: List[dict], seed: int, t0: float, **extra) -> dict:
  test, probs = transfer.evaluate(net, fit.state, data.test, int(config.eval_batch_size), 2)
  fit.result.log.write(fit.result.total_steps, transfer.scalars(test), prefix="test/")
  title = f"{cfg.model_name}, {cfg.mode}" + (f" fold {cfg.fold}" if "fold" in cfg else "") + \
      (f" ({data.stand_in})" if data.stand_in else "")
  transfer.write_outputs(unit.path, fit.result.log, test, data.class_names, title)
  fit.result.log.close()
  transfer.save_predictions(unit.path, test_probs=probs)
  return reporting.write_results(
      unit.path, config=cfg, seed=seed, dataset=data.info, stand_in=data.stand_in, val=val,
      test={k: test[k] for k in METRICS if k in test}, test_confusion_matrix=test["confusion_matrix"],
      metrics={f"test_{k}": test[k] for k in METRICS if k in test}, network=net.info(),
      wall_time_s=fit.result.wall_time_s(t0), total_steps=fit.result.total_steps,
      resumed_from_step=fit.result.start_step, train_steps_per_s=fit.result.steps_per_s, **extra)


def run_independent(config, model_name: str, fold: int, data: Data, workdir: str) -> dict:
  t0 = time.time()
  cfg = _unit_config(config, model_name, "independent", fold)
  unit = checkpoint.Workdir(os.path.join(workdir, model_name, "independent", f"fold_{fold}"), cfg.to_dict())
  if unit.finished:
    return unit.results()
  seed = int(config.seed) + fold
  net = _network(config, model_name, seed, data.x.shape[1])
  steps = int(config.steps_per_fold)
  state, prefixes = transfer.make_state(net, config.optimizer, steps, freeze_blocks=int(config.freeze_blocks))
  tr, va = data.folds[fold]
  unit.start()
  fit = transfer.fit(net, state, prefixes, [transfer.Segment(data.split(tr), steps)], unit.path,
                     **_fit_kwargs(config, seed, t0, f"{model_name}/independent/fold_{fold}"))
  val, _ = transfer.evaluate(net, fit.state, data.split(va), int(config.eval_batch_size), 2)
  fit.result.log.write(steps, transfer.scalars(val), prefix="val/")
  return _finish(unit, config, cfg, data, net, fit, [{k: val[k] for k in METRICS if k in val}], seed, t0, fold=fold)


def run_sequential(config, model_name: str, data: Data, workdir: str) -> dict:
  """One network, fold after fold (the thesis): segment k trains on the other folds and validates on k."""
  t0 = time.time()
  cfg = _unit_config(config, model_name, "sequential")
  unit = checkpoint.Workdir(os.path.join(workdir, model_name, "sequential"), cfg.to_dict())
  if unit.finished:
    return unit.results()
  seed = int(config.seed)
  net = _network(config, model_name, seed, data.x.shape[1])
  steps, k = int(config.steps_per_fold), len(data.folds)
  state, prefixes = transfer.make_state(net, config.optimizer, steps * k, freeze_blocks=int(config.freeze_blocks),
                                        cycles=k)
  segments = [transfer.Segment(data.split(tr), steps, data.split(va)) for tr, va in data.folds]
  unit.start()
  fit = transfer.fit(net, state, prefixes, segments, unit.path,
                     **_fit_kwargs(config, seed, t0, f"{model_name}/sequential"))
  val = [{m: s[m] for m in METRICS if m in s} for s in fit.segment_metrics]
  return _finish(unit, config, cfg, data, net, fit, val, seed, t0)


# ------------------------------------------------------------------------------------ report

def _mean(values) -> float:
  vals = [float(v) for v in values if v is not None]
  return float(np.mean(vals)) if vals else float("nan")


def _row(label: str, values: Dict[str, list], stand_in: str) -> str:
  cells = [mean_std(values.get(m, []), digits=2, scale=100.0) for m in METRICS]
  return f"| {label} | " + " | ".join(cells) + " |"


def table_markdown(config, data_info: dict, runs: Dict[str, dict], command: str) -> str:
  stand_in = data_info.get("stand_in", "")
  what = f"**{stand_in}**: {data_info.get('description', '')}" if stand_in else data_info.get("source", "")
  lines = [f"Leukaemia ALL vs HEM pipeline on {data_info['name']} ({what}); {data_info['train_size']} training "
           f"cells of {data_info['num_subjects_train']} subjects in {len(data_info['fold_sizes'])} "
           f"{data_info['folds']}, {data_info['test_size']} test cells of {data_info['num_subjects_test']} "
           f"subjects; {data_info['image_size']} px, {config.steps_per_fold} steps of batch {config.batch_size} "
           f"per fold. Percent; fold rows: {STD_NOTE.replace('seeds', 'folds')}.", "",
           f"Generated by `{command}`.", "",
           "| model / evaluation | " + " | ".join(METRICS) + " |", "|---" * (len(METRICS) + 1) + "|"]
  for name in config.models:
    if "independent" in config.modes:
      folds = [runs[f"{name}/independent/fold_{k}"] for k in range(len(data_info["fold_sizes"]))]
      lines.append(_row(f"{name} independent: validation (per fold)",
                        {m: [f["val"][0].get(m) for f in folds] for m in METRICS}, stand_in))
      lines.append(_row(f"{name} independent: test (per fold model)",
                        {m: [f["test"].get(m) for f in folds] for m in METRICS}, stand_in))
      ens = runs[f"{name}/independent/ensemble"]
      lines.append(_row(f"{name} independent: test, fold ensemble", {m: [ens.get(m)] for m in METRICS}, stand_in))
    if "sequential" in config.modes:
      seq = runs[f"{name}/sequential"]
      lines.append(_row(f"{name} sequential (thesis): validation (per fold)",
                        {m: [v.get(m) for v in seq["val"]] for m in METRICS}, stand_in))
      lines.append(_row(f"{name} sequential (thesis): test", {m: [seq["test"].get(m)] for m in METRICS}, stand_in))
      if "independent" in config.modes:  # the leak: validation of sequential minus independent folds
        gap = {m: _mean([v.get(m) for v in seq["val"]]) - _mean([f["val"][0].get(m) for f in folds]) for m in METRICS}
        lines.append(f"| {name}: sequential − independent validation (points) | "
                     + " | ".join(f"{100 * gap[m]:+.2f}" for m in METRICS) + " |")
  lines += ["", "Single values (ensemble, sequential test) are one model's figures, not a mean."]
  if stand_in:
    lines += ["", f"All figures are on {stand_in}, not on C-NMC 2019 cells."]
  return "\n".join(lines) + "\n"


def train_and_evaluate(config, workdir: str) -> dict:
  """Every unit that has not finished, then the report; returns the report payload."""
  t0 = time.time()
  validate_config(config)
  top = checkpoint.Workdir(workdir, config.to_dict(), ignore=REPORT_KEYS)
  for name in config.models:
    transfer.resolve_weights(name, config.weights.get(name, ""))
  data = Data(config)
  top.start()
  runs = {}
  for name in config.models:
    if "independent" in config.modes:
      probs = []
      for k in range(len(data.folds)):
        r = run_independent(config, name, k, data, top.path)
        runs[f"{name}/independent/fold_{k}"] = r
        probs.append(transfer.load_predictions(os.path.join(top.path, name, "independent", f"fold_{k}"))["test_probs"])
        logging.info("%s fold %d: validation accuracy %.4f", name, k, r["val"][0]["accuracy"])
      ens = transfer.metrics_of(np.mean(probs, axis=0), data.test.labels, data.test.groups)
      runs[f"{name}/independent/ensemble"] = {m: ens[m] for m in METRICS if m in ens}
    if "sequential" in config.modes:
      runs[f"{name}/sequential"] = run_sequential(config, name, data, top.path)
  command = transfer.report_command()
  table = table_markdown(config, data.info, runs, command)
  transfer.write_table(top, table, config.get("report_to"))
  summary = {k: ({"val": v["val"], "test": v["test"]} if "val" in v else v) for k, v in runs.items()}
  payload = dict(reporting.run_info(), config=config.to_dict(), dataset=data.info, stand_in=data.stand_in,
                 summary=summary, table=table, wall_time_s=time.time() - t0)
  reporting.write_json_atomic(top.join("results.json"), payload)
  return payload
