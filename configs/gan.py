"""GANs of book ch. 5 (vanilla, DCGAN, WGAN, WGAN-GP, ACGAN) and survey seed 002's extras.

  python -m experiments.gan --config=configs/gan.py[:GAN][,PRESET] --workdir=DIR [--config.key=value ...]

GAN (default dcgan) picks the model family *and* its published training settings:
- vanilla: MLP G and D, Adam 2e-4 (b1 0.5), non-saturating G loss (book §5.2; loss=minimax for Eq. 5.1 as written).
- dcgan: book §5.3 shapes, Adam 2e-4 (b1 0.5) (Radford et al. 2016).
- wgan: critic without sigmoid, weight clipping 0.01, RMSProp 5e-5, n_critic 5 (book §5.4; Arjovsky et al. 2017).
- wgan_gp: layer-normalised critic, gradient penalty lambda 10, Adam 1e-4 (b1 0, b2 0.9), n_critic 5
  (survey Eq. 5; Gulrajani et al. 2017).
- acgan: G(z, c) and a two-headed D, losses of book Eqs. 5.4-5.7, Adam 2e-4 (b1 0.5); G takes
  z * embed(c) (model.conditioning=multiply; =concat is the book's z ++ embed(c), which collapsed).
Options for any family: loss=non_saturating|minimax|relativistic (survey Eq. 4) (wasserstein for the WGANs),
ada.enabled=True (adaptive augmentation, survey Eq. 10, r_t target 0.6), acgan.aux_fake=book|odena.
Choose the family in the config argument, not with --config.gan, so its settings come with it.

PRESET:
- smoke: sklearn's 8x8 digits, tiny widths, a handful of steps; seconds. For tests.
- cpu (default): Fashion-MNIST at 32x32, 1 channel, narrow DCGAN (G width 64 at 4x4, D from 16);
  2500 G steps for dcgan / acgan, 600 (x 5 critic steps) for wgan / wgan_gp: about 10-15 minutes
  each on 2 shared CPU cores. The sample
  grid and a classifier-based quality score (dlbook/gan/evaluate.py) land in the workdir.
- full: the book's sizes: 64x64x3, z in R^100, G from 4x4x1024, D from 64 channels; CIFAR-10
  through TFDS (prepared under data.data_dir) upsampled to 64x64; for accelerators.
"""

import ml_collections

from configs import common

GANS = ("vanilla", "dcgan", "wgan", "wgan_gp", "acgan")
PRESETS = ("smoke", "cpu", "full")


def parse_arg(arg):
  """'wgan_gp,cpu' -> ('wgan_gp', 'cpu'); either part may be left out."""
  from dlbook.errors import DlbookError
  gan, preset = "dcgan", "cpu"
  for token in filter(None, (arg or "").split(",")):
    if token in GANS:
      gan = token
    elif token in PRESETS:
      preset = token
    else:
      raise DlbookError(f"unknown config argument {token!r} for configs/gan.py; valid GANs: {', '.join(GANS)}; "
                        f"valid presets: {', '.join(PRESETS)} (e.g. configs/gan.py:wgan_gp,cpu)")
  return gan, preset


def optimizer(name="adam", learning_rate=2e-4, b1=0.5, b2=0.999):
  return common.optimizer(name, learning_rate, momentum=0.0, b1=b1, b2=b2, decay=0.9)


