"""Training a DARTS cell from scratch in the evaluation network (book ch. 3 §3.2.6).

  python -m experiments.darts_train --config=configs/darts_train.py[:PRESET] --workdir=DIR \
      [--config.genotype=DARTS_V1|DARTS_V2|path/to/genotype.json] [--config.key=value]

`genotype` is a published cell (DARTS_V1, DARTS_V2) or the genotype.json a darts_search run wrote.
The run uses dlbook's shared training loop (`dlbook.training.loop.train_and_evaluate`) with the
`darts_eval` model: results.json (test accuracy, macro-F1, MCC, parameter count), curves, TensorBoard
events, resumable orbax checkpoints, and pictures of the trained cells (normal.png, reduce.png).

Presets (the config argument):
- smoke: sklearn digits resized to 32x32, a 3-cell C=4 network with the auxiliary head and drop-path,
  4 steps. For tests.
- cpu (default): Fashion-MNIST (28x28) from the Debian package, an 8-cell C=16 network (no auxiliary
  head: the reference's head needs 8x8 features at 2/3 depth, i.e. 32x32 inputs), 10,000 training
  images, 5 epochs, cutout 8. See docs/darts.md for the measured wall time.
- full: the paper's evaluation: CIFAR-10 through TFDS, 20 cells, C=36, auxiliary head (weight 0.4),
  drop-path 0.2, cutout 16, SGD lr 0.025 cosine, momentum 0.9, weight decay 3e-4, clipping 5, batch 96,
  600 epochs; for accelerators.
"""

import ml_collections

from configs import common

PRESETS = ("smoke", "cpu", "full")


def get_config(preset=None):
  preset = common.preset(preset, PRESETS, "darts_train.py")
  c = ml_collections.ConfigDict()
  c.preset = preset
  c.seed = 0
  c.genotype = "DARTS_V2"  # DARTS_V1 | DARTS_V2 | path to a genotype.json
  c.data = common.data("fashion_mnist", limit_train=10000, augment=dict(crop_pad=2, flip=False, rotation=0.0, cutout=8))
  c.model_name = "darts_eval"
  c.model = ml_collections.ConfigDict(dict(init_channels=16, layers=8, auxiliary=False, drop_path_prob=0.2,
                                           stem_multiplier=3, conv_impl="auto"))
  # conv_impl "auto": shifted slices on CPU (the same program as "shift"), grouped XLA convs on GPU/TPU
  # (docs/accelerators.md).
  c.optimizer = common.optimizer("sgd", 0.025, schedule="cosine", weight_decay=3e-4, grad_clip_norm=5.0)
  c.aux_weight = 0.4  # used only when model.auxiliary
  c.label_smoothing = 0.0
  c.batch_size = 96
  c.eval_batch_size = 500
  c.num_epochs = 5  # cpu; full sets 600
  c.num_train_steps = 0  # 0: derived from num_epochs
  c.log_every_steps = 20
  c.checkpoint_every_steps = 100
  c.eval_every_epochs = 2
  c.max_checkpoints = 3
  c.num_devices = 0

  if preset == "smoke":
    c.data.name = "digits"
    c.data.limit_train = 0
    c.data.image_size = 32
    c.data.augment = ml_collections.ConfigDict(dict(crop_pad=2, flip=False, rotation=0.0, cutout=8))
    c.model.update(init_channels=4, layers=3, auxiliary=True)
    c.batch_size = 32
    c.eval_batch_size = 128
    c.num_train_steps = 4
    c.log_every_steps = 2
    c.checkpoint_every_steps = 2
  elif preset == "full":
    c.data.name = "tfds:cifar10"
    c.data.limit_train = 0
    c.data.val_fraction = 0.0
    c.data.augment = ml_collections.ConfigDict(dict(crop_pad=4, flip=True, rotation=0.0, cutout=16))
    c.model.update(init_channels=36, layers=20, auxiliary=True)
    c.num_epochs = 600
    c.log_every_steps = 100
    c.checkpoint_every_steps = 2000
    c.eval_every_epochs = 10
  return c
