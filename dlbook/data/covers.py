"""Steganography covers from real images that ship with the installed packages.

Two sources register with `SOURCES` (no download ever happens; only files inside the
installed wheels are read):

- ``photos64``: 64×64 crops of the real photographs bundled with scikit-image
  (`skimage.data`) and scikit-learn (`load_sample_images`). Synthetic pictures (logo,
  colour wheel, chessboards, phantom, horse silhouette) are left out.
  **Choices** (the sources are silent):
  * photos whose shorter side exceeds 512 px are first downscaled (anti-aliased) to a
    512 px shorter side, so that the 1411×1411 retina does not dominate the set;
  * each photo is cut into a non-overlapping grid of 64×64 crops, the grid centred on the
    photo (the remainder is split evenly between the borders);
  * the split is by source photo: crops of the `PHOTO_TEST` photos (astronaut, coffee,
    coins, grass, flower: colour portrait, colour still life, grey objects, grey texture,
    colour nature; 266 crops) form the test set, so test covers come from photos never
    seen in training; the other 16 photos (804 crops) form the training set, enlarged
    with their horizontal mirror images (1608 crops). Test crops are not mirrored.
  * grey photos are replicated to 3 channels; labels are the index of the source photo
    in `class_names`.
- ``dicom64``: the real CT and MR slices bundled with pydicom's test data (read from the
  package directory, never through pydicom's downloader). Each distinct slice is
  converted to modality units (rescale slope / intercept), windowed to 8 bits between its
  0.5th and 99.5th percentiles (**choice**: the stored VOI windows are narrow brain
  windows or absent, so a per-slice percentile window is used for every file), replicated
  to 3 channels and cut into 64×64 grid crops at native resolution and at successive
  halvings while the shorter side stays ≥ 64. Crops that are ≥ 90% black background are
  dropped. Split by slice: `DICOM_TEST` (one 512×512 head CT and the 64×64 MR slice;
  82 crops) is the test set, the other three slices (a head CT, a small CT and an
  abdominal MR; 124 crops, 248 with mirror images) the training set.

Both return uint8 NHWC with ``max_value = 255``, so
``dlbook.data.load(ConfigDict(name="photos64", normalization="symmetric"))`` yields covers in [-1, 1].
"""

import functools
import os
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np

from dlbook.data.sources import RawData, SOURCES
from dlbook.errors import DlbookError, require

CROP = 64
MAX_SHORT_SIDE = 512


def _sklearn_photo(index: int) -> np.ndarray:
  from sklearn.datasets import load_sample_images
  return load_sample_images().images[index]


def _skimage_photo(name: str) -> Callable[[], np.ndarray]:
  def load():
    import skimage.data
    image = getattr(skimage.data, name)()
    return image[0] if isinstance(image, tuple) else image  # stereo_motorcycle -> left view
  return load


# Real photographs that ship inside the scikit-image and scikit-learn wheels.
PHOTOS: Dict[str, Callable[[], np.ndarray]] = {
    **{name: _skimage_photo(name) for name in (
        "astronaut", "camera", "coffee", "chelsea", "rocket", "hubble_deep_field", "retina",
        "immunohistochemistry", "stereo_motorcycle", "gravel", "brick", "grass", "moon", "coins",
        "page", "text", "cell", "clock", "microaneurysms")},
    "china": lambda: _sklearn_photo(0),
    "flower": lambda: _sklearn_photo(1),
}
PHOTO_TEST = ("astronaut", "coffee", "coins", "grass", "flower")

# pydicom's bundled CT / MR slices (file name -> modality); duplicates of MR_small in other
# transfer syntaxes are left out.
DICOM_FILES = {"693_J2KI.dcm": "CT", "J2K_pixelrep_mismatch.dcm": "CT", "CT_small.dcm": "CT",
               "MR_small.dcm": "MR", "examples_overlay.dcm": "MR"}
DICOM_TEST = ("J2K_pixelrep_mismatch.dcm", "MR_small.dcm")


def to_rgb_uint8(image: np.ndarray) -> np.ndarray:
  """HW or HWC (1, 3 or 4 channels) -> HWx3 uint8; alpha is dropped."""
  image = np.asarray(image)
  if image.ndim == 2:
    image = image[..., None]
  if image.shape[-1] == 4:
    image = image[..., :3]
  if image.shape[-1] == 1:
    image = np.repeat(image, 3, axis=-1)
  require(image.ndim == 3 and image.shape[-1] == 3, f"cannot make an RGB image from shape {image.shape}")
  require(image.dtype == np.uint8, f"expected a uint8 image, got {image.dtype}")
  return image


def shrink_to(image: np.ndarray, short_side: int) -> np.ndarray:
  """Anti-aliased downscale of uint8 HWC so its shorter side is `short_side` (no-op if smaller)."""
  from skimage.transform import resize
  h, w = image.shape[:2]
  if min(h, w) <= short_side:
    return image
  scale = short_side / min(h, w)
  out = resize(image, (round(h * scale), round(w * scale)), anti_aliasing=True, preserve_range=True)
  return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def grid_crops(image: np.ndarray, size: int = CROP) -> np.ndarray:
  """Non-overlapping size×size crops on a grid centred on the image: [N, size, size, C]."""
  h, w = image.shape[:2]
  nh, nw = h // size, w // size
  if nh == 0 or nw == 0:
    return np.zeros((0, size, size, image.shape[-1]), image.dtype)
  top, left = (h - nh * size) // 2, (w - nw * size) // 2
  grid = image[top:top + nh * size, left:left + nw * size]
  grid = grid.reshape(nh, size, nw, size, -1).transpose(0, 2, 1, 3, 4)
  return grid.reshape(nh * nw, size, size, -1)