def get_config(arg=None):
  gan, preset = parse_arg(arg)
  c = ml_collections.ConfigDict()
  c.gan = gan
  c.preset = preset
  c.seed = 0
  c.loss = ""  # "": the family's own (non_saturating; wasserstein for wgan / wgan_gp)
  c.data = common.data("fashion_mnist", val_fraction=0.0, image_size=32, channels=1, normalization="symmetric")
  c.model = ml_collections.ConfigDict(dict(
      z_dim=100, start_size=4, g_base_width=1024, d_base_width=64, embed_dim=50, conditioning="concat", d_norm="",
      mlp_g_hidden=(256, 512, 1024), mlp_d_hidden=(512, 256)))
  c.g_optimizer = optimizer()
  c.d_optimizer = optimizer()
  c.n_critic = 1
  c.clip_value = 0.01   # wgan only
  c.gp_weight = 10.0    # wgan_gp only (survey Eq. 5: lambda = 10)
  c.acgan = ml_collections.ConfigDict(dict(aux_fake="book", aux_weight=1.0))
  c.ada = ml_collections.ConfigDict(dict(enabled=False, target=0.6, interval=4, speed_kimg=500.0, p_init=0.0))
  c.batch_size = 64
  c.num_train_steps = 3000  # generator steps; each follows n_critic discriminator steps
  c.log_every_steps = 50
  c.checkpoint_every_steps = 500
  c.sample_every_steps = 500
  c.num_samples = 100
  c.max_checkpoints = 3
  # The reference classifier of dlbook/gan/evaluate.py, trained once and cached under cache_dir.
  c.eval = ml_collections.ConfigDict(dict(classifier_steps=1000, classifier_batch_size=64, num_samples=2000,
                                          classifier_filters=(16, 32), cache_dir="runs/gan_reference_classifier"))

  if gan == "wgan":
    c.g_optimizer = optimizer("rmsprop", 5e-5)
    c.d_optimizer = optimizer("rmsprop", 5e-5)
    c.g_optimizer.decay = c.d_optimizer.decay = 0.99  # the WGAN reference's RMSProp (PyTorch alpha)
    c.n_critic = 5
  elif gan == "acgan":
    # z * embed(c) (the ACGAN authors' code) instead of the book's concatenation (§5.5.2): with
    # concatenation our cpu run's G ignored z and made one image per class (docs/gan.md).
    c.model.conditioning = "multiply"
  elif gan == "wgan_gp":
    c.g_optimizer = optimizer("adam", 1e-4, b1=0.0, b2=0.9)
    c.d_optimizer = optimizer("adam", 1e-4, b1=0.0, b2=0.9)
    c.n_critic = 5

  if preset == "smoke":
    c.data.name = "digits"
    c.data.image_size = 0  # the native 8x8: G 2 -> 4 -> 8, D one conv (compiles fastest)
    c.model.start_size = 2
    c.model.g_base_width = 32
    c.model.d_base_width = 8
    c.model.z_dim = 16
    c.model.embed_dim = 8
    c.model.mlp_g_hidden = (32,)
    c.model.mlp_d_hidden = (32,)
    c.batch_size = 16
    c.num_train_steps = 4
    c.log_every_steps = 2
    c.checkpoint_every_steps = 2
    c.sample_every_steps = 2
    c.num_samples = 20
    c.eval.classifier_steps = 0
    c.eval.num_samples = 100
    c.eval.cache_dir = ""
  elif preset == "cpu":
    # Sized for ~10 minutes on 2 shared CPU cores (measured: ~4 G steps/s for dcgan and acgan,
    # ~0.5 for wgan_gp, whose 5 critic steps each pay for a double backward pass).
    c.model.g_base_width = 64
    c.model.d_base_width = 16
    c.num_train_steps = 600 if gan in ("wgan", "wgan_gp") else 2500
    c.sample_every_steps = 100 if gan in ("wgan", "wgan_gp") else 500
    c.checkpoint_every_steps = c.sample_every_steps
  elif preset == "full":
    c.data.name = "tfds:cifar10"
    c.data.image_size = 64
    c.data.channels = 3
    c.batch_size = 128
    c.num_train_steps = 100_000 if c.n_critic == 1 else 40_000
    c.log_every_steps = 200
    c.checkpoint_every_steps = 2000
    c.sample_every_steps = 2000
    c.eval.update(dict(classifier_steps=10_000, classifier_batch_size=128, num_samples=10_000,
                       classifier_filters=(32, 64)))
  return c
