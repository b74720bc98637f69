"""GA transfer learning with DenseNet-121-SE (seed 004) against random search at the same budget.

  python -m experiments.ga_transfer --config=configs/ga_transfer.py[:smoke|cpu|full] --workdir=DIR [--docs_dir=docs]

Rerunning with the same --workdir resumes (inside a generation's training too).

Presets:
- smoke: a tiny DenseNet-SE (blocks 2+3, growth 4) pretrained for a few steps on digits and transferred to
  digits at 16 px, population 3, 2 more generations of 4 steps, 1 seed; seconds, for tests.
- cpu (default): DenseNet-121-SE pretrained from scratch (200 steps at batch 32) on 6,000 real
  Fashion-MNIST training images at 32 px (3 channels), then transferred to scikit-learn's real 8x8 handwritten digits upsampled to 32 px
  (1,151 train / 287 validation / 359 test); population 4, generation 0 and 2 more (12 trainings of 12
  Adam steps at batch 16 per search), random search with the same 12 trainings, 3 seeds. Measured
  cost in docs/ga_transfer.md.
- full: seed 004's network and genes on a local image folder (data.name=image_folder:/path, one
  sub-folder per class) at 224 px with a user's ImageNet DenseNet-121 file (--config.weights=PATH;
  torchvision, Keras or dlbook layout; the SE layers are drawn afresh), population 20 for 10 more
  generations of 500 steps at batch 32; for accelerators.
"""

import ml_collections
from ml_collections.config_dict import placeholder

from configs import common

PRESETS = ("smoke", "cpu", "full")


def get_config(preset=None):
  preset = common.preset(preset, PRESETS, "ga_transfer.py")
  c = ml_collections.ConfigDict()
  c.preset = preset
  c.seeds = (0, 1, 2)
  c.model = "densenet121_se"
  c.backbone = ml_collections.ConfigDict()  # DenseNet settings (blocks, growth, ... for a small stand-in)
  # 'pretrain': train the backbone on `pretrain.data` first; '' random initialisation; or a weight file.
  c.weights = "pretrain"
  c.pretrain = ml_collections.ConfigDict(dict(
      data=common.data("fashion_mnist", image_size=32, channels=3, normalization="unit", val_fraction=0.1,
                       limit_train=6000, limit_test=1000),
      steps=200, batch_size=32, eval_batch_size=250, checkpoint_every=100,
      optimizer=common.optimizer("adam", 1e-3, schedule="cosine")))
  c.data = common.data("digits", image_size=32, channels=3, normalization="unit", val_fraction=0.2)
  # Seed 004's chromosome (the learning rate drawn log-uniformly).
  c.genes = ml_collections.ConfigDict(dict(included=(1, 58), frozen=(0, 18), learning_rate=(1e-6, 1e-1),
                                           dropout=(0.1, 0.9)))
  c.ga = ml_collections.ConfigDict(dict(population_size=4, generations=2, tournament_size=2,
                                        gene_mutation_prob=0.25))
  c.train = ml_collections.ConfigDict(dict(steps=12, batch_size=16, eval_batch_size=128, checkpoint_every=6,
                                           log_every=3))
  c.random_search = True
  c.keep_unit_checkpoints = False  # a finished unit's training checkpoints are deleted (3x params per individual)

  if preset == "smoke":
    c.seeds = (0,)
    c.model = "densenet_se"
    c.backbone = ml_collections.ConfigDict(dict(blocks=(2, 3), growth=4, init_features=8, se_reduction=4))
    c.pretrain.data = common.data("digits", image_size=16, channels=3, normalization="unit", val_fraction=0.1)
    c.pretrain.steps = 4
    c.pretrain.batch_size = 16
    c.pretrain.eval_batch_size = 64
    c.pretrain.checkpoint_every = 4
    c.data.image_size = 16
    c.data.limit_train = 300
    c.data.limit_test = 100
    c.genes.included = (1, 5)
    c.genes.frozen = (0, 3)
    c.ga.population_size = 3
    c.train = ml_collections.ConfigDict(dict(steps=4, batch_size=16, eval_batch_size=64, checkpoint_every=2,
                                             log_every=2))
  elif preset == "full":
    c.seeds = (0,)
    c.weights = placeholder(str)
    c.data = common.data("image_folder:/path/to/images", image_size=224, channels=3, normalization="unit",
                         val_fraction=0.2)
    c.ga.population_size = 20
    c.ga.generations = 10
    c.train = ml_collections.ConfigDict(dict(steps=500, batch_size=32, eval_batch_size=64, checkpoint_every=100,
                                             log_every=25))
  return c
