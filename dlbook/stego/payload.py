"""Payload framing for the hide/reveal tool (the user-facing use of GAN steganography, book ch. 8).

A message (bytes) becomes exactly `capacity_bits` bits to embed, and back. Two frame formats;
both put a header first and then as many whole copies of the Reed-Solomon coded body as fit
(the rest is filler), and both scatter the stream over every tile with a permutation.

**Format 1, public** (no key; also read in the encrypted form earlier versions wrote):
``header = MAGIC ‖ version/flags ‖ parity ‖ body length`` (8 bytes), one RS(16, 8) codeword
repeated ``header_copies`` times; ``body = payload ‖ CRC32(header ‖ payload)`` in RS(255,
255 − parity) codewords; whitening and permutation seeded by the constant `LAYOUT_SEED` and
the capacity. Anyone with the model can find and read it: that is the point of a message
without a key. The earlier encrypted form had ``payload = salt ‖ nonce ‖ AES-GCM(message)``
with scrypt N=2^14; it is read, never written.

**Format 2, keyed** (with a passphrase). Nothing in it is readable or even recognisable
without the passphrase:

1. ``master = scrypt(NFC(passphrase), "dlbook-stego format 2" ‖ capacity, N=2^17, r=8, p=1)``
   (64 bytes; `cryptography`). Its first half is the AES-256 key of the header, its second
   half (through HKDF) seeds the permutation of all positions and the header whitening.
2. Header (16 bytes): ``nonce (8, random) ‖ version 2 ‖ log2 N ‖ r ‖ p ‖ parity ‖ body
   length (24 bit)``, encrypted as one AES block and repeated ``header_copies`` times, each
   copy XORed with its own stretch of one of 4096 keystreams; the first 12 bits of the
   nonce pick which. The reader soft-votes the copies under each of the 4096 whitenings,
   decrypts each vote with every flip of its 4 least reliable bits, and keeps the one whose
   nonce, version and scrypt parameters check (44 bits). Two images hidden with the same
   passphrase at the same size share a whitening with probability 1/4096 only; otherwise
   their headers are unrelated bits.
3. Body: ``AES-256-GCM(message)`` (the header as associated data) in RS codewords,
   repeated and soft-voted as in format 1, XORed with a ChaCha20 keystream; the GCM key
   and the keystream come from HKDF(master, nonce), so they are new for every image.

The scrypt parameters are stored in the header, and the reader tries `KDF_CANDIDATES`
in turn (the header cannot say which to use before it is decrypted).

The reader accepts a frame only if everything checks (RS, magic and CRC32 in format 1;
header fields and the GCM tag in format 2); anything else is `NoMessageFound`, with one
message whatever the cause, so a clean image, a wrong or missing key, a wrong model or
too much damage never yields garbage. With a key, `unpack` always does the same work
before it gives up (one scrypt per candidate, all header trials, the format-1 header),
whether the image is clean, holds a frame for another key or a message without a key.
Reed-Solomon runs in C (`creedsolo`); the body is first checked as received (CRC32 or
GCM tag on the systematic bytes) and RS-decoded only if that fails, one codeword at a
time, stopping at the first that cannot be decoded; the header's length must fit the
image, so the work is bounded by the image size.
"""

import functools
import os
import struct
import unicodedata
import zlib
from typing import Optional, Sequence, Tuple

import numpy as np

from dlbook.errors import DlbookError, require

