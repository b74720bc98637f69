"""Grouped splits never put a patient on two sides; class weights match scikit-learn."""

import numpy as np
import pytest
from sklearn.utils.class_weight import compute_class_weight

from dlbook.data.splits import (check_groups_disjoint, class_weights, folds_from_assignment,
                                grouped_stratified_folds, grouped_train_val_test)
from dlbook.errors import DlbookError


def _patients(seed=0, n_patients=60):
  """Patients with 1-9 slices each and one label per patient (imbalanced 3 classes)."""
  rng = np.random.default_rng(seed)
  per = rng.integers(1, 10, n_patients)
  patient_label = rng.choice(3, n_patients, p=[0.5, 0.3, 0.2])
  groups = np.repeat([f"P{i:03d}" for i in range(n_patients)], per)
  labels = np.repeat(patient_label, per)
  return labels, groups


def test_grouped_folds_partition_and_disjoint():
  labels, groups = _patients()
  folds = grouped_stratified_folds(labels, groups, n_splits=5, seed=3)
  assert len(folds) == 5
  all_val = np.concatenate([va for _, va in folds])
  np.testing.assert_array_equal(np.sort(all_val), np.arange(len(labels)))  # each sample validates once
  for tr, va in folds:
    assert not set(groups[tr]) & set(groups[va])
    assert len(np.unique(labels[va])) == 3  # stratified: every class in every fold
  again = grouped_stratified_folds(labels, groups, n_splits=5, seed=3)
  for (a, b), (c, d) in zip(folds, again):
    np.testing.assert_array_equal(a, c)
    np.testing.assert_array_equal(b, d)
  other = grouped_stratified_folds(labels, groups, n_splits=5, seed=4)
  assert any(not np.array_equal(a[1], b[1]) for a, b in zip(folds, other))


def test_grouped_train_val_test():
  labels, groups = _patients(1, 100)
  s = grouped_train_val_test(labels, groups, val_fraction=0.2, test_fraction=0.2, seed=0)
  assert sorted(np.concatenate(list(s.values()))) == list(range(len(labels)))
  for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
    assert not set(groups[s[a]]) & set(groups[s[b]])
  assert 0.1 < len(s["test"]) / len(labels) < 0.3 and 0.1 < len(s["val"]) / len(labels) < 0.3
  no_val = grouped_train_val_test(labels, groups, val_fraction=0.0, test_fraction=0.25, seed=0)
  assert len(no_val["val"]) == 0


def test_check_groups_disjoint_names_the_leak():
  groups = np.array(["a", "a", "b", "c"])
  check_groups_disjoint(groups, {"train": [0, 1, 2], "test": [3]})
  with pytest.raises(DlbookError, match="group 'a' is in both the 'train' and the 'test' split"):
    check_groups_disjoint(groups, {"train": [0, 2], "test": [1, 3]})


def test_folds_from_assignment():
  folds = np.array([0, 0, 1, 1, 2, 2])
  pairs = folds_from_assignment(folds, groups=["s1", "s1", "s2", "s3", "s4", "s4"])
  np.testing.assert_array_equal(pairs[1][1], [2, 3])
  np.testing.assert_array_equal(pairs[1][0], [0, 1, 4, 5])
  with pytest.raises(DlbookError, match="'s1'"):
    folds_from_assignment(folds, groups=["s1", "s2", "s1", "s3", "s4", "s4"])


def test_class_weights_match_sklearn_balanced():
  y = np.array([0] * 100 + [1] * 10 + [2] * 1)
  w = class_weights(y, 3)
  np.testing.assert_allclose(w, compute_class_weight("balanced", classes=np.arange(3), y=y), rtol=1e-15)
  assert w[2] / w[0] == pytest.approx(100.0)  # 100x rarer -> 100x weight (book §12.3.1)
  with pytest.raises(DlbookError, match=r"classes \[1\]"):
    class_weights(np.array([0, 0, 2]), 3)
