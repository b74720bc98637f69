"""Coarse-to-fine training with simple / progression-based selective freezing (book ch. 4).

  python -m experiments.coarse_to_fine --config=configs/coarse_to_fine.py[:PRESET] --workdir=DIR \
      [--config.key=value ...] [--report_only] [--docs_dir=docs]

One run trains the grid modes x train_fractions x seeds. For every (data fraction,
seed) the coarse phase is trained once and shared by every mode (it is identical
for all of them: same init, batches, keys and learning-rate schedule); then each
mode fine-tunes from it. Modes: `traditional` (no freezing), `ssf` (first N/2
blocks frozen), `psf` (one variant per entry of `freeze_fractions`). Traditional
and coarse+fine train for the same total epochs, coarse_epochs + fine_epochs; PSF
splits fine_epochs evenly over its iterations. Rerunning the command resumes: a
finished cell is skipped, an interrupted one continues from its latest checkpoint
at the right phase and window.

Presets (the config argument):
- smoke: digits, a 4-block chain CNN, 2 + 1 epochs at a constant learning rate, 1 seed, fractions
  60/100 %, traditional / SSF / PSF 1/4; under a minute on 2 cores (mostly compilation). For tests.
- cpu (default): Fashion-MNIST (a fixed stratified 20,000-image third of the training set, all 10k
  test images), a 10-block chain CNN (5 conv + 5 dense layers, 86k parameters), coarse 8 + fine 4
  epochs, batch 128, 3 seeds, fractions 60/80/100 % of the 20k, traditional / SSF / PSF 1/4, 1/5,
  1/10 (K = 3, 2, 1: 2, 4, 9 iterations). The whole grid of 45 runs is sized for 1-2 h on this
  2-core machine while it is shared with other work (docs/coarse_to_fine.md has the measured wall
  time).
  The DARTS network is not the cpu target: a 20-cell DARTS_V2 step costs ~2.6 CPU-s at C=8 and
  batch 64, and each of the 19 frozen-segment masks compiles for ~45 CPU-s.
- full: CIFAR-10 (TFDS, prepared under data.data_dir), the 20-cell DARTS_V2 evaluation network
  (C=36, auxiliary head 0.4, drop-path 0.2, cutout 16), SGD 0.025 cosine, batch 96; the book's
  epochs: totals 400/500/600 for 60/80/100 % (coarse 300/400/500 + fine 100). For accelerators.
- full_cifar100: as full on CIFAR-100 (book Table 4.2).
- full_mnist: MNIST (TFDS) resized to 32x32, coarse 40/50/60 + fine 10 epochs (book Table 4.3).
"""

import ml_collections

from configs import common

PRESETS = ("smoke", "cpu", "full", "full_cifar100", "full_mnist")


def get_config(preset=None):
  preset = common.preset(preset, PRESETS, "coarse_to_fine.py")
  c = ml_collections.ConfigDict()
  c.preset = preset
  # The grid: every mode x train fraction x seed is one run (one results.json).
  c.modes = ("traditional", "ssf", "psf")
  c.freeze_fractions = (0.25, 0.2, 0.1)  # PSF variants 1/4, 1/5, 1/10 (book Tables 4.4-4.6)
  c.train_fractions = (0.6, 0.8, 1.0)  # book Tables 4.1-4.3
  c.seeds = (0, 1, 2)
  # Equal total epochs: traditional trains coarse_epochs + fine_epochs without freezing.
  c.coarse_epochs = 8.0
  c.fine_epochs = 4.0
  c.coarse_epochs_by_fraction = ()  # optional, one per train fraction (overrides coarse_epochs)

  c.data = common.data("fashion_mnist", val_fraction=0.0,
                       augment=dict(crop_pad=2, flip=False, rotation=0.0, cutout=0))
  c.model_name = "chain_cnn"
  # N = 10 blocks (5 conv + 5 dense layers), so PSF 1/4, 1/5, 1/10 give distinct K = 3, 2, 1. The 5th conv
  # sees a 1x1 map (28 -> 14 -> 7 -> 3 -> 1 after the pools), hence its 1x1 kernel.
  c.model = ml_collections.ConfigDict(dict(n_conv=5, conv_filters=(16, 32, 64, 64, 64), conv_kernel=(3, 3, 3, 3, 1),
                                           n_dense=5, dense_units=(64, 64, 64, 64, 64), activation="relu",
                                           dropout=0.0))
  c.optimizer = common.optimizer("sgd", 0.05, schedule="cosine", weight_decay=5e-4, grad_clip_norm=5.0)
  c.batch_size = 128
  c.eval_batch_size = 1000
  c.log_every_steps = 100
  c.checkpoint_every_steps = 500
  c.max_checkpoints = 2
  c.aux_weight = 0.0
  c.label_smoothing = 0.0
  c.num_devices = 0  # 0: every local device, data-parallel

  if preset == "cpu":
    c.data.limit_train = 20000  # a fixed stratified third of the 60k, so the 45-run grid fits ~2 h on 2 cores
  elif preset == "smoke":
    c.data.name = "digits"
    c.data.augment.crop_pad = 0
    c.train_fractions = (0.6, 1.0)
    c.seeds = (0,)
    c.freeze_fractions = (0.25,)
    c.coarse_epochs = 2.0
    c.fine_epochs = 1.0
    c.model = ml_collections.ConfigDict(dict(n_conv=2, conv_filters=(8, 16), conv_kernel=(3, 3), n_dense=2,
                                             dense_units=(32, 32), activation="relu", dropout=0.0))
    c.optimizer.schedule = "constant"  # one compiled step per mask for both fractions
    c.batch_size = 64
    c.eval_batch_size = 512
    c.log_every_steps = 10
    c.checkpoint_every_steps = 20
  elif preset.startswith("full"):
    c.data.name = {"full": "tfds:cifar10", "full_cifar100": "tfds:cifar100", "full_mnist": "tfds:mnist"}[preset]
    c.data.augment = ml_collections.ConfigDict(dict(crop_pad=4, flip=preset != "full_mnist", rotation=0.0,
                                                    cutout=16 if preset != "full_mnist" else 0))
    c.model_name = "darts_eval"
    c.model = ml_collections.ConfigDict(dict(genotype="DARTS_V2", init_channels=36, layers=20, auxiliary=True,
                                             drop_path_prob=0.2))
    c.aux_weight = 0.4
    c.optimizer.learning_rate = 0.025  # the DARTS evaluation recipe: SGD 0.025 cosine, wd 3e-4, clip 5
    c.optimizer.weight_decay = 3e-4
    c.batch_size = 96
    c.eval_batch_size = 500
    c.log_every_steps = 200
    c.checkpoint_every_steps = 2000
    c.fine_epochs = 100.0
    c.coarse_epochs = 500.0
    c.coarse_epochs_by_fraction = (300.0, 400.0, 500.0)
    if preset == "full_mnist":
      c.data.image_size = 32  # the auxiliary head at 2/3 depth needs 8x8 maps, i.e. 32x32 inputs
      c.fine_epochs = 10.0
      c.coarse_epochs = 60.0
      c.coarse_epochs_by_fraction = (40.0, 50.0, 60.0)
  return c
