"""Multiple secret messages for multiple receivers (book ch. 8).

Two messages M_1, M_2 (one per receiver) are embedded by one generator; each receiver has
its own extractor (4 convs + FC of the message size, tanh; §8.2.4) and a steganalyzer
(4 convs + FC(1), LeakyReLU, BN, sigmoid; §8.2.3) is trained against the generator.
Training follows Algorithms 1-3 (see `dlbook.stego.steps`).

The four generators of §8.2.2 differ only in where the messages join (stage1_depth of
`StagedGenerator`); with the book's widths and two 4096-bit messages (2 bpp) the tensor
shapes are:

| generator    | stage 1 output (C_R)        | each message  | stage-2 input |
|--------------|-----------------------------|---------------|---------------|
| conventional | — (single stage)            | flat, joins the flattened cover before FC 8192 -> 4×4×512 | |
| early        | FC -> 4×4×512               | 4×4×256       | 4×4×1024      |
| mid          | FC + 1 tconv -> 8×8×256     | 8×8×64        | 8×8×384       |
| late         | FC + 2 tconvs -> 16×16×128  | 16×16×16      | 16×16×160     |

and every generator ends at 64×64×3 (tanh).

**Choice** (the book is silent): a payload of P bpp is split equally between the two
receivers, P/2 bpp each (at 2 bpp, 4096 bits each as in §8.2.2; at 3 bpp 6144 bits,
16×16×24 per message in the late generator).
"""

from typing import Sequence, Tuple

from dlbook.errors import require
from dlbook.stego.two_stage import (BOOK_GENERATOR_CHANNELS, CONVENTIONAL, StagedGenerator,
                                    validate_generator)

# Where the messages join: the number of transposed convolutions in stage 1.
EMBEDDINGS = {"conventional": CONVENTIONAL, "early": 0, "mid": 1, "late": 2}


def message_sizes(payload_bpp: float, num_messages: int, image_size: int = 64) -> Tuple[int, ...]:
  """Bits per receiver when ``payload_bpp`` is split equally between ``num_messages``."""
  require(num_messages >= 1, f"num_messages must be >= 1, got {num_messages}")
  require(payload_bpp > 0, f"payload_bpp must be positive, got {payload_bpp}")
  total = payload_bpp * image_size * image_size
  each = total / num_messages
  require(float(each).is_integer(),
          f"payload_bpp {payload_bpp} on {image_size}x{image_size} ({total:g} bits) does not split into "
          f"{num_messages} equal whole-bit messages")
  return (int(each),) * num_messages


def stage1_depth(embedding: str) -> int:
  require(embedding in EMBEDDINGS, f"unknown embedding {embedding!r}; valid: {', '.join(EMBEDDINGS)}")
  return EMBEDDINGS[embedding]


def multi_message_generator(embedding: str, message_bits: Sequence[int],
                            channels: Sequence[int] = BOOK_GENERATOR_CHANNELS, image_size: int = 64,
                            cover_shortcut: bool = False, reconstruction_head: bool = False,
                            residual: str = "clip") -> StagedGenerator:
  """The conventional / early / mid / late embedding generator of §8.2.2."""
  depth = stage1_depth(embedding)
  bits = tuple(int(b) for b in message_bits)
  validate_generator(image_size, channels, depth, bits)
  return StagedGenerator(message_bits=bits, stage1_depth=depth, channels=tuple(int(c) for c in channels),
                         image_size=int(image_size), cover_shortcut=bool(cover_shortcut),
                         reconstruction_head=bool(reconstruction_head) and depth >= 0, residual=str(residual))