def _assemble(crops_by_name: Dict[str, np.ndarray], test_names: Sequence[str], info: dict) -> RawData:
  names = tuple(crops_by_name)
  xtr, ytr, xte, yte = [], [], [], []
  for label, name in enumerate(names):
    crops = crops_by_name[name]
    if name in test_names:
      xte.append(crops)
      yte.append(np.full(len(crops), label, np.int32))
    else:  # training crops plus their mirror images
      both = np.concatenate([crops, crops[:, :, ::-1]])
      xtr.append(both)
      ytr.append(np.full(len(both), label, np.int32))
  info = dict(info, crop=CROP, test_sources=list(test_names),
              crops_per_source={n: int(len(c)) for n, c in crops_by_name.items()},
              train_mirrored=True)
  return RawData(np.concatenate(xtr), np.concatenate(ytr), np.concatenate(xte), np.concatenate(yte),
                 255.0, names, info)


@functools.lru_cache(maxsize=1)
def _photo_crops() -> Tuple[Tuple[str, np.ndarray], ...]:
  out = []
  for name, load in PHOTOS.items():
    try:
      image = load()
    except Exception as e:  # a missing bundled file must not turn into a silent smaller set
      raise DlbookError(f"photos64: cannot load bundled photo {name!r}: {e}") from None
    out.append((name, grid_crops(shrink_to(to_rgb_uint8(image), MAX_SHORT_SIDE))))
  return tuple(out)


@SOURCES.register("photos64")
def photos64(data_dir=None, **_) -> RawData:
  crops = dict(_photo_crops())
  return _assemble({k: v.copy() for k, v in crops.items()}, PHOTO_TEST, {
      "source": "skimage.data bundled photographs + sklearn.datasets.load_sample_images",
      "split": "by source photo", "max_short_side": MAX_SHORT_SIDE})


def dicom_dir() -> str:
  import pydicom.data.data_manager as dm
  return os.path.join(dm.DATA_ROOT, "test_files")


def window_to_uint8(values: np.ndarray, low_pct: float = 0.5, high_pct: float = 99.5) -> np.ndarray:
  """Linear window between two percentiles of the slice, to uint8."""
  lo, hi = np.percentile(values, [low_pct, high_pct])
  require(hi > lo, "a DICOM slice is constant; it cannot be windowed")
  return np.clip(np.rint((values - lo) / (hi - lo) * 255.0), 0, 255).astype(np.uint8)


def read_dicom_slice(path: str) -> np.ndarray:
  """One DICOM slice -> windowed uint8 HW, or `DlbookError` naming the file."""
  import pydicom
  from pydicom.pixels import apply_modality_lut
  require(os.path.exists(path), f"missing DICOM file {path}")
  try:
    ds = pydicom.dcmread(path)
    values = apply_modality_lut(ds.pixel_array, ds).astype(np.float64)
  except Exception as e:  # pydicom raises many types for bad or undecodable files
    raise DlbookError(f"cannot decode DICOM file {path}: {e}") from None
  require(values.ndim == 2, f"{path}: expected one 2-D slice, got pixel array of shape {values.shape}")
  return window_to_uint8(values)


def multiscale_crops(image: np.ndarray, size: int = CROP, background_fraction: float = 0.9) -> np.ndarray:
  """Grid crops at native size and at each halving while the shorter side is ≥ size,
  dropping crops whose pixels are ≥ `background_fraction` black (value ≤ 5)."""
  crops: List[np.ndarray] = []
  scaled = image
  while min(scaled.shape[:2]) >= size:
    crops.append(grid_crops(scaled, size))
    scaled = shrink_to(scaled, min(scaled.shape[:2]) // 2)
    if min(scaled.shape[:2]) < size:
      break
  crops_arr = np.concatenate(crops)
  dark = (crops_arr.max(axis=-1) <= 5).mean(axis=(1, 2))
  return crops_arr[dark < background_fraction]


@functools.lru_cache(maxsize=1)
def _dicom_crops() -> Tuple[Tuple[str, np.ndarray], ...]:
  root = dicom_dir()
  out = []
  for name in DICOM_FILES:
    image = to_rgb_uint8(read_dicom_slice(os.path.join(root, name)))
    out.append((name, multiscale_crops(image)))
  return tuple(out)


@SOURCES.register("dicom64")
def dicom64(data_dir=None, **_) -> RawData:
  crops = dict(_dicom_crops())
  return _assemble({k: v.copy() for k, v in crops.items()}, DICOM_TEST, {
      "source": f"pydicom bundled test files in {dicom_dir()}",
      "modalities": DICOM_FILES, "split": "by slice",
      "window": "0.5-99.5 percentile per slice"})
