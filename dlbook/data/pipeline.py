"""From raw arrays to the float32 NHWC splits and deterministic batches training uses."""

import dataclasses
from typing import Iterator, Optional, Tuple

import numpy as np

from dlbook.data.sources import RawData, load_raw, stratified_split
from dlbook.data.splits import grouped_stratified_folds
from dlbook.errors import require

NORMALIZATIONS = ("standardize", "unit", "symmetric")


@dataclasses.dataclass
class Split:
  images: np.ndarray  # float32 [N, H, W, C]
  labels: np.ndarray  # int32 [N]
  groups: Optional[np.ndarray] = None  # patient / subject of each image (medical sources)

  def __len__(self):
    return len(self.labels)

  def batch(self, idx) -> dict:
    return {"image": self.images[idx], "label": self.labels[idx]}


@dataclasses.dataclass
class Dataset:
  name: str
  train: Split
  val: Optional[Split]
  test: Split
  num_classes: int
  class_names: Tuple[str, ...]
  info: dict

  @property
  def image_shape(self):
    return self.train.images.shape[1:]


def resize_images(x: np.ndarray, size: int) -> np.ndarray:
  """Bilinear resize of an NHWC float array to size x size (antialiased when shrinking)."""
  import jax
  import jax.numpy as jnp
  if x.shape[1:3] == (size, size):
    return x
  out = []
  for i in range(0, len(x), 4096):  # bounded memory for large sets
    chunk = jnp.asarray(x[i:i + 4096])
    out.append(np.asarray(jax.image.resize(chunk, (len(chunk), size, size, x.shape[-1]), "linear")))
  return np.concatenate(out)


def load(data_config, seed: int = 0) -> Dataset:
  """Loads `data_config.name` and prepares its splits.

  Order (a choice, documented in docs/data.md): the validation split is carved first
  from the full training set with its own seed, so every training fraction is
  evaluated on the same validation images; then `train_fraction` of the rest is kept
  (stratified). Images are scaled to [0, 1] by the source's range, optionally resized
  and converted to `channels`, then normalised with training-set statistics. Sources that
  name each image's patient (`RawData.groups_train`) get a patient-grouped validation split
  (one of round(1 / val_fraction) grouped stratified folds), and every split keeps its groups.
  """
  c = data_config
  fraction = float(c.get("train_fraction", 1.0))
  val_fraction = float(c.get("val_fraction", 0.0))
  require(0.0 < fraction <= 1.0, f"data.train_fraction must be in (0, 1], got {fraction}")
  require(0.0 <= val_fraction < 1.0, f"data.val_fraction must be in [0, 1), got {val_fraction}")
  normalization = c.get("normalization", "standardize")
  require(normalization in NORMALIZATIONS,
          f"unknown data.normalization {normalization!r}; valid: {', '.join(NORMALIZATIONS)}")
  options = {k: c.get(k) for k in ("tfds_download", "channels") if c.get(k) is not None}
  if c.get("image_size"):
    options["image_size"] = c.image_size
  raw: RawData = load_raw(c.name, data_dir=c.get("data_dir"), **options)
  require(isinstance(raw, RawData), f"dataset {c.name!r} is not an image set ({type(raw).__name__}); "
          f"load it with dlbook.data.load_raw")
  require(raw.x_train.ndim == 4,
          f"dataset {c.name!r} gives [N, features] vectors, not images: read it with "
          f"dlbook.data.load_raw and map it with dlbook.data.transforms.fit_expression_image")
  num_classes = int(max(raw.y_train.max(), raw.y_test.max())) + 1

  x_train = raw.x_train.astype(np.float32) / raw.max_value
  x_test = raw.x_test.astype(np.float32) / raw.max_value
  y_train, y_test = raw.y_train.astype(np.int32), raw.y_test.astype(np.int32)
  g_train, g_test = raw.groups_train, raw.groups_test
  take = lambda g, idx: None if g is None else g[idx]
  if c.get("limit_train"):
    require(int(c.limit_train) > 0, f"data.limit_train must be >= 0, got {c.limit_train}")
    keep, _ = stratified_split(y_train, min(1.0, c.limit_train / len(y_train)), seed=1)
    require(len(keep) > 0, f"data.limit_train={c.limit_train} keeps no training example of the "
            f"{len(np.unique(y_train))} classes (each keeps round(limit / size) of its examples); raise it")
    x_train, y_train, g_train = x_train[keep], y_train[keep], take(g_train, keep)
  if c.get("limit_test"):
    require(int(c.limit_test) > 0, f"data.limit_test must be >= 0, got {c.limit_test}")
    x_test, y_test, g_test = x_test[:c.limit_test], y_test[:c.limit_test], take(g_test, slice(c.limit_test))

  val = None
  val_seed = int(c.get("split_seed", 0))
  if val_fraction > 0:
    if g_train is not None:  # never one patient on both sides
      train_idx, val_idx = grouped_stratified_folds(y_train, g_train, max(2, round(1 / val_fraction)), val_seed)[0]
    else:
      val_idx, train_idx = stratified_split(y_train, val_fraction, seed=val_seed)
    require(len(val_idx) > 0, f"data.val_fraction={val_fraction} of {len(y_train)} training examples leaves an "
            f"empty validation split (each class keeps round(fraction x its size)); raise it or set it to 0")
    val = (x_train[val_idx], y_train[val_idx], take(g_train, val_idx))
    x_train, y_train, g_train = x_train[train_idx], y_train[train_idx], take(g_train, train_idx)
  if fraction < 1.0:
    keep, _ = stratified_split(y_train, fraction, seed=val_seed + 1000 + seed)
    x_train, y_train, g_train = x_train[keep], y_train[keep], take(g_train, keep)
  require(len(y_train) > 0, f"dataset {c.name!r}: no training example is left after the validation split, "
          f"train_fraction and limit_train")

  size = c.get("image_size")
  channels = c.get("channels")

  def prepare(x):
    if size:
      x = resize_images(x, size)
    if channels and channels != x.shape[-1]:
      require(channels in (1, 3), f"data.channels must be 1 or 3, got {channels}")
      x = np.repeat(x, 3, axis=-1) if channels == 3 else x.mean(axis=-1, keepdims=True)
    return x

  x_train, x_test = prepare(x_train), prepare(x_test)
  if val is not None:
    val = (prepare(val[0]),) + val[1:]
  if normalization == "standardize":
    mean = x_train.mean(axis=(0, 1, 2))
    std = x_train.std(axis=(0, 1, 2)) + 1e-6
  elif normalization == "symmetric":
    mean, std = np.full(x_train.shape[-1], 0.5), np.full(x_train.shape[-1], 0.5)
  else:
    mean, std = np.zeros(x_train.shape[-1]), np.ones(x_train.shape[-1])
  norm = lambda x: ((x - mean) / std).astype(np.float32)
  info = dict(raw.info, name=c.name, train_size=len(y_train), val_size=0 if val is None else len(val[1]),
              test_size=len(y_test), train_fraction=fraction, normalization=normalization,
              mean=[float(m) for m in mean], std=[float(s) for s in std])
  return Dataset(c.name, Split(norm(x_train), y_train, g_train),
                 None if val is None else Split(norm(val[0]), val[1], val[2]),
                 Split(norm(x_test), y_test, g_test), num_classes, raw.class_names, info)


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
  """The shuffling of epoch `epoch`: a pure function of (seed, epoch), so resuming is exact."""
  return np.random.default_rng([seed, epoch]).permutation(n)


