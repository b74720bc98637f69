"""What every config file shares: preset parsing, the data block and the optimizer block.

Every optional value (a path, an optional size) is an `ml_collections` placeholder of its type, so it
can be set from the command line although its default is None (`--config.data.data_dir=/my/data`).
"""

from typing import Sequence

import ml_collections
from ml_collections.config_dict import placeholder


def preset(arg, presets: Sequence[str], config_file: str, default: str = "cpu") -> str:
  """The preset named by the config argument (`--config=configs/x.py:PRESET`), or `default`."""
  name = arg or default
  if name not in presets:
    from dlbook.errors import DlbookError
    raise DlbookError(f"unknown preset {name!r} for configs/{config_file}; valid: {', '.join(presets)}")
  return name


def data(name: str, **overrides) -> ml_collections.ConfigDict:
  """The `data` block (`dlbook.data.load`): dataset by name, splits, preprocessing, augmentation."""
  block = dict(name=name, data_dir=placeholder(str), train_fraction=1.0, val_fraction=0.1, split_seed=0,
               image_size=0, channels=0, normalization="standardize", limit_train=0, limit_test=0,
               augment=dict(crop_pad=0, flip=False, rotation=0.0, cutout=0))
  block.update(overrides)
  return ml_collections.ConfigDict(block)


def optimizer(name: str = "adam", learning_rate: float = 1e-3, **overrides) -> ml_collections.ConfigDict:
  """The `optimizer` block (`dlbook.training.make_optimizer`) with every key it reads, so any of
  them can be set from the command line (e.g. `schedule=step` with `decay_every_steps`)."""
  block = dict(name=name, learning_rate=learning_rate, schedule="constant", final_learning_rate=0.0,
               warmup_steps=0, decay_every_steps=0, decay_factor=0.5, momentum=0.9, nesterov=False, b1=0.9,
               b2=0.999, weight_decay=0.0, grad_clip_norm=0.0)
  block.update(overrides)
  return ml_collections.ConfigDict(block)
