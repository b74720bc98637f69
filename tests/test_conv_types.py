"""Convolution types (book Table 10.1): analytic counts, real layers' multiplications, channel shuffle."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlbook.errors import DlbookError
from dlbook.models import conv_types as ct


def test_table_10_1_counts():
  # The book's example: D_k=3, D_m=10, C=3, N=16, G=2.
  args = dict(d_k=3, d_m=10, c=3, n=16, g=2)
  assert ct.multiplications("standard", **args) == 43_200
  assert ct.multiplications("depthwise", **args) == 2_700
  assert ct.multiplications("pointwise", **args) == 4_800
  assert ct.multiplications("group", **args) == 21_600
  with pytest.raises(DlbookError, match="unknown convolution type"):
    ct.multiplications("dilated", **args)


def _compiled_multiplications(module, x):
  """XLA's flop count of the layer's forward pass; a convolution's flops are 2 per multiply-add."""
  params = module.init(jax.random.PRNGKey(0), x)
  analysis = jax.jit(module.apply).lower(params, x).compile().cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0]
  return analysis["flops"] / 2


@pytest.mark.parametrize("kind,module", [
    ("standard", ct.StandardConv(16, 3, padding="VALID")),
    ("depthwise", ct.DepthwiseConv(3, padding="VALID")),
    ("pointwise", ct.PointwiseConv(16)),
    ("group", ct.GroupConv(16, groups=2, kernel_size=3, padding="VALID")),
])
def test_real_layers_match_the_counts(kind, module):
  # Divisible sizes: C=4 so that G=2 splits it; D_m=10 (VALID 3x3 on 12x12, or 1x1 on 10x10).
  d_k = 1 if kind == "pointwise" else 3
  x = jnp.ones((1, 10 + d_k - 1, 10 + d_k - 1, 4))
  y = module.apply(module.init(jax.random.PRNGKey(0), x), x)
  assert y.shape[1:3] == (10, 10)
  expected = ct.multiplications(kind, d_k=d_k, d_m=10, c=4, n=16, g=2)
  assert _compiled_multiplications(module, x) == expected


def test_group_conv_is_block_diagonal_standard_conv():
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 6, 6, 4))
  g = ct.GroupConv(6, groups=2)
  params = g.init(jax.random.PRNGKey(2), x)
  kernel = np.asarray(params["params"]["Conv_0"]["kernel"])  # (3, 3, 2, 6)
  assert kernel.shape == (3, 3, 2, 6)
  full = np.zeros((3, 3, 4, 6), np.float32)
  full[:, :, :2, :3], full[:, :, 2:, 3:] = kernel[..., :3], kernel[..., 3:]
  s = ct.StandardConv(6)
  np.testing.assert_allclose(g.apply(params, x), s.apply({"params": {"Conv_0": {"kernel": full}}}, x),
                             rtol=1e-5, atol=1e-5)


def test_group_conv_requires_divisibility():
  with pytest.raises(DlbookError, match="divide into 2 groups"):
    ct.GroupConv(16, groups=2).init(jax.random.PRNGKey(0), jnp.ones((1, 5, 5, 3)))


def test_channel_shuffle_matches_shufflenet_and_its_transpose_inverts_it():
  x = jnp.arange(2 * 12, dtype=jnp.float32).reshape(2, 1, 1, 12)
  y = ct.ChannelShuffle(3)(x)
  # Groups (0..3), (4..7), (8..11) interleave: 0 4 8 1 5 9 ...
  np.testing.assert_array_equal(y[0, 0, 0], [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11])
  np.testing.assert_array_equal(ct.channel_shuffle(y, 12 // 3), x)
  assert not np.array_equal(ct.channel_shuffle(y, 3), x)
