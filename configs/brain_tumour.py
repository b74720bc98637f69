"""Brain tumour MRI, lightweight transfer learning with denoising (book §9.4, ch. 13; docs/brain_tumour.md).

  python -m experiments.brain_tumour --config=configs/brain_tumour.py[:PRESET] --workdir=/tmp/brain \
      [--docs_dir=docs]

Presets (the config argument):
- smoke: SqueezeNet-1.1 from random initialisation at 24 px, 3 steps per fold, on a Figshare-layout
  folder (--config.data.data_dir=DIR; the tests generate one); seconds, for tests.
- cpu (default): a STAND-IN, as no Figshare slices or ImageNet MobileNetV3 weights are on this machine:
  MobileNetV3-Large pretrained here on the real Fashion-MNIST (10 classes, 32 px, `transfer.pretrain`),
  then fine-tuned on three classes of the real scikit-learn digits (3, 5, 8) with pseudo-patients of 6
  images, 5 patient-grouped folds, the whole pipeline of ch. 13 (denoising on, rotation augmentation; no
  flips, digits are not mirror-symmetric), cost at 224 px. Measured: 35 min of wall time on 2 CPU cores
  shared with other jobs (load average 13-19; pretraining 19 min, each fold ~80 s after the first's
  compiles); docs/brain_tumour.md.
- full: the book on Figshare (--config.data.data_dir=/path/to/figshare, the N.mat files and cvind.mat;
  --config.weights=/path/to/mobilenet_v3_large-8738ca79.pth or a Keras file): 224 px, 5 folds of
  cvind.mat, median -> Wiener denoising, rotation and flips, 30 epochs per fold (about 77 steps of 32).

The book gives no optimizer, learning rate, epochs, batch or head widths; the choices here: Adam with
cosine decay (1e-4 for ImageNet weights on Figshare, 1e-3 for the small stand-in), batch 32, head =
MobileNetV3-Large's own GAP -> dense 1280 (hard-swish) -> dropout 0.2 (torchvision's) -> dense softmax.
"""

import ml_collections
from ml_collections.config_dict import placeholder

from configs import common

PRESETS = ("smoke", "cpu", "full")


def get_config(preset=None):
  preset = common.preset(preset, PRESETS, "brain_tumour.py")
  c = ml_collections.ConfigDict()
  c.preset = preset
  c.seed = 0
  c.model = "mobilenet_v3_large"
  c.weights = ""  # '' = random initialisation (or the pretrain stand-in when pretrain.steps > 0), or a path
  # "taps" lowers depthwise convolutions as shifted multiply-adds: same outputs, ~5x faster steps on XLA:CPU
  c.backbone = ml_collections.ConfigDict(dict(depthwise="taps"))
  c.freeze_blocks = 0
  c.dropout = 0.2  # torchvision's MobileNetV3 classifier dropout
  c.data = ml_collections.ConfigDict(dict(name="digits_classes", data_dir=placeholder(str),
                                          options=dict(classes=(3, 5, 8), subject_size=6)))
  c.denoise = True  # median 3x3 -> Wiener 5x5 before min-max and resizing (the book's filters)
  c.folds = "cvind"  # Figshare: the patient-wise folds of cvind.mat when present; 'grouped': grouped folds on PID
  c.image_size = 32
  c.num_folds = 5
  c.split_seed = 0
  c.optimizer = common.optimizer("adam", 1e-3, schedule="cosine")
  c.augment = ml_collections.ConfigDict(dict(crop_pad=0, flip=False, vflip=False, rotation=15.0, zoom=0.0,
                                             cutout=0))
  c.batch_size = 32
  c.eval_batch_size = 128
  c.steps_per_fold = 100
  c.eval_every_steps = 0
  c.log_every_steps = 25
  c.checkpoint_every_steps = 50
  c.max_checkpoints = 2
  # a stand-in for ImageNet weights: the backbone trained here first on another real dataset
  c.pretrain = ml_collections.ConfigDict(dict(
      steps=300, batch_size=64,
      data=common.data("fashion_mnist", image_size=32, channels=3, normalization="unit", val_fraction=0.0,
                       limit_train=20000, limit_test=2000),
      optimizer=common.optimizer("adam", 1e-3, schedule="cosine"),
      augment=dict(crop_pad=2, flip=True, rotation=0.0, cutout=0)))
  c.gradcam = ml_collections.ConfigDict(dict(layer="backbone/block_5", images=6))  # stride 8: 4x4 at 32 px
  c.cost_image_size = 224  # model size, multiplications and latency at the book's input size
  c.latency_repeats = 30
  c.latency_warmup = 3

  if preset == "smoke":
    c.model = "squeezenet1_1"
    c.backbone = ml_collections.ConfigDict()
    c.data = ml_collections.ConfigDict(dict(name="figshare_brain", data_dir=placeholder(str), options={}))
    c.image_size = 24
    c.augment.flip = True
    c.batch_size = 4
    c.eval_batch_size = 8
    c.steps_per_fold = 3
    c.log_every_steps = 1
    c.checkpoint_every_steps = 2
    c.pretrain.steps = 0
    c.gradcam = ml_collections.ConfigDict(dict(layer="backbone/fire1", images=3))  # 5x5 at 24 px
    c.cost_image_size = 24
    c.latency_repeats = 3
    c.latency_warmup = 1
  elif preset == "full":
    c.data = ml_collections.ConfigDict(dict(name="figshare_brain", data_dir=placeholder(str), options={}))
    c.image_size = 224
    c.optimizer = common.optimizer("adam", 1e-4, schedule="cosine")
    c.augment.flip = True
    c.augment.vflip = True
    c.steps_per_fold = 30 * 77  # 30 epochs of ~2,450 training slices (4 of 5 folds) at batch 32
    c.eval_batch_size = 64
    c.log_every_steps = 50
    c.checkpoint_every_steps = 500
    c.pretrain.steps = 0
    c.gradcam.layer = "backbone/last"  # the last convolution: 7x7 at 224 px
    c.latency_repeats = 100
  return c
