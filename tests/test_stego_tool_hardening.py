"""`dlbook-stego` under careless or hostile use: secrets off the command line, the keyed frame
(format 2) seen without its key, images written by format 1, untrusted output, file writes
that never follow a planted link, exit statuses, bad images and models, bounded decoding,
and round trips over many random crops of real photographs."""

import io
import json
import os
import pty
import select
import shutil
import stat
import struct
import sys
import time
import unicodedata
import warnings
import zlib

import numpy as np
import pytest
import skimage.data
from PIL import Image
from scipy import special, stats

from dlbook.data import covers
from dlbook.stego import cli, hider, payload
from tests.conftest import ROOT

DATA = os.path.join(ROOT, "tests", "data")
MESSAGE = "Meet at the old mill at 06:30 — bring the maps. ✓"


@pytest.fixture(autouse=True)
def no_terminal(monkeypatch):
  """Standard input is never a terminal here (not even under `pytest -s`): no passphrase prompt."""
  monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO()))


@pytest.fixture
def cheap_kdf(monkeypatch):
  """scrypt N=2^10 instead of 2^17 for tests of the framing and plumbing, not of the key derivation."""
  monkeypatch.setattr(payload, "KDF_PARAMS", (10, 8, 1))
  monkeypatch.setattr(payload, "KDF_CANDIDATES", ((10, 8, 1),))


@pytest.fixture(scope="module")
def model():
  return hider.load_model()


@pytest.fixture(scope="module")
def photo_png(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("cover") / "astronaut.png")
  Image.fromarray(skimage.data.astronaut()[40:168, 130:330]).save(path)  # 128 x 200: 2 x 3 tiles
  return path


def run_cli(capsys, *argv):
  try:
    code = cli.run(list(argv))
  except SystemExit as e:  # argparse: --help and bad command lines
    code = e.code
  out, err = capsys.readouterr()
  return code, out, err


def assert_error(result, fragment):
  code, out, err = result
  assert code == cli.EXIT_ERROR and out == "", result
  lines = err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result


def png_bytes(width, height, depth, color_type, raw_rows=b""):
  """A PNG file built by hand (PIL cannot write 16-bit RGB or lie about its size)."""
  def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
  ihdr = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
  return cli.PNG_SIGNATURE + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw_rows)) + chunk(b"IEND", b"")


def read(path):
  with open(path, "rb") as f:
    return f.read()


# ----------------------------------------------------------------------------- format 1 still reads

def test_images_written_by_format_1_still_reveal(capsys, cheap_kdf):
  """tests/data/stego_v1_*.png were written by the tool before the keyed format (format 1,
  scrypt N=2^14 for the key) from a 130x140 crop of skimage's coffee."""
  plain, keyed = os.path.join(DATA, "stego_v1_plain.png"), os.path.join(DATA, "stego_v1_keyed.png")
  assert run_cli(capsys, "reveal", "--image", plain)[:2] == (0, "format 1, no key: café ✓\n")
  assert run_cli(capsys, "reveal", "--image", keyed, "--key", "fixture pass")[:2] == (
      0, "format 1 with a key: ünïcode ✓\n")
  for argv in (["--image", keyed], ["--image", keyed, "--key", "fixture pasS"], ["--image", plain, "--key", "x"]):
    code, out, err = run_cli(capsys, "reveal", *argv)
    assert (code, out, err) == (cli.EXIT_NO_MESSAGE, "", payload.NO_MESSAGE + "\n"), argv


# ----------------------------------------------------------------------------- key derivation

def test_keyed_frame_uses_scrypt_2_17_stores_it_and_normalises_the_passphrase(monkeypatch):
  calls = []
  real = payload.scrypt
  monkeypatch.setattr(payload, "scrypt", lambda *a: calls.append(a) or real(*a))
  n, msg = 8192, b"nfc"
  nfd = unicodedata.normalize("NFD", "Ångström café")
  nfc = unicodedata.normalize("NFC", nfd)
  assert nfd != nfc
  bits = payload.pack(msg, n, 32, nfd, rng=np.random.default_rng(0))
  assert payload.unpack(2.0 * bits - 1, nfc) == msg  # one scrypt for format 2; format 1 finds no header
  assert [tuple(c[2]) for c in calls] == [(17, 8, 1), (17, 8, 1)]
  assert calls[0][0] == calls[1][0] == nfc.encode("utf-8")
  # The parameters are in the (encrypted) header: read it back with the key.
  layout = payload.KeyedLayout(nfc.encode(), n, (17, 8, 1))
  start = payload.HEADER_CODE_BITS * layout.copies
  plain, _ = payload._keyed_headers((2.0 * bits - 1)[layout.perm][:start].reshape(layout.copies, -1), layout)
  headers = {bytes(p) for p in plain if p[8] == payload.KEYED_VERSION and bytes(p[9:12]) == bytes([17, 8, 1])}
  assert len(headers) == 1 and next(iter(headers))[12] == 32  # parity


