"""Pure losses of the GAN steganography methods (book ch. 6-8).

- ``distance(a, b)`` is the book's d(·,·), "the Euclidean distance" (§6.3.4, Eq. 7.4).
  **Choice:** the default is the mean squared difference per element (the squared
  Euclidean distance divided by the number of elements, averaged over the batch), so the
  weights λ mean the same at every image and message size. ``kind="l2"`` is the plain
  per-example Euclidean norm, ``kind="l1"`` the mean absolute difference.
- ``steganalyzer_loss``: sigmoid cross-entropy with cover labelled 1 and stego 0
  (Eq. 7.5; L_S of §6.3.4), computed from logits for numerical stability.
- ``generator_adversarial_loss``: the steganalyzer term a generator minimises. The book
  writes "λ_S L_S" in the generator loss without a sign; minimising the steganalyzer's
  own loss would *help* the steganalyzer. **Choice:** the non-saturating GAN form,
  −log ST(S), i.e. the cross-entropy of stego images against the *cover* label.
- GSIVAT (Hayes & Danezis 2017, book §6.3.4): L_E = d(M, M'),
  L_G = λ_G d(C, C') + λ_E L_E + λ_S L_S.
- Two-stage (ch. 7): L_D = d(M, M') (Eq. 7.4), L_ST (Eq. 7.5), L_CR (Eq. 7.6),
  L_SC = λ_G L_CR + λ_D L_D + λ_S L_ST (Eq. 7.7). Eq. 7.6 reads L_CR = d(C, S);
  ``cr_target="reconstruction"`` uses d(C, C_R) instead (a choice: a flag, default S as printed).
- Multiple messages (ch. 8, Algorithm 1 step 6): the weighted sum of the reconstruction,
  steganalyzer and *every* extractor's error, L = λ_G L_CR + λ_D Σ_i L_D,i + λ_S L_ST.

The weighted sums themselves are formed in the train step (`dlbook.stego.steps`) as one
vector-Jacobian product with the cotangent (λ_G, λ_D, λ_S).

Messages are bits in {0, 1}; networks see them as ±1 (``bits_to_signs``) and the tanh
extractors return values in (−1, 1), decoded by sign.
"""

from typing import Sequence

import chex
import jax.numpy as jnp
import optax

from dlbook.errors import require

DISTANCES = ("mse", "l2", "l1")
MESSAGE_LOSSES = ("distance", "bce")
CR_TARGETS = ("stego", "reconstruction")


def bits_to_signs(bits):
  """{0, 1} bits -> {−1, +1} values (what the generators and tanh extractors use)."""
  return 2.0 * jnp.asarray(bits, jnp.float32) - 1.0


def signs_to_bits(values):
  """Extractor outputs in (−1, 1) -> decoded {0, 1} bits (threshold at 0)."""
  return (jnp.asarray(values) > 0).astype(jnp.int32)


def distance(a, b, kind: str = "mse"):
  """The book's d(a, b), averaged over the batch (leading axis); see the module docstring."""
  require(kind in DISTANCES, f"unknown distance {kind!r}; valid: {', '.join(DISTANCES)}")
  chex.assert_equal_shape([a, b])
  diff = (jnp.asarray(a, jnp.float32) - jnp.asarray(b, jnp.float32)).reshape(a.shape[0], -1)
  if kind == "mse":
    return jnp.mean(diff ** 2)
  if kind == "l1":
    return jnp.mean(jnp.abs(diff))
  return jnp.mean(jnp.sqrt(jnp.sum(diff ** 2, axis=1) + 1e-12))


def steganalyzer_loss(cover_logits, stego_logits):
  """Eq. 7.5 / L_S: mean sigmoid cross-entropy, covers labelled 1 and stego images 0."""
  cover_logits, stego_logits = jnp.ravel(cover_logits), jnp.ravel(stego_logits)
  lc = optax.sigmoid_binary_cross_entropy(cover_logits, jnp.ones_like(cover_logits))
  ls = optax.sigmoid_binary_cross_entropy(stego_logits, jnp.zeros_like(stego_logits))
  return 0.5 * (jnp.mean(lc) + jnp.mean(ls))


def generator_adversarial_loss(stego_logits):
  """The generator's steganalyzer term: −log ST(S), stego judged against the cover label."""
  stego_logits = jnp.ravel(stego_logits)
  return jnp.mean(optax.sigmoid_binary_cross_entropy(stego_logits, jnp.ones_like(stego_logits)))


def extractor_loss(message_bits, decoded, kind: str = "mse"):
  """L_E = L_D = d(M, M') with M as ±1 and M' the tanh extractor output (Eq. 7.4).

  ``kind="bce"`` (a choice, not the book's; SteganoGAN's decoder loss): ``decoded`` are the
  extractor's logits and L_D is the mean sigmoid cross-entropy against the {0, 1} bits. Unlike
  d(M, tanh(h)), whose gradient (M' − M)(1 − M'²) vanishes for a confidently *wrong* bit, its
  gradient σ(h) − bit stays large there.
  """
  if kind == "bce":
    chex.assert_equal_shape([message_bits, decoded])
    return jnp.mean(optax.sigmoid_binary_cross_entropy(jnp.asarray(decoded, jnp.float32),
                                                       jnp.asarray(message_bits, jnp.float32)))
  return distance(bits_to_signs(message_bits), decoded, kind)


def cover_reconstruction_loss(cover, stego, reconstruction=None, target: str = "stego", kind: str = "mse"):
  """Eq. 7.6: L_CR = d(C, S) as printed, or d(C, C_R) with ``target="reconstruction"``."""
  require(target in CR_TARGETS, f"unknown cr_target {target!r}; valid: {', '.join(CR_TARGETS)}")
  if target == "stego":
    return distance(cover, stego, kind)
  require(reconstruction is not None, "cr_target='reconstruction' needs the stage-1 reconstruction C_R")
  return distance(cover, reconstruction, kind)


def multi_message_decoder_loss(message_bits: Sequence, decoded: Sequence, kind: str = "mse"):
  """Σ_i d(M_i, M_i') over the receivers (ch. 8, Algorithm 1 step 6); returns (sum, per-receiver)."""
  require(len(message_bits) == len(decoded) and len(decoded) > 0,
          f"one decoded message per receiver: got {len(message_bits)} messages and {len(decoded)} outputs")
  each = [extractor_loss(m, d, kind) for m, d in zip(message_bits, decoded)]
  return sum(each), each
