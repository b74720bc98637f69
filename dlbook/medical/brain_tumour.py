"""Brain tumour classification with a lightweight transfer-learned MobileNetV3 (book §9.4, ch. 13).

The book fine-tunes "MobileNet V3" on the Figshare T1-CE slices (Cheng et al.: meningioma, glioma,
pituitary; 3,064 slices of 233 patients) after median and Wiener denoising, 224 px resizing,
normalisation and rotation/flip augmentation, with global average pooling, fully connected layers
and a softmax, and reports accuracy 96.90 % and per-class precision/recall (Fig. 13.4). Here:

- data: ``figshare_brain`` (`dlbook.data.medical_images`; give ``data.data_dir``), or a stand-in
  source named as such in every output. Pipeline: median 3×3 → Wiener 5×5 (``denoise``, a switch;
  on the native slice) → min-max → resize → 3 channels (`transfer.rgb_images`) → the backbone's input
  normalisation (`transfer.TransferNet`) → training-only rotation and flip (``augment``).
- splits: **patient-grouped** cross-validation over every slice: the 5 folds of ``cvind.mat`` when
  the folder has it (else ``folds='grouped'``: grouped stratified folds on PID); each fold is trained
  on the others and tested on itself, and every split is checked to be patient-disjoint.
- model: MobileNetV3-Large (`transfer.build_network`): its own GAP → dense 1280 (hard-swish; the
  ``head_fc`` of the weight file) → dropout → a new dense softmax layer over the 3 classes.
  Weights: a user's file (torchvision / Keras / dlbook layout, `dlbook.models.weights`), or, where no
  ImageNet file exists, a stand-in backbone pretrained here on another real dataset (``pretrain``:
  `transfer.pretrain`), or random initialisation.
- report: per fold and mean ± sample std, per-class precision/recall/F1, macro averages,
  one-vs-rest ROC-AUC, the pooled out-of-fold confusion matrix, the model's size, multiplications
  and CPU latency (`transfer.model_cost`), Grad-CAM maps (`dlbook.medical.gradcam`) of a few held-out
  slices and, with Figshare files, the fraction of Grad-CAM mass inside ``tumorMask`` for every
  held-out slice; next to the book's figures, whose printed F-scores are checked against its P/R.

Units on the shared runner: ``workdir/pretrain/`` (when used) and ``workdir/fold_<k>/``, each
resumable; ``cost.json`` once; the report (``results.json``, ``table.md``, pictures) over them.
"""

import os
import time
import types
from typing import Dict, List, Optional

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from dlbook import models
from dlbook.data import pipeline
from dlbook.data.medical_images import figshare_masks
from dlbook.data.pipeline import Split
from dlbook.data.sources import load_raw
from dlbook.data.splits import check_groups_disjoint, patient_folds
from dlbook.data.transforms import denoise_images
from dlbook.errors import require
from dlbook.medical import gradcam as gc
from dlbook.metrics import confusion_matrix, per_class_report, roc_auc_ovr
from dlbook.tables import STD_NOTE, mean_std
from dlbook.training import checkpoint, reporting, transfer

DENOISE_STEPS = ("median", "wiener")
METRICS = ("accuracy", "precision_macro", "recall_macro", "f1_macro", "roc_auc_macro")
# Book §13 (Fig. 13.4 and its text; Table 13.2): Figshare, MobileNet V3. (precision, recall, printed F-score)
BOOK_ACCURACY = 96.90
BOOK_PER_CLASS = {"glioma": (95.02, 96.87, 95.42), "meningioma": (96.77, 91.6, 90.56),
                  "pituitary": (89.93, 97.81, 92.80)}
REPORT_KEYS = ("log_every_steps", "cost_image_size", "latency_repeats", "latency_warmup")


