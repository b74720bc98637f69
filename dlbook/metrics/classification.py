"""Classification metrics from a confusion matrix (thesis seed 001 §2.5; seed 003; book ch. 12–13).

All multiclass metrics derive from one confusion matrix, so they are exactly consistent:

- accuracy (Eq. 2.61);
- macro specificity, mean over classes of TN_k / (TN_k + FP_k) (the thesis prints
  TN_k / (TP_k + FP_k) in Eq. 2.62, a typo: that ratio is not a specificity and can exceed 1);
- macro precision and recall (Eqs. 2.63–2.64);
- two different "macro F1"s, under distinct names: ``f1_macro`` is scikit-learn's, the mean of
  the per-class F1 scores; ``f1_of_macro_pr`` is the thesis's Eq. 2.65, the harmonic mean of
  macro precision and macro recall. They differ whenever classes differ;
- ``f1_weighted``, the per-class F1 weighted by support (the C-NMC 2019 challenge metric);
- the multiclass Matthews correlation coefficient (Gorodkin's R_K, Eq. 2.66).

Classes that never occur in `y_true` or `y_pred` contribute 0 to a macro average where
their denominator is 0, as `sklearn` does with `zero_division=0`.

Also here: a per-class report (precision / recall / F1 / specificity / support), binary
metrics of a positive-class score (precision, recall = sensitivity, specificity, F1,
weighted F1, ROC-AUC), one-vs-rest ROC-AUC, and subject-level aggregation (mean
probability per subject).
"""

from typing import Dict, Optional, Sequence

import numpy as np

