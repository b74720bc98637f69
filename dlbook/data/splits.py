"""Patient- and subject-grouped splits, a leak check, and class weights (book ch. 12–13; seed 003).

Medical images and expression profiles come several to a patient (Figshare: 3,064 slices of
233 patients; C-NMC 2019: thousands of cells of 73 subjects). A split that puts one patient
on both sides measures how well a model recognises the patient, not the disease. Every split
here keeps each group (patient, subject) on one side and `check_groups_disjoint` proves it.

- `grouped_stratified_folds`: K folds by `sklearn.model_selection.StratifiedGroupKFold`
  (shuffled with the seed): groups never straddle folds, class proportions are kept as far as
  whole groups allow.
- `grouped_train_val_test`: one grouped, stratified three-way split. The test part is one fold
  of ``round(1 / test_fraction)`` grouped folds, the validation part one fold of the rest in
  ``round((1 - test_fraction) / val_fraction)``: the fractions are met to the nearest whole group.
- `folds_from_assignment`: the (train, val) pairs of a published fold column (C-NMC
  ``fold_k``, Figshare ``cvind.mat``), checked for disjointness when groups are given.
- `patient_folds`: the published assignment when a source has one, else grouped stratified folds,
  every fold checked; what both medical image pipelines (leukaemia, brain tumour) split by.
- `class_weights`: n / (K · n_c), the inverse-frequency weights of book §12.3.1 (a class 100×
  rarer weighs 100× more); sklearn's ``compute_class_weight('balanced')``.
"""

from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np

from dlbook.errors import DlbookError, require

IndexPair = Tuple[np.ndarray, np.ndarray]


def _groups_or_samples(labels: np.ndarray, groups) -> np.ndarray:
  if groups is None:
    return np.arange(len(labels))
  groups = np.asarray(groups)
  require(len(groups) == len(labels), f"{len(groups)} group ids for {len(labels)} samples")
  return groups


def check_groups_disjoint(groups, splits: Mapping[str, np.ndarray]) -> None:
  """Raises `DlbookError` naming a group (patient / subject) found in two of `splits` (name -> indices)."""
  groups = np.asarray(groups)
  seen: Dict[object, str] = {}
  for name, idx in splits.items():
    for g in np.unique(groups[np.asarray(idx, np.int64)]):
      key = g.item() if hasattr(g, "item") else g
      require(key not in seen, f"group {key!r} is in both the {seen.get(key)!r} and the {name!r} split "
                               f"(a patient/subject on two sides leaks)")
      seen[key] = name


def grouped_stratified_folds(labels, groups=None, n_splits: int = 5, seed: int = 0) -> List[IndexPair]:
  """(train, val) index pairs of `n_splits` grouped, stratified folds (StratifiedGroupKFold, shuffled)."""
  from sklearn.model_selection import StratifiedGroupKFold
  labels = np.asarray(labels).reshape(-1)
  groups = _groups_or_samples(labels, groups)
  n_groups = len(np.unique(groups))
  require(2 <= n_splits <= n_groups, f"n_splits must be in [2, {n_groups}] (the number of groups), got {n_splits}")
  cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
  folds = [(np.sort(tr), np.sort(va)) for tr, va in cv.split(np.zeros(len(labels)), labels, groups)]
  for tr, va in folds:
    check_groups_disjoint(groups, {"train": tr, "val": va})
  return folds


def grouped_train_val_test(labels, groups=None, val_fraction: float = 0.1, test_fraction: float = 0.2,
                           seed: int = 0) -> Dict[str, np.ndarray]:
  """Indices of a grouped, stratified train / val / test split (val may be empty with fraction 0)."""
  labels = np.asarray(labels).reshape(-1)
  groups = _groups_or_samples(labels, groups)
  require(0 < test_fraction < 1, f"test_fraction must be in (0, 1), got {test_fraction}")
  require(0 <= val_fraction < 1 - test_fraction,
          f"val_fraction must be in [0, {1 - test_fraction}), got {val_fraction}")
  n_test = max(2, int(round(1 / test_fraction)))
  rest, test = grouped_stratified_folds(labels, groups, n_test, seed)[0]
  val = np.zeros(0, np.int64)
  train = rest
  if val_fraction > 0:
    n_val = max(2, int(round((1 - test_fraction) / val_fraction)))
    tr, va = grouped_stratified_folds(labels[rest], groups[rest], n_val, seed + 1)[0]
    train, val = rest[tr], rest[va]
  out = {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}
  check_groups_disjoint(groups, out)
  return out


def folds_from_assignment(folds, groups=None) -> List[IndexPair]:
  """(train, val) pairs of a published per-sample fold id: fold k validates, the others train."""
  folds = np.asarray(folds).reshape(-1)
  ids = np.unique(folds)
  require(len(ids) >= 2, f"a fold assignment needs at least 2 folds, got {list(ids)}")
  pairs = [(np.flatnonzero(folds != k), np.flatnonzero(folds == k)) for k in ids]
  if groups is not None:
    check_groups_disjoint(groups, {f"fold {k}": np.flatnonzero(folds == k) for k in ids})
  return pairs


def patient_folds(labels, groups, assignment=None, n_splits: int = 5, seed: int = 0,
                  unit: str = "patient") -> Tuple[List[IndexPair], str]:
  """(folds, where they come from): the (train, val) pairs of a published per-sample `assignment` when
  given, else `n_splits` `unit`-grouped stratified folds; each fold is checked to be group-disjoint."""
  groups = np.asarray(groups)
  if assignment is not None:
    folds, source = folds_from_assignment(assignment, groups), "published fold assignment"
  else:
    folds = grouped_stratified_folds(labels, groups, int(n_splits), int(seed))
    source = f"{unit}-grouped stratified folds (seed {int(seed)})"
  for k, (tr, va) in enumerate(folds):
    check_groups_disjoint(groups, {f"fold {k} training": tr, f"fold {k} validation": va})
  return folds, source


def class_weights(labels, num_classes: Optional[int] = None) -> np.ndarray:
  """Per-class weights n / (K · n_c) (book §12.3.1); every class must occur in `labels`."""
  labels = np.asarray(labels, np.int64).reshape(-1)
  k = int(num_classes if num_classes is not None else labels.max() + 1)
  counts = np.bincount(labels, minlength=k)
  require(len(counts) == k, f"labels go up to {labels.max()} but num_classes is {k}")
  missing = np.flatnonzero(counts == 0)
  if len(missing):
    raise DlbookError(f"class weights: classes {missing.tolist()} have no training samples "
                      f"(weight n/(K*n_c) is undefined); drop them or merge classes")
  return len(labels) / (k * counts.astype(np.float64))
