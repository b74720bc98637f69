"""Classification metrics agree with scikit-learn."""

import numpy as np
import pytest
from sklearn import metrics as skm

from dlbook.metrics import classification_metrics


@pytest.mark.parametrize("seed,num_classes", [(0, 2), (1, 5), (2, 10)])
def test_against_sklearn(seed, num_classes):
  rng = np.random.default_rng(seed)
  y_true = rng.integers(0, num_classes, 500)
  y_pred = np.where(rng.random(500) < 0.6, y_true, rng.integers(0, num_classes, 500))
  m = classification_metrics(y_true, y_pred, num_classes)
  labels = list(range(num_classes))
  assert m["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred), abs=1e-12)
  for ours, fn in (("precision_macro", skm.precision_score), ("recall_macro", skm.recall_score),
                   ("f1_macro", skm.f1_score)):
    assert m[ours] == pytest.approx(fn(y_true, y_pred, average="macro", labels=labels, zero_division=0), abs=1e-12)
  assert m["mcc"] == pytest.approx(skm.matthews_corrcoef(y_true, y_pred), abs=1e-12)
  np.testing.assert_array_equal(m["confusion_matrix"], skm.confusion_matrix(y_true, y_pred, labels=labels))


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