MAGIC = b"DLS"
VERSION = 1            # format 1: the public frame (8-byte header with MAGIC)
KEYED_VERSION = 2      # format 2: the keyed frame
FLAG_ENCRYPTED = 0x01  # format 1, written by earlier versions only
HEADER_BYTES = 8
HEADER_PARITY = 8
HEADER_CODE_BITS = 8 * (HEADER_BYTES + HEADER_PARITY)  # 128 bits: one header copy in either format
MAX_BODY = 2 ** 24 - 1
CRC_BYTES = 4
TAG_BYTES = 16
LAYOUT_SEED = 0x57E60  # format 1: fixed, the layout must not depend on anything the reader lacks
V1_SALT_BYTES, V1_NONCE_BYTES = 16, 12
V1_KDF = (14, 8, 1)  # log2 N, r, p of format 1's scrypt
KDF_PARAMS = (17, 8, 1)  # written by `pack`: 128 MiB of memory per guess
KDF_CANDIDATES: Tuple[Tuple[int, int, int], ...] = ((17, 8, 1),)  # tried by `unpack`, in turn
KEYED_SALT = b"dlbook-stego format 2"
NONCE_BYTES = 8
SELECTOR_BITS = 12  # format 2: the header whitening is one of 4096, picked by the nonce; the reader tries all
TRIAL_BITS = 4  # format 2: and every flip of the 4 least reliable bits of the soft-voted header
NO_MESSAGE = "no message found (a clean image, a wrong or missing key, a different model, or too much damage)"


class NoMessageFound(DlbookError):
  """The bits hold no frame this reader can open: always the same message, whatever the cause."""

  def __init__(self, message: str = NO_MESSAGE):
    super().__init__(message)


# ----------------------------------------------------------------------------- bits <-> bytes

def bytes_to_bits(data: bytes) -> np.ndarray:
  """Big-endian bits of `data` as a uint8 {0, 1} array of length 8·len(data)."""
  return np.unpackbits(np.frombuffer(bytes(data), np.uint8))


def bits_to_bytes(bits) -> bytes:
  """Inverse of `bytes_to_bits`; the length must be a multiple of 8."""
  bits = np.asarray(bits).astype(np.uint8).reshape(-1)
  require(bits.size % 8 == 0, f"bits_to_bytes needs a multiple of 8 bits, got {bits.size}")
  return np.packbits(bits).tobytes()


# ----------------------------------------------------------------------------- keys

def passphrase_bytes(passphrase: str) -> bytes:
  """UTF-8 of the passphrase in Unicode NFC, so the same text typed on any system gives the same key."""
  require(isinstance(passphrase, str) and passphrase != "", "the key (passphrase) must not be empty")
  try:
    return unicodedata.normalize("NFC", passphrase).encode("utf-8")
  except UnicodeEncodeError:
    raise DlbookError("the key is not valid UTF-8 text") from None


def scrypt(secret: bytes, salt: bytes, params: Sequence[int], length: int) -> bytes:
  from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
  log2n, r, p = (int(v) for v in params)
  return Scrypt(salt=salt, length=length, n=2 ** log2n, r=r, p=p).derive(secret)


def _expand(key: bytes, info: bytes, length: int) -> bytes:
  from cryptography.hazmat.primitives import hashes
  from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
  return HKDFExpand(hashes.SHA256(), length, info).derive(key)


def _aes_ecb(key: bytes, blocks: bytes, decrypt: bool = False) -> bytes:
  """The raw AES block cipher on consecutive 16-byte blocks (each header copy is one block)."""
  from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
  cipher = Cipher(algorithms.AES(key), modes.ECB())
  op = cipher.decryptor() if decrypt else cipher.encryptor()
  return op.update(blocks) + op.finalize()


