"""Payload framing for the hide/reveal tool (SPEC §5 "User-facing use").

A message (bytes) becomes exactly `capacity_bits` bits to embed, and back, with four layers:

1. **Frame.** ``header = MAGIC ‖ flags ‖ parity ‖ body length`` (8 bytes) and
   ``body = payload ‖ CRC32(header ‖ payload)``. With a passphrase, ``payload`` is
   ``salt (16) ‖ nonce (12) ‖ AES-256-GCM(message)`` with the key derived by scrypt
   (n=2^14, r=8, p=1) from the passphrase and the random salt; the header is the GCM
   associated data, so the length and flags are authenticated too. Without one it is the
   message itself.
2. **Reed-Solomon** (`reedsolo`): the header is one RS codeword of 8 + 8 bytes (corrects
   4 byte errors); the body is cut into RS(255, 255 − parity) codewords, ``parity`` taken
   from the model's measured bit error rate and stored in the header.
3. **Repetition with soft voting.** The capacity left after the header copies is filled
   with as many whole copies of the coded body as fit; the header is repeated
   ``header_copies(capacity_bits)`` times. The reader averages the decoder's soft bits
   (``tanh(logit / 2)``) over all copies before the RS decoder, so a damaged region or a
   weak tile costs a fraction of each bit's votes instead of whole bytes.
4. **Whitening and spreading.** Bits are XORed with a fixed pseudo-random sequence and
   scattered over the image by a fixed pseudo-random permutation (both seeded by
   `LAYOUT_SEED` and the capacity), so copies and codewords are spread over every tile,
   and a blank or constant decoder output can never look like a valid frame.

The reader accepts a frame only if the header codeword decodes, the magic matches, the
body codewords decode, the CRC32 matches and (with a key) the GCM tag verifies; anything
else raises `NoMessageFound`, so a clean image, a wrong model, a wrong key or too much
damage never yields garbage. Chance acceptance of random bits needs the RS header decode
(~2^-28), the 3-byte magic (2^-24) and the CRC32 (2^-32) to pass together.
"""

import struct
import zlib
from typing import Optional, Tuple

import numpy as np

from dlbook.errors import DlbookError, require

MAGIC = b"DLS"
VERSION = 1
FLAG_ENCRYPTED = 0x01
HEADER_BYTES = 8
HEADER_PARITY = 8
HEADER_CODE_BITS = 8 * (HEADER_BYTES + HEADER_PARITY)
MAX_BODY = 2 ** 24 - 1
SALT_BYTES, NONCE_BYTES, TAG_BYTES = 16, 12, 16
CRC_BYTES = 4
LAYOUT_SEED = 0x57E60  # fixed: the layout must not depend on anything the reader lacks
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2 ** 14, 8, 1


class NoMessageFound(DlbookError):
  """The bits hold no valid frame (clean image, wrong model or key, or too much damage)."""


# ----------------------------------------------------------------------------- bits <-> bytes

def bytes_to_bits(data: bytes) -> np.ndarray:
  """Big-endian bits of `data` as a uint8 {0, 1} array of length 8·len(data)."""
  return np.unpackbits(np.frombuffer(bytes(data), np.uint8))


def bits_to_bytes(bits) -> bytes:
  """Inverse of `bytes_to_bits`; the length must be a multiple of 8."""
  bits = np.asarray(bits).astype(np.uint8).reshape(-1)
  require(bits.size % 8 == 0, f"bits_to_bytes needs a multiple of 8 bits, got {bits.size}")
  return np.packbits(bits).tobytes()


# ----------------------------------------------------------------------------- encryption

def derive_key(passphrase: str, salt: bytes) -> bytes:
  """256-bit AES key from a passphrase with scrypt (`cryptography`)."""
  from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
  require(isinstance(passphrase, str) and len(passphrase) > 0, "the key (passphrase) must not be empty")
  kdf = Scrypt(salt=salt, length=32, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P)
  return kdf.derive(passphrase.encode("utf-8"))


def encrypt(message: bytes, passphrase: str, associated: bytes, rng: Optional[np.random.Generator] = None) -> bytes:
  """salt ‖ nonce ‖ AES-GCM ciphertext+tag. `rng` only for reproducible tests; default os.urandom."""
  import os
  from cryptography.hazmat.primitives.ciphers.aead import AESGCM
  draw = (lambda n: rng.bytes(n)) if rng is not None else os.urandom
  salt, nonce = draw(SALT_BYTES), draw(NONCE_BYTES)
  return salt + nonce + AESGCM(derive_key(passphrase, salt)).encrypt(nonce, bytes(message), associated)


