"""Datasets by name (`load`), deterministic batching, and jittable augmentation."""

from dlbook.data.augment import augment
from dlbook.data.pipeline import (Dataset, Split, epoch_permutation, eval_batches, load, train_batch,
                                  train_batches)
from dlbook.data.sources import SOURCES, RawData, load_raw, read_idx, read_image, sources, stratified_split