def validate_config(config) -> None:
  """Every bad value raises a one-line DlbookError naming the key, before anything is written."""
  require(config.model in models.names(), f"unknown backbone {config.model!r} in model; valid: "
          f"{', '.join(models.names())}")
  transfer.validate_fold_settings(config)
  require(config.folds in ("cvind", "grouped"), f"folds must be 'cvind' or 'grouped', got {config.folds!r}")
  p = config.pretrain
  require(int(p.steps) >= 0, f"pretrain.steps must be >= 0, got {p.steps}")
  require(not (int(p.steps) > 0 and config.weights), "set either weights (a file) or pretrain.steps > 0 "
          "(a stand-in backbone pretrained here), not both")
  require(int(config.gradcam.images) >= 0, f"gradcam.images must be >= 0, got {config.gradcam.images}")
  for key in ("cost_image_size", "latency_repeats"):
    require(int(config[key]) > 0, f"{key} must be positive, got {config[key]}")


# ------------------------------------------------------------------------------------ data

def _source(config):
  """(dataset name for load_raw, options, Figshare folder or None)."""
  c = config.data
  options = dict(c.options.to_dict()) if "options" in c else {}
  name = c.name
  if name == "figshare_brain":
    require(bool(c.get("data_dir")), "data.data_dir must name the Figshare folder (the N.mat files and "
            "cvind.mat) for data.name='figshare_brain'")
    name = f"figshare_brain:{c.data_dir}"
  if name.startswith("figshare_brain:"):
    options.update(image_size=int(config.image_size), folds=config.folds,
                   denoise_steps=DENOISE_STEPS if config.denoise else ())
    return name, options, name.split(":", 1)[1]
  return name, options, None


class Data:
  """Every slice with its patient and label, and the patient-disjoint cross-validation folds."""

  def __init__(self, config):
    name, options, self.figshare_dir = _source(config)
    raw = load_raw(name, data_dir=config.data.get("data_dir"), **options)
    require(raw.x_train.ndim == 4, f"dataset {name!r} is not an image set")
    require(raw.groups_train is not None and raw.groups_test is not None,
            f"dataset {name!r} names no patients; the brain-tumour pipeline needs patient-grouped folds")
    size = int(config.image_size)
    x = transfer.rgb_images(np.concatenate([raw.x_train, raw.x_test]), raw.max_value, size)
    if config.denoise and self.figshare_dir is None:  # Figshare slices were denoised at native size by the loader
      x = np.repeat(denoise_images(x[..., :1], DENOISE_STEPS), 3, axis=-1)
    self.x = x
    self.y = np.concatenate([raw.y_train, raw.y_test]).astype(np.int32)
    self.groups = np.concatenate([raw.groups_train, raw.groups_test]).astype(str)
    self.samples = (None if raw.samples_train is None else
                    np.concatenate([raw.samples_train, raw.samples_test]))
    assignment = None
    if raw.folds_train is not None:  # the published folds: the loader's test fold is one of them
      assignment = np.concatenate([raw.folds_train, np.full(len(raw.y_test), raw.info["test_fold"])])
    self.folds, self.fold_source = patient_folds(self.y, self.groups, assignment, int(config.num_folds),
                                                 int(config.split_seed))
    if assignment is not None:  # cvind.mat, or the loader's grouped folds on PID
      self.fold_source = raw.info.get("folds", self.fold_source)
    check_groups_disjoint(self.groups, {f"fold {k}": va for k, (_, va) in enumerate(self.folds)})
    self.class_names = tuple(raw.class_names)
    self.num_classes = len(self.class_names)
    self.stand_in = raw.info.get("stand_in", "")
    self.info = dict(raw.info, name=config.data.name, image_size=size, num_images=int(len(self.y)),
                     num_patients=int(len(set(self.groups))), folds=self.fold_source,
                     fold_sizes=[int(len(va)) for _, va in self.folds],
                     class_counts=np.bincount(self.y, minlength=self.num_classes).tolist(),
                     denoise=list(DENOISE_STEPS) if config.denoise else [])

  def split(self, idx) -> Split:
    return Split(self.x[idx], self.y[idx], self.groups[idx])

  def masks(self, idx) -> Optional[np.ndarray]:
    """Tumour masks at the training size (Figshare files only), else None."""
    if self.figshare_dir is None or self.samples is None:
      return None
    return figshare_masks(self.figshare_dir, self.samples[idx], self.x.shape[1])