def decrypt(payload: bytes, passphrase: str, associated: bytes) -> bytes:
  from cryptography.exceptions import InvalidTag
  from cryptography.hazmat.primitives.ciphers.aead import AESGCM
  if len(payload) < SALT_BYTES + NONCE_BYTES + TAG_BYTES:
    raise NoMessageFound("no message found (encrypted payload too short)")
  salt, nonce = payload[:SALT_BYTES], payload[SALT_BYTES:SALT_BYTES + NONCE_BYTES]
  try:
    return AESGCM(derive_key(passphrase, salt)).decrypt(nonce, payload[SALT_BYTES + NONCE_BYTES:], associated)
  except InvalidTag:
    raise NoMessageFound("no message found for this key (wrong key, or the message was altered)") from None


# ----------------------------------------------------------------------------- Reed-Solomon

def rs_encoded_length(num_bytes: int, parity: int) -> int:
  """Length of `reedsolo` output for `num_bytes` data bytes: codewords of ≤ 255 symbols."""
  per_block = 255 - parity
  return num_bytes + parity * -(-num_bytes // per_block)


def _codec(parity: int):
  import reedsolo
  require(2 <= parity <= 128, f"Reed-Solomon parity must be in [2, 128] bytes per codeword, got {parity}")
  return reedsolo.RSCodec(parity)


def _rs_decode(codec, data: bytes, what: str) -> bytes:
  import reedsolo
  try:
    decoded = codec.decode(bytearray(data))[0]
  except reedsolo.ReedSolomonError:
    raise NoMessageFound(f"no message found ({what} is not a valid Reed-Solomon code: no frame, "
                         f"a different model, or too much damage)") from None
  return bytes(decoded)


# ----------------------------------------------------------------------------- layout

def header_copies(capacity_bits: int) -> int:
  """How often the 128-bit header codeword is repeated: one per 1024 bits of capacity, 1..64."""
  return int(max(1, min(64, capacity_bits // 1024)))


def _layout(capacity_bits: int) -> Tuple[np.ndarray, np.ndarray]:
  """(whitening bits, permutation): stream bit i is stored at position perm[i]."""
  rng = np.random.default_rng([LAYOUT_SEED, capacity_bits])
  return rng.integers(0, 2, capacity_bits, dtype=np.uint8), rng.permutation(capacity_bits)


def _body_length(message_bytes: int, encrypted: bool) -> int:
  return message_bytes + CRC_BYTES + (SALT_BYTES + NONCE_BYTES + TAG_BYTES if encrypted else 0)


def capacity_bytes(capacity_bits: int, parity: int, encrypted: bool = False) -> int:
  """The longest message (bytes) that fits once in `capacity_bits`; 0 if none does."""
  body_bits = capacity_bits - HEADER_CODE_BITS * header_copies(capacity_bits)
  overhead = _body_length(0, encrypted)
  best, lo, hi = 0, 0, max(0, body_bits // 8)
  while lo <= hi:  # the coded length is monotone in the message length
    mid = (lo + hi) // 2
    if 8 * rs_encoded_length(_body_length(mid, encrypted), parity) <= body_bits and mid + overhead <= MAX_BODY:
      best, lo = mid, mid + 1
    else:
      hi = mid - 1
  return best if 8 * rs_encoded_length(overhead, parity) <= body_bits else 0


def pack(message: bytes, capacity_bits: int, parity: int, passphrase: Optional[str] = None,
         rng: Optional[np.random.Generator] = None) -> np.ndarray:
  """The `capacity_bits` {0, 1} bits that carry `message` (see the module docstring)."""
  message = bytes(message)
  encrypted = passphrase is not None
  body_len = _body_length(len(message), encrypted)
  require(body_len <= MAX_BODY, f"message of {len(message)} bytes is too long for the frame (max {MAX_BODY})")
  codec = _codec(parity)
  copies_h = header_copies(capacity_bits)
  body_bits = capacity_bits - HEADER_CODE_BITS * copies_h
  coded_len = rs_encoded_length(body_len, parity)
  copies_b = body_bits // (8 * coded_len) if body_bits > 0 else 0
  if copies_b < 1:
    limit = capacity_bytes(capacity_bits, parity, encrypted)
    raise DlbookError(
        f"message of {len(message)} bytes does not fit: this cover holds at most {limit} bytes"
        f"{' with a key' if encrypted else ''} ({capacity_bits} bits of capacity, Reed-Solomon parity "
        f"{parity}/255); use a shorter message or a larger cover")
  flags = (VERSION << 4) | (FLAG_ENCRYPTED if encrypted else 0)
  header = MAGIC + bytes([flags, parity]) + struct.pack(">I", body_len)[1:]
  payload = encrypt(message, passphrase, header, rng) if encrypted else message
  body = payload + struct.pack(">I", zlib.crc32(header + payload))
  assert len(body) == body_len
  stream = np.zeros(capacity_bits, np.uint8)
  header_bits = bytes_to_bits(_codec(HEADER_PARITY).encode(header))
  stream[:HEADER_CODE_BITS * copies_h] = np.tile(header_bits, copies_h)
  body_code = bytes_to_bits(codec.encode(body))
  start = HEADER_CODE_BITS * copies_h
  stream[start:start + body_code.size * copies_b] = np.tile(body_code, copies_b)
  whitening, perm = _layout(capacity_bits)
  out = np.empty(capacity_bits, np.uint8)
  out[perm] = stream ^ whitening
  return out


def _vote(soft: np.ndarray, copies: int, length: int) -> np.ndarray:
  """Hard bits from the sum of `copies` consecutive soft copies of `length` bits each."""
  return (soft[:copies * length].reshape(copies, length).sum(axis=0) > 0).astype(np.uint8)


def unpack(logits, passphrase: Optional[str] = None) -> bytes:
  """The message held by the decoder's per-bit `logits` (positive means 1), or `NoMessageFound`."""
  logits = np.asarray(logits, np.float64).reshape(-1)
  capacity_bits = logits.size
  if capacity_bits < HEADER_CODE_BITS + 8:
    raise NoMessageFound(f"no message found (capacity of {capacity_bits} bits is too small for a frame)")
  whitening, perm = _layout(capacity_bits)
  soft = np.tanh(np.clip(logits, -30, 30) / 2)[perm] * (1 - 2 * whitening.astype(np.float64))
  copies_h = header_copies(capacity_bits)
  header = _rs_decode(_codec(HEADER_PARITY), bits_to_bytes(_vote(soft, copies_h, HEADER_CODE_BITS)), "the header")
  if header[:3] != MAGIC or header[3] >> 4 != VERSION or not 2 <= header[4] <= 128:
    raise NoMessageFound("no message found (no dlbook-stego header in this image for this model)")
  encrypted, parity = bool(header[3] & FLAG_ENCRYPTED), header[4]
  body_len = struct.unpack(">I", b"\0" + header[5:8])[0]
  coded_len = rs_encoded_length(body_len, parity)
  start = HEADER_CODE_BITS * copies_h
  copies_b = (capacity_bits - start) // (8 * coded_len)
  if body_len < CRC_BYTES or copies_b < 1:
    raise NoMessageFound("no message found (the header's length does not fit this image)")
  body = _rs_decode(_codec(parity), bits_to_bytes(_vote(soft[start:], copies_b, 8 * coded_len)), "the body")
  payload, crc = body[:-CRC_BYTES], struct.unpack(">I", body[-CRC_BYTES:])[0]
  if zlib.crc32(header + payload) != crc:
    raise NoMessageFound("no message found (checksum mismatch: damaged image or a different model)")
  if encrypted:
    if passphrase is None:
      raise NoMessageFound("no message found without a key: the image holds an encrypted message; pass --key")
    return decrypt(payload, passphrase, header)
  if passphrase is not None:
    raise NoMessageFound("no message found for this key (the image holds no encrypted message)")
  return payload


def parity_needed(bit_error_rate: float, margin: float = 3.0) -> int:
  """RS parity bytes per 255-byte codeword that a raw (single-copy) bit error rate calls for.

  Expected byte errors per codeword are e = 255·(1 − (1 − p)^8); a codeword corrects
  parity/2 of them. The parity is ⌈2·margin·e + 2·(3√e)⌉ rounded up to even: margin × the
  mean plus three standard deviations of a Poisson count. Unbounded: above 128 no RS code
  here can carry a single copy reliably.
  """
  require(0 <= bit_error_rate < 0.5, f"bit error rate must be in [0, 0.5), got {bit_error_rate}")
  e = 255 * (1 - (1 - bit_error_rate) ** 8)
  parity = int(np.ceil(2 * margin * e + 6 * np.sqrt(e)))
  return parity + parity % 2


def choose_parity(bit_error_rate: float, margin: float = 3.0) -> int:
  """`parity_needed` clipped to [16, 128], the parity a model is exported with."""
  return int(min(128, max(16, parity_needed(bit_error_rate, margin))))
