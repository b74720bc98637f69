"""Small CNNs for architecture pools that must train in seconds on a CPU (stand-ins for the
ImageNet backbones of the thesis's Gen-CNN pool, seed 001 ch. 3, on 8x8 to 32x32 images).

`small_cnn_{s,m,l}`: `depth` blocks of 3x3 conv -> BatchNorm -> ReLU (a 2x2 max-pool after every block
but the last), global average pooling and a dense classifier. Called as every dlbook model:
`model.apply(variables, x, train=...)`.
"""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from dlbook.models.registry import register


class SmallCNN(nn.Module):
  widths: Sequence[int] = (16, 32)
  num_classes: int = 10

  @nn.compact
  def __call__(self, x, train: bool = False):
    for i, w in enumerate(self.widths):
      x = nn.Conv(w, (3, 3), padding="SAME", use_bias=False)(x)
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
      x = nn.relu(x)
      if i < len(self.widths) - 1:
        x = nn.max_pool(x, (2, 2), (2, 2))
    return nn.Dense(self.num_classes)(jnp.mean(x, axis=(1, 2)))


SIZES = {"s": (8, 16), "m": (16, 32), "l": (16, 32, 64)}


def _register(size):
  @register(f"small_cnn_{size}")
  def build(num_classes: int = 10, **kwargs) -> SmallCNN:
    return SmallCNN(widths=SIZES[size], num_classes=num_classes, **kwargs)


for _size in SIZES:
  _register(_size)
