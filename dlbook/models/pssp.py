"""Protein secondary-structure models of book chapters 10-11 (Tables 11.1-11.3, Figs. 11.1-11.3).

Every model maps residues x [B, L, F] and a residue mask [B, L] (1 on real residues, a prefix of each
row; all ones when omitted) to per-residue 8-state logits [B, L, num_classes], called as
``model.apply(variables, x, mask, train=..., rngs={"dropout": key}, mutable=["batch_stats"])``.

Padding never changes a real residue's output: padded positions are zeroed before every convolution,
excluded from BatchNorm statistics (`nn.BatchNorm`'s `mask`), masked out of attention keys, and each
recurrence runs over its protein's true length (the backward direction starts at the real end).

Conv(k) block (section 11.3) = Conv1D(k) -> BatchNorm -> ReLU -> Dropout. Widths not given by the book
are **choices** and constructor arguments: recurrent units 128 per direction, inception branches 64
filters, the Conv(3) after them 128, the dense layer 128, dropout 0.4 (section 11.3), BatchNorm momentum
0.99 and epsilon 1e-3 (Keras', which the book used; `bn_momentum` changes the momentum, e.g. for a
tiny training set with a few steps per epoch, where 0.99 leaves the running statistics near their initial
values). The book's GRU equation is garbled: the GRU is the
standard reset-after cell (`flax.linen.GRUCell`'s equations).

Recurrences: ``rnn_impl="flax"`` (default) uses `nn.RNN` / `nn.Bidirectional` with `seq_lengths`.
``rnn_impl="scan"`` is `lax.scan` over time with the input projection of all time steps hoisted out of
the loop into one matrix product; it computes exactly `nn.RNN` with the matching flax cell (tested) but
was not faster in the training-step benchmark (`docs/pssp.md`), so the library path is the default.
"""

import functools
from typing import Optional, Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.recurrent import flip_sequences

from dlbook.errors import require
from dlbook.models.registry import register

NUM_CLASSES = 8
CELLS = ("simple", "lstm", "gru")
_GATES = {"simple": 1, "lstm": 4, "gru": 3}


def _mask_or_ones(x, mask):
  chex.assert_rank(x, 3)
  if mask is None:
    return jnp.ones(x.shape[:2], x.dtype)
  chex.assert_shape(mask, x.shape[:2])
  return mask.astype(x.dtype)


def _lengths(mask):
  return mask.sum(-1).astype(jnp.int32)


class MaskedBatchNorm(nn.Module):
  """BatchNorm over the real residues only (padding excluded from the batch statistics)."""
  momentum: float = 0.99
  epsilon: float = 1e-3

  @nn.compact
  def __call__(self, x, mask, train: bool):
    m = mask.reshape(mask.shape + (1,) * (x.ndim - mask.ndim)).astype(bool)
    return nn.BatchNorm(use_running_average=not train, momentum=self.momentum, epsilon=self.epsilon)(x, mask=m)


class ConvBlock(nn.Module):
  """Conv(k) of section 11.3: Conv1D(k) -> BN -> ReLU -> Dropout, padding zeroed first."""
  features: int
  kernel_size: int
  dropout: float = 0.4
  bn_momentum: float = 0.99

  @nn.compact
  def __call__(self, x, mask, train: bool):
    x = x * mask[..., None]
    x = nn.Conv(self.features, (self.kernel_size,), padding="SAME", use_bias=False)(x)
    x = nn.relu(MaskedBatchNorm(self.bn_momentum)(x, mask, train))
    return nn.Dropout(self.dropout, deterministic=not train)(x)


class ParallelConvs(nn.Module):
  """Parallel Conv(k) blocks concatenated: a 1D-CNN layer of Table 11.1, or an inception block (1, 3, 5)."""
  features: int
  kernel_sizes: Sequence[int] = (3, 5)
  dropout: float = 0.4
  bn_momentum: float = 0.99

  @nn.compact
  def __call__(self, x, mask, train: bool):
    return jnp.concatenate([ConvBlock(self.features, k, self.dropout, self.bn_momentum)(x, mask, train)
                            for k in self.kernel_sizes], axis=-1)