# ----------------------------------------------------------------------------- the keyed frame without its key

def _photo_crops(count, height, width, seed):
  rng = np.random.default_rng(seed)
  photos = {n: covers.to_rgb_uint8(covers.PHOTOS[n]()) for n in covers.PHOTOS
            if n not in ("china", "flower")}  # skimage's photographs (sklearn's two load slowly)
  fixed = lambda size: size if isinstance(size, int) else 64
  names = [n for n, image in photos.items() if image.shape[0] >= fixed(height) and image.shape[1] >= fixed(width)]
  crops = []
  for _ in range(count):
    image = photos[names[rng.integers(len(names))]]
    h = height if isinstance(height, int) else int(rng.integers(*height))
    w = width if isinstance(width, int) else int(rng.integers(*width))
    h, w = min(h, image.shape[0]), min(w, image.shape[1])
    y, x = int(rng.integers(0, image.shape[0] - h + 1)), int(rng.integers(0, image.shape[1] - w + 1))
    crops.append(np.ascontiguousarray(image[y:y + h, x:x + w]))
  return crops


def _hide_all(model, images, messages, keys, rng):
  """hide_image over many images with one batched model call."""
  bits = [payload.pack(m, hider.capacity_bits(model, *i.shape[:2]), model.rs_parity, k, rng=rng)
          for i, m, k in zip(images, messages, keys)]
  tiles = [hider.image_tiles(i) for i in images]
  stego = model.hide_tiles(np.concatenate(tiles), np.concatenate(bits).reshape(-1, 64, 64, model.bpp))
  out, s = [], 0
  for image, t in zip(images, tiles):
    out.append(hider.put_tiles(image, stego[s:s + len(t)]))
    s += len(t)
  return out


def _logits_all(model, images):
  """reveal_tiles over many images with one batched model call: per-image logits."""
  tiles = [hider.image_tiles(i) for i in images]
  logits = model.reveal_tiles(np.concatenate(tiles))
  ends = np.cumsum([len(t) for t in tiles])
  return [l.reshape(-1) for l in np.split(logits, ends[:-1])]


def _public_stream(logits):
  """What anyone with the model reads: the format-1 layout undone (hard bits in stream order)."""
  whitening, perm = payload._public_layout(logits.size)
  return (logits[perm] > 0).astype(np.uint8) ^ whitening


def _agreement(blocks):
  """Mean fraction of equal bits over all pairs of rows (128-bit header copies): 0.5 for random bits."""
  pairs = [(i, j) for i in range(len(blocks)) for j in range(i + 1, len(blocks))]
  return float(np.mean([(blocks[i] == blocks[j]).mean() for i, j in pairs]))


def _randomness(bits):
  """p-values of the NIST SP 800-22 frequency (monobit) and runs tests, and the agreement of the
  first eight 128-bit blocks (where format 1 puts its header copies)."""
  n = bits.size
  p_freq = special.erfc(abs(np.sum(2.0 * bits - 1)) / np.sqrt(2 * n))
  pi = bits.mean()
  runs = 1 + np.count_nonzero(bits[1:] != bits[:-1])
  p_runs = special.erfc(abs(runs - 2 * n * pi * (1 - pi)) / (2 * np.sqrt(2 * n) * pi * (1 - pi)))
  return p_freq, p_runs, _agreement(bits[:8 * 128].reshape(8, 128))


