"""Datasets by name (`load`), deterministic batching, and jittable augmentation.

Importing this package imports every module in it (except the ``build_*`` set-up scripts), so sources
defined in any of them (e.g. steganography covers, proteins) register with `SOURCES`.
"""

import importlib
import pkgutil

from dlbook.data import augment  # the module: augment.augment(key, images, config)
from dlbook.data.pipeline import (Dataset, Split, epoch_permutation, eval_batches, load, train_batch,
                                  train_batches)
from dlbook.data.sources import SOURCES, RawData, load_raw, read_idx, read_image, sources, stratified_split

for _module in pkgutil.iter_modules(__path__):
  if _module.name.startswith("build_"):  # set-up scripts (`python -m dlbook.data.build_...`), not sources
    continue
  importlib.import_module(f"{__name__}.{_module.name}")