# ------------------------------------------------------------------------------------- recurrences
def _cell_step(cell: str, units: int, carry, x_proj, w_h, b_h):
  """One step of a cell whose input projection `x_proj` (W_i x + b_i) was computed beforehand."""
  if cell == "simple":  # h' = tanh(W_i x + b_i + W_h h + b_h)
    h = jnp.tanh(x_proj + carry @ w_h + b_h)
    return h, h
  if cell == "gru":  # flax GRUCell: n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
    h_proj = carry @ w_h + b_h
    r = jax.nn.sigmoid(x_proj[..., :units] + h_proj[..., :units])
    z = jax.nn.sigmoid(x_proj[..., units:2 * units] + h_proj[..., units:2 * units])
    n = jnp.tanh(x_proj[..., 2 * units:] + r * h_proj[..., 2 * units:])
    h = (1.0 - z) * n + z * carry
    return h, h
  c, h = carry  # LSTM, gates in flax's order i, f, g, o
  gates = x_proj + h @ w_h + b_h
  i, f, g, o = jnp.split(gates, 4, axis=-1)
  c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
  h = jax.nn.sigmoid(o) * jnp.tanh(c)
  return (c, h), h


class ScanRNN(nn.Module):
  """One direction of a recurrence: the input projection of every step in one matmul, then `lax.scan`
  over time of the recurrent part only. `reverse` runs each protein from its real end (its length)."""
  cell: str
  units: int
  reverse: bool = False
  unroll: int = 1

  @nn.compact
  def __call__(self, x, lengths):
    require(self.cell in CELLS, f"unknown recurrent cell {self.cell!r}; valid: {', '.join(CELLS)}")
    gates = _GATES[self.cell] * self.units
    w_i = self.param("input_kernel", nn.initializers.lecun_normal(), (x.shape[-1], gates))
    b_i = self.param("input_bias", nn.initializers.zeros_init(), (gates,))
    w_h = self.param("recurrent_kernel", _stacked_orthogonal(self.units, _GATES[self.cell]), (self.units, gates))
    b_h = self.param("recurrent_bias", nn.initializers.zeros_init(), (gates,))
    if self.reverse:
      x = flip_sequences(x, lengths, num_batch_dims=1, time_major=False)
    x_proj = jnp.swapaxes(x @ w_i + b_i, 0, 1)  # [L, B, gates], time major for the scan
    zeros = jnp.zeros((x.shape[0], self.units), x.dtype)
    carry = (zeros, zeros) if self.cell == "lstm" else zeros
    step = functools.partial(_cell_step, self.cell, self.units, w_h=w_h, b_h=b_h)
    _, ys = jax.lax.scan(lambda c, xp: step(c, xp), carry, x_proj, unroll=self.unroll)
    ys = jnp.swapaxes(ys, 0, 1)
    return flip_sequences(ys, lengths, num_batch_dims=1, time_major=False) if self.reverse else ys


def _stacked_orthogonal(units: int, num_gates: int):
  """One orthogonal [units, units] block per gate, as flax's cells initialise each recurrent kernel."""
  def init(key, shape, dtype=jnp.float32):
    keys = jax.random.split(key, num_gates)
    return jnp.concatenate([nn.initializers.orthogonal()(k, (units, units), dtype) for k in keys], axis=-1)
  return init


def _flax_cell(cell: str, units: int) -> nn.RNNCellBase:
  return {"simple": nn.SimpleCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}[cell](units)


class Recurrent(nn.Module):
  """A (bi)directional recurrent layer honouring each protein's length; outputs concatenated forward
  and backward states ([B, L, units] or [B, L, 2 * units])."""
  cell: str = "gru"
  units: int = 128
  bidirectional: bool = True
  rnn_impl: str = "flax"
  unroll: int = 1

  @nn.compact
  def __call__(self, x, mask):
    require(self.cell in CELLS, f"unknown recurrent cell {self.cell!r}; valid: {', '.join(CELLS)}")
    require(self.rnn_impl in ("scan", "flax"), f"rnn_impl must be 'scan' or 'flax', got {self.rnn_impl!r}")
    lengths = _lengths(mask)
    if self.rnn_impl == "flax":
      forward = nn.RNN(_flax_cell(self.cell, self.units), unroll=self.unroll)
      if not self.bidirectional:
        return forward(x, seq_lengths=lengths)
      backward = nn.RNN(_flax_cell(self.cell, self.units), unroll=self.unroll)
      return nn.Bidirectional(forward, backward)(x, seq_lengths=lengths)
    y = ScanRNN(self.cell, self.units, unroll=self.unroll)(x, lengths)
    if self.bidirectional:
      y = jnp.concatenate([y, ScanRNN(self.cell, self.units, reverse=True, unroll=self.unroll)(x, lengths)], -1)
    return y