def test_without_the_key_a_keyed_image_reads_like_a_clean_one(model, cheap_kdf):
  """Public reader's view of 24 photo crops, clean, with a keyed message and with a message without a
  key (format 1, public by design: the control that shows the tests can fail)."""
  rng = np.random.default_rng(5)
  crops = _photo_crops(24, 64, 128, seed=1)  # 2 tiles: 8,192 bits, 8 header copies
  messages = [rng.integers(0, 256, int(rng.integers(1, 200)), dtype=np.uint8).tobytes() for _ in crops]
  keyed = _hide_all(model, crops, messages, ["one passphrase"] * len(crops), rng)
  public = _hide_all(model, crops, messages, [None] * len(crops), rng)
  logits = {name: _logits_all(model, images)
            for name, images in (("clean", crops), ("keyed", keyed), ("public", public))}
  views = {name: [_public_stream(l) for l in ls] for name, ls in logits.items()}
  copies = payload.header_copies(views["clean"][0].size)
  stats_of = {}
  for name, streams in views.items():
    headers = [payload.rs_decode(payload.bits_to_bytes(payload._vote(2.0 * s - 1, copies, 128)), 8) for s in streams]
    parsed = [h is not None and h[:3] == payload.MAGIC for h in headers]
    stats_of[name] = np.array([_randomness(s) for s in streams]), parsed
  # The header fails to parse exactly as for a clean image (format 1 parses, every time).
  assert not any(stats_of["clean"][1]) and not any(stats_of["keyed"][1]) and all(stats_of["public"][1])
  for name in ("clean", "keyed"):
    p_freq, p_runs, agree = stats_of[name][0].T
    assert p_freq.min() > 1e-4 and p_runs.min() > 1e-4, name  # random bits: pass, every image
    assert abs(agree.mean() - 0.5) < 0.02 and agree.max() < 0.56, name  # header copies unrelated
  # Both pass the same way: the p-values of clean and keyed images have the same distribution.
  for column in (0, 1):
    assert stats.ks_2samp(stats_of["clean"][0][:, column], stats_of["keyed"][0][:, column]).pvalue > 0.01
  # Format-1 header copies agree (less where a flat, saturated tile reads badly): the test sees structure.
  public_agree = stats_of["public"][0][:, 2]
  assert public_agree.mean() > 0.9 and public_agree.min() > max(stats_of[n][0][:, 2].max() for n in ("clean", "keyed"))

  # Two images hidden with the same passphrase at the same size (same permutation): even at the
  # positions of the header copies, which only the key tells, their bits XORed show no repetition
  # (format 1: identical header copies at its public positions).
  keyed_bits, public_bits = ([(l > 0).astype(np.uint8) for l in logits[name]] for name in ("keyed", "public"))
  n = keyed_bits[0].size
  keyed_perm = payload.KeyedLayout(b"one passphrase", n, payload.KDF_PARAMS).perm[:128 * copies]
  public_perm = payload._public_layout(n)[1][:128 * copies]
  agreement = lambda x, perm: _agreement(x[perm].reshape(copies, 128))
  for i in range(0, 24, 2):
    x = keyed_bits[i] ^ keyed_bits[i + 1]
    p_freq, p_runs, _ = _randomness(x)
    assert p_freq > 1e-4 and p_runs > 1e-4 and abs(agreement(x, keyed_perm) - 0.5) < 0.06
    assert agreement(public_bits[i] ^ public_bits[i + 1], public_perm) > 0.56


# ----------------------------------------------------------------------------- acceptance: many random crops

def test_round_trips_no_false_positives_never_garbage_over_random_crops(model, cheap_kdf):
  """100 random crops (64..127 x 64..191 px) of skimage's photographs, half with a key; their clean
  versions, and random and constant images, with and without a key; and damaged stego images."""
  rng = np.random.default_rng(7)
  crops = _photo_crops(100, (64, 128), (64, 192), seed=3)
  keys = [None if i % 2 else f"pass {i}" for i in range(len(crops))]
  messages = []
  for crop, key in zip(crops, keys):
    limit = hider.capacity_bytes(model, *crop.shape[:2], key is not None)
    messages.append(rng.integers(0, 256, int(rng.integers(1, min(limit, 300) + 1)), dtype=np.uint8).tobytes())
  stego = _hide_all(model, crops, messages, keys, rng)

  def outcomes(logits, read_keys):
    found = []
    for l, key in zip(logits, read_keys):
      try:
        found.append(payload.unpack(l, key))
      except payload.NoMessageFound as e:
        assert str(e) == payload.NO_MESSAGE
        found.append(None)
    return found

  stego_logits = _logits_all(model, stego)
  assert outcomes(stego_logits, keys) == messages  # every round trip
  keyed_logits = stego_logits[::2]
  assert outcomes(keyed_logits[::2], [k + "!" for k in keys[::4]]) == [None] * 25  # a wrong key
  swapped = ["a key" if k is None else None for k in keys]  # a key for a plain message, none for a keyed one
  assert outcomes(stego_logits[:50], swapped[:50]) == [None] * 50
  # 0 false positives: clean crops, random and constant images, with and without a key.
  randoms = [rng.integers(0, 256, (int(rng.integers(64, 160)), int(rng.integers(64, 160)), 3), dtype=np.uint8)
             for _ in range(20)] + [np.full((64, 128, 3), v, np.uint8) for v in (0, 128, 255)]
  for logits in (_logits_all(model, crops), _logits_all(model, randoms)):
    assert outcomes(logits, [None] * len(logits)) == [None] * len(logits)
    assert outcomes(logits[::3], ["pass 0"] * len(logits[::3])) == [None] * len(logits[::3])
  # Never garbage: damaged stego images give the exact message or nothing.
  damaged = []
  for i, image in enumerate(stego[:48]):
    image = image.astype(np.int16)
    kind = i % 4
    if kind == 0:
      image += rng.normal(0, 6, image.shape).round().astype(np.int16)  # noise
    elif kind == 1:
      image[16:48, 16:48] = 255 - image[16:48, 16:48]  # an inverted patch
    elif kind == 2:
      image = np.roll(image, 1, axis=1)  # shifted by one pixel
    else:
      image += 12  # brighter
    damaged.append(np.clip(image, 0, 255).astype(np.uint8))
  found = outcomes(_logits_all(model, damaged), keys[:48])
  assert all(f is None or f == m for f, m in zip(found, messages[:48]))


