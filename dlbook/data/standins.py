"""Real stand-ins for medical sets that cannot be downloaded here (seed 003's C-NMC 2019, book ch. 13's
Figshare brain-tumour slices).

- ``fashion_mnist_pair``: two classes of the real Fashion-MNIST (Debian ``dataset-fashion-mnist``),
  by default T-shirt/top (label 0) against shirt (label 1), the pair that classifiers confuse most.
  Fashion-MNIST has no subjects; so that subject-disjoint folds and subject-level metrics can run,
  each run of ``subject_size`` consecutive images of one class (in the files' order) is a
  pseudo-subject (``S<class>_<n>``; test subjects ``T<class>_<n>``). They carry no subject
  structure: every output that uses this source says "stand-in data".
  Options: ``classes`` (the two Fashion-MNIST labels), ``per_class`` / ``test_per_class`` (the first n
  images of each class; 0 = all), ``subject_size``.
- ``digits_classes``: chosen classes of the real scikit-learn digits (8x8, `load_digits`, its stratified
  20 % test split as in the ``digits`` source), relabelled 0..K-1, with pseudo-patients of
  ``subject_size`` consecutive images of one class (``S<class>_<n>`` / ``T<class>_<n>``): a small real
  multi-class task for the brain-tumour pipeline's patient-grouped folds. Named "stand-in data" likewise.
"""

import numpy as np

from dlbook.data.sources import FASHION_MNIST_CLASSES, SOURCES, RawData, digits, fashion_mnist
from dlbook.errors import require

STANDIN_NOTE = "stand-in data"


def _subset(x, y, classes, per_class, subject_size, prefix):
  keep, labels, groups = [], [], []
  for new_label, c in enumerate(classes):
    idx = np.flatnonzero(y == c)
    idx = idx[:per_class] if per_class else idx
    keep.append(idx)
    labels.append(np.full(len(idx), new_label, np.int32))
    groups += [f"{prefix}{new_label}_{i // subject_size}" for i in range(len(idx))]
  keep = np.concatenate(keep)
  return x[keep], np.concatenate(labels), np.asarray(groups)


@SOURCES.register("fashion_mnist_pair")
def fashion_mnist_pair(data_dir=None, classes=(0, 6), per_class=0, test_per_class=0, subject_size=8,
                       **_) -> RawData:
  classes = tuple(int(c) for c in classes)
  require(len(classes) == 2 and len(set(classes)) == 2 and all(0 <= c < 10 for c in classes),
          f"fashion_mnist_pair needs two distinct Fashion-MNIST labels 0-9, got {classes}")
  require(int(subject_size) >= 1, f"subject_size must be >= 1, got {subject_size}")
  require(int(per_class) >= 0 and int(test_per_class) >= 0, "per_class and test_per_class must be >= 0")
  raw = fashion_mnist(data_dir=data_dir)
  xtr, ytr, gtr = _subset(raw.x_train, raw.y_train, classes, int(per_class), int(subject_size), "S")
  xte, yte, gte = _subset(raw.x_test, raw.y_test, classes, int(test_per_class), int(subject_size), "T")
  names = tuple(FASHION_MNIST_CLASSES[c] for c in classes)
  info = {"source": raw.info["source"], "stand_in": STANDIN_NOTE,
          "description": f"Fashion-MNIST {names[0]} (0) vs {names[1]} (1); pseudo-subjects of {subject_size} "
                         f"consecutive same-class images (no real subject structure)"}
  return RawData(xtr, ytr, xte, yte, 255.0, names, info, groups_train=gtr, groups_test=gte)


@SOURCES.register("digits_classes")
def digits_classes(data_dir=None, classes=(3, 5, 8), subject_size=6, **_) -> RawData:
  classes = tuple(int(c) for c in classes)
  require(len(classes) >= 2 and len(set(classes)) == len(classes) and all(0 <= c < 10 for c in classes),
          f"digits_classes needs two or more distinct digits 0-9, got {classes}")
  require(int(subject_size) >= 1, f"subject_size must be >= 1, got {subject_size}")
  raw = digits()
  xtr, ytr, gtr = _subset(raw.x_train, raw.y_train, classes, 0, int(subject_size), "S")
  xte, yte, gte = _subset(raw.x_test, raw.y_test, classes, 0, int(subject_size), "T")
  info = {"source": raw.info["source"], "stand_in": STANDIN_NOTE,
          "description": f"scikit-learn digits {', '.join(map(str, classes))} (labels 0-{len(classes) - 1}); "
                         f"pseudo-patients of {subject_size} consecutive same-class images (no real patient "
                         f"structure)"}
  return RawData(xtr, ytr, xte, yte, raw.max_value, tuple(f"digit {c}" for c in classes), info,
                 groups_train=gtr, groups_test=gte)