# -------------------------------------------------------------------------------------- attention
class AttentionBlock(nn.Module):
  """Fig. 11.3: scaled dot-product self-attention over the residues with Q, K, V projections, keys
  masked at padding, BatchNorm, then y = alpha * r + (1 - alpha) * x with a learnable scalar alpha
  (**choice:** initialised at 0, so the block starts as the identity). Q and K have `key_features`
  (default: the input width); V keeps the input width so that r and x can be mixed."""
  key_features: Optional[int] = None
  bn_momentum: float = 0.99

  @nn.compact
  def __call__(self, x, mask, train: bool):
    d = x.shape[-1]
    dk = self.key_features or d
    q = nn.Dense(dk, name="query")(x)[:, :, None]  # [B, L, 1 head, dk]
    k = nn.Dense(dk, name="key")(x)[:, :, None]
    v = nn.Dense(d, name="value")(x)[:, :, None]
    r = jax.nn.dot_product_attention(q, k, v, key_value_seq_lengths=_lengths(mask))[:, :, 0]
    r = MaskedBatchNorm(self.bn_momentum)(r, mask, train)
    alpha = self.param("alpha", nn.initializers.zeros_init(), ())
    return alpha * r + (1.0 - alpha) * x


# ----------------------------------------------------------------------------------------- models
class CNN1D(nn.Module):
  """Table 11.1's 1D-CNN: `num_layers` layers of parallel Conv(k) for k in `kernel_sizes` (3, 5 or
  3, 5, 7), `filters` each (42), then a per-residue dense softmax layer."""
  num_layers: int = 2
  kernel_sizes: Sequence[int] = (3, 5)
  filters: int = 42
  dropout: float = 0.4
  bn_momentum: float = 0.99
  num_classes: int = NUM_CLASSES

  @nn.compact
  def __call__(self, x, mask=None, *, train: bool = False):
    mask = _mask_or_ones(x, mask)
    for _ in range(self.num_layers):
      x = ParallelConvs(self.filters, tuple(self.kernel_sizes), self.dropout, self.bn_momentum)(x, mask, train)
    return nn.Dense(self.num_classes)(x)


class CascadedCNN(nn.Module):
  """Table 11.1's cascaded 1D + 2D CNN: `num_1d_layers` 1D-CNN layers, then `num_2d_layers` layers of
  parallel 2-D convolutions along the feature axis (kernels 3x1 and 5x1 over each residue's features,
  one residue wide), then a per-residue dense layer over the flattened features x channels."""
  num_1d_layers: int = 4
  num_2d_layers: int = 2
  kernel_sizes: Sequence[int] = (3, 5)
  kernel_sizes_2d: Sequence[int] = (3, 5)
  filters: int = 42
  filters_2d: int = 4
  dropout: float = 0.4
  bn_momentum: float = 0.99
  num_classes: int = NUM_CLASSES

  @nn.compact
  def __call__(self, x, mask=None, *, train: bool = False):
    mask = _mask_or_ones(x, mask)
    for _ in range(self.num_1d_layers):
      x = ParallelConvs(self.filters, tuple(self.kernel_sizes), self.dropout, self.bn_momentum)(x, mask, train)
    h = x[..., None]  # [B, L, F, 1]: an image whose second axis is the feature axis
    for _ in range(self.num_2d_layers):
      h = h * mask[..., None, None]
      h = jnp.concatenate([nn.Conv(self.filters_2d, (1, k), padding="SAME", use_bias=False)(h)
                           for k in self.kernel_sizes_2d], axis=-1)
      h = nn.relu(MaskedBatchNorm(self.bn_momentum)(h, mask, train))
      h = nn.Dropout(self.dropout, deterministic=not train)(h)
    return nn.Dense(self.num_classes)(h.reshape(h.shape[:2] + (-1,)))