# ----------------------------------------------------------------------------- secrets off the command line

def test_key_prompt_key_file_and_message_from_stdin(model, photo_png, tmp_path, monkeypatch, capsys, cheap_kdf):
  import getpass
  out = str(tmp_path / "stego.png")
  answers = []
  monkeypatch.setattr(getpass, "getpass", lambda prompt="": answers.pop(0))
  tty = io.TextIOWrapper(io.BytesIO())
  tty.isatty = lambda: True
  monkeypatch.setattr(sys, "stdin", tty)
  # Prompted twice for `hide`; a mismatch writes nothing.
  answers[:] = ["pw one", "pw 0ne"]
  assert_error(run_cli(capsys, "hide", "--cover", photo_png, "--message", MESSAGE, "--out", out), "differ")
  assert not os.path.exists(out)
  answers[:] = ["pw one", "pw one"]
  assert run_cli(capsys, "hide", "--cover", photo_png, "--message", MESSAGE, "--out", out)[0] == 0
  answers[:] = ["pw one"]
  assert run_cli(capsys, "reveal", "--image", out)[:2] == (0, MESSAGE + "\n")
  answers[:] = [""]  # an empty answer: no key
  assert run_cli(capsys, "reveal", "--image", out)[0] == cli.EXIT_NO_MESSAGE
  answers[:] = []  # --no-key and --key-file never prompt (pop from an empty list would fail)
  assert run_cli(capsys, "reveal", "--image", out, "--no-key")[0] == cli.EXIT_NO_MESSAGE
  key_file = tmp_path / "key.txt"
  key_file.write_bytes("pw one\r\nsecond line ignored\n".encode())
  assert run_cli(capsys, "reveal", "--image", out, "--key-file", str(key_file))[:2] == (0, MESSAGE + "\n")

  # No terminal: no prompt and no key. The message and the key from standard input.
  monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"\x00binary \xff message\n")))
  assert run_cli(capsys, "hide", "--cover", photo_png, "--message-file", "-", "--out", out,
                 "--key-file", str(key_file))[0] == 0
  monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"pw one\n")))
  secret = str(tmp_path / "message.bin")
  assert run_cli(capsys, "reveal", "--image", out, "--key-file", "-", "--out", secret)[:2] == (0, "")
  assert read(secret) == b"\x00binary \xff message\n" and stat.S_IMODE(os.stat(secret).st_mode) == 0o600
  assert run_cli(capsys, "reveal", "--image", out)[0] == cli.EXIT_NO_MESSAGE  # no tty: no key
  monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
  assert_error(run_cli(capsys, "hide", "--cover", photo_png, "--message-file", "-", "--out", out,
                       "--key-file", "-"), "cannot both read standard input")
  for content, fragment in ((b"", "empty line"), (b"\xff\xfe\n", "not valid UTF-8")):
    key_file.write_bytes(content)
    assert_error(run_cli(capsys, "reveal", "--image", out, "--key-file", str(key_file)), fragment)
  assert_error(run_cli(capsys, "hide", "--cover", photo_png, "--message-file", "-", "--out", out, "--no-key"),
               "standard input is empty")


