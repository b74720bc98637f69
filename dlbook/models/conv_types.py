"""Convolution types of book ch. 10, section 10.7 (Table 10.1): standard, depth-wise, pointwise and group
convolution, and ShuffleNet's channel shuffle, with the analytic multiplication counts of Table 10.1.

Counts (output D_m x D_m, kernel D_k x D_k, C input and N output channels, G groups):
standard N*D_k^2*D_m^2*C, depth-wise D_k^2*D_m^2*C, pointwise D_m^2*C*N, group C*N*D_k^2*D_m^2/G.
The book's example (D_k=3, D_m=10, C=3, N=16, G=2) gives 43,200 / 2,700 / 4,800 (printed "48,00") /
21,600. Its group example cannot be built as a layer (3 channels do not split into 2 groups): the
analytic counts accept it, the modules require divisibility.
"""

import chex
import flax.linen as nn
import jax.numpy as jnp

from dlbook.errors import require

CONV_TYPES = ("standard", "depthwise", "pointwise", "group")


def multiplications(conv_type: str, d_k: int, d_m: int, c: int, n: int, g: int = 1) -> float:
  """Table 10.1: multiplications of one convolution producing a D_m x D_m output."""
  require(conv_type in CONV_TYPES, f"unknown convolution type {conv_type!r}; valid: {', '.join(CONV_TYPES)}")
  if conv_type == "standard":
    return n * d_k ** 2 * d_m ** 2 * c
  if conv_type == "depthwise":  # one D_k x D_k x 1 filter per input channel
    return d_k ** 2 * d_m ** 2 * c
  if conv_type == "pointwise":  # N filters of 1 x 1 x C
    return d_m ** 2 * c * n
  return c * n * d_k ** 2 * d_m ** 2 / g  # G groups of (C/G in, N/G out)


def _conv(features, kernel, groups, padding, use_bias, name=None):
  return nn.Conv(features, (kernel, kernel), padding=padding, feature_group_count=groups, use_bias=use_bias,
                 name=name)


class StandardConv(nn.Module):
  """Every filter sees all input channels (Table 10.1, row 1)."""
  features: int
  kernel_size: int = 3
  padding: str = "SAME"
  use_bias: bool = False

  @nn.compact
  def __call__(self, x):
    chex.assert_rank(x, 4)
    return _conv(self.features, self.kernel_size, 1, self.padding, self.use_bias)(x)


class DepthwiseConv(nn.Module):
  """One D_k x D_k filter per input channel (section 10.7.1); `multiplier` filters per channel."""
  kernel_size: int = 3
  multiplier: int = 1
  padding: str = "SAME"
  use_bias: bool = False

  @nn.compact
  def __call__(self, x):
    chex.assert_rank(x, 4)
    c = x.shape[-1]
    return _conv(c * self.multiplier, self.kernel_size, c, self.padding, self.use_bias)(x)


class PointwiseConv(nn.Module):
  """1 x 1 convolution mixing channels (section 10.7.2)."""
  features: int
  use_bias: bool = False

  @nn.compact
  def __call__(self, x):
    chex.assert_rank(x, 4)
    return _conv(self.features, 1, 1, "VALID", self.use_bias)(x)


class GroupConv(nn.Module):
  """Channels split into `groups` convolved separately (section 10.7.3); both channel counts must divide."""
  features: int
  groups: int
  kernel_size: int = 3
  padding: str = "SAME"
  use_bias: bool = False

  @nn.compact
  def __call__(self, x):
    chex.assert_rank(x, 4)
    c = x.shape[-1]
    require(c % self.groups == 0 and self.features % self.groups == 0,
            f"group convolution: {c} input and {self.features} output channels must both divide into "
            f"{self.groups} groups")
    return _conv(self.features, self.kernel_size, self.groups, self.padding, self.use_bias)(x)


def channel_shuffle(x, groups: int):
  """ShuffleNet's shuffle: channels (..., G*K) viewed as (..., G, K), swapped to (..., K, G), flattened."""
  c = x.shape[-1]
  require(c % groups == 0, f"channel shuffle: {c} channels do not divide into {groups} groups")
  y = x.reshape(x.shape[:-1] + (groups, c // groups))
  return jnp.swapaxes(y, -1, -2).reshape(x.shape)


class ChannelShuffle(nn.Module):
  """`channel_shuffle` as a layer; shuffling with `c // groups` groups undoes it (the transpose)."""
  groups: int

  def __call__(self, x):
    return channel_shuffle(x, self.groups)


def depthwise_separable(features: int, kernel_size: int = 3) -> nn.Module:
  """Depth-wise then pointwise convolution (Fig. 10.8)."""
  return nn.Sequential([DepthwiseConv(kernel_size), PointwiseConv(features)])
