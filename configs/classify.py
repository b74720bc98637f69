"""Image classification with the chain CNN of book Table 2.1.

  python -m experiments.train --config=configs/classify.py[:PRESET] --workdir=/tmp/classify

Presets (the config argument):
- smoke: digits, 2 epochs, a tiny CNN; a few seconds. For tests.
- cpu (default): digits (embedded), 30 epochs; about 30 s on 2 CPU cores, >= 97% test accuracy.
- fashion_mnist: Fashion-MNIST from the Debian package, Table 2.1 genome, 12 epochs; a few minutes on 2 cores.
- full: CIFAR-10 through TFDS (prepared under data.data_dir), a wider chain CNN, 100 epochs; for accelerators.
"""

import ml_collections

from configs import common

PRESETS = ("smoke", "cpu", "fashion_mnist", "full")


def get_config(preset=None):
  preset = common.preset(preset, PRESETS, "classify.py")
  c = ml_collections.ConfigDict()
  c.preset = preset
  c.seed = 0
  c.data = common.data("digits")
  c.model_name = "chain_cnn"
  c.model = ml_collections.ConfigDict(dict(n_conv=2, conv_filters=(32, 64), conv_kernel=(3, 3), n_dense=1,
                                           dense_units=(128,), activation="relu", dropout=0.2))
  c.optimizer = common.optimizer("adam", 2e-3, schedule="cosine")
  c.batch_size = 64
  c.eval_batch_size = 256
  c.num_epochs = 30
  c.num_train_steps = 0  # 0: derived from num_epochs
  c.log_every_steps = 50
  c.checkpoint_every_steps = 200
  c.eval_every_epochs = 5
  c.max_checkpoints = 3
  c.aux_weight = 0.0
  c.label_smoothing = 0.0
  c.num_devices = 0  # 0: every local device, data-parallel

  if preset == "smoke":
    c.model.conv_filters = (8, 16)
    c.model.dense_units = (32,)
    c.num_epochs = 2
    c.log_every_steps = 10
    c.checkpoint_every_steps = 20
    c.eval_every_epochs = 1
  elif preset == "fashion_mnist":
    c.data.name = "fashion_mnist"
    c.data.val_fraction = 1 / 12  # 5,000 validation images
    c.data.augment.crop_pad = 2
    c.model.conv_kernel = (3, 5)  # the Table 2.1 genome
    c.model.dropout = 0.3
    c.batch_size = 128
    c.eval_batch_size = 1000
    c.num_epochs = 12
    c.checkpoint_every_steps = 1000
    c.log_every_steps = 200
    c.eval_every_epochs = 2
  elif preset == "full":
    c.data.name = "tfds:cifar10"
    c.data.val_fraction = 0.1
    c.data.augment = ml_collections.ConfigDict(dict(crop_pad=4, flip=True, rotation=0.0, cutout=16))
    c.model = ml_collections.ConfigDict(dict(n_conv=4, conv_filters=(64, 128, 256, 512), conv_kernel=(3, 3, 3, 3),
                                             n_dense=1, dense_units=(512,), activation="relu", dropout=0.3))
    c.optimizer.name = "sgd"
    c.optimizer.learning_rate = 0.05
    c.optimizer.weight_decay = 5e-4
    c.batch_size = 128
    c.eval_batch_size = 1000
    c.num_epochs = 100
    c.checkpoint_every_steps = 2000
    c.log_every_steps = 200
    c.eval_every_epochs = 5
  return c
