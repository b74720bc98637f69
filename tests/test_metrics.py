"""Classification metrics agree with scikit-learn and with hand-worked values (thesis seed 001 §2.5)."""

from fractions import Fraction

import numpy as np
import pytest
from sklearn import metrics as skm

from dlbook.errors import DlbookError
from dlbook.metrics import (binary_metrics, binary_roc_auc, classification_metrics, per_class_report, roc_auc_ovr,
                            subject_level)


def _from_confusion(cm):
  """Label vectors whose confusion matrix is `cm`."""
  y_true, y_pred = [], []
  for i, row in enumerate(cm):
    for j, n in enumerate(row):
      y_true += [i] * n
      y_pred += [j] * n
  return np.array(y_true), np.array(y_pred)


@pytest.mark.parametrize("seed,num_classes", [(0, 2), (1, 5), (2, 10)])
def test_against_sklearn(seed, num_classes):
  rng = np.random.default_rng(seed)
  y_true = rng.integers(0, num_classes, 500)
  y_pred = np.where(rng.random(500) < 0.6, y_true, rng.integers(0, num_classes, 500))
  m = classification_metrics(y_true, y_pred, num_classes)
  labels = list(range(num_classes))
  assert m["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred), abs=1e-12)
  for ours, fn, average in (("precision_macro", skm.precision_score, "macro"),
                            ("recall_macro", skm.recall_score, "macro"),
                            ("f1_macro", skm.f1_score, "macro"), ("f1_weighted", skm.f1_score, "weighted")):
    assert m[ours] == pytest.approx(fn(y_true, y_pred, average=average, labels=labels, zero_division=0), abs=1e-12)
  assert m["mcc"] == pytest.approx(skm.matthews_corrcoef(y_true, y_pred), abs=1e-12)
  np.testing.assert_array_equal(m["confusion_matrix"], skm.confusion_matrix(y_true, y_pred, labels=labels))


def test_thesis_f1_and_specificity_hand_worked():
  # C = [[5,1,0],[2,3,1],[0,1,7]]: per class TP 5,3,7; FP 2,2,1; FN 1,3,1; TN 12,12,11 (of 20).
  y_true, y_pred = _from_confusion([[5, 1, 0], [2, 3, 1], [0, 1, 7]])
  m = classification_metrics(y_true, y_pred, 3)
  p = (Fraction(5, 7) + Fraction(3, 5) + Fraction(7, 8)) / 3  # 613/840
  r = (Fraction(5, 6) + Fraction(3, 6) + Fraction(7, 8)) / 3  # 53/72
  assert m["precision_macro"] == pytest.approx(float(p), abs=1e-15)
  assert m["recall_macro"] == pytest.approx(float(r), abs=1e-15)
  assert m["f1_of_macro_pr"] == pytest.approx(float(2 * p * r / (p + r)), abs=1e-15)  # Eq. 2.65
  # Specificity TN/(TN+FP): 12/14, 12/14, 11/12 (the printed TN/(TP+FP) would give 12/7 > 1).
  assert m["specificity_macro"] == pytest.approx(float((Fraction(12, 14) * 2 + Fraction(11, 12)) / 3), abs=1e-15)
  # sklearn's macro-F1 (mean of per-class F1) is a different number: 10/13, 6/11, 7/8.
  f1_sklearn = (Fraction(10, 13) + Fraction(6, 11) + Fraction(7, 8)) / 3
  assert m["f1_macro"] == pytest.approx(float(f1_sklearn), abs=1e-15)
  assert abs(m["f1_macro"] - m["f1_of_macro_pr"]) > 1e-3


def test_absent_class_and_degenerate_cases():
  y_true = np.array([0, 0, 1, 1, 1])
  y_pred = np.array([0, 1, 1, 1, 1])
  m = classification_metrics(y_true, y_pred, 3)  # class 2 never occurs
  assert m["f1_macro"] == pytest.approx(skm.f1_score(y_true, y_pred, average="macro", labels=[0, 1, 2],
                                                     zero_division=0))
  assert m["mcc"] == pytest.approx(skm.matthews_corrcoef(y_true, y_pred))
  constant = classification_metrics(np.array([1, 1, 1]), np.array([1, 1, 1]), 2)
  assert constant["mcc"] == 0.0 and constant["accuracy"] == 1.0
  # specificity of class k = TN / (TN + FP)
  m = classification_metrics(np.array([0, 1, 1, 0]), np.array([0, 1, 0, 0]), 2)
  assert m["specificity_macro"] == pytest.approx((1 / 2 + 2 / 2) / 2)  # class 0: TN=1, FP=1; class 1: TN=2, FP=0


def test_per_class_report_matches_sklearn():
  rng = np.random.default_rng(3)
  y_true = rng.integers(0, 4, 300)
  y_pred = np.where(rng.random(300) < 0.7, y_true, rng.integers(0, 4, 300))
  names = ("glioma", "meningioma", "pituitary", "other")
  rows = per_class_report(y_true, y_pred, 4, names)
  ref = skm.classification_report(y_true, y_pred, labels=[0, 1, 2, 3], target_names=names, output_dict=True,
                                  zero_division=0)
  for row in rows:
    for key, ref_key in (("precision", "precision"), ("recall", "recall"), ("f1", "f1-score"), ("support", "support")):
      assert row[key] == pytest.approx(ref[row["class"]][ref_key], abs=1e-12)
  with pytest.raises(DlbookError, match="class names"):
    per_class_report(y_true, y_pred, 4, names[:3])


def test_binary_metrics_against_sklearn():
  rng = np.random.default_rng(4)
  y = rng.integers(0, 2, 400)
  scores = np.clip(0.35 * y + rng.normal(0.35, 0.25, 400), 0, 1)
  m = binary_metrics(y, scores, threshold=0.5)
  pred = (scores >= 0.5).astype(int)
  assert m["precision"] == pytest.approx(skm.precision_score(y, pred), abs=1e-12)
  assert m["recall"] == pytest.approx(skm.recall_score(y, pred), abs=1e-12)
  assert m["specificity"] == pytest.approx(skm.recall_score(y, pred, pos_label=0), abs=1e-12)
  assert m["f1"] == pytest.approx(skm.f1_score(y, pred), abs=1e-12)
  assert m["f1_weighted"] == pytest.approx(skm.f1_score(y, pred, average="weighted"), abs=1e-12)
  assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred), abs=1e-12)
  assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, scores), abs=1e-12)


