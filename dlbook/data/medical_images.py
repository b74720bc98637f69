"""Medical image sources in their published layouts (book ch. 13; seed 003), split by patient.

- ``figshare_brain:PATH`` — the Figshare brain-tumour set (Cheng et al.; book ch. 13): files
  ``N.mat`` (in PATH or its sub-folders, e.g. ``brainTumorDataPublic_1-766/``), each a MATLAB
  v7.3 file (HDF5 with a 512-byte user block, read with h5py) holding the struct ``cjdata``:
  ``label`` (1 meningioma, 2 glioma, 3 pituitary), ``PID`` (patient id, MATLAB char),
  ``image`` (int16, mostly 512×512; h5py returns MATLAB arrays transposed, so it is transposed
  back), ``tumorBorder`` and ``tumorMask``. ``cvind.mat`` (v7.3 or v5) gives the patient-wise
  fold (1–5) of file N at position N; fold ``test_fold`` (default 5) is the test set and the
  others are ``folds_train``. Without ``cvind.mat`` (or with ``folds='grouped'``) five folds are
  made with `grouped_stratified_folds` on the patient ids (seed 0). Either way the folds are
  checked to be patient-disjoint. Each slice is optionally denoised at its native size
  (``denoise_steps``, `dlbook.data.transforms.denoise`), scaled to [0, 1] (min-max per slice)
  and resized to ``image_size`` (bilinear, anti-aliased): float32 [N, S, S, 1], labels 0–2.
  `figshare_masks` reads the tumour masks of chosen files at the same size.
- ``cnmc:PATH`` — C-NMC 2019 (seed 003): ``training_data/fold_{0,1,2}/{all,hem}/
  UID_<subject>_<image>_<cell>_{all,hem}.bmp`` (healthy subjects ``UID_H<n>``) and the labelled
  preliminary test set, a CSV ``Patient_ID,new_names,labels`` (the original file name, the
  renamed file, 1 = ALL) found under PATH with its images in the folder named like the CSV
  without ``_labels`` (``validation_data/C-NMC_test_prelim_phase_data/``). Labels: 1 = ALL
  (``all``), 0 = healthy (``hem``). ``folds_train`` is the published fold, ``groups_*`` the
  subject; the folds and the test set are checked to be subject-disjoint. Images are read as
  RGB uint8, resized to ``image_size`` (224, as the thesis).
"""

import csv
import glob
import os
import re
from typing import List, Optional, Sequence

import numpy as np

from dlbook.data.sources import SOURCES, RawData, read_image
from dlbook.data.splits import check_groups_disjoint, grouped_stratified_folds
from dlbook.data.transforms import denoise
from dlbook.errors import DlbookError, require

FIGSHARE_CLASSES = ("meningioma", "glioma", "pituitary")
CNMC_CLASSES = ("hem", "all")
CNMC_NAME = re.compile(r"^UID_(H?\d+)_(\d+)_(\d+)_(all|hem)\.bmp$", re.IGNORECASE)


# ---------------------------------------------------------------------------------------------
# Figshare brain tumour (.mat v7.3)


def _mat_char(dataset) -> str:
  """A MATLAB char array stored by v7.3 as uint16 codes."""
  return "".join(chr(int(c)) for c in np.asarray(dataset).ravel(order="F") if c)


def read_figshare_slice(path: str, with_mask: bool = False) -> dict:
  """One ``N.mat`` file: image (MATLAB orientation, int16), label (1–3), PID and optionally the mask."""
  import h5py
  require(os.path.isfile(path), f"missing file {path}")
  require(h5py.is_hdf5(path), f"{path} is not a MATLAB v7.3 (HDF5) .mat file")
  try:
    with h5py.File(path, "r") as f:
      require("cjdata" in f, f"{path} has no 'cjdata' struct (has {sorted(f.keys())})")
      cj = f["cjdata"]
      needed = ("label", "PID", "image") + (("tumorMask",) if with_mask else ())
      missing = [k for k in needed if k not in cj]
      require(not missing, f"{path}: cjdata lacks {missing} (has {sorted(cj.keys())})")
      image = np.asarray(cj["image"]).T  # h5py reads MATLAB's column-major arrays transposed
      label = np.asarray(cj["label"]).ravel()
      pid = _mat_char(cj["PID"])
      mask = np.asarray(cj["tumorMask"]).T.astype(bool) if with_mask else None
  except OSError as e:
    raise DlbookError(f"cannot read {path}: {e}") from None
  require(image.ndim == 2 and min(image.shape) > 0, f"{path}: cjdata.image must be 2-D, got shape {image.shape}")
  require(label.size == 1 and label[0] in (1, 2, 3), f"{path}: cjdata.label must be 1, 2 or 3, got {label.tolist()}")
  require(bool(pid), f"{path}: cjdata.PID is empty")
  require(mask is None or mask.shape == image.shape, f"{path}: tumorMask shape differs from the image's")
  return {"image": image, "label": int(label[0]), "pid": pid, "mask": mask}


