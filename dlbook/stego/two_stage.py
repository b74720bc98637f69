"""Two-stage depth-balanced GAN steganography (book ch. 7), and the networks ch. 8 reuses.

Generator (§7.2.2, Algorithms 1-2; shapes of the DCGAN-style backbone of §8.2.2):

- **Stage 1** (cover reconstruction, Eq. 7.2, C_R = G_CR(C)): the *flattened* cover goes
  through an FC layer reshaped to 4×4×c0, then ``stage1_depth`` fractionally-strided
  (transposed) convolutions, each doubling the size: C_R is 4·2^k × 4·2^k × c_k.
- **Stage 2** (stego construction, Eq. 7.3, S = G_SC(C_R, M)): every message is reshaped
  to C_R's spatial size and concatenated to it as channels, then the remaining
  4 − ``stage1_depth`` transposed convolutions bring it to 64×64×3.
- The stage depths are inversely balanced: a deeper stage 1 means a shallower stage 2
  (§7.2.2); ``stage1_depth`` is the config value that sets the split.
- ReLU + BN in every layer except the last, which is tanh (§8.2.2).
- ``stage1_depth = -1`` is the *conventional* single-stage design (§8.2.2.1, also
  GSIVAT's): the messages are concatenated to the flattened cover before the FC layer.

Book sizes: c = (512, 256, 128, 64), so the FC layer maps 64·64·3 = 12288 inputs to
8192 units (~100M weights). Smaller ``channels`` narrow it for CPU runs.

**Choices where the book is silent** (also in docs/stego.md):

- Transposed convolutions use 4×4 kernels, stride 2, 'SAME' padding
  (`FractionallyStridedConv`, numerically identical to ``nn.ConvTranspose``).
- ``cover_shortcut``: with a narrowed FC layer the FC bottleneck cannot carry a 64×64×3
  cover at high fidelity, so the CPU presets (a) append the cover itself, rearranged
  losslessly to C_R's resolution (space-to-depth), to C_R, and (b) add the cover to the
  generator output, S = clip(C + tanh(h), −1, 1), so stage 2 learns a cover-aware
  embedding residual (``residual="bounded"``: S = C + t·(1 − C) for t = tanh(h) ≥ 0 and
  C + t·(1 + C) for t < 0, which stays inside [−1, 1] without clipping, so no residual is lost
  at saturated pixels and the gradient always flows; see `bounded_residual`).
  ``cover_shortcut=False`` is the book's form (S = tanh(h)), used by
  the ``full`` presets. The conventional single-stage design has no C_R and gets (b) only.
- ``reconstruction_head``: for L_CR = d(C, C_R) (Eq. 7.6 read with C_R) a feature map has
  to be compared with an image, so a 1×1 conv + tanh reads C_R out as RGB at its own
  resolution and the cover is average-pooled to it.

Decoder / extractor and steganalyzer (§7.3.2, §8.2.3-8.2.4): four stride-2 convolutions
(64×64×3 -> 4×4×c3) with LeakyReLU(0.2) + BN, then an FC layer: ``outputs`` units with
tanh for an extractor (M' in (−1, 1)), one logit for the steganalyzer (its sigmoid is
the probability that the input is a cover). Book widths: (32, 64, 128, 256), ending at
4×4×256 as §8.2.3 says.
"""

from typing import Optional, Sequence, Tuple

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from dlbook.errors import require

BOOK_GENERATOR_CHANNELS = (512, 256, 128, 64)
BOOK_ANALYZER_CHANNELS = (32, 64, 128, 256)
NUM_UPSAMPLINGS = 4
RESIDUALS = ("clip", "bounded")
ANALYZER_HEADS = ("tanh", "logit", "logits")
CONVENTIONAL = -1  # stage1_depth of the single-stage design: messages join before the FC layer


def bounded_residual(cover, t):
  """S = C + t·(1 − C) where t ≥ 0, C + t·(1 + C) where t < 0, for t in (−1, 1): the residual is
  scaled by the headroom in its direction, so S stays in [−1, 1] with no clipping (a pixel at 255
  can only move down) and every pixel passes gradient."""
  return cover + t * jnp.where(t >= 0, 1.0 - cover, 1.0 + cover)