# ------------------------------------------------------------------------------------ units

def _network(config, weights_path: Optional[str], seed: int, num_classes: int) -> transfer.Network:
  return transfer.build_network(config.model, num_outputs=num_classes, image_size=int(config.image_size),
                                weights_spec=weights_path or "", dropout=float(config.dropout),
                                backbone_kwargs=config.backbone.to_dict(), seed=seed)


def pretrained_weights(config, workdir: str) -> Optional[str]:
  """The weight file: the user's (`weights`), the stand-in pretrained here (`pretrain`), or None."""
  if config.weights:
    return transfer.resolve_weights(config.model, config.weights)
  p = config.pretrain
  if int(p.steps) == 0:
    return None
  dataset = pipeline.load(p.data, seed=int(config.seed))
  path, result = transfer.pretrain(config.model, dataset, os.path.join(workdir, "pretrain"), steps=int(p.steps),
                                   batch_size=int(p.batch_size), optimizer_config=p.optimizer,
                                   seed=int(config.seed), backbone_kwargs=config.backbone.to_dict(),
                                   dropout=float(config.dropout), augment_config=p.augment,
                                   log_every=int(config.log_every_steps),
                                   checkpoint_every=int(config.checkpoint_every_steps))
  logging.info("pretrained %s on %s: test accuracy %.4f", config.model, p.data.name, result["metrics"]["test_accuracy"])
  return path


def _gradcam_fn(net: transfer.Network, layer: str):
  return transfer._cached(("gradcam", net.key, layer), lambda: jax.jit(
      lambda params, batch_stats, x: gc.gradcam(net.model, {"params": params, "batch_stats": batch_stats}, x,
                                                layer, train=False)))


def gradcam_maps(net: transfer.Network, state, images: np.ndarray, layer: str, batch_size: int):
  """(maps [N, H, W] in [0, 1] at the input size, target classes = the predicted ones)."""
  fn = _gradcam_fn(net, layer)
  cams, cls = [], []
  for batch in pipeline.eval_batches(Split(images, np.zeros(len(images), np.int32)), batch_size):
    keep = batch["mask"] > 0
    c, k = fn(state.params, state.batch_stats, jnp.asarray(batch["image"]))
    cams.append(np.asarray(c)[keep])
    cls.append(np.asarray(k)[keep])
  return np.concatenate(cams), np.concatenate(cls)


def _pick(labels: np.ndarray, n: int, num_classes: int) -> np.ndarray:
  """Up to n indices, taking the classes in turn (the first of each class, then the second, ...)."""
  by_class = [list(np.flatnonzero(labels == c)) for c in range(num_classes)]
  out: List[int] = []
  while len(out) < n and any(by_class):
    for c in range(num_classes):
      if by_class[c] and len(out) < n:
        out.append(int(by_class[c].pop(0)))
  return np.asarray(out, np.int64)


def _fold_metrics(probs: np.ndarray, labels: np.ndarray, class_names) -> dict:
  k = len(class_names)
  m = transfer.metrics_of(probs, labels, num_classes=k)
  m.update(roc_auc_ovr(labels, probs))
  m["per_class"] = per_class_report(labels, probs.argmax(axis=1), k, class_names)
  for row, auc in zip(m["per_class"], m["roc_auc_per_class"]):
    row["roc_auc"] = auc
  return m


