"""`dlbook-stego`: hide a message in a PNG image, and reveal it (the user-facing use of GAN steganography, book ch. 8).

  dlbook-stego hide   --cover IN.png (--message TEXT | --message-file FILE|-) --out OUT.png
                      [--key-file FILE|- | --no-key | --key PASSPHRASE] [--model DIR]
  dlbook-stego reveal --image OUT.png [--key-file FILE|- | --no-key | --key PASSPHRASE]
                      [--raw | --out FILE] [--model DIR]
  dlbook-stego capacity --cover IN.png [--model DIR]

The default model ships in the package (dlbook/assets/stego/default). The cover is cut into
64×64 tiles from its top-left corner; the right and bottom remainders are copied unchanged
(see `dlbook.stego.hider`). The message is framed, Reed-Solomon coded and, with a key,
encrypted and scattered by the key (see `dlbook.stego.payload`).

Secrets stay off the command line unless `--key`/`--message` are used: without a key option
the passphrase is asked for without echo when standard input is a terminal, and there is no
key (and no prompt) otherwise, so scripts never wait on a prompt.

Exit status: 0 on success; 1 only when `reveal` finds no message (one fixed line on stderr,
nothing on stdout); 2 for every error, with one ``error:`` line on stderr.
"""

import argparse
import os
import struct
import sys
import textwrap
import traceback
import warnings
from typing import Optional, Sequence

import numpy as np

from dlbook.errors import DlbookError, require

EXIT_NO_MESSAGE = 1
EXIT_ERROR = 2
EXIT_BAD_INPUT = EXIT_ERROR  # every error, bad input or not, exits 2
MAX_PIXELS = 40_000_000  # ~7700x5200; larger images (or decompression bombs) are refused before decoding
MAX_KEY_FILE = 1 << 16
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LOSSY_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".jfif", ".webp", ".heic", ".avif")
LOSSY_WHY = ("lossy compression changes pixel values and destroys the hidden payload; "
             "use PNG (lossless)")
EXIT_STATUS_HELP = """exit status:
  0  success
  1  reveal only: no message found (a clean image, a wrong or missing key, a different
     model, or too much damage); one fixed line on stderr and nothing on stdout
  2  any error (bad arguments, missing, unreadable, corrupt, too large or 16-bit image,
     corrupt model, message too long, text that is not UTF-8, output that cannot be
     written or shown, interrupted, internal error), with one 'error: ...' line on stderr;
     nothing already saved is changed"""
KEY_HELP = """key (passphrase):
  Without --key, --key-file or --no-key, the passphrase is asked for without echo when
  standard input is a terminal (an empty answer means no key); otherwise (a script, a
  pipe, cron) there is no key and no prompt. --key puts the passphrase where every local
  user can read it (ps, /proc/PID/cmdline) and in your shell history: prefer the prompt or
  --key-file. The passphrase is normalised to Unicode NFC."""
# Control characters that reach a terminal from `reveal` are shown as escapes (newline and tab
# stay): C0 and DEL as \\xNN, C1 (a terminal reads U+009B as CSI) and bidirectional overrides
# as \\uNNNN. Bytes that are not UTF-8 show as \\xNN too.
_ESCAPES = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F] if c not in (0x09, 0x0A)}
_ESCAPES.update({c: f"\\u{c:04x}" for c in [*range(0x80, 0xA0), 0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F),
                                            *range(0x2066, 0x206A)]})


class Parser(argparse.ArgumentParser):
  """argparse with one `error:` line (and exit 2) for a bad command line."""

  def error(self, message):
    self.exit(EXIT_ERROR, f"error: {message} (see {self.prog} --help)\n")


# ----------------------------------------------------------------------------- files

