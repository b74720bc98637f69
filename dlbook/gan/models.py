"""Generators and discriminators of book ch. 5, as `flax.linen` modules.

- `MLPGenerator` / `MLPDiscriminator`: the vanilla GAN (book §5.2, Figs 5.2-5.3): fully
  connected layers; G ends in tanh, D in one logit.
- `DCGANGenerator` (book §5.3.1, Fig. 5.5): z in R^100 -> FC to 4*4*1024 -> reshape ->
  4 fractionally-strided (transposed, stride 2) convs 4 -> 8 -> 16 -> 32 -> 64, channels
  halving 1024 -> 512 -> 256 -> 128 -> 3, BN + ReLU between, tanh at the end. `base_width`
  (1024), `start_size` (4) and `output_size` (64) are configurable so the same module
  makes 32x32 or 28x28 images for CPU runs; the defaults are the book's shapes.
  With `num_classes` > 0 it is the ACGAN generator G(z, c) (book §5.5.2): z is
  concatenated with a learned class embedding before the FC layer.
- `DCGANDiscriminator` (book §5.3.2, Fig. 5.6): 4x4 convs of stride 2 with LeakyReLU(0.2),
  channels doubling from `base_width` (64) until the map is at most 4x4, then one logit.
  The book's sigmoid output is applied inside the loss (`losses.py`). `norm` chooses the
  normalisation after every conv but the first: 'batch' (DCGAN), 'layer' (WGAN-GP
  critic, since a batch-normalised critic makes the per-example gradient penalty
  ill-defined; Gulrajani et al. 2017) or 'none'. Used without a sigmoid it is the WGAN
  critic (§5.4). With `num_classes` > 0 it has ACGAN's two heads (§5.5.3): a real/fake
  logit and class logits.

Choices where the book is silent (docs/gan.md): 4x4 kernels (Radford et al. 2016),
an embedding of 50 dimensions for the class, BN after the FC projection, and the
class entering the generator only at its input.
"""

import math
from typing import Optional, Sequence, Tuple

import chex
import flax.linen as nn
import jax.numpy as jnp

from dlbook.errors import require

NORMS = ("batch", "layer", "none")
CONDITIONINGS = ("concat", "multiply")
LEAK = 0.2
# Radford et al. 2016: weights from N(0, 0.02). (Also fast: flax's default truncated-normal
# initialisers take seconds to compile on CPU.) The MLPs use Glorot-uniform.
DCGAN_INIT = nn.initializers.normal(0.02)
MLP_INIT = nn.initializers.glorot_uniform()


def _normalize(norm: str, train: bool, name: str):
  if norm == "batch":
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, name=name)
  if norm == "layer":
    return nn.LayerNorm(reduction_axes=(-3, -2, -1), feature_axes=-1, name=name)
  return lambda x: x


class MLPGenerator(nn.Module):
  """Vanilla GAN generator (book §5.2.1): z -> Dense/ReLU layers -> tanh image."""
  image_shape: Tuple[int, int, int]
  hidden: Sequence[int] = (256, 512, 1024)

  @nn.compact
  def __call__(self, z, labels=None, train: bool = False):
    chex.assert_rank(z, 2)
    x = z
    for i, units in enumerate(self.hidden):
      x = nn.relu(nn.Dense(int(units), kernel_init=MLP_INIT, name=f"dense_{i}")(x))
    x = nn.Dense(math.prod(self.image_shape), kernel_init=MLP_INIT, name="out")(x)
    return jnp.tanh(x).reshape((z.shape[0],) + tuple(self.image_shape))


class MLPDiscriminator(nn.Module):
  """Vanilla GAN discriminator (book §5.2.2): flattened image -> Dense/LeakyReLU -> one logit."""
  hidden: Sequence[int] = (512, 256)

  @nn.compact
  def __call__(self, x, train: bool = False):
    chex.assert_rank(x, 4)
    x = x.reshape((x.shape[0], -1))
    for i, units in enumerate(self.hidden):
      x = nn.leaky_relu(nn.Dense(int(units), kernel_init=MLP_INIT, name=f"dense_{i}")(x), LEAK)
    return nn.Dense(1, kernel_init=MLP_INIT, name="logit")(x)[:, 0]


def upsampling_layers(start_size: int, output_size: int) -> int:
  """Number of stride-2 transposed convs from start_size to output_size (a power of 2 ratio)."""
  ratio = output_size / start_size
  n = int(round(math.log2(ratio))) if ratio >= 2 else 0
  require(n >= 1 and start_size * 2 ** n == output_size,
          f"generator output_size {output_size} must be start_size {start_size} times a power of 2 (>= 2); "
          f"e.g. output_size=64, start_size=4 (book) or output_size=28, start_size=7")
  return n