def _unit_config(config, fold: int, weights_path: Optional[str]):
  c = config.copy_and_resolve_references()
  with c.unlocked():
    for k in REPORT_KEYS + ("pretrain",):  # the weight file stands for the pretraining
      del c[k]
    c.fold = int(fold)
    c.weights = weights_path or ""
  return c


def run_fold(config, fold: int, data: Data, weights_path: Optional[str], workdir: str) -> dict:
  """One cross-validation fold: train on the other folds, test on this one (a resumable unit)."""
  t0 = time.time()
  cfg = _unit_config(config, fold, weights_path)
  unit = checkpoint.Workdir(os.path.join(workdir, f"fold_{fold}"), cfg.to_dict())
  if unit.finished:
    return unit.results()
  seed = int(config.seed) + fold
  k = data.num_classes
  net = _network(config, weights_path, seed, k)
  steps = int(config.steps_per_fold)
  state, prefixes = transfer.make_state(net, config.optimizer, steps, freeze_blocks=int(config.freeze_blocks))
  tr, te = data.folds[fold]
  unit.start()
  fit = transfer.fit(net, state, prefixes, [transfer.Segment(data.split(tr), steps)], unit.path,
                     batch_size=int(config.batch_size), seed=seed, augment_config=config.augment, num_classes=k,
                     eval_batch_size=int(config.eval_batch_size), eval_every=int(config.eval_every_steps),
                     log_every=int(config.log_every_steps), checkpoint_every=int(config.checkpoint_every_steps),
                     max_checkpoints=int(config.max_checkpoints), started=t0, name=f"fold_{fold}")
  test_split = data.split(te)
  probs = transfer.predict(net, fit.state, test_split, int(config.eval_batch_size))
  test = _fold_metrics(probs, test_split.labels, data.class_names)
  fit.result.log.write(steps, transfer.scalars(test), prefix="test/")
  title = f"{config.model} fold {fold}" + (f" ({data.stand_in})" if data.stand_in else "")
  transfer.write_outputs(unit.path, fit.result.log, test, data.class_names, title)
  fit.result.log.close()
  extra = {}
  arrays = dict(test_probs=probs, test_labels=test_split.labels, test_index=te)
  layer, bs = config.gradcam.layer, int(config.eval_batch_size)
  masks = data.masks(te)
  if masks is not None:  # every held-out slice: how much of the map falls on the tumour
    cams, cls = gradcam_maps(net, fit.state, test_split.images, layer, bs)
    overlap = gc.mask_overlap(cams, masks)
    extra["gradcam_overlap"] = {key: float(np.nanmean(v)) for key, v in overlap.items()}
    arrays.update(gradcam_mass_in_mask=np.asarray(overlap["mass_in_mask"]))
  n = int(config.gradcam.images)
  if n:
    pick = _pick(test_split.labels, n, k)
    cams, cls = gradcam_maps(net, fit.state, test_split.images[pick], layer, bs)
    arrays.update(gradcam_index=te[pick], gradcam_maps=cams, gradcam_class=cls)
    if masks is not None:
      arrays.update(gradcam_masks=masks[pick])
  transfer.save_predictions(unit.path, **arrays)
  return reporting.write_results(
      unit.path, config=cfg, seed=seed, dataset=data.info, stand_in=data.stand_in, fold=fold,
      test={key: test[key] for key in METRICS + ("f1_weighted", "loss")}, per_class=test["per_class"],
      roc_auc_per_class=test["roc_auc_per_class"], test_confusion_matrix=test["confusion_matrix"],
      metrics={f"test_{key}": test[key] for key in METRICS}, network=net.info(),
      wall_time_s=fit.result.wall_time_s(t0), total_steps=fit.result.total_steps,
      resumed_from_step=fit.result.start_step, train_steps_per_s=fit.result.steps_per_s, **extra)


