"""The DARTS evaluation network built from a genotype (book ch. 3 §3.2.6, Fig. 3.8), after
quark0/darts `cnn/model.py` (`NetworkCIFAR`).

Stem (3x3 conv, 3C channels, BN) -> `layers` cells with reductions (stride 2, channels doubled) at depth
1/3 and 2/3 -> global average pooling -> linear classifier. An auxiliary head (the reference's
`AuxiliaryHeadCIFAR`: ReLU, 5x5/3 average pool, 1x1 conv 128, BN, ReLU, 2x2 conv 768, BN, ReLU, linear)
reads the output of cell 2*layers//3; its loss weight (0.4 in the paper) is the training config's
`aux_weight`. Drop-path zeroes whole examples of every non-identity op output with probability
`drop_path_prob` in training, drawing from the 'dropout' rng stream.

Top-level parameter names: `stem`, `cell_0` ... `cell_{layers-1}`, `aux_head` (only when auxiliary) and
`classifier`. The parameter count without `aux_head` equals the reference's for the same genotype and
sizes (3,349,342 for DARTS_V2, C=36, 20 layers, 10 classes; tests/test_darts_models.py).

Choices: the reference ramps drop_path_prob linearly from 0 over the epochs (`train.py`); here it is a
constant module field, because dlbook's shared training step calls every model the same way. In eval
mode the network returns logits; in train mode with the auxiliary head, (logits, aux_logits).
"""

from typing import Union

import chex
import flax.linen as nn
import jax.numpy as jnp

from dlbook.errors import require
from dlbook.models.darts.genotypes import Genotype, resolve_genotype
from dlbook.models.darts.operations import (DEFAULT_CONV_IMPL, DEFAULT_POOL_IMPL, OPS, FactorizedReduce, Identity,
                                            ReLUConvBN, Stem, batch_norm, check_conv_impl, check_pool_impl, drop_path,
                                            torch_default_init)
from dlbook.models.darts.search_network import is_reduction
from dlbook.models.registry import register