class DCGANGenerator(nn.Module):
  """DCGAN generator of book §5.3.1 (Fig. 5.5); conditional on `labels` when num_classes > 0 (ACGAN)."""
  z_dim: int = 100
  output_size: int = 64
  channels: int = 3
  base_width: int = 1024
  start_size: int = 4
  num_classes: int = 0
  embed_dim: int = 50
  conditioning: str = "concat"

  @nn.compact
  def __call__(self, z, labels=None, train: bool = False):
    chex.assert_shape(z, (None, self.z_dim))
    n_up = upsampling_layers(self.start_size, self.output_size)
    h = z
    if self.num_classes:
      require(labels is not None, "the conditional (ACGAN) generator needs class labels")
      require(self.conditioning in CONDITIONINGS,
              f"unknown model.conditioning {self.conditioning!r}; valid: {', '.join(CONDITIONINGS)}")
      chex.assert_shape(labels, (z.shape[0],))
      dim = self.z_dim if self.conditioning == "multiply" else self.embed_dim
      embed = nn.Embed(self.num_classes, dim, embedding_init=nn.initializers.normal(1.0), name="class_embed")
      embedding = embed(labels)
      # 'concat': book §5.5.2; 'multiply': z * embed(c), as in the ACGAN authors' reference code,
      # which keeps z from being ignored (the class only rescales z).
      h = jnp.concatenate([z, embedding], -1) if self.conditioning == "concat" else z * embedding
    # Book: linear projection of z to 4*4*1024 = 16384 values, reshaped to 4x4x1024.
    x = nn.Dense(self.start_size * self.start_size * self.base_width, use_bias=False, kernel_init=DCGAN_INIT,
                 name="project")(h)
    x = x.reshape((z.shape[0], self.start_size, self.start_size, self.base_width))
    x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, name="bn_project")(x))
    width = self.base_width
    for i in range(n_up - 1):
      width = max(1, width // 2)
      x = nn.ConvTranspose(width, (4, 4), strides=(2, 2), padding="SAME", use_bias=False, kernel_init=DCGAN_INIT,
                           name=f"up_{i}")(x)
      x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, name=f"bn_{i}")(x))
    x = nn.ConvTranspose(self.channels, (4, 4), strides=(2, 2), padding="SAME", kernel_init=DCGAN_INIT,
                         name=f"up_{n_up - 1}")(x)
    x = jnp.tanh(x)
    chex.assert_shape(x, (z.shape[0], self.output_size, self.output_size, self.channels))
    return x


class DCGANDiscriminator(nn.Module):
  """DCGAN discriminator / WGAN critic / ACGAN two-headed D (book §§5.3.2, 5.4, 5.5.3).

  Returns the real/fake logit [N] (the critic score for WGAN), or (logit [N],
  class_logits [N, num_classes]) when num_classes > 0.
  """
  base_width: int = 64
  norm: str = "batch"
  num_classes: int = 0
  min_size: int = 4

  @nn.compact
  def __call__(self, x, train: bool = False):
    chex.assert_rank(x, 4)
    require(self.norm in NORMS, f"unknown discriminator norm {self.norm!r}; valid: {', '.join(NORMS)}")
    require(min(x.shape[1:3]) > self.min_size,
            f"discriminator input {x.shape[1]}x{x.shape[2]} must be larger than {self.min_size}x{self.min_size}")
    width, i = self.base_width, 0
    while min(x.shape[1:3]) > self.min_size:
      x = nn.Conv(width, (4, 4), strides=(2, 2), padding="SAME", use_bias=(i == 0 or self.norm == "none"),
                  kernel_init=DCGAN_INIT, name=f"conv_{i}")(x)
      if i > 0:  # Radford et al.: no normalisation on the discriminator's input layer
        x = _normalize(self.norm, train, f"norm_{i}")(x)
      x = nn.leaky_relu(x, LEAK)
      width, i = width * 2, i + 1
    x = x.reshape((x.shape[0], -1))
    logit = nn.Dense(1, kernel_init=DCGAN_INIT, name="logit")(x)[:, 0]
    if not self.num_classes:
      return logit
    class_logits = nn.Dense(self.num_classes, kernel_init=DCGAN_INIT, name="class_logits")(x)
    chex.assert_shape(class_logits, (x.shape[0], self.num_classes))
    return logit, class_logits


def split_outputs(outputs) -> Tuple[jnp.ndarray, Optional[jnp.ndarray]]:
  """(logit, class_logits or None) from a discriminator's output."""
  if isinstance(outputs, (tuple, list)):
    return outputs[0], outputs[1]
  return outputs, None
