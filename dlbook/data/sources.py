"""Raw data sources, reached by name through one registry.

Each source returns a `RawData`: integer-or-float NHWC images with their value
range, int labels, and a test split. Medical sources also give each sample's patient or
subject (`groups_*`, so splits can keep a patient on one side), its published fold
(`folds_train`) and its file name or barcode (`samples_*`); expression sources give
[N, genes] feature vectors with a per-gene annotation (`features`) instead of images.
Names:

- ``digits``: scikit-learn's embedded 8x8 handwritten digits (always available).
  It has no official test split; a fixed stratified 20% (seed 0, independent of
  the run seed) is the test set.
- ``fashion_mnist``: the IDX ``.gz`` files of the Debian package
  ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``) or ``data_dir``.
- ``tfds:NAME``: a TFDS dataset already prepared under ``data_dir`` (never downloaded
  unless ``tfds_download=True``).
- ``image_folder:PATH``: one sub-folder per class of PNG/JPEG/BMP files.
- ``npz:PATH``: arrays ``x_train, y_train, x_test, y_test`` (the Keras layout).
- Medical sources (``tcga_pancancer:PATH``, ``chiaretti_all``, ``golub_leukaemia``,
  ``bladderbatch``, ``figshare_brain:PATH``, ``cnmc:PATH``) are in `dlbook.data.expression`
  and `dlbook.data.medical_images`.
"""

import dataclasses
import gzip
import os
import struct
from typing import Optional, Sequence, Tuple

import numpy as np

from dlbook.errors import DlbookError, require
from dlbook.registry import Registry

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal",
                         "shirt", "sneaker", "bag", "ankle-boot")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")


@dataclasses.dataclass
class RawData:
  """Images as NHWC arrays (any dtype) whose values lie in [0, max_value], or [N, F] feature
  vectors (expression sources: unscaled values, max_value 1.0, `features` annotates the F columns)."""
  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  max_value: float
  class_names: Tuple[str, ...]
  info: dict
  groups_train: Optional[np.ndarray] = None  # patient / subject of each training sample
  groups_test: Optional[np.ndarray] = None
  folds_train: Optional[np.ndarray] = None  # published fold of each training sample
  samples_train: Optional[np.ndarray] = None  # file name or barcode of each sample
  samples_test: Optional[np.ndarray] = None
  features: Optional[dict] = None  # per-feature arrays, e.g. {"names", "chromosome", "start"}


SOURCES: Registry[RawData] = Registry("dataset")


def load_raw(name: str, data_dir: Optional[str] = None, **options) -> RawData:
  """Loads a dataset by name; ``prefix:ARG`` names pass ARG to the source."""
  if ":" in name:
    prefix, arg = name.split(":", 1)
    require(bool(arg), f"dataset {name!r} needs an argument after ':'")
    raw = SOURCES.get(prefix + ":")(arg, data_dir=data_dir, **options)
  else:
    raw = SOURCES.get(name)(data_dir=data_dir, **options)
  if isinstance(raw, RawData):
    check_raw(raw, name)
  return raw