from dlbook.errors import require


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
  """C[i, j] = number of samples of true class i predicted as j."""
  y_true = np.asarray(y_true, np.int64).reshape(-1)
  y_pred = np.asarray(y_pred, np.int64).reshape(-1)
  return np.bincount(y_true * num_classes + y_pred, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def _safe_div(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return np.divide(a, b, out=np.zeros_like(a), where=b != 0)


def per_class_counts(cm: np.ndarray):
  """(TP, FP, FN, TN) per class, each a float64 vector, from a confusion matrix."""
  cm = np.asarray(cm, np.float64)
  tp = np.diag(cm)
  fp, fn = cm.sum(axis=0) - tp, cm.sum(axis=1) - tp
  return tp, fp, fn, cm.sum() - tp - fp - fn


def per_class_scores(cm: np.ndarray) -> Dict[str, np.ndarray]:
  """Per-class precision, recall, specificity, F1 and support (zero where undefined)."""
  tp, fp, fn, tn = per_class_counts(cm)
  return {"precision": _safe_div(tp, tp + fp), "recall": _safe_div(tp, tp + fn),
          "specificity": _safe_div(tn, tn + fp), "f1": _safe_div(2 * tp, 2 * tp + fp + fn),
          "support": (tp + fn).astype(np.int64)}


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


def metrics_from_confusion(cm: np.ndarray) -> Dict[str, object]:
  """The thesis set (seed 001 §2.5) and sklearn's macro / weighted F1 from one confusion matrix."""
  cm = np.asarray(cm)
  s = per_class_scores(cm)
  precision, recall = float(s["precision"].mean()), float(s["recall"].mean())
  support = s["support"]
  return {
      "accuracy": float(np.trace(cm) / max(cm.sum(), 1)),
      "precision_macro": precision,
      "recall_macro": recall,
      "specificity_macro": float(s["specificity"].mean()),
      "f1_macro": float(s["f1"].mean()),
      "f1_of_macro_pr": float(_safe_div(2 * precision * recall, precision + recall)),  # Eq. 2.65
      "f1_weighted": float(np.dot(s["f1"], support) / max(support.sum(), 1)),
      "mcc": matthews_corrcoef(cm),
      "confusion_matrix": cm.tolist(),
  }


def classification_metrics(y_true, y_pred, num_classes: int) -> Dict[str, object]:
  """Accuracy, macro P/R/specificity, both macro F1s, weighted F1, MCC and the confusion matrix."""
  return metrics_from_confusion(confusion_matrix(y_true, y_pred, num_classes))


def per_class_report(y_true, y_pred, num_classes: int,
                     class_names: Optional[Sequence[str]] = None) -> list:
  """One row per class: name, precision, recall, F1, specificity, support (book Tables 12.2, Fig. 13.4)."""
  names = list(class_names) if class_names is not None else [str(k) for k in range(num_classes)]
  require(len(names) == num_classes, f"per_class_report: {len(names)} class names for {num_classes} classes")
  s = per_class_scores(confusion_matrix(y_true, y_pred, num_classes))
  return [{"class": names[k], "precision": float(s["precision"][k]), "recall": float(s["recall"][k]),
           "f1": float(s["f1"][k]), "specificity": float(s["specificity"][k]), "support": int(s["support"][k])}
          for k in range(num_classes)]


def binary_roc_auc(y_true, scores) -> float:
  """Area under the ROC curve of positive-class `scores`; NaN when `y_true` has one class only."""
  from sklearn.metrics import roc_auc_score
  y_true = np.asarray(y_true).reshape(-1)
  scores = np.asarray(scores, np.float64).reshape(-1)
  require(len(y_true) == len(scores), f"roc_auc: {len(y_true)} labels but {len(scores)} scores")
  if len(np.unique(y_true)) < 2:
    return float("nan")
  return float(roc_auc_score(y_true, scores))


def roc_auc_ovr(y_true, probs) -> Dict[str, object]:
  """One-vs-rest ROC-AUC of class probabilities `probs` [N, K]: per class and their macro mean.

  A class absent from `y_true` (or the only one present) has no ROC curve: its AUC is NaN and
  the macro mean is over the classes where it is defined (``classes_defined`` counts them).
  With every class present this is ``sklearn.metrics.roc_auc_score(multi_class='ovr')``.
  """
  y_true = np.asarray(y_true).reshape(-1)
  probs = np.asarray(probs, np.float64)
  require(probs.ndim == 2 and len(probs) == len(y_true),
          f"roc_auc_ovr needs probs of shape [N, K] with N = {len(y_true)}, got {probs.shape}")
  per_class = np.array([binary_roc_auc(y_true == k, probs[:, k]) for k in range(probs.shape[1])])
  defined = ~np.isnan(per_class)
  return {"roc_auc_macro": float(per_class[defined].mean()) if defined.any() else float("nan"),
          "roc_auc_per_class": per_class.tolist(), "classes_defined": int(defined.sum())}


def binary_metrics(y_true, scores, threshold: float = 0.5) -> Dict[str, object]:
  """Binary metrics of positive-class scores (seed 003: class 1 = ALL is positive).

  Predictions are ``scores >= threshold``. Precision, recall (sensitivity), specificity
  and F1 are of the positive class; ``f1_weighted`` is the support-weighted F1 over both
  classes (the C-NMC 2019 challenge metric); ``roc_auc`` uses the raw scores.
  """
  y_true = np.asarray(y_true, np.int64).reshape(-1)
  scores = np.asarray(scores, np.float64).reshape(-1)
  require(np.isin(y_true, (0, 1)).all(), "binary_metrics: labels must be 0 or 1")
  cm = confusion_matrix(y_true, (scores >= threshold).astype(np.int64), 2)
  (tn, fp), (fn, tp) = cm.astype(np.float64)
  both = metrics_from_confusion(cm)
  return {
      "accuracy": both["accuracy"],
      "precision": float(_safe_div(tp, tp + fp)),
      "recall": float(_safe_div(tp, tp + fn)),
      "specificity": float(_safe_div(tn, tn + fp)),
      "f1": float(_safe_div(2 * tp, 2 * tp + fp + fn)),
      "f1_weighted": both["f1_weighted"],
      "mcc": both["mcc"],
      "roc_auc": binary_roc_auc(y_true, scores),
      "confusion_matrix": cm.tolist(),
  }


def subject_level(subjects, probs, y_true, threshold: float = 0.5) -> Dict[str, object]:
  """Aggregates per-image probabilities to one prediction per subject (patient).

  Each subject's probability is the mean of its images' probabilities; its prediction is
  ``mean >= threshold`` for positive-class scores [N] or the argmax for class
  probabilities [N, K]. Every image of a subject must carry the same label (a subject with
  two labels raises). Returns the subjects (sorted), their mean probabilities, true and
  predicted labels, and the subject-level accuracy.
  """
  subjects = np.asarray(subjects).reshape(-1)
  probs = np.asarray(probs, np.float64)
  y_true = np.asarray(y_true, np.int64).reshape(-1)
  require(len(subjects) == len(probs) == len(y_true),
          f"subject_level: {len(subjects)} subjects, {len(probs)} probabilities, {len(y_true)} labels")
  ids, inverse = np.unique(subjects, return_inverse=True)
  counts = np.bincount(inverse, minlength=len(ids)).astype(np.float64)
  flat = probs.reshape(len(probs), -1)
  mean = np.stack([np.bincount(inverse, weights=flat[:, j], minlength=len(ids)) for j in range(flat.shape[1])],
                  axis=1) / counts[:, None]
  labels = np.full(len(ids), -1, np.int64)
  labels[inverse] = y_true
  mixed = ids[np.bincount(inverse, weights=(y_true != labels[inverse]).astype(np.float64), minlength=len(ids)) > 0]
  require(len(mixed) == 0, f"subject_level: subjects with images of different labels: {list(mixed[:5])}")
  if probs.ndim == 1:
    mean = mean[:, 0]
    pred = (mean >= threshold).astype(np.int64)
  else:
    pred = np.argmax(mean, axis=1)
  return {"subjects": ids.tolist(), "mean_prob": mean.tolist(), "y_true": labels.tolist(),
          "y_pred": pred.tolist(), "accuracy": float(np.mean(pred == labels)), "num_subjects": len(ids)}