def _figshare_files(path: str) -> List[str]:
  files = [p for p in glob.glob(os.path.join(path, "**", "*.mat"), recursive=True)
           if os.path.basename(p).lower() != "cvind.mat"]
  bad = [p for p in files if not os.path.splitext(os.path.basename(p))[0].isdigit()]
  if bad:
    raise DlbookError(f"{bad[0]}: Figshare slices are named N.mat (N = 1, 2, ...)")
  files.sort(key=lambda p: int(os.path.splitext(os.path.basename(p))[0]))
  numbers = [int(os.path.splitext(os.path.basename(p))[0]) for p in files]
  require(len(set(numbers)) == len(numbers), f"{path}: a slice number appears twice")
  require(bool(files), f"{path} has no N.mat files")
  return files


def _read_cvind(path: str) -> np.ndarray:
  import h5py
  try:
    if h5py.is_hdf5(path):
      with h5py.File(path, "r") as f:
        require("cvind" in f, f"{path} has no 'cvind' variable (has {sorted(f.keys())})")
        folds = np.asarray(f["cvind"])
    else:
      from scipy.io import loadmat
      data = loadmat(path)
      require("cvind" in data, f"{path} has no 'cvind' variable")
      folds = data["cvind"]
  except (OSError, ValueError) as e:
    raise DlbookError(f"cannot read {path}: {e}") from None
  folds = np.asarray(folds).ravel().astype(np.int64)
  require(folds.size > 0 and folds.min() >= 1, f"{path}: cvind must hold fold numbers 1, 2, ...")
  return folds


def _resize(image: np.ndarray, size: Optional[int]) -> np.ndarray:
  from skimage.transform import resize
  if size is None or image.shape == (size, size):
    return image
  return resize(image, (size, size), order=1, anti_aliasing=image.shape[0] > size, preserve_range=True)


@SOURCES.register("figshare_brain:")
def figshare_brain(path, data_dir=None, image_size=224, denoise_steps=(), test_fold=5, folds="cvind",
                   **_) -> RawData:
  require(os.path.isdir(path), f"Figshare brain-tumour folder {path} does not exist")
  require(folds in ("cvind", "grouped"), f"folds must be 'cvind' or 'grouped', got {folds!r}")
  files = _figshare_files(path)
  images, labels, pids = [], [], []
  for p in files:
    s = read_figshare_slice(p)
    img = denoise(s["image"], tuple(denoise_steps))  # min-max to [0, 1] after the (optional) filters
    images.append(_resize(img, image_size).astype(np.float32))
    labels.append(s["label"] - 1)
    pids.append(s["pid"])
  shapes = {im.shape for im in images}
  require(len(shapes) == 1, f"{path}: slices have sizes {sorted(shapes)[:3]}; set image_size to resize them")
  x, y, pids = np.stack(images)[..., None], np.asarray(labels, np.int32), np.asarray(pids)
  numbers = np.array([int(os.path.splitext(os.path.basename(p))[0]) for p in files])
  cvind_path = os.path.join(path, "cvind.mat")
  if folds == "cvind" and os.path.isfile(cvind_path):
    cvind = _read_cvind(cvind_path)
    require(numbers.max() <= len(cvind), f"{cvind_path} has {len(cvind)} entries but {path} has slice "
                                         f"{numbers.max()}.mat")
    fold = cvind[numbers - 1]
    fold_source = "cvind.mat"
  else:
    fold = np.zeros(len(y), np.int64)
    for k, (_, val) in enumerate(grouped_stratified_folds(y, pids, n_splits=5, seed=0), start=1):
      fold[val] = k
    fold_source = "grouped stratified 5 folds on PID (seed 0)"
  require(test_fold in set(fold.tolist()), f"test_fold {test_fold} is not one of the folds {sorted(set(fold))}")
  check_groups_disjoint(pids, {f"fold {k}": np.flatnonzero(fold == k) for k in np.unique(fold)})
  test, train = fold == test_fold, fold != test_fold
  names = np.array([os.path.relpath(p, path) for p in files])
  info = {"source": os.path.abspath(path), "folds": fold_source, "test_fold": int(test_fold),
          "denoise_steps": list(denoise_steps), "image_size": image_size, "num_patients": int(len(set(pids)))}
  return RawData(x[train], y[train], x[test], y[test], 1.0, FIGSHARE_CLASSES, info,
                 groups_train=pids[train], groups_test=pids[test], folds_train=fold[train],
                 samples_train=names[train], samples_test=names[test])


def figshare_masks(path: str, samples: Sequence[str], image_size: Optional[int] = 224) -> np.ndarray:
  """Tumour masks (bool [N, S, S]) of the given slice files (``RawData.samples_*``), resized like the images."""
  out = []
  for name in samples:
    mask = read_figshare_slice(os.path.join(path, name), with_mask=True)["mask"]
    out.append(_resize(mask.astype(np.float64), image_size) >= 0.5)
  return np.stack(out)


# ---------------------------------------------------------------------------------------------
# C-NMC 2019