def check_raw(raw: RawData, name: str) -> None:
  """Rejects degenerate data before anything trains: empty splits, non-numeric or non-finite images,
  labels that are not class indices 0..K-1 (negative, fractional, or sparse ids such as 2^30)."""
  where = raw.info.get("source", name)
  for split, x, y in (("train", raw.x_train, raw.y_train), ("test", raw.x_test, raw.y_test)):
    require(len(x) > 0, f"dataset {name!r} ({where}): the {split} split is empty")
    require(x.ndim == 4 or (x.ndim == 2 and raw.features is not None),
            f"dataset {name!r} ({where}): {split} images must be NHWC, got shape {x.shape}")
    require(len(x) == len(y), f"dataset {name!r} ({where}): {len(x)} {split} images but {len(y)} labels")
    require(np.issubdtype(x.dtype, np.number) and not np.issubdtype(x.dtype, np.complexfloating),
            f"dataset {name!r} ({where}): {split} images must be real numbers, got dtype {x.dtype}")
    if np.issubdtype(x.dtype, np.floating):
      require(bool(np.isfinite(x).all()), f"dataset {name!r} ({where}): {split} images contain NaN or inf")
    y = np.asarray(y)
    require(np.issubdtype(y.dtype, np.number) and y.ndim == 1,
            f"dataset {name!r} ({where}): {split} labels must be a 1-D array of class indices, got "
            f"dtype {y.dtype} shape {y.shape}")
    fractional = np.flatnonzero(y != np.round(y))
    require(len(fractional) == 0, f"dataset {name!r} ({where}): {split} labels must be whole numbers "
            f"(class indices), e.g. got {y[fractional[0]] if len(fractional) else ''}")
    require(int(y.min()) >= 0, f"dataset {name!r} ({where}): {split} labels must be class indices >= 0, got "
            f"{int(y.min())}")
  labels = np.concatenate([np.asarray(raw.y_train), np.asarray(raw.y_test)]).astype(np.int64)
  top, distinct = int(labels.max()), len(np.unique(labels))
  require(top < 2 * distinct + 16, f"dataset {name!r} ({where}): labels must be class indices 0..K-1, but the "
          f"largest is {top} with only {distinct} distinct labels; renumber the classes")


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> Tuple[np.ndarray, np.ndarray]:
  """Indices (kept, rest) with `fraction` of every class kept, chosen with `seed`."""
  rng = np.random.default_rng(seed)
  kept, rest = [], []
  for c in np.unique(labels):
    idx = rng.permutation(np.flatnonzero(labels == c))
    k = int(round(fraction * len(idx)))
    kept.append(idx[:k])
    rest.append(idx[k:])
  return np.sort(np.concatenate(kept)), np.sort(np.concatenate(rest))


@SOURCES.register("digits")
def digits(data_dir=None, **_) -> RawData:
  from sklearn.datasets import load_digits
  d = load_digits()
  x = d.images.astype(np.float32)[..., None]
  y = d.target.astype(np.int32)
  test_idx, train_idx = stratified_split(y, 0.2, seed=0)
  return RawData(x[train_idx], y[train_idx], x[test_idx], y[test_idx], 16.0,
                 tuple(str(i) for i in range(10)),
                 {"source": "sklearn.datasets.load_digits", "test_split": "stratified 20%, seed 0"})


def read_idx(path: str) -> np.ndarray:
  """Reads one (optionally gzipped) IDX file; a truncated file raises `DlbookError`."""
  require(os.path.exists(path), f"missing data file {path}")
  opener = gzip.open if path.endswith(".gz") else open
  try:
    with opener(path, "rb") as f:
      raw = f.read()
  except (OSError, EOFError) as e:
    raise DlbookError(f"cannot read {path}: {e} (truncated or corrupt?)") from None
  require(len(raw) >= 4, f"{path} is truncated: {len(raw)} bytes")
  zero, dtype_code, ndim = raw[0] * 256 + raw[1], raw[2], raw[3]
  require(zero == 0 and dtype_code == 0x08,
          f"{path} is not an unsigned-byte IDX file (magic {raw[:4].hex()})")
  header = 4 + 4 * ndim
  require(len(raw) >= header, f"{path} is truncated in its header")
  shape = struct.unpack(">" + "I" * ndim, raw[4:header])
  expected = int(np.prod(shape))
  require(len(raw) - header == expected,
          f"{path} is truncated or corrupt: {len(raw) - header} data bytes, expected {expected} for shape {shape}")
  return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