def embedding_shape(image_size: int, stage1_depth: int, bits: int) -> Tuple[int, int, int]:
  """The (h, w, channels) a ``bits``-long message is reshaped to at C_R (§8.2.2)."""
  side = (image_size // 2 ** NUM_UPSAMPLINGS) * 2 ** stage1_depth
  require(bits % (side * side) == 0,
          f"a message of {bits} bits cannot be reshaped to the {side}x{side} stage-1 output "
          f"(stage1_depth={stage1_depth}); use a payload whose bits divide by {side * side}")
  return side, side, bits // (side * side)


def validate_generator(image_size: int, channels: Sequence[int], stage1_depth: int,
                       message_bits: Sequence[int]) -> None:
  require(image_size >= 16 and image_size % 2 ** NUM_UPSAMPLINGS == 0,
          f"image_size must be a multiple of 16, got {image_size}")
  require(len(channels) == NUM_UPSAMPLINGS and all(int(c) > 0 for c in channels),
          f"generator channels must be {NUM_UPSAMPLINGS} positive widths (FC 4x4xc0, then 8x8xc1, 16x16xc2, "
          f"32x32xc3), got {tuple(channels)}")
  require(CONVENTIONAL <= stage1_depth < NUM_UPSAMPLINGS,
          f"stage1_depth must be in {CONVENTIONAL}..{NUM_UPSAMPLINGS - 1} "
          f"(-1 conventional, 0 early, 1 mid, 2 late, 3), got {stage1_depth}")
  require(len(message_bits) >= 1 and all(int(b) > 0 for b in message_bits),
          f"message_bits must list one positive size per message, got {tuple(message_bits)}")
  if stage1_depth >= 0:
    for bits in message_bits:
      embedding_shape(image_size, stage1_depth, int(bits))


class StagedGenerator(nn.Module):
  """S = G_SC(G_CR(C), M_1..M_n); ``__call__(cover, messages, train)`` -> (stego, aux).

  ``messages`` is a sequence of [B, bits_i] arrays of ±1. ``aux`` holds ``"reconstruction"``
  (C_R) and, with ``reconstruction_head``, ``"reconstruction_rgb"``. Parameters of stage 1
  are named ``stage1_*`` and those of stage 2 ``stage2_*`` (see ``stage1_mask``).
  """
  message_bits: Sequence[int] = (4096,)
  stage1_depth: int = 2
  channels: Sequence[int] = BOOK_GENERATOR_CHANNELS
  image_size: int = 64
  out_channels: int = 3
  cover_shortcut: bool = False
  residual: str = "clip"  # with cover_shortcut: "clip" (S = clip(C + tanh(h))) or "bounded"
  reconstruction_head: bool = False
  bn_momentum: float = 0.9

  @nn.compact
  def __call__(self, cover, messages, train: bool = False):
    validate_generator(self.image_size, self.channels, self.stage1_depth, self.message_bits)
    n = cover.shape[0]
    chex.assert_shape(cover, (n, self.image_size, self.image_size, self.out_channels))
    require(len(messages) == len(self.message_bits),
            f"generator expects {len(self.message_bits)} messages, got {len(messages)}")
    for m, bits in zip(messages, self.message_bits):
      chex.assert_shape(m, (n, int(bits)))
    norm = lambda name: nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum, name=name)
    start = self.image_size // 2 ** NUM_UPSAMPLINGS
    widths = tuple(int(c) for c in self.channels) + (self.out_channels,)
    single_stage = self.stage1_depth == CONVENTIONAL
    stage = lambda i: "stage2" if single_stage or i >= self.stage1_depth else "stage1"

    h = cover.reshape(n, -1)
    if single_stage:  # §8.2.2.1: messages concatenated to the flattened cover
      h = jnp.concatenate([h] + [m.astype(h.dtype) for m in messages], axis=-1)
    h = nn.Dense(start * start * widths[0], name=f"{'stage2' if single_stage else 'stage1'}_fc")(h)
    h = h.reshape(n, start, start, widths[0])
    h = nn.relu(norm(f"{'stage2' if single_stage else 'stage1'}_fc_bn")(h))
    aux = {}
    for i in range(NUM_UPSAMPLINGS):
      if i == self.stage1_depth:  # C_R is complete: Algorithm 2 step 1, concatenate M
        aux["reconstruction"] = h
        if self.reconstruction_head:
          aux["reconstruction_rgb"] = jnp.tanh(nn.Conv(self.out_channels, (1, 1), name="stage1_rgb")(h))
        side = h.shape[1]
        if self.cover_shortcut:
          h = jnp.concatenate([h, space_to_depth(cover.astype(h.dtype), self.image_size // side)], axis=-1)
        reshaped = [m.astype(h.dtype).reshape(n, side, side, -1) for m in messages]
        h = jnp.concatenate([h] + reshaped, axis=-1)
      last = i == NUM_UPSAMPLINGS - 1
      h = FractionallyStridedConv(widths[i + 1], use_bias=last, name=f"{stage(i)}_up{i}")(h)
      if not last:
        h = nn.relu(norm(f"{stage(i)}_up{i}_bn")(h))
    residual = jnp.tanh(h)
    require(self.residual in RESIDUALS, f"unknown generator.residual {self.residual!r}; valid: {', '.join(RESIDUALS)}")
    if not self.cover_shortcut:
      stego = residual
    elif self.residual == "bounded":
      stego = bounded_residual(cover, residual)
    else:
      stego = jnp.clip(cover + residual, -1.0, 1.0)
    chex.assert_equal_shape([stego, cover])
    return stego, aux


# Polyphase form of a 4×4, stride-2, 'SAME' transposed convolution (lax.conv_transpose pads the
# 2×-dilated input by 2 on each side): output 2m+p reads inputs m-1, m, m+1 through these taps of
# the 4×4 kernel (None: no tap), for phase p = 0 and p = 1.
_PHASE_TAPS = ((0, 2, None), (None, 1, 3))


class FractionallyStridedConv(nn.Module):
  """Exactly ``nn.ConvTranspose(features, (4, 4), strides=(2, 2), padding='SAME')`` (same
  parameters, same output), computed as a 3×3 convolution to 4·features channels followed by
  depth-to-space. XLA's CPU transposed convolution is >10× slower (its gradient dilates the
  input with zeros); tests check the two agree."""
  features: int
  use_bias: bool = True

  @nn.compact
  def __call__(self, x):
    cin = x.shape[-1]
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (4, 4, cin, self.features))
    rows = []
    for a in range(3):
      cols = []
      for b in range(3):
        phases = []
        for py in range(2):
          for px in range(2):
            ty, tx = _PHASE_TAPS[py][a], _PHASE_TAPS[px][b]
            phases.append(jnp.zeros((cin, self.features), kernel.dtype) if ty is None or tx is None
                          else kernel[ty, tx])
        cols.append(jnp.concatenate(phases, axis=-1))  # channel order (py, px, features)
      rows.append(jnp.stack(cols))
    k3 = jnp.stack(rows)  # [3, 3, cin, 4·features]
    y = jax.lax.conv_general_dilated(x, k3.astype(x.dtype), (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    n, h, w, _ = y.shape
    y = y.reshape(n, h, w, 2, 2, self.features).transpose(0, 1, 3, 2, 4, 5).reshape(n, 2 * h, 2 * w, self.features)
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,))
    return y


def space_to_depth(images, factor: int):
  """[N, H, W, C] -> [N, H/f, W/f, f·f·C], a lossless rearrangement."""
  if factor == 1:
    return images
  n, h, w, c = images.shape
  x = images.reshape(n, h // factor, factor, w // factor, factor, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(n, h // factor, w // factor, factor * factor * c)


def depth_to_space(images, factor: int):
  """[N, H, W, f·f·C] -> [N, H·f, W·f, C], the inverse of `space_to_depth`."""
  if factor == 1:
    return images
  n, h, w, c = images.shape
  x = images.reshape(n, h, w, factor, factor, c // (factor * factor)).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(n, h * factor, w * factor, c // (factor * factor))


def to_message_layout(decoded, message_side: int):
  """Per-position decoded bits [N, s, s, c] rearranged to the message grid side (0: unchanged)."""
  side = decoded.shape[1]
  if not message_side or message_side == side:
    return decoded
  if message_side < side:
    return space_to_depth(decoded, side // message_side)
  return depth_to_space(decoded, message_side // side)


def stage1_mask(params) -> dict:
  """A pytree of bools: True on the stage-1 (θ_CR) parameters, False on stage 2 (θ_SC)."""
  return {k: jax.tree.map(lambda _: k.startswith("stage1"), v) for k, v in params.items()}


def pool_to(images, side: int):
  """Average-pools NHWC images to side×side (the cover at C_R's resolution for d(C, C_R))."""
  factor = images.shape[1] // side
  if factor == 1:
    return images
  return nn.avg_pool(images, (factor, factor), strides=(factor, factor))


class ConvAnalyzer(nn.Module):
  """Four convolutions (LeakyReLU + BN) and an FC layer (§8.2.3-8.2.4).

  ``head="tanh"``: an extractor / decoder with ``outputs`` units in (−1, 1).
  ``head="logit"``: a steganalyzer; one logit whose sigmoid is P(cover).
  ``head="logits"``: an extractor with ``outputs`` unbounded logits (bit = 1 where > 0), for the
  sigmoid cross-entropy message loss (``loss.message_loss="bce"``); tanh of them is the "tanh" head.

  ``head_side=0`` is the book's form: stride-2 convolutions down to 4×4, flatten, one FC
  layer. ``head_side=s`` (CPU presets, extractors only) stops down-sampling at s×s (later
  convolutions have stride 1) and applies the FC layer *per position* (a 1×1 convolution
  with outputs / s² units, weights shared across positions), which has far fewer weights.

  ``message_side`` (with ``head_side``): the side m of the grid the generator reshapes the
  message to where it joins (`embedding_shape`). The per-position head decodes the bits of its
  own s×s cell, so its outputs are rearranged losslessly to the generator's m×m×(bits/m²)
  order (space-to-depth when m < s, depth-to-space when m > s) before flattening: bit i is then
  read near where the generator wrote it. Without this (m ≠ s) bit i is read at a position
  unrelated to where it was written and a shared per-position head cannot learn it (without the
  rearrangement the cpu presets' early and mid generators stayed at chance). 0: no rearrangement
  (the book's global head, or m = s).
  """
  outputs: int
  head: str = "tanh"
  channels: Sequence[int] = BOOK_ANALYZER_CHANNELS
  head_side: int = 0
  message_side: int = 0
  bn_momentum: float = 0.9

  @nn.compact
  def __call__(self, images, train: bool = False):
    require(self.head in ANALYZER_HEADS, f"unknown analyzer head {self.head!r}; valid: {', '.join(ANALYZER_HEADS)}")
    require(len(self.channels) == 4 and all(int(c) > 0 for c in self.channels),
            f"analyzer channels must be 4 positive widths, got {tuple(self.channels)}")
    chex.assert_rank(images, 4)
    side = images.shape[1]
    if self.head_side:
      require(self.head_side <= side and self.outputs % (self.head_side ** 2) == 0,
              f"head_side {self.head_side} must be <= the image side {side} and divide the "
              f"{self.outputs} outputs into {self.head_side}x{self.head_side} positions")
      m, s = self.message_side, self.head_side
      require(not m or ((m % s == 0 or s % m == 0) and self.outputs % (m * m) == 0),
              f"message_side {m} and head_side {s} must divide one another and the {self.outputs} outputs")
    h = images
    for i, c in enumerate(self.channels):
      stride = 2 if not self.head_side or h.shape[1] > self.head_side else 1
      h = nn.Conv(int(c), (4, 4) if stride == 2 else (3, 3), strides=(stride, stride), padding="SAME",
                  use_bias=False, name=f"conv{i}")(h)
      h = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum, name=f"bn{i}")(h)
      h = nn.leaky_relu(h, 0.2)
    if self.head_side:
      h = nn.Conv(self.outputs // (h.shape[1] * h.shape[2]), (1, 1), name="fc")(h)
      h = to_message_layout(h, self.message_side).reshape(h.shape[0], -1)
    else:
      h = nn.Dense(self.outputs, name="fc")(h.reshape(h.shape[0], -1))
    if self.head == "logit":
      return h[:, 0]
    return jnp.tanh(h) if self.head == "tanh" else h


def extractor(bits: int, channels: Sequence[int] = BOOK_ANALYZER_CHANNELS, head_side: int = 0,
              message_side: int = 0, head: str = "tanh") -> ConvAnalyzer:
  """The decoder D (Eq. 7.4) / one receiver's extractor (§8.2.4): M' in (−1, 1)^bits
  (``head="logits"``: unbounded logits instead, for the cross-entropy message loss).
  ``message_side``: the generator's message grid side (see `ConvAnalyzer`)."""
  require(head in ("tanh", "logits"), f"unknown extractor head {head!r}; valid: tanh, logits")
  return ConvAnalyzer(outputs=int(bits), head=head, channels=tuple(channels), head_side=int(head_side),
                      message_side=int(message_side) if head_side else 0)


def steganalyzer(channels: Sequence[int] = BOOK_ANALYZER_CHANNELS) -> ConvAnalyzer:
  """The steganalyzer ST (Eq. 7.5, §8.2.3): one logit, sigmoid = P(cover)."""
  return ConvAnalyzer(outputs=1, head="logit", channels=tuple(channels))


def two_stage_generator(message_bits: int, stage1_depth: int = 2, channels=BOOK_GENERATOR_CHANNELS,
                        image_size: int = 64, cover_shortcut: bool = False,
                        reconstruction_head: bool = False, residual: str = "clip") -> StagedGenerator:
  """The ch. 7 generator for one message of ``message_bits`` bits."""
  validate_generator(image_size, channels, stage1_depth, (message_bits,))
  require(stage1_depth >= 0, "the two-stage generator needs stage1_depth >= 0 (-1 is the single-stage design)")
  return StagedGenerator(message_bits=(int(message_bits),), stage1_depth=int(stage1_depth),
                         channels=tuple(int(c) for c in channels), image_size=int(image_size),
                         cover_shortcut=bool(cover_shortcut), reconstruction_head=bool(reconstruction_head),
                         residual=str(residual))