def read_png(path: str, role: str) -> tuple:
  """(uint8 HW3 RGB pixels, alpha or None) of an 8-bit PNG file; anything else is a `DlbookError`."""
  from PIL import Image
  require(os.path.exists(path), f"{role} file {path} does not exist")
  require(not path.lower().endswith(LOSSY_EXTENSIONS), f"{role} {path} is not a PNG: {LOSSY_WHY}")
  require(not os.path.isdir(path), f"{role} {path} is a directory, not a PNG file")
  try:
    with open(path, "rb") as f:
      head = f.read(26)
  except OSError as e:
    raise DlbookError(f"cannot read {role} {path}: {e.strerror or e}") from None
  if head[:8] == PNG_SIGNATURE and head[12:16] == b"IHDR":  # PNG requires IHDR first: size and bit depth
    width, height, depth = struct.unpack(">IIB", head[16:25])
    require(width * height <= MAX_PIXELS, f"{role} {path} is {width}x{height} pixels, more than the "
                                          f"{MAX_PIXELS:,} this tool reads (too large, or a decompression bomb)")
    require(depth <= 8, f"{role} {path} is a {depth}-bit PNG; only 8-bit PNGs are supported (the model reads "
                        f"8-bit pixels): convert it to 8 bits per channel first")
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("error", Image.DecompressionBombWarning)
      with Image.open(path) as im:
        fmt, mode = im.format, im.mode
        if fmt == "PNG":
          require(im.width * im.height <= MAX_PIXELS, f"{role} {path} is {im.width}x{im.height} pixels, more than "
                                                      f"the {MAX_PIXELS:,} this tool reads")
          require(mode in ("1", "L", "LA", "P", "PA", "RGB", "RGBA"),
                  f"{role} {path} has pixel mode {mode!r}; supported: 8-bit grey, palette, RGB or RGBA PNG")
          im.load()
          transparent = mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info)
          rgba = im.convert("RGBA") if transparent else None
          rgb = np.asarray(im.convert("RGB"), np.uint8)
  except DlbookError:
    raise
  except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
    raise DlbookError(f"{role} {path} is refused as a possible decompression bomb: {e}") from None
  except MemoryError:
    raise DlbookError(f"{role} {path} does not fit in memory") from None
  except Exception as e:  # UnidentifiedImageError, OSError (truncated), SyntaxError, zlib.error, ...: untrusted bytes
    raise DlbookError(f"{role} {path} is not a readable image: {e}") from None
  if fmt in ("JPEG", "MPO", "WEBP"):
    raise DlbookError(f"{role} {path} is a {fmt} image: {LOSSY_WHY}")
  require(fmt == "PNG", f"{role} {path} is a {fmt} image; only PNG (lossless) is supported")
  alpha = None if rgba is None else np.asarray(rgba, np.uint8)[..., 3]
  return rgb, alpha


def write_png(path: str, rgb: np.ndarray, alpha: Optional[np.ndarray]) -> None:
  """Writes through a fresh temporary file and an atomic rename (`files.atomic_write`)."""
  from PIL import Image
  from dlbook import files
  pixels = rgb if alpha is None else np.concatenate([rgb, alpha[..., None]], axis=-1)
  image = Image.fromarray(pixels, "RGB" if alpha is None else "RGBA")
  files.atomic_write(path, lambda f: image.save(f, format="PNG"))


def same_file(a: str, b: str) -> bool:
  try:
    return os.path.samefile(a, b)
  except OSError:
    return os.path.realpath(a) == os.path.realpath(b)


def check_output_path(path: str, png: bool) -> None:
  if png:
    require(not path.lower().endswith(LOSSY_EXTENSIONS), f"output {path} would not be a PNG: {LOSSY_WHY}")
    require(path.lower().endswith(".png"), f"output {path} must end in .png (PNG is the only lossless format written)")
  require(not os.path.isdir(path), f"output {path} is a directory")
  parent = os.path.dirname(os.path.abspath(path))
  require(os.path.isdir(parent), f"output folder {parent} does not exist")


def _read_bytes(path: str, what: str, limit: int) -> bytes:
  """At most `limit` + 1 bytes of a file, or of standard input for '-'."""
  if path == "-":
    return sys.stdin.buffer.read(limit + 1)
  require(os.path.exists(path), f"{what} {path} does not exist")
  require(not os.path.isdir(path), f"{what} {path} is a directory")
  try:
    with open(path, "rb") as f:
      return f.read(limit + 1)
  except OSError as e:
    raise DlbookError(f"cannot read {what} {path}: {e.strerror or e}") from None


def _utf8_argument(value: str, option: str) -> bytes:
  """The UTF-8 bytes of a command-line value (bytes that are not UTF-8 arrive as lone surrogates)."""
  try:
    return value.encode("utf-8")
  except UnicodeEncodeError:
    raise DlbookError(f"{option} is not valid UTF-8 text"
                      f"{'; use --message-file for other bytes' if option == '--message' else ''}") from None


def read_message(args) -> bytes:
  from dlbook.stego import payload
  if args.message is not None:
    message = _utf8_argument(args.message, "--message")
    require(message != b"", "--message is empty; give the text to hide")
    return message
  where = "standard input" if args.message_file == "-" else f"message file {args.message_file}"
  message = _read_bytes(args.message_file, "message file", payload.MAX_BODY)
  require(message != b"", f"{where} is empty; nothing to hide")
  require(len(message) <= payload.MAX_BODY, f"{where} holds more than {payload.MAX_BODY} bytes, the most a frame holds")
  return message