def _wait_for(fd, pattern, timeout=120):
  data = b""
  deadline = time.time() + timeout
  while pattern not in data:
    ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.time()))
    assert ready, f"timed out waiting for {pattern!r}; got {data!r}"
    try:
      chunk = os.read(fd, 4096)
    except OSError:  # EIO: the child closed the terminal
      chunk = b""
    assert chunk, f"the child ended before {pattern!r}; got {data!r}"
    data += chunk
  return data


def _cmdline_and_environ(pid):
  return read(f"/proc/{pid}/cmdline") + read(f"/proc/{pid}/environ")


def test_secrets_never_on_the_command_line_of_the_running_tool(photo_png, tmp_path):
  """`python -m dlbook.stego.cli hide` on a pseudo-terminal (the real scrypt) asks for the passphrase
  without echo; its /proc/PID/cmdline and environ are read while it waits at the prompt."""
  passphrase, message = "tty pass phrase 42", "never in argv: ünïcode"
  msg_file, out = tmp_path / "msg.txt", str(tmp_path / "stego.png")
  msg_file.write_text(message)
  env = dict(os.environ, PYTHONPATH=ROOT)
  argv = [sys.executable, "-m", "dlbook.stego.cli", "hide", "--cover", photo_png, "--message-file", str(msg_file),
          "--out", out]
  with warnings.catch_warnings():  # JAX warns on any fork; the child only execs
    warnings.simplefilter("ignore", RuntimeWarning)
    pid, fd = pty.fork()
  if pid == 0:  # the child: exec at once, never return into pytest
    try:
      os.chdir(ROOT)
      os.execve(sys.executable, argv, env)
    finally:
      os._exit(127)
  try:
    seen = _wait_for(fd, b"passphrase (empty: no key): ")
    proc = _cmdline_and_environ(pid)
    assert passphrase.encode() not in proc and message.encode() not in proc and str(msg_file).encode() in proc
    os.write(fd, passphrase.encode() + b"\n")
    seen += _wait_for(fd, b"again: ")
    os.write(fd, passphrase.encode() + b"\n")
    seen += _wait_for(fd, b"hid ")
  finally:
    _, status = os.waitpid(pid, 0)
    os.close(fd)
  assert os.waitstatus_to_exitcode(status) == 0, seen
  assert passphrase.encode() not in seen  # no echo

  key_file = tmp_path / "key.txt"
  key_file.write_text(passphrase + "\n")
  assert cli.run(["reveal", "--image", out, "--key-file", str(key_file), "--out", str(tmp_path / "m.txt")]) == 0
  assert read(tmp_path / "m.txt").decode() == message


# ----------------------------------------------------------------------------- untrusted output

def test_reveal_escapes_control_characters_unless_raw_or_out(photo_png, tmp_path, capsys, monkeypatch):
  hostile = "title\x1b]0;pwned\x07 csi\u009b31m bidi\u202e end\r\nline 2\ttab\x7f"
  out = str(tmp_path / "stego.png")
  assert run_cli(capsys, "hide", "--cover", photo_png, "--message", hostile, "--out", out, "--no-key")[0] == 0
  code, text, _ = run_cli(capsys, "reveal", "--image", out)
  assert code == 0 and text == "title\\x1b]0;pwned\\x07 csi\\u009b31m bidi\\u202e end\\x0d\nline 2\ttab\\x7f\n"
  assert all(unicodedata.category(c) != "Cc" or c in "\n\t" for c in text)
  assert run_cli(capsys, "reveal", "--image", out, "--raw")[:2] == (0, hostile)  # exact bytes, no newline
  target = str(tmp_path / "message.txt")
  assert run_cli(capsys, "reveal", "--image", out, "--out", target)[:2] == (0, "")
  assert read(target) == hostile.encode()
  assert_error(run_cli(capsys, "reveal", "--image", out, "--out", out), "must differ from --image")
  # Standard output that cannot show the text (PYTHONIOENCODING=ascii): one error line, nothing written.
  assert run_cli(capsys, "hide", "--cover", photo_png, "--message", MESSAGE, "--out", out, "--no-key")[0] == 0
  ascii_out = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
  monkeypatch.setattr(sys, "stdout", ascii_out)
  code = cli.run(["reveal", "--image", out])
  _, err = capsys.readouterr()
  ascii_out.flush()
  assert code == cli.EXIT_ERROR and ascii_out.buffer.getvalue() == b""
  assert err.startswith("error: ") and "ascii" in err and len(err.splitlines()) == 1


# ----------------------------------------------------------------------------- files written safely

