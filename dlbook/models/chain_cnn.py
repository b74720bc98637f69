"""The chain-structured CNN of book ch. 2 (Table 2.1).

A genome ``{n_conv, conv_filters, conv_kernel, n_dense, dense_units, activation}``
decodes to: input -> n_conv x [conv -> BN -> activation -> 2x2 max-pool] -> flatten
-> n_dense x [dense -> activation -> dropout] -> linear classifier.

Choices where Table 2.1 is silent (docs/models.md): 'same' padding, BatchNorm after
every conv, and a 2x2 max-pool after each conv while the feature map is at least 2x2.
"""

from typing import Sequence

import chex
import flax.linen as nn
import jax.numpy as jnp

from dlbook.errors import require
from dlbook.models.registry import register

ACTIVATIONS = {"relu": nn.relu, "elu": nn.elu, "tanh": jnp.tanh, "sigmoid": nn.sigmoid,
               "gelu": nn.gelu, "leaky_relu": nn.leaky_relu, "swish": nn.swish}

# Book Table 2.1: 2 convs (32 @ 3x3, 64 @ 5x5), flatten, 1 dense of 128, ReLU.
TABLE_2_1_GENOME = dict(n_conv=2, conv_filters=(32, 64), conv_kernel=(3, 5), n_dense=1,
                        dense_units=(128,), activation="relu")


def activation_fn(name: str):
  require(name in ACTIVATIONS, f"unknown activation {name!r}; valid: {', '.join(sorted(ACTIVATIONS))}")
  return ACTIVATIONS[name]


class ChainCNN(nn.Module):
  """Chain CNN decoded from a Table 2.1 genome; `__call__(x, train)` returns logits."""
  num_classes: int
  n_conv: int = 2
  conv_filters: Sequence[int] = (32, 64)
  conv_kernel: Sequence[int] = (3, 5)
  n_dense: int = 1
  dense_units: Sequence[int] = (128,)
  activation: str = "relu"
  dropout: float = 0.0
  batch_norm: bool = True

  def setup_check(self):
    require(self.n_conv >= 0 and len(self.conv_filters) >= self.n_conv and len(self.conv_kernel) >= self.n_conv,
            f"chain_cnn genome needs {self.n_conv} conv filters and kernels, got {self.conv_filters}, {self.conv_kernel}")
    require(self.n_dense >= 0 and len(self.dense_units) >= self.n_dense,
            f"chain_cnn genome needs {self.n_dense} dense units, got {self.dense_units}")
    require(all(f > 0 for f in self.conv_filters[:self.n_conv]) and all(k > 0 for k in self.conv_kernel[:self.n_conv])
            and all(u > 0 for u in self.dense_units[:self.n_dense]), "chain_cnn genome sizes must be positive")

  @nn.compact
  def __call__(self, x, train: bool = False):
    self.setup_check()
    chex.assert_rank(x, 4)
    act = activation_fn(self.activation)
    for i in range(self.n_conv):
      k = int(self.conv_kernel[i])
      x = nn.Conv(int(self.conv_filters[i]), (k, k), padding="SAME", use_bias=not self.batch_norm,
                  name=f"conv_{i}")(x)
      if self.batch_norm:
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, name=f"bn_{i}")(x)
      x = act(x)
      if x.shape[1] >= 2 and x.shape[2] >= 2:
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = x.reshape((x.shape[0], -1))
    for j in range(self.n_dense):
      x = act(nn.Dense(int(self.dense_units[j]), name=f"dense_{j}")(x))
      if self.dropout > 0:
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
    logits = nn.Dense(self.num_classes, name="classifier")(x)
    chex.assert_shape(logits, (x.shape[0], self.num_classes))
    return logits


@register("chain_cnn")
def chain_cnn(num_classes: int, **genome) -> ChainCNN:
  genome = {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in genome.items()}
  return ChainCNN(num_classes=num_classes, **genome)