def read_passphrase(args, confirm: bool) -> Optional[str]:
  """The passphrase from --key, --key-file or a hidden prompt (see KEY_HELP), or None for no key."""
  import getpass
  if args.no_key:
    return None
  if args.key is not None:
    require(args.key != "", "--key is empty; give a passphrase, or use --no-key")
    _utf8_argument(args.key, "--key")
    return args.key
  if args.key_file is not None:
    where = "standard input" if args.key_file == "-" else f"key file {args.key_file}"
    data = _read_bytes(args.key_file, "key file", MAX_KEY_FILE)
    line = data.split(b"\n", 1)[0]
    require(b"\n" in data or len(data) <= MAX_KEY_FILE,
            f"the first line of {where} is longer than {MAX_KEY_FILE} bytes")
    line = line[:-1] if line.endswith(b"\r") else line
    require(line != b"", f"{where} starts with an empty line; put the passphrase on its first line")
    try:
      return line.decode("utf-8")
    except UnicodeDecodeError:
      raise DlbookError(f"the passphrase in {where} is not valid UTF-8 text") from None
  if not sys.stdin.isatty():
    return None
  try:
    key = getpass.getpass("passphrase (empty: no key): ")
    if key and confirm and getpass.getpass("the passphrase again: ") != key:
      raise DlbookError("the two passphrases differ; nothing was written")
  except EOFError:
    raise DlbookError("no passphrase was read (end of input); use --key-file or --no-key") from None
  return key or None


# ----------------------------------------------------------------------------- commands

def printable(data: bytes) -> str:
  """The message as text for a terminal: control characters and bytes that are not UTF-8 escaped."""
  return data.decode("utf-8", errors="backslashreplace").translate(_ESCAPES)


def cmd_hide(args) -> int:
  from dlbook.stego import hider
  require(not (args.key_file == "-" and args.message_file == "-"),
          "--key-file - and --message-file - cannot both read standard input")
  check_output_path(args.out, png=True)
  message = read_message(args)
  cover, alpha = read_png(args.cover, "cover")
  require(not same_file(args.cover, args.out), "--out must differ from --cover")
  model = hider.load_model(args.model)
  passphrase = read_passphrase(args, confirm=True)
  stego = hider.hide_image(model, cover, message, passphrase)
  write_png(args.out, stego, alpha)
  h, w = cover.shape[:2]
  rows, cols = hider.tile_grid(h, w)
  limit = hider.capacity_bytes(model, h, w, passphrase is not None)
  how = ("encrypted with the key" if passphrase is not None
         else "without a key (anyone with the model can read it)")
  print(f"hid {len(message)} bytes {how} in {args.out} ({rows}x{cols} tiles of 64x64 at {model.bpp} bpp; "
        f"capacity {limit} bytes)", file=sys.stderr)
  return 0


def cmd_reveal(args) -> int:
  from dlbook import files
  from dlbook.stego import hider, payload
  if args.out is not None:
    check_output_path(args.out, png=False)
    require(not same_file(args.out, args.image), "--out must differ from --image")
  image, _ = read_png(args.image, "image")
  model = hider.load_model(args.model)
  passphrase = read_passphrase(args, confirm=False)
  try:
    message = hider.reveal_image(model, image, passphrase)
  except payload.NoMessageFound:
    print(payload.NO_MESSAGE, file=sys.stderr)
    return EXIT_NO_MESSAGE
  if args.out is not None:
    files.atomic_write(args.out, lambda f: f.write(message), mode=0o600)
    print(f"wrote the message ({len(message)} bytes) to {args.out}", file=sys.stderr)
  elif args.raw:
    sys.stdout.buffer.write(message)
    sys.stdout.buffer.flush()
  else:
    text = printable(message) + "\n"
    encoding = sys.stdout.encoding or "utf-8"
    try:
      text.encode(encoding)
    except UnicodeEncodeError:
      raise DlbookError(f"standard output's encoding ({encoding}) cannot show this message; use --out FILE or "
                        f"--raw, or set PYTHONIOENCODING=utf-8") from None
    sys.stdout.write(text)
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


def _add_key_options(p) -> None:
  g = p.add_mutually_exclusive_group()
  g.add_argument("--key-file", metavar="FILE", help="read the passphrase from the first line of FILE "
                 "('-': standard input)")
  g.add_argument("--no-key", action="store_true", help="no passphrase and no prompt")
  g.add_argument("--key", metavar="PASSPHRASE", help="the passphrase itself: VISIBLE to other local users (ps, "
                 "/proc/PID/cmdline) and saved in shell history; prefer the prompt or --key-file")