class EvalCell(nn.Module):
  """A discrete cell: node i sums op_{2i}(state[idx_{2i}]) and op_{2i+1}(state[idx_{2i+1}])."""
  genotype: Genotype
  channels: int
  reduction: bool
  reduction_prev: bool
  drop_path_prob: float = 0.0
  conv_impl: str = DEFAULT_CONV_IMPL
  pool_impl: str = DEFAULT_POOL_IMPL

  @nn.compact
  def __call__(self, s0, s1, train: bool):
    c = self.channels
    if self.reduction_prev:
      s0 = FactorizedReduce(c, name="preprocess0")(s0, train)
    else:
      s0 = ReLUConvBN(c, 1, 1, 0, name="preprocess0")(s0, train)
    s1 = ReLUConvBN(c, 1, 1, 0, name="preprocess1")(s1, train)
    edges = self.genotype.reduce if self.reduction else self.genotype.normal
    concat = self.genotype.reduce_concat if self.reduction else self.genotype.normal_concat
    states = [s0, s1]
    for i in range(len(edges) // 2):
      s = 0.0
      for k in (2 * i, 2 * i + 1):
        name, index = edges[k]
        stride = 2 if self.reduction and index < 2 else 1
        op = OPS[name](c, stride, True, conv_impl=self.conv_impl, pool_impl=self.pool_impl, name=f"op_{k}")
        h = op(states[index], train)
        if train and self.drop_path_prob > 0 and not isinstance(op, Identity):
          h = drop_path(self.make_rng("dropout"), h, self.drop_path_prob)
        s = s + h
      states.append(s)
    return jnp.concatenate([states[i] for i in concat], axis=-1)


class AuxiliaryHead(nn.Module):
  """The reference's AuxiliaryHeadCIFAR (it assumes an 8x8 input; 5x5 average pool, stride 3 -> 2x2)."""
  num_classes: int

  @nn.compact
  def __call__(self, x, train: bool):
    require(x.shape[1] >= 8 and x.shape[2] >= 8,
            f"the auxiliary head needs feature maps of at least 8x8 at depth 2/3, got {x.shape[1]}x{x.shape[2]} "
            f"(inputs of at least 32x32); set model.auxiliary=False or data.image_size=32")
    x = nn.avg_pool(nn.relu(x), (5, 5), (3, 3), "VALID")
    x = nn.Conv(128, (1, 1), use_bias=False, kernel_init=torch_default_init, name="conv_0")(x)
    x = nn.relu(batch_norm(train, True, "bn_0")(x))
    x = nn.Conv(768, (2, 2), padding="VALID", use_bias=False, kernel_init=torch_default_init, name="conv_1")(x)
    x = nn.relu(batch_norm(train, True, "bn_1")(x))
    x = jnp.mean(x, axis=(1, 2))  # 1x1 for 8x8 inputs, as the reference's flatten
    return nn.Dense(self.num_classes, kernel_init=torch_default_init, name="classifier")(x)


class EvalNetwork(nn.Module):
  """`__call__(x, train)`: logits, or (logits, aux_logits) in training with the auxiliary head.
  `conv_impl` / `pool_impl` pick kernel formulations ("auto": per backend, operations.py)."""
  num_classes: int
  genotype: Genotype
  init_channels: int = 36
  layers: int = 20
  auxiliary: bool = True
  drop_path_prob: float = 0.2
  stem_multiplier: int = 3
  conv_impl: str = DEFAULT_CONV_IMPL
  pool_impl: str = DEFAULT_POOL_IMPL

  @nn.compact
  def __call__(self, x, train: bool = False):
    chex.assert_rank(x, 4)
    c_curr = self.stem_multiplier * self.init_channels
    s0 = s1 = Stem(c_curr, name="stem")(x, train)
    c_curr, reduction_prev, aux_logits = self.init_channels, False, None
    for i in range(self.layers):
      reduction = is_reduction(i, self.layers)
      c_curr = c_curr * 2 if reduction else c_curr
      cell = EvalCell(self.genotype, c_curr, reduction, reduction_prev, self.drop_path_prob, self.conv_impl,
                      self.pool_impl, name=f"cell_{i}")
      s0, s1 = s1, cell(s0, s1, train)
      reduction_prev = reduction
      if i == 2 * self.layers // 3 and self.auxiliary and (train or self.is_initializing()):
        aux_logits = AuxiliaryHead(self.num_classes, name="aux_head")(s1, train)
    logits = nn.Dense(self.num_classes, kernel_init=torch_default_init, name="classifier")(jnp.mean(s1, axis=(1, 2)))
    chex.assert_shape(logits, (x.shape[0], self.num_classes))
    return (logits, aux_logits) if train and self.auxiliary else logits


@register("darts_eval")
def darts_eval(num_classes: int, genotype: Union[str, Genotype, dict] = "DARTS_V2", init_channels: int = 36,
               layers: int = 20, auxiliary: bool = True, drop_path_prob: float = 0.2, stem_multiplier: int = 3,
               conv_impl: str = DEFAULT_CONV_IMPL, pool_impl: str = DEFAULT_POOL_IMPL) -> EvalNetwork:
  require(layers >= 3 and init_channels > 0, f"darts_eval needs layers >= 3 and init_channels > 0, got layers="
          f"{layers}, init_channels={init_channels}")
  require(0.0 <= float(drop_path_prob) < 1.0, f"darts_eval drop_path_prob must be in [0, 1), got {drop_path_prob}")
  check_conv_impl(conv_impl)
  check_pool_impl(pool_impl)
  return EvalNetwork(num_classes, resolve_genotype(genotype), init_channels, layers, bool(auxiliary),
                     float(drop_path_prob), stem_multiplier, conv_impl, pool_impl)