@SOURCES.register("fashion_mnist")
def fashion_mnist(data_dir=None, **_) -> RawData:
  root = data_dir or FASHION_MNIST_DIR
  files = {k: os.path.join(root, f"{k}-idx{3 if 'images' in k else 1}-ubyte.gz")
           for k in ("train-images", "train-labels", "t10k-images", "t10k-labels")}
  missing = [p for p in files.values() if not os.path.exists(p)]
  require(not missing,
          f"Fashion-MNIST files missing: {', '.join(missing)}; install the Debian package "
          f"'dataset-fashion-mnist' (apt-get install dataset-fashion-mnist) or set data.data_dir")
  xtr, ytr = read_idx(files["train-images"]), read_idx(files["train-labels"])
  xte, yte = read_idx(files["t10k-images"]), read_idx(files["t10k-labels"])
  require(len(xtr) == len(ytr) and len(xte) == len(yte), f"Fashion-MNIST in {root}: image/label counts differ")
  return RawData(xtr[..., None], ytr.astype(np.int32), xte[..., None], yte.astype(np.int32), 255.0,
                 FASHION_MNIST_CLASSES, {"source": root})


@SOURCES.register("npz:")
def npz(path, data_dir=None, **_) -> RawData:
  require(os.path.exists(path), f"missing data file {path}")
  try:
    with np.load(path, allow_pickle=False) as f:
      arrays = {k: f[k] for k in f.files}
  except Exception as e:  # truncated or bad-CRC zip members raise zipfile, zlib and numpy errors
    raise DlbookError(f"cannot read npz file {path} (truncated or corrupt?): {type(e).__name__}: "
                      f"{str(e).splitlines()[0] if str(e) else ''}") from None
  needed = ("x_train", "y_train", "x_test", "y_test")
  missing = [k for k in needed if k not in arrays]
  require(not missing, f"{path} lacks arrays {missing}; it needs {list(needed)}, has {sorted(arrays)}")
  xs = []
  for k in ("x_train", "x_test"):
    x = arrays[k]
    require(x.ndim in (3, 4), f"{path}:{k} must be NHW or NHWC, got shape {x.shape}")
    xs.append(x[..., None] if x.ndim == 3 else x)
  ys = [arrays["y_train"].astype(np.int32).reshape(-1), arrays["y_test"].astype(np.int32).reshape(-1)]
  require(len(xs[0]) == len(ys[0]) and len(xs[1]) == len(ys[1]), f"{path}: image and label counts differ")
  for k, x, y in (("train", xs[0], ys[0]), ("test", xs[1], ys[1])):
    require(len(x) > 0 and len(y) > 0, f"{path}: x_{k} / y_{k} are empty")
  raw_labels = [arrays["y_train"], arrays["y_test"]]
  for k, y in zip(("y_train", "y_test"), raw_labels):
    require(np.issubdtype(y.dtype, np.number) and np.all(y == np.round(y)),
            f"{path}:{k} must hold integer class indices, got dtype {y.dtype}")
    require(y.min() >= 0, f"{path}:{k} has a negative label ({y.min()}); labels are class indices 0..K-1")
  require(np.issubdtype(xs[0].dtype, np.number) and np.issubdtype(xs[1].dtype, np.number),
          f"{path}: x_train / x_test must be numeric, got {xs[0].dtype} / {xs[1].dtype}")
  max_value = 255.0 if xs[0].dtype == np.uint8 or xs[0].max() > 1.0 else 1.0
  n_classes = int(max(ys[0].max(), ys[1].max())) + 1
  distinct = len(np.unique(np.concatenate(ys)))
  require(n_classes < 2 * distinct + 16, f"{path}: labels must be class indices 0..K-1, but the largest is "
          f"{n_classes - 1} with only {distinct} distinct labels; renumber the classes")
  return RawData(xs[0], ys[0], xs[1], ys[1], max_value, tuple(str(i) for i in range(n_classes)),
                 {"source": os.path.abspath(path)})


def read_image(path: str, size: Optional[Tuple[int, int]] = None, mode: str = "RGB") -> np.ndarray:
  """Reads one image file as uint8 HWC; unreadable files raise `DlbookError` naming them."""
  from PIL import Image, UnidentifiedImageError
  try:
    with Image.open(path) as im:
      im.load()
      im = im.convert(mode)
      if size is not None:
        im = im.resize((size[1], size[0]), Image.BILINEAR)
      arr = np.asarray(im, dtype=np.uint8)
  except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
    raise DlbookError(f"corrupt or unreadable image {path}: {e}") from None
  return arr[..., None] if arr.ndim == 2 else arr


