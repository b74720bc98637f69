"""The convolutional hiding model shipped with `dlbook-stego`, and image-level hide / reveal.

The book's generators (ch. 7-8) start with a fully connected layer on the flattened 64×64×3
cover (over 100M parameters) and work at one image size, so the tool ships a small fully
convolutional model instead, in the style of SteganoGAN (Zhang et al. 2019, "SteganoGAN:
high capacity image steganography with GANs"; written from the paper, not its code):

- ``dense``: the encoder embeds the cover with a conv, then three convs each see the cover
  features, every earlier conv output and the message planes (dense connections); the last
  one outputs a residual added to the cover. The decoder is a dense stack of convs ending in
  ``payload_bpp`` logits per pixel.
- ``basic``: the same without dense connections (each conv sees only the previous output
  and the message). This is the shipped model: at 1 bpp it gave the better image quality
  for a slightly higher raw error rate (docs/stego_tool.md).

The message is ``payload_bpp`` bit-planes of the tile (bpp = payload_bpp bits per pixel,
book §6.2.2). Choices: LeakyReLU(0.2) and no batch norm (every tile is processed
independently at inference, with no train/eval difference); the stego image is clipped to
the valid range and rounded to 8 bits with a straight-through gradient during training
(`quantize`), so what the decoder learns to read is what a PNG stores.

Any cover size is handled in 64×64 tiles on a grid anchored at the top-left corner; the
right and bottom remainders (width mod 64, height mod 64 pixels) carry no payload and are
copied unchanged, so the output has exactly the cover's size. A cover smaller than one
tile holds nothing.
"""

import functools
import json
import os
from typing import Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from dlbook.errors import DlbookError, require
from dlbook.registry import Registry
from dlbook import files
from dlbook.stego import payload as payload_lib
from dlbook.metrics.image import to_uint8
from dlbook.stego.images import quantize

TILE = 64
HIDERS: Registry[nn.Module] = Registry("hiding model")
MODEL_FILES = ("config.json", "params.npz")


def _conv(features: int, name: str):
  return nn.Conv(features, (3, 3), padding="SAME", name=name)


class DenseEncoder(nn.Module):
  """Cover [N,H,W,3] in [-1,1] + bits [N,H,W,bpp] in {0,1} -> stego (cover + residual), unclipped."""
  hidden: int = 32
  dense: bool = True

  @nn.compact
  def __call__(self, cover, bits):
    message = 2.0 * bits - 1.0
    features = [nn.leaky_relu(_conv(self.hidden, "embed")(cover), 0.2)]
    for i in range(2):
      inputs = jnp.concatenate((features if self.dense else features[-1:]) + [message], axis=-1)
      features.append(nn.leaky_relu(_conv(self.hidden, f"conv{i}")(inputs), 0.2))
    inputs = jnp.concatenate((features if self.dense else features[-1:]) + [message], axis=-1)
    return cover + _conv(3, "residual")(inputs)


class DenseDecoder(nn.Module):
  """Stego [N,H,W,3] -> bit logits [N,H,W,bpp]."""
  hidden: int = 32
  payload_bpp: int = 1
  dense: bool = True

  @nn.compact
  def __call__(self, stego):
    features = [nn.leaky_relu(_conv(self.hidden, "embed")(stego), 0.2)]
    for i in range(2):
      inputs = jnp.concatenate(features if self.dense else features[-1:], axis=-1)
      features.append(nn.leaky_relu(_conv(self.hidden, f"conv{i}")(inputs), 0.2))
    inputs = jnp.concatenate(features if self.dense else features[-1:], axis=-1)
    return _conv(self.payload_bpp, "logits")(inputs)


class Hider(nn.Module):
  """Encoder + decoder; `__call__` runs both (hide, 8-bit rounding, reveal) for training."""
  hidden: int = 32
  payload_bpp: int = 1
  dense: bool = True

  def setup(self):
    self.encoder = DenseEncoder(self.hidden, self.dense)
    self.decoder = DenseDecoder(self.hidden, self.payload_bpp, self.dense)

  def hide(self, cover, bits):
    return self.encoder(cover, bits)

  def reveal(self, stego):
    return self.decoder(stego)

  def __call__(self, cover, bits):
    stego = self.hide(cover, bits)
    return stego, self.reveal(quantize(stego))


@HIDERS.register("dense")
def dense(hidden: int = 32, payload_bpp: int = 1) -> Hider:
  return Hider(hidden=hidden, payload_bpp=payload_bpp, dense=True)


@HIDERS.register("basic")
def basic(hidden: int = 32, payload_bpp: int = 1) -> Hider:
  return Hider(hidden=hidden, payload_bpp=payload_bpp, dense=False)


def build(name: str, hidden: int, payload_bpp: int) -> Hider:
  require(int(hidden) > 0, f"hider hidden width must be positive, got {hidden}")
  require(int(payload_bpp) in (1, 2, 3, 4, 5, 6),
          f"payload_bpp must be an integer number of bits per pixel in 1..6, got {payload_bpp}")
  return HIDERS.get(name)(hidden=int(hidden), payload_bpp=int(payload_bpp))