def model_cost(config, net: transfer.Network, path: str) -> dict:
  """`transfer.model_cost` of the network (at `cost_image_size`; the variables do not depend on the
  size, global average pooling), measured once into `path`. With depthwise convolutions lowered as
  taps, also the same network with grouped convolutions (same variables and outputs): XLA counts the
  taps' multiplications of the zero padding too, the convolution's only those inside the image."""
  if os.path.isfile(path):
    import json
    with open(path) as f:
      return json.load(f)
  measure = lambda n: transfer.model_cost(n, net.variables, int(config.cost_image_size),  # noqa: E731
                                          int(config.latency_repeats), int(config.latency_warmup))
  cost = dict(measure(net), model=config.model, backbone=config.backbone.to_dict())
  if config.backbone.get("depthwise") == "taps":
    conv = net.model.clone(backbone=net.model.backbone.clone(depthwise="conv"))
    cost["grouped_conv"] = measure(types.SimpleNamespace(model=conv))
  reporting.write_json_atomic(path, cost)
  return cost


# ------------------------------------------------------------------------------------ report

def implied_f1(precision: float, recall: float) -> float:
  """The harmonic mean 2PR / (P + R), the F-score that a precision and a recall determine."""
  return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def _cells(values, digits=2, scale=100.0):
  """mean ± std over the folds where the value is defined (a class absent from a fold has no ROC-AUC)."""
  return mean_std([v for v in values if v is not None and np.isfinite(v)], digits=digits, scale=scale)


