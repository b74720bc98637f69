"""Classification metrics from a confusion matrix (thesis seed 001 §2.5).

All metrics derive from one confusion matrix, so they are exactly consistent:
accuracy, macro precision / recall / specificity / F1, and the multiclass
Matthews correlation coefficient (Gorodkin's R_K). Classes that never occur in
`y_true` or `y_pred` contribute 0 to a macro average where their denominator is 0,
as `sklearn` does with `zero_division=0`.
"""

from typing import Dict

import numpy as np


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
  """C[i, j] = number of samples of true class i predicted as j."""
  y_true = np.asarray(y_true, np.int64).reshape(-1)
  y_pred = np.asarray(y_pred, np.int64).reshape(-1)
  return np.bincount(y_true * num_classes + y_pred, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def _safe_div(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return np.divide(a, b, out=np.zeros_like(a), where=b != 0)


def matthews_corrcoef(cm: np.ndarray) -> float:
  """Gorodkin (2004) R_K: (c*s - sum_k p_k t_k) / sqrt((s^2 - sum p_k^2)(s^2 - sum t_k^2))."""
  cm = np.asarray(cm, np.float64)
  t, p = cm.sum(axis=1), cm.sum(axis=0)
  c, s = np.trace(cm), cm.sum()
  cov_ytyp = c * s - np.dot(t, p)
  cov_ypyp = s * s - np.dot(p, p)
  cov_ytyt = s * s - np.dot(t, t)
  denom = np.sqrt(cov_ytyt * cov_ypyp)
  return float(cov_ytyp / denom) if denom > 0 else 0.0


def classification_metrics(y_true, y_pred, num_classes: int) -> Dict[str, object]:
  """Accuracy, macro P/R/specificity/F1, MCC and the confusion matrix (as a list)."""
  cm = confusion_matrix(y_true, y_pred, num_classes)
  tp = np.diag(cm).astype(np.float64)
  fp, fn = cm.sum(axis=0) - tp, cm.sum(axis=1) - tp
  tn = cm.sum() - tp - fp - fn
  precision, recall = _safe_div(tp, tp + fp), _safe_div(tp, tp + fn)
  f1 = _safe_div(2 * tp, 2 * tp + fp + fn)
  specificity = _safe_div(tn, tn + fp)
  return {
      "accuracy": float(tp.sum() / max(cm.sum(), 1)),
      "precision_macro": float(precision.mean()),
      "recall_macro": float(recall.mean()),
      "specificity_macro": float(specificity.mean()),
      "f1_macro": float(f1.mean()),
      "mcc": matthews_corrcoef(cm),
      "confusion_matrix": cm.tolist(),
  }