@functools.lru_cache(maxsize=None)
def compiled(hidden: int, payload_bpp: int, dense: bool):
  """(module, init, hide, reveal) with the jitted functions shared by every model of this shape,
  so loading a model again (or another model of the same shape) does not recompile."""
  module = Hider(hidden=hidden, payload_bpp=payload_bpp, dense=dense)
  cover = jnp.zeros((1, TILE, TILE, 3))
  bits = jnp.zeros((1, TILE, TILE, payload_bpp))
  init = jax.jit(lambda key: module.init(key, cover, bits)["params"])
  hide = jax.jit(lambda p, c, b: module.apply({"params": p}, c, b, method=Hider.hide))
  reveal = jax.jit(lambda p, s: module.apply({"params": p}, s, method=Hider.reveal))
  return module, init, hide, reveal


def init_params(model: Hider, key) -> dict:
  return compiled(model.hidden, model.payload_bpp, model.dense)[1](key)


# ----------------------------------------------------------------------------- saved models

class HidingModel:
  """A loaded model: architecture, parameters and the framing settings it was trained for.

  ``config.json`` holds ``architecture, hidden, payload_bpp, tile, rs_parity`` (and the
  measurements that chose ``rs_parity``); ``params.npz`` the flattened parameters.
  """

  def __init__(self, meta: dict, params: dict, path: str = ""):
    self.meta, self.params, self.path = meta, params, path
    self.module = build(meta["architecture"], meta["hidden"], meta["payload_bpp"])
    self.bpp = int(meta["payload_bpp"])
    self.rs_parity = int(meta["rs_parity"])
    _, _, self._hide, self._reveal = compiled(self.module.hidden, self.module.payload_bpp, self.module.dense)

  def hide_tiles(self, tiles: np.ndarray, bits: np.ndarray, chunk: int = 16) -> np.ndarray:
    """uint8 tiles [T,64,64,3] + bits [T,64,64,bpp] -> uint8 stego tiles."""
    out = []
    for start, cover, bit in _chunks(chunk, tiles, bits):
      stego = self._hide(self.params, _to_unit(cover), bit.astype(np.float32))
      out.append(to_uint8(np.asarray(stego), (-1.0, 1.0))[:len(tiles) - start])
    return np.concatenate(out)

  def reveal_tiles(self, tiles: np.ndarray, chunk: int = 16) -> np.ndarray:
    """uint8 tiles [T,64,64,3] -> bit logits [T,64,64,bpp]."""
    out = []
    for start, stego in _chunks(chunk, tiles):
      out.append(np.asarray(self._reveal(self.params, _to_unit(stego)))[:len(tiles) - start])
    return np.concatenate(out)


def _to_unit(x: np.ndarray) -> np.ndarray:
  return (x.astype(np.float32) / 127.5 - 1.0)


def _chunks(chunk: int, *arrays):
  """Fixed-size chunks (the last padded with zeros) so the jitted functions compile once."""
  n = len(arrays[0])
  for start in range(0, n, chunk):
    parts = []
    for a in arrays:
      part = a[start:start + chunk]
      if len(part) < chunk:
        part = np.concatenate([part, np.zeros((chunk - len(part),) + a.shape[1:], a.dtype)])
      parts.append(part)
    yield (start, *parts)


def save_model(directory: str, params: dict, meta: dict) -> None:
  """Writes ``params.npz`` and ``config.json``, each atomically (`files.atomic_write`: a fresh
  temporary name, never a planted link, removed on failure)."""
  os.makedirs(directory, exist_ok=True)
  flat = {"/".join(k): np.asarray(v) for k, v in traverse_util.flatten_dict(jax.device_get(params)).items()}
  files.atomic_write(os.path.join(directory, "params.npz"), lambda f: np.savez(f, **flat))
  text = json.dumps(meta, indent=2, sort_keys=True).encode()
  files.atomic_write(os.path.join(directory, "config.json"), lambda f: f.write(text))


def default_model_dir() -> str:
  """The model shipped as package data (dlbook/assets/stego/default)."""
  return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets", "stego", "default")


def _meta_int(meta: dict, key: str, where: str, low: int, high: int) -> int:
  value = meta.get(key)
  require(isinstance(value, int) and not isinstance(value, bool) and low <= value <= high,
          f"{where}: {key!r} must be an integer in [{low}, {high}], got {value!r}")
  return value