@SOURCES.register("image_folder:")
def image_folder(path, data_dir=None, image_size=32, test_fraction=0.2, channels=3, **_) -> RawData:
  """One sub-folder per class. A ``train``/``test`` pair of such folders is used as the
  split when present; otherwise a stratified `test_fraction` (seed 0) is held out."""
  require(os.path.isdir(path), f"image folder {path} does not exist")
  require(image_size is not None and image_size > 0, "image_folder needs data.image_size > 0")
  mode = "RGB" if channels == 3 else "L"

  def read_tree(root, class_names=None):
    names = class_names or sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    require(bool(names), f"{root} has no class sub-folders")
    xs, ys = [], []
    for label, cname in enumerate(names):
      cdir = os.path.join(root, cname)
      require(os.path.isdir(cdir), f"{root} lacks class folder {cname!r}")
      for fname in sorted(os.listdir(cdir)):
        if fname.lower().endswith(IMAGE_EXTENSIONS):
          xs.append(read_image(os.path.join(cdir, fname), (image_size, image_size), mode))
          ys.append(label)
    require(bool(xs), f"{root} has no {'/'.join(IMAGE_EXTENSIONS)} images")
    return np.stack(xs), np.asarray(ys, np.int32), tuple(names)

  if os.path.isdir(os.path.join(path, "train")) and os.path.isdir(os.path.join(path, "test")):
    xtr, ytr, names = read_tree(os.path.join(path, "train"))
    xte, yte, _ = read_tree(os.path.join(path, "test"), names)
  else:
    x, y, names = read_tree(path)
    test_idx, train_idx = stratified_split(y, test_fraction, seed=0)
    xtr, ytr, xte, yte = x[train_idx], y[train_idx], x[test_idx], y[test_idx]
  return RawData(xtr, ytr, xte, yte, 255.0, names, {"source": os.path.abspath(path)})


@SOURCES.register("tfds:")
def tfds_source(name, data_dir=None, tfds_download=False, train_split="train", test_split="test", **_) -> RawData:
  """A TFDS dataset prepared under `data_dir`. Read through `as_data_source` (no TensorFlow
  needed; array_record files), falling back to `as_dataset` when TensorFlow is installed."""
  try:
    import tensorflow_datasets as tfds
  except ImportError:
    raise DlbookError(f"dataset 'tfds:{name}' needs tensorflow-datasets: pip install 'dlbook[tfds]'") from None
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except Exception as e:  # TFDS raises its own DatasetNotFoundError types.
    raise DlbookError(f"unknown TFDS dataset {name!r}: {str(e).splitlines()[0]}") from None
  if tfds_download:
    builder.download_and_prepare()

  def read(split):
    try:
      source = builder.as_data_source(split=split)
      examples = [source[i] for i in range(len(source))]
      return np.stack([e["image"] for e in examples]), np.asarray([e["label"] for e in examples], np.int32)
    except Exception as first:  # not array_record, or not prepared: try the tf.data path
      try:
        d = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
        return np.asarray(d["image"]), np.asarray(d["label"], np.int32)
      except Exception:
        raise DlbookError(f"TFDS dataset {name!r} split {split!r} is not prepared under "
                          f"{data_dir or '~/tensorflow_datasets'}: {str(first).splitlines()[0][:200]} "
                          f"(prepare it where there is network, or set data.tfds_download=True)") from None

  x_train, y_train = read(train_split)
  x_test, y_test = read(test_split)
  label_feature = builder.info.features["label"]
  names = tuple(label_feature.names) if hasattr(label_feature, "names") else ()
  return RawData(x_train, y_train, x_test, y_test, 255.0, names,
                 {"source": f"tfds:{name}", "data_dir": data_dir})


def sources() -> Sequence[str]:
  return SOURCES.names()