def parser() -> argparse.ArgumentParser:
  fmt = argparse.RawDescriptionHelpFormatter  # keeps the epilogs' layout; descriptions are wrapped here
  p = Parser(prog="dlbook-stego", formatter_class=fmt, epilog=EXIT_STATUS_HELP,
             description=textwrap.fill(
                 "Hide a message in a PNG image with a trained convolutional model, or reveal it. PNG only "
                 "(8 bits per channel): lossy formats destroy the payload."))
  sub = p.add_subparsers(dest="command", required=True, metavar="{hide,reveal,capacity}")
  model_help = "model directory (config.json + params.npz); default: the model shipped with dlbook"
  h = sub.add_parser("hide", help="hide a message in a PNG cover", formatter_class=fmt,
                     description=textwrap.fill(
                         "Hide a message in a PNG cover and write the stego image (a new PNG of the same size). "
                         "With a key the message is encrypted and the frame cannot be found or read without the "
                         "key; without one anybody with the model can read it."),
                     epilog=KEY_HELP + "\n\n" + EXIT_STATUS_HELP)
  h.add_argument("--cover", required=True, help="cover image (8-bit PNG)")
  m = h.add_mutually_exclusive_group(required=True)
  m.add_argument("--message-file", metavar="FILE", help="hide the exact bytes of FILE ('-': standard input)")
  m.add_argument("--message", metavar="TEXT", help="the text itself (UTF-8): VISIBLE to other local users and "
                 "saved in shell history, and limited by the command-line length (about 128 KiB); "
                 "prefer --message-file")
  h.add_argument("--out", required=True, help="output image (PNG); replaced atomically")
  h.add_argument("--model", default=None, help=model_help)
  _add_key_options(h)
  h.set_defaults(run=cmd_hide)
  r = sub.add_parser("reveal", help="print the message hidden in a PNG image", formatter_class=fmt,
                     description=textwrap.fill(
                         "Print the message hidden in a PNG image. Control characters (terminal escape sequences) "
                         "and bytes that are not UTF-8 are shown escaped (\\xNN, \\uNNNN); --raw or --out give "
                         "the exact bytes."),
                     epilog=KEY_HELP + "\n\n" + EXIT_STATUS_HELP)
  r.add_argument("--image", required=True, help="image written by `hide` (PNG)")
  o = r.add_mutually_exclusive_group()
  o.add_argument("--raw", action="store_true", help="write the exact bytes to standard output (no escaping, no "
                 "newline added)")
  o.add_argument("--out", metavar="FILE", help="write the exact bytes to FILE (mode 0600, replaced atomically)")
  r.add_argument("--model", default=None, help=model_help)
  _add_key_options(r)
  r.set_defaults(run=cmd_reveal)
  c = sub.add_parser("capacity", help="how many message bytes a cover holds", formatter_class=fmt,
                     description="Print how many message bytes a cover holds, without and with a key.",
                     epilog=EXIT_STATUS_HELP)
  c.add_argument("--cover", required=True, help="cover image (8-bit PNG)")
  c.add_argument("--model", default=None, help=model_help)
  c.set_defaults(run=cmd_capacity)
  return p


def run(argv: Optional[Sequence[str]] = None) -> int:
  """Runs one command and returns its exit status (for tests and `main`); --help and a bad
  command line exit through argparse (`SystemExit` 0 and 2)."""
  args = parser().parse_args(argv)
  try:
    return args.run(args)
  except DlbookError as e:
    print(f"error: {e}", file=sys.stderr)
  except KeyboardInterrupt:
    print("error: interrupted; nothing was written", file=sys.stderr)
  except MemoryError:
    print("error: out of memory (the image is too large for this machine)", file=sys.stderr)
  except BrokenPipeError:
    raise
  except Exception as e:  # a bug: keep its traceback, but never exit 1 ("no message")
    traceback.print_exc()
    print(f"error: internal error ({type(e).__name__}: {e}); please report it", file=sys.stderr)
  return EXIT_ERROR


def main(argv: Optional[Sequence[str]] = None) -> None:
  os.environ.setdefault("JAX_PLATFORMS", "cpu")  # tiny model: no accelerator start-up cost
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  try:
    code = run(argv)
    sys.stdout.flush()
  except BrokenPipeError:  # `reveal | head`: the reader went away
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at interpreter exit
    print("error: standard output was closed", file=sys.stderr)
    code = EXIT_ERROR
  sys.exit(code)


if __name__ == "__main__":
  main()