class RecurrentTagger(nn.Module):
  """Table 11.2: `num_layers` recurrent layers (simple RNN, LSTM or GRU; optionally bidirectional)
  followed by a per-residue dense softmax layer."""
  cell: str = "gru"
  bidirectional: bool = True
  units: int = 128
  num_layers: int = 1
  dropout: float = 0.4
  num_classes: int = NUM_CLASSES
  rnn_impl: str = "flax"
  unroll: int = 1

  @nn.compact
  def __call__(self, x, mask=None, *, train: bool = False):
    mask = _mask_or_ones(x, mask)
    for _ in range(self.num_layers):
      x = Recurrent(self.cell, self.units, self.bidirectional, self.rnn_impl, self.unroll)(x, mask)
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(self.num_classes)(x)


class InceptionBGRU(nn.Module):
  """Fig. 11.1: two inception blocks (Conv(1), Conv(3), Conv(5)) -> Conv(3) -> stacked BGRU -> dense ->
  per-residue softmax."""
  inception_filters: int = 64
  conv_filters: int = 128
  units: int = 128
  num_gru_layers: int = 2
  dense_units: int = 128
  dropout: float = 0.4
  bn_momentum: float = 0.99
  num_classes: int = NUM_CLASSES
  rnn_impl: str = "flax"
  unroll: int = 1

  @nn.compact
  def __call__(self, x, mask=None, *, train: bool = False):
    mask = _mask_or_ones(x, mask)
    for _ in range(2):
      x = ParallelConvs(self.inception_filters, (1, 3, 5), self.dropout, self.bn_momentum)(x, mask, train)
    x = ConvBlock(self.conv_filters, 3, self.dropout, self.bn_momentum)(x, mask, train)
    for _ in range(self.num_gru_layers):
      x = Recurrent("gru", self.units, True, self.rnn_impl, self.unroll)(x, mask)
    x = nn.relu(nn.Dense(self.dense_units)(x))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(self.num_classes)(x)


class AttentionInceptionBGRU(nn.Module):
  """Fig. 11.2: input BN -> one inception block (1, 3, 5) -> attention -> Conv(3) -> BGRU -> attention
  -> BGRU -> attention -> concatenation of the two attended BGRU outputs -> dense -> softmax."""
  inception_filters: int = 64
  conv_filters: int = 128
  units: int = 128
  dense_units: int = 128
  dropout: float = 0.4
  bn_momentum: float = 0.99
  key_features: Optional[int] = None
  num_classes: int = NUM_CLASSES
  rnn_impl: str = "flax"
  unroll: int = 1

  @nn.compact
  def __call__(self, x, mask=None, *, train: bool = False):
    mask = _mask_or_ones(x, mask)
    x = MaskedBatchNorm(self.bn_momentum)(x, mask, train)
    x = ParallelConvs(self.inception_filters, (1, 3, 5), self.dropout, self.bn_momentum)(x, mask, train)
    x = AttentionBlock(self.key_features, self.bn_momentum)(x, mask, train)
    x = ConvBlock(self.conv_filters, 3, self.dropout, self.bn_momentum)(x, mask, train)
    a1 = AttentionBlock(self.key_features, self.bn_momentum)(
        Recurrent("gru", self.units, True, self.rnn_impl, self.unroll)(x, mask), mask, train)
    a2 = AttentionBlock(self.key_features, self.bn_momentum)(
        Recurrent("gru", self.units, True, self.rnn_impl, self.unroll)(a1, mask), mask, train)
    x = nn.relu(nn.Dense(self.dense_units)(jnp.concatenate([a1, a2], axis=-1)))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(self.num_classes)(x)


register("pssp_cnn1d")(CNN1D)
register("pssp_cascaded_cnn")(CascadedCNN)
for _name, _cell, _bi in (("rnn", "simple", False), ("brnn", "simple", True), ("lstm", "lstm", False),
                          ("blstm", "lstm", True), ("gru", "gru", False), ("bgru", "gru", True)):
  register(f"pssp_{_name}")(functools.partial(RecurrentTagger, _cell, _bi))
register("pssp_inception_bgru")(InceptionBGRU)
register("pssp_attention_inception_bgru")(AttentionInceptionBGRU)
