"""Artificial astrocytes (CNGN, thesis seed 001 ch. 4): Exp 1 (Str x Weak grid), Exp 2 (greedy moving grid)
and the CNN-vs-CNN noise floor.

  python -m experiments.cngn --config=configs/cngn.py[:PRESET] --workdir=DIR [--config.key=value ...] \
      [--docs_dir=docs]

Presets (the config argument):
- smoke: digits, a 2-conv chain CNN, 2 epochs, a 2x2 grid, 2 noise seeds, a 1-epoch moving grid with the
  5-candidate cross; seconds on 2 cores (mostly compilation). For tests.
- cpu (default): sklearn's real digits (8x8; 1,151 train / 287 validation / 359 test), a 2-conv chain
  CNN with BatchNorm (16, 32 filters), batch 64, Adam 1e-3 with L2 weight decay 0.01, label smoothing
  0.1; Exp 1 on the thesis's 5x5 grid {0.5 .. 1.5 step 0.25} x 3 seeds for 3 epochs; noise floor over 5
  plain-CNN seeds; Exp 2 for 3 epochs x 3 seeds with the 9-candidate square. Fashion-MNIST
  (`--config.data.name=fashion_mnist`) ran at ~0.7 steps/s on this shared 2-core machine, too slow for
  the ~240 units. docs/astrocytes.md has the measured wall time.
- full: the thesis's settings (Table 4.1): CIFAR-10 (TFDS, prepared under data.data_dir) at 224x224,
  MobileNetV3-Large (from the registry; ImageNet weights are a user's file, see docs/backbones.md),
  Adam 1e-4, weight decay 0.01, label smoothing, batch 256, NG = 4, AS = 2; Exp 1 5 epochs without a
  scheduler on the 5x5 grid x 3 repetitions; Exp 2 10 epochs with cosine annealing. For accelerators.
"""

import ml_collections

from configs import common

PRESETS = ("smoke", "cpu", "full")


def get_config(preset=None):
  preset = common.preset(preset, PRESETS, "cngn.py")
  c = ml_collections.ConfigDict()
  c.preset = preset
  # Astrocytes (thesis Table 4.1): NG steps between modulations, symmetric sensitivity AS.
  c.astro = ml_collections.ConfigDict(dict(ng=4, sensitivity=2.0, mode="as_described"))
  # Exp 1: every Str x Weak cell for every seed; the plain CNN for every noise seed (a superset of seeds).
  c.grid = ml_collections.ConfigDict(dict(strong=(0.5, 0.75, 1.0, 1.25, 1.5), weak=(0.5, 0.75, 1.0, 1.25, 1.5)))
  c.seeds = (0, 1, 2)
  c.noise_seeds = (0, 1, 2, 3, 4)
  c.epochs = 3.0
  # Exp 2: greedy moving grid from (1, 1), +-step per factor ("square": 3x3 = 9 candidates as the thesis
  # counts them; "cross": one factor at a time, 5).
  c.moving = ml_collections.ConfigDict(dict(epochs=3, seeds=(0, 1, 2), step=0.25, neighbourhood="square",
                                            schedule="cosine"))

  # cpu: sklearn's real handwritten digits (8x8); Fashion-MNIST ran at ~0.7 steps/s on this shared machine.
  c.data = common.data("digits", val_fraction=0.2)
  c.model_name = "chain_cnn"
  c.model = ml_collections.ConfigDict(dict(n_conv=2, conv_filters=(16, 32), conv_kernel=(3, 3), n_dense=1,
                                           dense_units=(32,), activation="relu", dropout=0.0))
  c.optimizer = common.optimizer("adam", 1e-3, weight_decay=0.01)  # PyTorch-style (coupled) L2 as the thesis's Adam
  c.label_smoothing = 0.1
  c.batch_size = 64
  c.eval_batch_size = 512
  c.log_every_steps = 10
  c.checkpoint_every_steps = 50
  c.num_devices = 0  # 0: every local device, data-parallel

  if preset == "smoke":
    c.model = ml_collections.ConfigDict(dict(n_conv=2, conv_filters=(8, 16), conv_kernel=(3, 3), n_dense=1,
                                             dense_units=(32,), activation="relu", dropout=0.0))
    c.grid.strong = (1.0, 1.5)
    c.grid.weak = (0.5, 1.0)
    c.seeds = (0,)
    c.noise_seeds = (0, 1)
    c.epochs = 2.0
    c.moving.epochs = 1
    c.moving.seeds = (0,)
    c.moving.neighbourhood = "cross"
    c.log_every_steps = 5
    c.checkpoint_every_steps = 10
  elif preset == "full":
    c.data = common.data("tfds:cifar10", val_fraction=0.1, image_size=224,
                         augment=dict(crop_pad=16, flip=True, rotation=90.0, cutout=0))
    c.model_name = "mobilenet_v3_large"
    c.model = ml_collections.ConfigDict()
    c.optimizer = common.optimizer("adam", 1e-4, weight_decay=0.01)
    c.epochs = 5.0
    c.noise_seeds = (0, 1, 2, 3, 4)
    c.moving.epochs = 10
    c.moving.seeds = (0, 1, 2)
    c.batch_size = 256
    c.eval_batch_size = 500
    c.log_every_steps = 50
    c.checkpoint_every_steps = 500
  return c