def test_outputs_never_follow_a_planted_symlink_and_failures_leave_nothing(photo_png, tmp_path, capsys, monkeypatch):
  victim, victim2 = tmp_path / "victim.txt", tmp_path / "victim2.txt"
  victim.write_text("precious")
  victim2.write_text("precious too")
  out = tmp_path / "out.png"
  os.symlink(victim, str(out) + ".tmp.png")  # the fixed temporary name the tool used to write through
  os.symlink(victim2, out)  # and the output name itself
  assert run_cli(capsys, "hide", "--cover", photo_png, "--message", "hi", "--out", str(out), "--no-key")[0] == 0
  assert victim.read_text() == "precious" and victim2.read_text() == "precious too"
  assert not out.is_symlink() and Image.open(out).size == (200, 128)
  before = sorted(os.listdir(tmp_path))
  good = read(out)

  def broken_save(self, fp, *args, **kwargs):
    fp.write(b"\x89PNG half an image")
    raise OSError(28, "No space left on device")

  monkeypatch.setattr(Image.Image, "save", broken_save)
  assert_error(run_cli(capsys, "hide", "--cover", photo_png, "--message", "hi", "--out", str(out), "--no-key"),
               "No space left on device")
  assert read(out) == good and sorted(os.listdir(tmp_path)) == before  # untouched, no temporary file left


def test_model_saver_writes_atomically(model, tmp_path, monkeypatch):
  directory = tmp_path / "model"
  directory.mkdir()
  victim = tmp_path / "victim.txt"
  victim.write_text("precious")
  for name in ("params.tmp.npz", "config.json.tmp"):  # the fixed names the saver used to write through
    os.symlink(victim, directory / name)
  hider.save_model(str(directory), model.params, dict(model.meta))
  assert victim.read_text() == "precious"
  assert hider.load_model(str(directory)).rs_parity == model.rs_parity
  before, params = sorted(os.listdir(directory)), read(directory / "params.npz")

  def broken_savez(f, **arrays):
    f.write(b"PK half")
    raise OSError(28, "No space left on device")

  monkeypatch.setattr(np, "savez", broken_savez)
  with pytest.raises(payload.DlbookError, match="No space left on device"):
    hider.save_model(str(directory), model.params, dict(model.meta))
  assert read(directory / "params.npz") == params and sorted(os.listdir(directory)) == before


# ----------------------------------------------------------------------------- exit statuses

def test_every_command_documents_its_exit_statuses(capsys):
  for argv in ([], ["hide"], ["reveal"], ["capacity"]):
    code, out, _ = run_cli(capsys, *argv, "--help")
    assert code == 0 and "exit status:" in out, argv
    for line in ("0  success", "1  reveal only: no message found", "2  any error"):
      assert line in out, (argv, line)
    if argv in (["hide"], ["reveal"]):
      assert "VISIBLE to other local users" in " ".join(out.split()) and "no prompt" in out


