"""Metrics checked against trusted libraries in tests."""

from dlbook.metrics.classification import classification_metrics, confusion_matrix, matthews_corrcoef