def cnmc_subject(file_name: str) -> tuple:
  """(subject, label) from ``UID_<subject>_<image>_<cell>_{all,hem}.bmp``; label 1 = ALL."""
  m = CNMC_NAME.match(os.path.basename(file_name))
  if m is None:
    raise DlbookError(f"{file_name}: C-NMC file names are UID_<subject>_<image>_<cell>_<all|hem>.bmp")
  return m.group(1).upper(), int(m.group(4).lower() == "all")


def _cnmc_training_root(path: str) -> str:
  for candidate in ("training_data", "C-NMC_training_data", ""):
    root = os.path.join(path, candidate)
    if os.path.isdir(os.path.join(root, "fold_0")):
      return root
  raise DlbookError(f"{path} has no training_data/fold_0 folder (C-NMC layout: training_data/fold_{{0,1,2}}/{{all,hem}})")


def _cnmc_prelim_csv(path: str) -> str:
  for csv_path in sorted(glob.glob(os.path.join(path, "**", "*labels*.csv"), recursive=True)):
    with open(csv_path, newline="") as f:
      header = [h.strip() for h in next(csv.reader(f), [])]
    if header[:3] == ["Patient_ID", "new_names", "labels"]:
      return csv_path
  raise DlbookError(f"{path} has no preliminary-test CSV with the header Patient_ID,new_names,labels")


@SOURCES.register("cnmc:")
def cnmc(path, data_dir=None, image_size=224, **_) -> RawData:
  require(os.path.isdir(path), f"C-NMC folder {path} does not exist")
  root = _cnmc_training_root(path)
  fold_dirs = sorted(d for d in os.listdir(root) if re.fullmatch(r"fold_\d+", d))
  size = None if image_size is None else (image_size, image_size)
  xs, ys, subjects, folds, names = [], [], [], [], []
  for fold_dir in fold_dirs:
    for cls in CNMC_CLASSES:
      cdir = os.path.join(root, fold_dir, cls)
      require(os.path.isdir(cdir), f"{os.path.join(root, fold_dir)} lacks the {cls!r} folder")
      for fname in sorted(os.listdir(cdir)):
        if not fname.lower().endswith(".bmp"):
          continue
        subject, label = cnmc_subject(fname)
        require(CNMC_CLASSES[label] == cls, f"{os.path.join(cdir, fname)}: an '{CNMC_CLASSES[label]}' file in "
                                            f"the {cls!r} folder")
        xs.append(read_image(os.path.join(cdir, fname), size))
        ys.append(label)
        subjects.append(subject)
        folds.append(int(fold_dir.split("_")[1]))
        names.append(f"{fold_dir}/{cls}/{fname}")
  require(bool(xs), f"{root} has no .bmp cells")
  subjects, folds = np.asarray(subjects), np.asarray(folds)
  check_groups_disjoint(subjects, {f"fold {k}": np.flatnonzero(folds == k) for k in np.unique(folds)})

  csv_path = _cnmc_prelim_csv(path)
  image_dir = csv_path[:-len(".csv")].replace("_labels", "")
  image_dir = image_dir if os.path.isdir(image_dir) else os.path.dirname(csv_path)
  xt, yt, subjects_t, names_t = [], [], [], []
  with open(csv_path, newline="") as f:
    for i, row in enumerate(csv.DictReader(f)):
      where = f"{csv_path} row {i + 2}"
      original, new_name, label = (row.get(k, "").strip() for k in ("Patient_ID", "new_names", "labels"))
      require(label in ("0", "1"), f"{where}: labels must be 0 or 1, got {label!r}")
      subject, name_label = cnmc_subject(original)
      require(name_label == int(label), f"{where}: label {label} contradicts the file name {original}")
      image_path = os.path.join(image_dir, new_name)
      require(os.path.isfile(image_path), f"{where}: image {image_path} is missing")
      xt.append(read_image(image_path, size))
      yt.append(int(label))
      subjects_t.append(subject)
      names_t.append(new_name)
  require(bool(xt), f"{csv_path} lists no images")
  subjects_t = np.asarray(subjects_t)
  all_subjects = np.concatenate([subjects, subjects_t])
  check_groups_disjoint(all_subjects, {"training folds": np.arange(len(subjects)),
                                       "preliminary test": len(subjects) + np.arange(len(subjects_t))})
  shapes = {x.shape for x in xs + xt}
  require(len(shapes) == 1, f"{path}: cells have sizes {sorted(shapes)[:3]}; set image_size to resize them")
  info = {"source": os.path.abspath(path), "test_set": os.path.relpath(csv_path, path),
          "num_subjects_train": int(len(set(subjects))), "num_subjects_test": int(len(set(subjects_t))),
          "image_size": image_size}
  return RawData(np.stack(xs), np.asarray(ys, np.int32), np.stack(xt), np.asarray(yt, np.int32), 255.0,
                 CNMC_CLASSES, info, groups_train=subjects, groups_test=subjects_t, folds_train=folds,
                 samples_train=np.asarray(names), samples_test=np.asarray(names_t))