def test_every_failure_is_one_error_line_with_status_2(model, photo_png, tmp_path, capsys, monkeypatch):
  out = tmp_path / "out.png"
  out.write_bytes(b"saved earlier")  # must survive every failure below
  cover = ["hide", "--message", "hi", "--no-key", "--out", str(out), "--cover"]

  # Non-UTF-8 command-line values (Python passes undecodable bytes as lone surrogates).
  assert_error(run_cli(capsys, "hide", "--cover", photo_png, "--message", "caf\udce9", "--out", str(out),
                       "--no-key"), "--message is not valid UTF-8")
  assert_error(run_cli(capsys, "reveal", "--image", photo_png, "--key", "caf\udce9"), "--key is not valid UTF-8")
  # A bad command line: argparse, one line, status 2.
  assert_error(run_cli(capsys, "hide", "--cover", photo_png), "required")
  assert_error(run_cli(capsys, "hide", "--cover", photo_png, "--message", "a", "--message-file", "b",
                       "--out", str(out)), "not allowed with")

  # 16-bit PNGs (RGB is what PIL silently reduces to 8 bits), bombs, truncated and unreadable files.
  rgb16, grey16 = tmp_path / "rgb16.png", tmp_path / "grey16.png"
  rgb16.write_bytes(png_bytes(64, 64, 16, 2, (b"\0" + b"\x12\x34" * 3 * 64) * 64))
  grey16.write_bytes(png_bytes(64, 64, 16, 0, (b"\0" + b"\x12\x34" * 64) * 64))
  assert Image.open(rgb16).mode == "RGB"
  bomb = tmp_path / "bomb.png"
  bomb.write_bytes(png_bytes(100_000, 100_000, 8, 0))
  truncated = tmp_path / "truncated.png"
  truncated.write_bytes(read(photo_png)[:3000])
  for path, fragment in ((rgb16, "16-bit PNG"), (grey16, "16-bit PNG"), (bomb, "decompression bomb"),
                         (truncated, "not a readable image"), (tmp_path, "is a directory")):
    assert_error(run_cli(capsys, *cover, str(path)), fragment)
    assert_error(run_cli(capsys, "reveal", "--image", str(path)), fragment)
  # PIL's own decompression-bomb error and warning (limits lowered to meet a 128x200 photo).
  for limit in (6_000, 20_000):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    assert_error(run_cli(capsys, "reveal", "--image", photo_png, "--no-key"), "decompression bomb")
  monkeypatch.undo()
  monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO()))

  # Corrupt models.
  def corrupt(name, edit):
    directory = tmp_path / name
    shutil.copytree(hider.default_model_dir(), directory)
    edit(directory)
    return str(directory)

  def set_config(**changes):
    def edit(directory):
      meta = json.loads((directory / "config.json").read_text())
      meta.update(changes)
      (directory / "config.json").write_text(json.dumps(meta))
    return edit

  def nan_params(directory):
    params = dict(np.load(directory / "params.npz"))
    params[sorted(params)[0]] = params[sorted(params)[0]] * np.nan
    np.savez(directory / "params.npz", **params)

  params_bytes = read(os.path.join(hider.default_model_dir(), "params.npz"))
  flipped = bytearray(params_bytes)
  flipped[len(flipped) // 2:len(flipped) // 2 + 64] = bytes(64)
  models = [
      (corrupt("truncated", lambda d: (d / "params.npz").write_bytes(params_bytes[:len(params_bytes) // 2])),
       "cannot read the model's"),
      (corrupt("flipped", lambda d: (d / "params.npz").write_bytes(bytes(flipped))), "cannot read the model's"),
      (corrupt("tile", set_config(tile="abc")), "'tile' must be an integer"),
      (corrupt("parity", set_config(rs_parity=500)), "'rs_parity' must be an integer in [2, 128]"),
      (corrupt("arch", set_config(architecture="nope")), "unknown architecture 'nope'"),
      (corrupt("hidden", set_config(hidden=16)), "do not fit its config.json"),
      (corrupt("json", lambda d: (d / "config.json").write_text("{")), "cannot read the model's"),
      (corrupt("list", lambda d: (d / "config.json").write_text("[]")), "must hold a JSON object"),
      (corrupt("nan", nan_params), "not finite"),
  ]
  for directory, fragment in models:
    assert_error(run_cli(capsys, "reveal", "--image", photo_png, "--model", directory), fragment)
    assert_error(run_cli(capsys, *cover, photo_png, "--model", directory), fragment)

  # Missing and unreadable inputs, bad outputs.
  assert_error(run_cli(capsys, "hide", "--cover", photo_png, "--message-file", str(tmp_path / "absent.txt"),
                       "--out", str(out), "--no-key"), "does not exist")
  assert_error(run_cli(capsys, "hide", "--cover", photo_png, "--message-file", str(tmp_path), "--out", str(out),
                       "--no-key"), "is a directory")
  assert_error(run_cli(capsys, "reveal", "--image", photo_png, "--out", str(tmp_path)), "is a directory")
  assert_error(run_cli(capsys, "hide", "--cover", photo_png, "--message", "hi", "--out", photo_png, "--no-key"),
               "must differ from --cover")
  assert read(out) == b"saved earlier"

  # A bug is still status 2 (with its traceback before the one error line), never 1.
  monkeypatch.setattr(hider, "reveal_image", lambda *a: 1 / 0)
  code, stdout, err = run_cli(capsys, "reveal", "--image", photo_png)
  assert code == cli.EXIT_ERROR and stdout == "" and err.strip().splitlines()[-1].startswith(
      "error: internal error (ZeroDivisionError")


def test_main_exits_1_only_for_no_message(photo_png):
  with pytest.raises(SystemExit) as info:
    cli.main(["reveal", "--image", photo_png])
  assert info.value.code == cli.EXIT_NO_MESSAGE
  with pytest.raises(SystemExit) as info:
    cli.main(["reveal", "--image", photo_png + ".absent.png"])
  assert info.value.code == cli.EXIT_ERROR


# ----------------------------------------------------------------------------- bounded decoding

def test_reed_solomon_is_compiled_and_its_work_is_bounded(monkeypatch):
  assert type(payload._codec(116)).__module__.startswith("creedsolo")
  n, parity = 64 * 4096, 64
  copies = payload.header_copies(n)

  def crafted(body_len, body_bits):
    """A format-1 stream whose (valid) header claims `body_len` bytes, over `body_bits`."""
    header = payload.MAGIC + bytes([payload.VERSION << 4, parity]) + struct.pack(">I", body_len)[1:]
    stream = body_bits.copy()
    stream[:128 * copies] = np.tile(payload.bytes_to_bits(payload.rs_encode(header, 8)), copies)
    whitening, perm = payload._public_layout(n)
    out = np.empty(n, np.uint8)
    out[perm] = stream ^ whitening
    return 2.0 * out - 1

  decoded = []

  class Counting:
    def __init__(self, codec):
      self.codec = codec

    def decode(self, data):
      decoded.append(len(data))
      return self.codec.decode(data)

    def encode(self, data):
      return self.codec.encode(data)

  real = payload._codec
  monkeypatch.setattr(payload, "_codec", lambda p: Counting(real(p)))
  garbage = np.random.default_rng(0).integers(0, 2, n, dtype=np.uint8)
  # A length the image cannot hold: refused after the header, before any body decoding.
  too_long = payload.capacity_bytes(n, parity) + 5
  with pytest.raises(payload.NoMessageFound):
    payload.unpack(crafted(too_long, garbage))
  assert decoded == [16]
  # The longest length that fits, over garbage: decoding stops at the first bad codeword of 255.
  decoded.clear()
  with pytest.raises(payload.NoMessageFound):
    payload.unpack(crafted(payload.capacity_bytes(n, parity) + payload.CRC_BYTES, garbage))
  assert decoded == [16, 255]


def test_no_message_costs_the_same_work_whatever_the_cause(monkeypatch, cheap_kdf):
  """The operations `unpack` runs before it gives up (a proxy for its timing, which a loaded test
  machine cannot measure reliably): the same for a clean image, a wrong key, a key for a message
  without one, and a format-1 encrypted frame without the key."""
  calls = []
  for name in ("scrypt", "_keyed_headers", "rs_decode", "_read_body", "_open_body", "_decrypt_v1"):
    real = getattr(payload, name)
    monkeypatch.setattr(payload, name, lambda *a, _real=real, _name=name: calls.append(_name) or _real(*a))
  n, msg = 8192, b"secret"
  clean = np.random.default_rng(0).normal(size=n)
  keyed = 2.0 * payload.pack(msg, n, 32, "right key") - 1
  plain = 2.0 * payload.pack(msg, n, 32) - 1

  def work(logits, key):
    calls.clear()
    with pytest.raises(payload.NoMessageFound) as info:
      payload.unpack(logits, key)
    assert str(info.value) == payload.NO_MESSAGE
    return list(calls)

  with_key = [work(clean, "k"), work(keyed, "wrong key"), work(plain, "k")]
  assert with_key[0] == with_key[1] == with_key[2] == ["scrypt", "_keyed_headers", "rs_decode"]
  without_key = [work(clean, None), work(keyed, None)]
  assert without_key[0] == without_key[1] == ["rs_decode"]


@pytest.mark.slow
def test_a_message_longer_than_one_command_line_argument(tmp_path, capsys, monkeypatch):
  """200 KiB (Linux caps one argument at 128 KiB) from a file and from standard input, with and
  without a key, in a 2048x1600 cover."""
  cover = str(tmp_path / "cover.png")
  Image.fromarray(skimage.data.astronaut()).resize((2048, 1600), Image.BICUBIC).save(cover)
  rng = np.random.default_rng(0)
  message = rng.integers(32, 127, 200 * 1024, dtype=np.uint8).tobytes()
  (tmp_path / "msg.txt").write_bytes(message)
  (tmp_path / "key.txt").write_text("a long message key\n")
  out, got = str(tmp_path / "stego.png"), str(tmp_path / "got.txt")
  assert run_cli(capsys, "hide", "--cover", cover, "--message-file", str(tmp_path / "msg.txt"), "--out", out,
                 "--no-key")[0] == 0
  assert run_cli(capsys, "reveal", "--image", out, "--out", got)[0] == 0 and read(got) == message
  monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(message)))
  assert run_cli(capsys, "hide", "--cover", cover, "--message-file", "-", "--out", out,
                 "--key-file", str(tmp_path / "key.txt"))[0] == 0
  assert run_cli(capsys, "reveal", "--image", out, "--key-file", str(tmp_path / "key.txt"), "--out", got)[0] == 0
  assert read(got) == message