def table_markdown(config, data: Data, runs: List[dict], pooled: dict, cost: dict, command: str,
                   pictures: Dict[str, str]) -> str:
  info, stand_in = data.info, data.stand_in
  what = f"**{stand_in}**: {info.get('description', '')}" if stand_in else f"Figshare slices from {info['source']}"
  weights = ("a backbone pretrained here on " + config.pretrain.data.name + f" ({int(config.pretrain.steps)} "
             f"steps; a stand-in for ImageNet weights)" if int(config.pretrain.steps) else
             (f"weights from {os.path.basename(config.weights)}" if config.weights else "random initialisation"))
  k = len(runs)
  lines = [f"Brain-tumour pipeline (book ch. 13) on {info['name']} ({what}); {info['num_images']} images of "
           f"{info['num_patients']} {'pseudo-' if stand_in else ''}patients, class counts {info['class_counts']}; "
           f"cross-validation over {k} folds ({info['folds']}; every image tested once, patient-disjoint); "
           f"{config.model} ({weights}), "
           f"{info['image_size']} px, denoising {' → '.join(info['denoise']) or 'off'}, {config.steps_per_fold} "
           f"steps of batch {config.batch_size} per fold. Percent; fold columns: "
           f"{STD_NOTE.replace('seeds', 'folds')}.", "", f"Generated by `{command}`.", "",
           "| metric | per fold (mean ± std) | pooled out-of-fold | book (Figshare, MobileNet V3) |",
           "|---|---|---|---|"]
  for m in METRICS:
    book = f"{BOOK_ACCURACY:.2f}" if m == "accuracy" else "—"
    pooled_v = pooled.get(m)
    lines.append(f"| {m} | {_cells([r['test'][m] for r in runs])} | "
                 f"{'—' if pooled_v is None else f'{100 * pooled_v:.2f}'} | {book} |")
  lines += ["", "Per class (per fold mean ± std; ROC-AUC one-vs-rest):", "",
            "| class | precision | recall | F1 | ROC-AUC | support (all folds) |", "|---|---|---|---|---|---|"]
  for c, name in enumerate(data.class_names):
    rows = [r["per_class"][c] for r in runs]
    lines.append(f"| {name} | {_cells([x['precision'] for x in rows])} | {_cells([x['recall'] for x in rows])} | "
                 f"{_cells([x['f1'] for x in rows])} | {_cells([x['roc_auc'] for x in rows])} | "
                 f"{sum(x['support'] for x in rows)} |")
  cm = np.asarray(pooled["confusion_matrix"])
  lines += ["", "Pooled out-of-fold confusion matrix (rows: true class, columns: predicted):", "",
            "| true \\ predicted | " + " | ".join(data.class_names) + " |", "|---" * (len(cm) + 1) + "|"]
  for name, row in zip(data.class_names, cm):
    lines.append(f"| {name} | " + " | ".join(str(int(v)) for v in row) + " |")
  lines += ["", "The book's per-class figures (Figshare; Fig. 13.4 and its text) and the F-score their precision "
            "and recall imply:", "",
            "| class | precision | recall | F-score printed | 2PR/(P+R) | printed − implied |",
            "|---|---|---|---|---|---|"]
  for name, (p, r, f) in BOOK_PER_CLASS.items():
    f1 = implied_f1(p, r)
    lines.append(f"| {name} | {p:.2f} | {r:.2f} | {f:.2f} | {f1:.2f} | {f - f1:+.2f} |")
  lines += ["", f"Model cost ({cost['model']}, {data.num_classes} outputs, at {cost['image_size']} px; latency: median "
            f"of {cost['latency_repeats']} calls at batch 1 after {cost['latency_warmup']} warm-up calls, "
            f"{cost['cpu_count']} CPU cores at load average {cost['load_avg_1min']:.1f}):", "",
            "| depthwise convolutions | parameters | size (MB, float32) | multiplications (XLA flops / 2) | "
            "CPU latency per image (ms) |", "|---|---|---|---|---|"]
  variants = [(f"{cost['backbone'].get('depthwise', 'conv')} (as trained)", cost)]
  if "grouped_conv" in cost:
    variants.append(("grouped conv (same variables)", cost["grouped_conv"]))
  for label, c in variants:
    lines.append(f"| {label} | {c['parameters']:,} | {c['size_mb']:.2f} | {c['macs_xla'] / 1e6:.1f} M | "
                 f"{c['latency_ms_median']:.2f} |")
  overlaps = [r["gradcam_overlap"] for r in runs if "gradcam_overlap" in r]
  if overlaps:
    lines += ["", f"Grad-CAM at `{config.gradcam.layer}` (predicted class) against `tumorMask`, every held-out "
              "slice, per fold mean ± std: fraction of the map's mass inside the mask "
              f"{_cells([o['mass_in_mask'] for o in overlaps])} %, the mask's share of the image (a uniform "
              f"map's score) {_cells([o['mask_area_fraction'] for o in overlaps])} %, ratio "
              f"{_cells([o['ratio'] for o in overlaps], scale=1.0)}."]
  for label, path in pictures.items():
    lines += ["", f"{label}: `{path}`."]
  if stand_in:
    lines += ["", f"All measured figures are on {stand_in}, not on Figshare brain MR slices; the book's columns "
              "are its Figshare figures, not comparable."]
  return "\n".join(lines) + "\n"


def _gradcam_picture(path: str, data: Data, run_dir: str, title: str) -> bool:
  pred = transfer.load_predictions(run_dir)
  if "gradcam_index" not in pred:
    return False
  idx, cls = pred["gradcam_index"], pred["gradcam_class"]
  mass = None
  if "gradcam_masks" in pred:
    mass = np.asarray(gc.energy_in_mask(pred["gradcam_maps"], pred["gradcam_masks"]))
  titles = [f"true {data.class_names[data.y[i]]}\npred {data.class_names[c]}" +
            (f"\nmass in mask {100 * mass[j]:.0f}%" if mass is not None else "")
            for j, (i, c) in enumerate(zip(idx, cls))]
  gc.plot_gradcam(path, data.x[idx], pred["gradcam_maps"], titles, pred.get("gradcam_masks"), title)
  return True


