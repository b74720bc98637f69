"""GSIVAT (Hayes & Danezis 2017; book §6.3.4): generator A(C, M) -> C', extractor
B(C') -> M', steganalyzer E, trained with

  L_E = d(M, M'),  L_S = sigmoid cross-entropy (cover 1, stego 0),
  L_G = λ_G d(C, C') + λ_E L_E + λ_S L_S.

Alice (A) concatenates the message to the flattened cover, applies an FC layer and four
fractionally-strided convolutions ending in tanh; Bob (B) and Eve (E) are four
convolutions and an FC layer. That is the book's *conventional* embedding generator
(§8.2.2.1) with one message, and the extractor / steganalyzer of §8.2.3-8.2.4, so those
modules are reused here. Training is `dlbook.stego.steps` with ``split_stages=False`` and
L_CR = d(C, C'), which makes the step's L_SC equal L_G.
"""

from typing import Sequence

from dlbook.stego.two_stage import (BOOK_GENERATOR_CHANNELS, CONVENTIONAL, StagedGenerator,
                                    validate_generator)


def gsivat_generator(message_bits: int, channels: Sequence[int] = BOOK_GENERATOR_CHANNELS,
                     image_size: int = 64, cover_shortcut: bool = False, residual: str = "clip") -> StagedGenerator:
  """Alice: A(C, M) with M joined to the flattened cover before the FC layer."""
  validate_generator(image_size, channels, CONVENTIONAL, (int(message_bits),))
  return StagedGenerator(message_bits=(int(message_bits),), stage1_depth=CONVENTIONAL,
                         channels=tuple(int(c) for c in channels), image_size=int(image_size),
                         cover_shortcut=bool(cover_shortcut), residual=str(residual))