def _keystream_bits(key: bytes, num_bits: int) -> np.ndarray:
  from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
  stream = Cipher(algorithms.ChaCha20(key, b"\0" * 16), mode=None).encryptor().update(b"\0" * -(-num_bits // 8))
  return bytes_to_bits(stream)[:num_bits]


class KeyedLayout:
  """What the passphrase and the capacity fix in a format-2 frame (one scrypt call)."""

  def __init__(self, secret: bytes, capacity_bits: int, kdf: Sequence[int]):
    master = scrypt(secret, KEYED_SALT + struct.pack(">Q", capacity_bits), kdf, 64)
    self.header_key, self.layout_key = master[:32], master[32:]
    seed = int.from_bytes(_expand(self.layout_key, b"permutation", 32), "big")
    self.perm = np.random.Generator(np.random.PCG64(seed)).permutation(capacity_bits)
    self.copies = header_copies(capacity_bits)

  def header_whitening(self) -> np.ndarray:
    """[2^SELECTOR_BITS, copies, 16] bytes: the header region's whitening for each selector value."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
    key = _expand(self.layout_key, b"header whitening", 32)
    size = 2 ** SELECTOR_BITS * self.copies * HEADER_CODE_BITS // 8
    stream = Cipher(algorithms.ChaCha20(key, b"\0" * 16), mode=None).encryptor().update(b"\0" * size)
    return np.frombuffer(stream, np.uint8).reshape(2 ** SELECTOR_BITS, self.copies, HEADER_CODE_BITS // 8)

  def image_keys(self, nonce: bytes) -> Tuple[bytes, bytes]:
    """(AES-GCM key, body keystream key) of the image with this header nonce."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF
    keys = HKDF(hashes.SHA256(), 64, salt=nonce, info=b"dlbook-stego format 2 body").derive(self.layout_key)
    return keys[:32], keys[32:]


def _selector(nonce) -> np.ndarray:
  """The first SELECTOR_BITS bits of the nonce (bytes, or a [..., ≥2] uint8 array)."""
  b = np.asarray(np.frombuffer(nonce, np.uint8) if isinstance(nonce, bytes) else nonce, np.int64)
  return ((b[..., 0] << 8) | b[..., 1]) >> (16 - SELECTOR_BITS)


# ----------------------------------------------------------------------------- Reed-Solomon

def rs_encoded_length(num_bytes: int, parity: int) -> int:
  """Length of the RS code of `num_bytes` data bytes: codewords of ≤ 255 symbols."""
  per_block = 255 - parity
  return num_bytes + parity * -(-num_bytes // per_block)


@functools.lru_cache(maxsize=None)
def _codec(parity: int):
  """The compiled codec (`creedsolo`, shipped in the reedsolo wheel); the pure-Python one if absent."""
  require(2 <= parity <= 128, f"Reed-Solomon parity must be in [2, 128] bytes per codeword, got {parity}")
  try:
    import creedsolo as rs
  except ImportError:  # a platform without the compiled wheel: same code, slower
    import reedsolo as rs
  return rs.RSCodec(parity)


def rs_encode(data: bytes, parity: int) -> bytes:
  return bytes(_codec(parity).encode(bytearray(data)))


def _systematic(coded: bytes, parity: int) -> bytes:
  """The data bytes of each codeword, as received (RS here is systematic: data first, then parity)."""
  return b"".join(coded[i:i + 255][:-parity] for i in range(0, len(coded), 255))


def rs_decode(coded: bytes, parity: int) -> Optional[bytes]:
  """Corrected data bytes, or None at the first codeword that cannot be decoded."""
  codec, out = _codec(parity), []
  for i in range(0, len(coded), 255):
    try:
      out.append(bytes(codec.decode(bytearray(coded[i:i + 255]))[0]))
    except Exception:  # ReedSolomonError, or any other failure on untrusted bits
      return None
  return b"".join(out)


def _open_body(coded: bytes, parity: int, check):
  """`check(data)` (a result or None) on the bytes as received, then after RS decoding if needed."""
  found = check(_systematic(coded, parity))
  if found is None:
    data = rs_decode(coded, parity)
    found = None if data is None else check(data)
  return found


# ----------------------------------------------------------------------------- layout

def header_copies(capacity_bits: int) -> int:
  """How often the 128-bit header is repeated: one per 1024 bits of capacity, 1..64."""
  return int(max(1, min(64, capacity_bits // 1024)))


def _public_layout(capacity_bits: int) -> Tuple[np.ndarray, np.ndarray]:
  """Format 1: (whitening bits, permutation); stream bit i is stored at position perm[i]."""
  rng = np.random.default_rng([LAYOUT_SEED, capacity_bits])
  return rng.integers(0, 2, capacity_bits, dtype=np.uint8), rng.permutation(capacity_bits)


def _body_length(message_bytes: int, encrypted: bool) -> int:
  """Format 1 without a key: message ‖ CRC32; format 2: GCM ciphertext ‖ tag."""
  return message_bytes + (TAG_BYTES if encrypted else CRC_BYTES)


def _body_copies(capacity_bits: int, body_len: int, parity: int) -> int:
  body_bits = capacity_bits - HEADER_CODE_BITS * header_copies(capacity_bits)
  return max(0, body_bits) // (8 * rs_encoded_length(body_len, parity))


def capacity_bytes(capacity_bits: int, parity: int, encrypted: bool = False) -> int:
  """The longest message (bytes) that fits once in `capacity_bits`; 0 if none does."""
  overhead = _body_length(0, encrypted)
  best, lo, hi = 0, 1, max(0, capacity_bits // 8)
  while lo <= hi:  # the coded length is monotone in the message length
    mid = (lo + hi) // 2
    if _body_copies(capacity_bits, mid + overhead, parity) >= 1 and mid + overhead <= MAX_BODY:
      best, lo = mid, mid + 1
    else:
      hi = mid - 1
  return best


def pack(message: bytes, capacity_bits: int, parity: int, passphrase: Optional[str] = None,
         rng: Optional[np.random.Generator] = None) -> np.ndarray:
  """The `capacity_bits` {0, 1} bits that carry `message`: format 2 with a passphrase, else format 1.

  `rng` draws the format-2 nonce (only for reproducible tests; default `os.urandom`).
  """
  message = bytes(message)
  encrypted = passphrase is not None
  secret = passphrase_bytes(passphrase) if encrypted else None
  body_len = _body_length(len(message), encrypted)
  copies_b = _body_copies(capacity_bits, body_len, parity) if body_len <= MAX_BODY else 0
  _codec(parity)
  if copies_b < 1:
    limit = capacity_bytes(capacity_bits, parity, encrypted)
    raise DlbookError(
        f"message of {len(message)} bytes does not fit: this cover holds at most {limit} bytes"
        f"{' with a key' if encrypted else ''} ({capacity_bits} bits of capacity, Reed-Solomon parity "
        f"{parity}/255); use a shorter message or a larger cover")
  copies_h = header_copies(capacity_bits)
  start = HEADER_CODE_BITS * copies_h
  size = struct.pack(">I", body_len)[1:]
  if encrypted:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    layout = KeyedLayout(secret, capacity_bits, KDF_PARAMS)
    nonce = rng.bytes(NONCE_BYTES) if rng is not None else os.urandom(NONCE_BYTES)
    header = nonce + bytes([KEYED_VERSION, *KDF_PARAMS, parity]) + size
    gcm_key, stream_key = layout.image_keys(nonce)
    body = AESGCM(gcm_key).encrypt(b"\0" * 12, message, header)  # the key is new for every nonce
    block = np.frombuffer(_aes_ecb(layout.header_key, header), np.uint8)
    header_code = bytes_to_bits((block[None] ^ layout.header_whitening()[_selector(nonce)]).tobytes())
    whitening = np.concatenate([np.zeros(start, np.uint8), _keystream_bits(stream_key, capacity_bits - start)])
    perm = layout.perm
  else:
    header = MAGIC + bytes([(VERSION << 4), parity]) + size
    body = message + struct.pack(">I", zlib.crc32(header + message))
    header_code = np.tile(bytes_to_bits(rs_encode(header, HEADER_PARITY)), copies_h)
    whitening, perm = _public_layout(capacity_bits)
  assert len(body) == body_len
  body_code = bytes_to_bits(rs_encode(body, parity))
  stream = np.zeros(capacity_bits, np.uint8)
  stream[:start] = header_code
  stream[start:start + body_code.size * copies_b] = np.tile(body_code, copies_b)
  out = np.empty(capacity_bits, np.uint8)
  out[perm] = stream ^ whitening
  return out


# ----------------------------------------------------------------------------- reading

def _vote(soft: np.ndarray, copies: int, length: int) -> np.ndarray:
  """Hard bits from the sum of `copies` consecutive soft copies of `length` bits each."""
  return (soft[:copies * length].reshape(copies, length).sum(axis=0) > 0).astype(np.uint8)


def _read_body(soft_body: np.ndarray, body_len: int, parity: int) -> Optional[bytes]:
  """Soft-voted coded body bytes, or None if the length does not fit (the work is bounded by the image)."""
  coded_len = rs_encoded_length(body_len, parity)
  copies = soft_body.size // (8 * coded_len)
  if copies < 1:
    return None
  return bits_to_bytes(_vote(soft_body, copies, 8 * coded_len))


def _unpack_public(soft: np.ndarray, passphrase: Optional[str]) -> Optional[bytes]:
  """Format 1: the message, or None. With a passphrase only the encrypted form (earlier versions) is opened."""
  capacity_bits = soft.size
  whitening, perm = _public_layout(capacity_bits)
  soft = soft[perm] * (1 - 2 * whitening.astype(np.float64))
  copies_h = header_copies(capacity_bits)
  header = rs_decode(bits_to_bytes(_vote(soft, copies_h, HEADER_CODE_BITS)), HEADER_PARITY)
  if header is None or header[:3] != MAGIC or header[3] >> 4 != VERSION or not 2 <= header[4] <= 128:
    return None
  encrypted, parity = bool(header[3] & FLAG_ENCRYPTED), header[4]
  body_len = struct.unpack(">I", b"\0" + header[5:8])[0]
  if encrypted != (passphrase is not None) or body_len < CRC_BYTES:
    return None
  coded = _read_body(soft[HEADER_CODE_BITS * copies_h:], body_len, parity)
  if coded is None:
    return None

  def check(body):
    payload, crc = body[:-CRC_BYTES], body[-CRC_BYTES:]
    return payload if struct.pack(">I", zlib.crc32(header + payload)) == crc else None

  payload = _open_body(coded, parity, check)
  if payload is None or not encrypted:
    return payload
  return _decrypt_v1(payload, passphrase, header)


def _decrypt_v1(payload: bytes, passphrase: str, header: bytes) -> Optional[bytes]:
  """Format 1's ``salt ‖ nonce ‖ AES-GCM`` with scrypt N=2^14 (the passphrase as given, then in NFC)."""
  from cryptography.exceptions import InvalidTag
  from cryptography.hazmat.primitives.ciphers.aead import AESGCM
  if len(payload) < V1_SALT_BYTES + V1_NONCE_BYTES + TAG_BYTES:
    return None
  salt, nonce = payload[:V1_SALT_BYTES], payload[V1_SALT_BYTES:V1_SALT_BYTES + V1_NONCE_BYTES]
  nfc = passphrase_bytes(passphrase)
  try:
    given = passphrase.encode("utf-8")
  except UnicodeEncodeError:
    given = nfc
  for secret in dict.fromkeys([given, nfc]):
    try:
      return AESGCM(scrypt(secret, salt, V1_KDF, 32)).decrypt(nonce, payload[V1_SALT_BYTES + V1_NONCE_BYTES:], header)
    except InvalidTag:
      continue
  return None


def _keyed_headers(soft_header: np.ndarray, layout: KeyedLayout) -> Tuple[np.ndarray, np.ndarray]:
  """Format 2: for every selector value, the copies soft-voted under its whitening, decrypted
  with every flip of the TRIAL_BITS least reliable bits: ([V·2^TRIAL_BITS, 16] plaintexts,
  the selector each was read with)."""
  whitening = layout.header_whitening()
  total, soft32 = soft_header.sum(axis=0), soft_header.astype(np.float32)
  votes = np.empty((len(whitening), HEADER_CODE_BITS), np.float32)
  step = max(1, 2 ** 22 // soft_header.size)
  for i in range(0, len(whitening), step):  # sum over copies of soft·(1 − 2w), in chunks to bound memory
    bits = np.unpackbits(whitening[i:i + step], axis=-1)
    votes[i:i + step] = total - 2 * np.einsum("vcj,cj->vj", bits, soft32, dtype=np.float32, casting="unsafe")
  v, rows = len(votes), np.arange(len(votes))
  weakness, flips = np.abs(votes), np.zeros((v, TRIAL_BITS, 16), np.uint8)  # flip j of vote v: a 16-byte XOR mask
  for j in range(TRIAL_BITS):  # the j-th least reliable bit of each vote
    bit = weakness.argmin(axis=1)
    weakness[rows, bit] = np.inf
    flips[rows, j, bit // 8] = 0x80 >> (bit % 8)
  masks = np.zeros((v, 2 ** TRIAL_BITS, 16), np.uint8)  # mask k flips the bits j set in k
  for j in range(TRIAL_BITS):
    masks[:, 2 ** j:2 ** (j + 1)] = masks[:, :2 ** j] ^ flips[:, j, None, :]
  trials = np.packbits(votes > 0, axis=1)[:, None, :] ^ masks
  plain = np.frombuffer(_aes_ecb(layout.header_key, trials.tobytes(), decrypt=True), np.uint8)
  return plain.reshape(-1, 16), np.repeat(np.arange(len(votes)), 2 ** TRIAL_BITS)


def _unpack_keyed(soft: np.ndarray, secret: bytes, kdf: Sequence[int]) -> Optional[bytes]:
  """Format 2 with scrypt parameters `kdf`: the message, or None."""
  from cryptography.exceptions import InvalidTag
  from cryptography.hazmat.primitives.ciphers.aead import AESGCM
  capacity_bits = soft.size
  layout = KeyedLayout(secret, capacity_bits, kdf)
  soft = soft[layout.perm]
  start = HEADER_CODE_BITS * layout.copies
  plain, selector = _keyed_headers(soft[:start].reshape(layout.copies, HEADER_CODE_BITS), layout)
  keep = np.flatnonzero(plain[:, 8] == KEYED_VERSION)  # the version byte first: 1 in 256 of the wrong ones
  plain, selector = plain[keep], selector[keep]
  parity = plain[:, 12].astype(np.int64)
  body_len = (plain[:, 13].astype(np.int64) << 16) | (plain[:, 14].astype(np.int64) << 8) | plain[:, 15]
  coded_len = body_len + parity * -(-body_len // np.maximum(255 - parity, 1))
  valid = ((_selector(plain) == selector) & np.all(plain[:, 9:12] == np.asarray(kdf, np.uint8), axis=1)
           & (parity >= 2) & (parity <= 128) & (body_len > TAG_BYTES) & (8 * coded_len <= capacity_bits - start))
  if not valid.any():
    return None
  header = bytes(plain[np.flatnonzero(valid)[0]])
  parity, body_len = header[12], struct.unpack(">I", b"\0" + header[13:16])[0]
  gcm_key, stream_key = layout.image_keys(header[:NONCE_BYTES])
  signs = 1.0 - 2.0 * _keystream_bits(stream_key, capacity_bits - start)
  coded = _read_body(soft[start:] * signs, body_len, parity)
  if coded is None:
    return None

  def check(body):
    try:
      return AESGCM(gcm_key).decrypt(b"\0" * 12, body, header)
    except InvalidTag:
      return None

  return _open_body(coded, parity, check)


def unpack(logits, passphrase: Optional[str] = None) -> bytes:
  """The message held by the decoder's per-bit `logits` (positive means 1), or `NoMessageFound`.

  Without a passphrase: format 1 without a key. With one: format 2 (each of
  `KDF_CANDIDATES`), then format 1 in its encrypted form; all of it is always tried.
  """
  logits = np.asarray(logits, np.float64).reshape(-1)
  secret = None if passphrase is None else passphrase_bytes(passphrase)
  if logits.size < HEADER_CODE_BITS + 8:
    raise NoMessageFound()
  soft = np.tanh(np.clip(np.nan_to_num(logits), -30, 30) / 2)  # soft bits in [-1, 1]
  found = []
  if secret is not None:
    found += [_unpack_keyed(soft, secret, kdf) for kdf in KDF_CANDIDATES]
  found.append(_unpack_public(soft, passphrase))
  message = next((m for m in found if m is not None), None)
  if message is None:
    raise NoMessageFound()
  return message


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
