"""`dlbook-stego`: hide a text message in a PNG image, and reveal it (SPEC §5 "User-facing use").

  dlbook-stego hide   --cover IN.png --message TEXT --out OUT.png [--model DIR] [--key PASSPHRASE]
  dlbook-stego reveal --image OUT.png [--model DIR] [--key PASSPHRASE]
  dlbook-stego capacity --cover IN.png [--model DIR]

The default model ships in the package (dlbook/assets/stego/default). The cover is cut
into 64×64 tiles from its top-left corner; the right and bottom remainders are copied
unchanged (see `dlbook.stego.hider`). The message is framed, checksummed, Reed-Solomon
coded and, with ``--key``, encrypted (see `dlbook.stego.payload`).

Exit status: 0 on success; 1 when `reveal` finds no message (a clean image, a wrong key,
a different model or a damaged image; nothing else is printed on stdout); 2 for bad input
(missing file, not a PNG, message too long, unknown model ...), with one ``error:`` line.
"""

import argparse
import os
import sys
from typing import Optional, Sequence

import numpy as np

from dlbook.errors import DlbookError, require

EXIT_NO_MESSAGE = 1
EXIT_BAD_INPUT = 2
LOSSY_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".jfif", ".webp", ".heic", ".avif")
LOSSY_WHY = ("lossy compression changes pixel values and destroys the hidden payload; "
             "use PNG (lossless)")


def read_png(path: str, role: str) -> tuple:
  """(uint8 HW3 RGB pixels, alpha or None) of a PNG file; anything else is a `DlbookError`."""
  from PIL import Image, UnidentifiedImageError
  require(os.path.exists(path), f"{role} file {path} does not exist")
  require(not path.lower().endswith(LOSSY_EXTENSIONS), f"{role} {path} is not a PNG: {LOSSY_WHY}")
  try:
    with Image.open(path) as im:
      fmt = im.format
      if fmt == "PNG":
        im.load()
        mode = im.mode
        rgba = im.convert("RGBA") if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info) else None
        rgb = np.asarray(im.convert("RGB"), np.uint8)
  except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
    raise DlbookError(f"{role} {path} is not a readable image: {e}") from None
  if fmt in ("JPEG", "MPO", "WEBP"):
    raise DlbookError(f"{role} {path} is a {fmt} image: {LOSSY_WHY}")
  require(fmt == "PNG", f"{role} {path} is a {fmt} image; only PNG (lossless) is supported")
  require(mode in ("1", "L", "LA", "P", "PA", "RGB", "RGBA"),
          f"{role} {path} has pixel mode {mode!r}; supported: 8-bit grey, palette, RGB or RGBA PNG")
  alpha = None if rgba is None else np.asarray(rgba, np.uint8)[..., 3]
  return rgb, alpha


def write_png(path: str, rgb: np.ndarray, alpha: Optional[np.ndarray]) -> None:
  from PIL import Image
  pixels = rgb if alpha is None else np.concatenate([rgb, alpha[..., None]], axis=-1)
  tmp = path + ".tmp.png"
  try:
    Image.fromarray(pixels, "RGB" if alpha is None else "RGBA").save(tmp, format="PNG")
    os.replace(tmp, path)
  except OSError as e:
    raise DlbookError(f"cannot write {path}: {e}") from None


def check_output_path(path: str) -> None:
  require(not path.lower().endswith(LOSSY_EXTENSIONS), f"output {path} would not be a PNG: {LOSSY_WHY}")
  require(path.lower().endswith(".png"), f"output {path} must end in .png (PNG is the only lossless format written)")
  parent = os.path.dirname(os.path.abspath(path))
  require(os.path.isdir(parent), f"output folder {parent} does not exist")