def test_roc_auc_hand_worked_and_one_vs_rest():
  # Positives {0.35, 0.8} vs negatives {0.1, 0.4}: 3 of 4 pairs ordered correctly.
  assert binary_roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
  assert binary_roc_auc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)  # a tie counts one half
  assert np.isnan(binary_roc_auc([1, 1, 1], [0.2, 0.3, 0.9]))
  rng = np.random.default_rng(5)
  y = rng.integers(0, 3, 200)
  logits = rng.normal(size=(200, 3)) + 1.5 * np.eye(3)[y]
  probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  r = roc_auc_ovr(y, probs)
  assert r["roc_auc_macro"] == pytest.approx(skm.roc_auc_score(y, probs, multi_class="ovr"), abs=1e-12)
  assert r["classes_defined"] == 3
  r = roc_auc_ovr(np.array([0, 0, 1, 1]), np.array([[.9, .1, 0], [.6, .4, 0], [.3, .7, 0], [.5, .5, 0]]))
  assert np.isnan(r["roc_auc_per_class"][2]) and r["classes_defined"] == 2
  assert r["roc_auc_macro"] == pytest.approx(1.0)


def test_subject_level_aggregation():
  subjects = np.array(["H1", "H1", "7", "7", "7", "9"])
  probs = np.array([0.2, 0.7, 0.9, 0.2, 0.6, 0.4])  # H1 mean .45 -> 0; 7 mean .5667 -> 1; 9 .4 -> 0
  labels = np.array([0, 0, 1, 1, 1, 1])
  s = subject_level(subjects, probs, labels)
  assert s["subjects"] == ["7", "9", "H1"]
  np.testing.assert_allclose(s["mean_prob"], [1.7 / 3, 0.4, 0.45])
  assert s["y_pred"] == [1, 0, 0] and s["y_true"] == [1, 1, 0]
  assert s["accuracy"] == pytest.approx(2 / 3)
  multi = subject_level(["a", "a", "b"], np.array([[.6, .4], [.2, .8], [.9, .1]]), [1, 1, 0])
  assert multi["y_pred"] == [1, 0] and multi["accuracy"] == 1.0
  with pytest.raises(DlbookError, match="different labels"):
    subject_level(["a", "a"], [0.1, 0.2], [0, 1])