def train_batch(split, batch_size: int, seed: int, step: int) -> dict:
  """The batch of global step `step` (drop-remainder epochs of shuffled data)."""
  steps_per_epoch = len(split) // batch_size
  epoch, i = divmod(step, steps_per_epoch)
  idx = epoch_permutation(len(split), seed, epoch)[i * batch_size:(i + 1) * batch_size]
  return split.batch(idx)


def train_batches(split, batch_size: int, seed: int, start_step: int = 0,
                  num_steps: Optional[int] = None) -> Iterator[Tuple[int, dict]]:
  """Yields (step, batch) from `start_step`; one permutation is computed per epoch."""
  require(0 < batch_size <= len(split),
          f"batch_size {batch_size} must be between 1 and the training set size {len(split)}")
  steps_per_epoch = len(split) // batch_size
  step = start_step
  perm_epoch, perm = -1, None
  while num_steps is None or step < num_steps:
    epoch, i = divmod(step, steps_per_epoch)
    if epoch != perm_epoch:
      perm_epoch, perm = epoch, epoch_permutation(len(split), seed, epoch)
    idx = perm[i * batch_size:(i + 1) * batch_size]
    yield step, split.batch(idx)
    step += 1


def eval_batches(split, batch_size: int) -> Iterator[dict]:
  """Fixed-shape batches in order; the last is padded with zeros. `mask` marks what counts: a per-example
  mask (0 on padding) is added, unless the split's batches carry their own `mask` (e.g. per residue),
  which the zero padding already sets to 0."""
  n = len(split)
  for start in range(0, n, batch_size):
    idx = np.arange(start, min(start + batch_size, n))
    pad = batch_size - len(idx)
    batch = split.batch(idx)
    if "mask" not in batch:
      batch["mask"] = np.ones(len(idx), np.float32)
    if pad:
      batch = {k: np.concatenate([v, np.zeros((pad,) + v.shape[1:], v.dtype)]) for k, v in batch.items()}
    yield batch