def cmd_hide(args) -> int:
  from dlbook.stego import hider
  check_output_path(args.out)
  require(args.message != "", "--message is empty; give the text to hide")
  require(args.key is None or args.key != "", "--key is empty; give a passphrase or leave --key out")
  require(os.path.abspath(args.cover) != os.path.abspath(args.out), "--out must differ from --cover")
  cover, alpha = read_png(args.cover, "cover")
  model = hider.load_model(args.model)
  stego = hider.hide_image(model, cover, args.message.encode("utf-8"), args.key)
  write_png(args.out, stego, alpha)
  h, w = cover.shape[:2]
  rows, cols = hider.tile_grid(h, w)
  limit = hider.capacity_bytes(model, h, w, args.key is not None)
  print(f"hid {len(args.message.encode('utf-8'))} bytes{' (encrypted)' if args.key else ''} in {args.out} "
        f"({rows}x{cols} tiles of 64x64 at {model.bpp} bpp; capacity {limit} bytes)", file=sys.stderr)
  return 0


def cmd_reveal(args) -> int:
  from dlbook.stego import hider, payload
  require(args.key is None or args.key != "", "--key is empty; give a passphrase or leave --key out")
  image, _ = read_png(args.image, "image")
  model = hider.load_model(args.model)
  try:
    message = hider.reveal_image(model, image, args.key)
    text = message.decode("utf-8")
  except payload.NoMessageFound as e:
    print(str(e), file=sys.stderr)
    return EXIT_NO_MESSAGE
  except UnicodeDecodeError:  # a valid frame that is not text (not written by this tool)
    print("no message found (the hidden payload is not UTF-8 text)", file=sys.stderr)
    return EXIT_NO_MESSAGE
  sys.stdout.write(text + "\n")
  sys.stdout.flush()
  return 0


def cmd_capacity(args) -> int:
  from dlbook.stego import hider
  cover, _ = read_png(args.cover, "cover")
  model = hider.load_model(args.model)
  h, w = cover.shape[:2]
  print(f"plain={hider.capacity_bytes(model, h, w)} bytes encrypted={hider.capacity_bytes(model, h, w, True)} bytes "
        f"tiles={'x'.join(map(str, hider.tile_grid(h, w)))} bpp={model.bpp} rs_parity={model.rs_parity}")
  return 0


def parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="dlbook-stego", description="Hide a text message in a PNG image with a trained "
                              "convolutional model, or reveal it. PNG only: lossy formats destroy the payload.")
  sub = p.add_subparsers(dest="command", required=True)
  model_help = "model directory (config.json + params.npz); default: the model shipped with dlbook"
  h = sub.add_parser("hide", help="hide a message in a PNG cover")
  h.add_argument("--cover", required=True, help="cover image (PNG)")
  h.add_argument("--message", required=True, help="text to hide (UTF-8)")
  h.add_argument("--out", required=True, help="output image (PNG)")
  h.add_argument("--model", default=None, help=model_help)
  h.add_argument("--key", default=None, help="passphrase: encrypt with AES-GCM (key from scrypt)")
  h.set_defaults(run=cmd_hide)
  r = sub.add_parser("reveal", help="print the message hidden in a PNG image")
  r.add_argument("--image", required=True, help="image written by `hide` (PNG)")
  r.add_argument("--model", default=None, help=model_help)
  r.add_argument("--key", default=None, help="the passphrase used with `hide --key`")
  r.set_defaults(run=cmd_reveal)
  c = sub.add_parser("capacity", help="how many message bytes a cover holds")
  c.add_argument("--cover", required=True, help="cover image (PNG)")
  c.add_argument("--model", default=None, help=model_help)
  c.set_defaults(run=cmd_capacity)
  return p


def run(argv: Optional[Sequence[str]] = None) -> int:
  """Runs one command and returns its exit status (for tests and `main`)."""
  args = parser().parse_args(argv)
  try:
    return args.run(args)
  except DlbookError as e:
    print(f"error: {e}", file=sys.stderr)
    return EXIT_BAD_INPUT


def main(argv: Optional[Sequence[str]] = None) -> None:
  os.environ.setdefault("JAX_PLATFORMS", "cpu")  # tiny model: no accelerator start-up cost
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  sys.exit(run(argv))


if __name__ == "__main__":
  main()