def load_model(directory: Optional[str] = None) -> HidingModel:
  """Loads a model directory; a missing, corrupt or inconsistent one is a `DlbookError` naming it."""
  directory = directory or default_model_dir()
  require(os.path.isdir(directory), f"model directory {directory} does not exist")
  missing = [f for f in MODEL_FILES if not os.path.isfile(os.path.join(directory, f))]
  require(not missing, f"model directory {directory} lacks {', '.join(missing)}; it needs {', '.join(MODEL_FILES)}")
  config_path, params_path = (os.path.join(directory, f) for f in MODEL_FILES)
  try:
    with open(config_path, "rb") as f:
      meta = json.loads(f.read().decode("utf-8"))
  except (OSError, ValueError) as e:  # ValueError: bad JSON or not UTF-8
    raise DlbookError(f"cannot read the model's {config_path}: {e}") from None
  require(isinstance(meta, dict), f"{config_path} must hold a JSON object, got {type(meta).__name__}")
  require(meta.get("architecture") in HIDERS.names(),
          f"{config_path}: unknown architecture {meta.get('architecture')!r}; known: {', '.join(HIDERS.names())}")
  _meta_int(meta, "hidden", config_path, 1, 1024)
  _meta_int(meta, "payload_bpp", config_path, 1, 6)
  _meta_int(meta, "rs_parity", config_path, 2, 128)
  require(_meta_int(meta, "tile", config_path, 1, 1 << 16) == TILE,
          f"{config_path}: tile size {meta['tile']} is not supported (only {TILE})")
  try:  # a truncated or altered npz fails in zipfile, zlib or numpy's header parser
    with np.load(params_path, allow_pickle=False) as f:
      flat = {tuple(k.split("/")): np.asarray(f[k]) for k in f.files}
  except Exception as e:
    raise DlbookError(f"cannot read the model's {params_path}: {type(e).__name__}: {e}") from None
  bad = ["/".join(k) for k, v in flat.items() if v.dtype.kind != "f" or not np.all(np.isfinite(v))]
  require(not bad, f"{params_path}: parameters {', '.join(bad[:3])} are not finite floating-point arrays")
  params = traverse_util.unflatten_dict(flat)
  model = HidingModel(meta, params, directory)
  expected = jax.eval_shape(lambda: init_params(model.module, jax.random.key(0)))
  shapes = lambda t: jax.tree.map(lambda x: tuple(x.shape), t)
  try:
    same = shapes(expected) == shapes(params)
  except Exception:  # different tree structures
    same = False
  require(same, f"parameters in {params_path} do not fit its config.json "
                f"({meta['architecture']}, hidden {meta['hidden']}, {meta['payload_bpp']} bpp)")
  return model


# ----------------------------------------------------------------------------- images

def tile_grid(height: int, width: int) -> Tuple[int, int]:
  """Number of 64×64 tiles (rows, cols) on the top-left-anchored grid."""
  return height // TILE, width // TILE


def image_tiles(image: np.ndarray) -> np.ndarray:
  """uint8 HW3 -> [rows·cols, 64, 64, 3] in raster order."""
  rows, cols = tile_grid(*image.shape[:2])
  grid = image[:rows * TILE, :cols * TILE]
  return grid.reshape(rows, TILE, cols, TILE, 3).transpose(0, 2, 1, 3, 4).reshape(rows * cols, TILE, TILE, 3)


def put_tiles(image: np.ndarray, tiles: np.ndarray) -> np.ndarray:
  """Inverse of `image_tiles` on a copy of `image` (the remainder is left as it was)."""
  rows, cols = tile_grid(*image.shape[:2])
  out = image.copy()
  out[:rows * TILE, :cols * TILE] = tiles.reshape(rows, cols, TILE, TILE, 3).transpose(0, 2, 1, 3, 4).reshape(
      rows * TILE, cols * TILE, 3)
  return out


def capacity_bits(model: HidingModel, height: int, width: int) -> int:
  rows, cols = tile_grid(height, width)
  return rows * cols * TILE * TILE * model.bpp


def capacity_bytes(model: HidingModel, height: int, width: int, encrypted: bool = False) -> int:
  """The longest message (bytes) a cover of this size holds with this model."""
  return payload_lib.capacity_bytes(capacity_bits(model, height, width), model.rs_parity, encrypted)


def hide_image(model: HidingModel, cover: np.ndarray, message: bytes, passphrase: Optional[str] = None) -> np.ndarray:
  """uint8 HW3 cover + message -> uint8 HW3 stego image of the same size."""
  require(cover.dtype == np.uint8 and cover.ndim == 3 and cover.shape[-1] == 3,
          f"cover must be an 8-bit RGB image, got {cover.dtype} {cover.shape}")
  h, w = cover.shape[:2]
  require(min(h, w) >= TILE, f"the cover is {w}x{h} pixels; it must be at least {TILE}x{TILE} (one tile)")
  bits = payload_lib.pack(message, capacity_bits(model, h, w), model.rs_parity, passphrase)
  tiles = image_tiles(cover)
  bit_planes = bits.reshape(len(tiles), TILE, TILE, model.bpp)
  return put_tiles(cover, model.hide_tiles(tiles, bit_planes))


def reveal_image(model: HidingModel, image: np.ndarray, passphrase: Optional[str] = None) -> bytes:
  """The message in a uint8 HW3 image, or `payload.NoMessageFound`."""
  h, w = image.shape[:2]
  if min(h, w) < TILE:
    raise payload_lib.NoMessageFound()
  logits = model.reveal_tiles(image_tiles(image))
  return payload_lib.unpack(logits.reshape(-1), passphrase)
