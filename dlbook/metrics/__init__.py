"""Metrics checked against trusted libraries in tests."""

from dlbook.metrics.classification import (binary_metrics, binary_roc_auc, classification_metrics, confusion_matrix,
                                           matthews_corrcoef, metrics_from_confusion, per_class_report,
                                           per_class_scores, roc_auc_ovr, subject_level)