def train_and_evaluate(config, workdir: str, docs_dir: Optional[str] = None) -> dict:
  """Every unit that has not finished, then the report; returns the report payload."""
  t0 = time.time()
  validate_config(config)
  top = checkpoint.Workdir(workdir, config.to_dict(), ignore=REPORT_KEYS)
  if config.weights:
    transfer.resolve_weights(config.model, config.weights)
  data = Data(config)
  probe = _network(config, transfer.resolve_weights(config.model, config.weights) if config.weights else None,
                   int(config.seed), data.num_classes)  # a weight file that does not fit fails here
  gc.feature_shape(probe.model, probe.variables, jnp.zeros((1,) + data.x.shape[1:]), config.gradcam.layer,
                   train=False)  # an unknown Grad-CAM layer fails before anything is written
  top.start()
  weights_path = pretrained_weights(config, top.path)
  runs = []
  for k in range(len(data.folds)):
    r = run_fold(config, k, data, weights_path, top.path)
    runs.append(r)
    logging.info("fold %d: test accuracy %.4f", k, r["test"]["accuracy"])
  preds = [transfer.load_predictions(top.join(f"fold_{k}")) for k in range(len(runs))]
  probs = np.concatenate([p["test_probs"] for p in preds])
  labels = np.concatenate([p["test_labels"] for p in preds])
  pooled = transfer.metrics_of(probs, labels, num_classes=data.num_classes)
  pooled.update(roc_auc_ovr(labels, probs))
  pooled["per_class"] = per_class_report(labels, probs.argmax(axis=1), data.num_classes, data.class_names)
  cost = model_cost(config, probe, top.join("cost.json"))
  label = f" ({data.stand_in})" if data.stand_in else ""
  name = f"brain_tumour_{config.preset}"
  pictures = {}
  out_dirs = [top.path] + ([os.path.join(os.path.abspath(docs_dir), "figures")] if docs_dir else [])
  for d in out_dirs:
    os.makedirs(d, exist_ok=True)
    cm_path = os.path.join(d, f"{name}_confusion.png")
    reporting.plot_confusion(cm_path, confusion_matrix(labels, probs.argmax(axis=1), data.num_classes),
                             data.class_names, f"pooled out-of-fold{label}")
    cam_path = os.path.join(d, f"{name}_gradcam.png")
    has_cam = _gradcam_picture(cam_path, data, top.join("fold_0"),
                               f"Grad-CAM at {config.gradcam.layer}, fold 0 held-out{label}")
  rel = (lambda p: f"figures/{os.path.basename(p)}") if docs_dir else os.path.basename  # noqa: E731
  pictures["Pooled confusion matrix"] = rel(cm_path)
  if has_cam:
    pictures["Grad-CAM maps of held-out images of fold 0 (top: image, bottom: map)"] = rel(cam_path)
  command = transfer.report_command()
  table = table_markdown(config, data, runs, pooled, cost, command, pictures)
  transfer.write_table(top, table, os.path.join(docs_dir, "brain_tumour_table.md") if docs_dir else None)
  summary = [{"fold": r["fold"], "test": r["test"], "per_class": r["per_class"],
              **({"gradcam_overlap": r["gradcam_overlap"]} if "gradcam_overlap" in r else {})} for r in runs]
  payload = dict(reporting.run_info(), config=config.to_dict(), dataset=data.info, stand_in=data.stand_in,
                 folds=summary, pooled={k: pooled[k] for k in METRICS + ("confusion_matrix", "per_class")},
                 mean={m: float(np.mean([r["test"][m] for r in runs])) for m in METRICS},
                 std={m: float(np.std([r["test"][m] for r in runs], ddof=1)) for m in METRICS},
                 cost=cost, book={"accuracy": BOOK_ACCURACY, "per_class": {
                     c: {"precision": p, "recall": r, "f_printed": f, "f1_implied": implied_f1(p, r)}
                     for c, (p, r, f) in BOOK_PER_CLASS.items()}},
                 table=table, wall_time_s=time.time() - t0)
  reporting.write_json_atomic(top.join("results.json"), payload)
  return payload
