"""The `dlbook-stego` tool: payload framing, the shipped model, hide/reveal, and its training launcher."""

import glob
import io
import os
import shutil
import sys

import jax
import numpy as np
import pytest
import skimage.data
from PIL import Image

from dlbook.errors import DlbookError
from dlbook.metrics import image as image_metrics
from dlbook.stego import cli, hider, payload

MESSAGE = "Meet at the old mill at 06:30 — bring the maps. ✓"


@pytest.fixture(autouse=True)
def no_terminal(monkeypatch):
  """Standard input is never a terminal here (not even under `pytest -s`): no passphrase prompt."""
  monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO()))


# ----------------------------------------------------------------------------- payload framing

def noisy_logits(bits, flip_fraction, seed):
  rng = np.random.default_rng(seed)
  logits = (2.0 * bits - 1.0) * rng.uniform(0.5, 4.0, bits.shape)
  logits[rng.random(bits.shape) < flip_fraction] *= -1
  return logits


def test_bits_bytes_round_trip():
  data = bytes(range(256))
  bits = payload.bytes_to_bits(data)
  assert bits.shape == (2048,) and set(np.unique(bits)) == {0, 1}
  assert payload.bits_to_bytes(bits) == data
  with pytest.raises(DlbookError, match="multiple of 8"):
    payload.bits_to_bytes(bits[:-3])


@pytest.fixture
def cheap_kdf(monkeypatch):
  """scrypt N=2^10 instead of 2^17 for tests that exercise the framing, not the key derivation."""
  monkeypatch.setattr(payload, "KDF_PARAMS", (10, 8, 1))
  monkeypatch.setattr(payload, "KDF_CANDIDATES", ((10, 8, 1),))


def test_frame_survives_bit_errors_with_and_without_key(cheap_kdf):
  n = 8 * 4096
  msg = MESSAGE.encode()
  for key in (None, "correct horse"):
    bits = payload.pack(msg, n, parity=32, passphrase=key, rng=np.random.default_rng(0))
    assert bits.shape == (n,) and bits.dtype == np.uint8
    assert payload.unpack(noisy_logits(bits, 0.2, seed=1), key) == msg
  # Wrong key, missing key, a key for a message without one: one outcome, one message.
  encrypted = 2.0 * payload.pack(msg, n, 32, "correct horse") - 1
  plain = 2.0 * payload.pack(msg, n, 32) - 1
  for logits, key in ((encrypted, "battery staple"), (encrypted, None), (plain, "a key")):
    with pytest.raises(payload.NoMessageFound) as info:
      payload.unpack(logits, key)
    assert str(info.value) == payload.NO_MESSAGE


def test_frame_rejects_random_constant_and_damaged_bits(cheap_kdf):
  rng = np.random.default_rng(2)
  for logits in (rng.normal(size=4096), np.full(4096, 5.0), np.full(4096, -5.0), np.full(4096, np.nan)):
    for key in (None, "k"):
      with pytest.raises(payload.NoMessageFound, match="no message found"):
        payload.unpack(logits, key)
  for key in (None, "k"):
    bits = payload.pack(b"hello", 4096, 32, key)
    with pytest.raises(payload.NoMessageFound):
      payload.unpack(noisy_logits(bits, 0.5, seed=3), key)  # half the bits wrong: nothing is recoverable


def test_capacity_is_exact_and_too_long_is_a_clear_error(cheap_kdf):
  n, parity = 4096, 40
  fits = bytes(range(256)) * 2
  for key in (None, "k"):
    limit = payload.capacity_bytes(n, parity, encrypted=key is not None)
    assert limit > 100
    assert payload.unpack(2.0 * payload.pack(fits[:limit], n, parity, key) - 1, key) == fits[:limit]
    with pytest.raises(DlbookError, match=f"holds at most {limit} bytes"):
      payload.pack(fits[:limit + 1], n, parity, key)
  # The GCM tag (16 bytes) instead of the CRC32 (4 bytes).
  assert payload.capacity_bytes(n, parity, encrypted=True) == payload.capacity_bytes(n, parity) - 12


def test_choose_parity_grows_with_the_error_rate():
  rates = [0.0, 1e-3, 3e-3, 1e-2, 0.05]
  parities = [payload.choose_parity(p) for p in rates]
  assert parities == sorted(parities) and parities[0] == 16 and parities[-1] == 128
  assert all(p % 2 == 0 for p in parities)
  # margin x expected byte errors must stay within the correction power parity / 2
  e = 255 * (1 - (1 - 3e-3) ** 8)
  assert payload.choose_parity(3e-3) / 2 >= 3 * e


# ----------------------------------------------------------------------------- the shipped model

@pytest.fixture(scope="module")
def model():
  return hider.load_model()


@pytest.fixture(scope="module")
def photo_png(tmp_path_factory):
  """A real photograph (astronaut, a test photo of photos64) whose size is no multiple of 64."""
  path = str(tmp_path_factory.mktemp("cover") / "astronaut.png")
  Image.fromarray(skimage.data.astronaut()[40:240, 130:390]).save(path)  # 200 x 260: 3 x 4 tiles
  return path


def run_cli(capsys, *argv):
  code = cli.run(list(argv))
  out, err = capsys.readouterr()
  return code, out, err


def test_shipped_model_is_small_and_documented(model):
  directory = hider.default_model_dir()
  size = sum(os.path.getsize(p) for p in glob.glob(os.path.join(directory, "*")))
  assert size <= 5 * 2 ** 20
  for name in ("config.json", "params.npz", "results.json", "command.txt"):
    assert os.path.exists(os.path.join(directory, name)), name
  assert model.bpp >= 1 and 16 <= model.rs_parity <= 128


def test_round_trip_on_a_real_photo_with_and_without_key(model, photo_png, tmp_path, capsys):
  out = str(tmp_path / "stego.png")
  code, _, err = run_cli(capsys, "hide", "--cover", photo_png, "--message", MESSAGE, "--out", out)
  assert code == 0, err
  code, text, _ = run_cli(capsys, "reveal", "--image", out)
  assert code == 0 and text == MESSAGE + "\n"

  cover = np.asarray(Image.open(photo_png))
  stego = np.asarray(Image.open(out))
  assert stego.shape == cover.shape
  np.testing.assert_array_equal(stego[192:], cover[192:])  # remainder rows / columns untouched
  np.testing.assert_array_equal(stego[:, 256:], cover[:, 256:])
  assert float(image_metrics.psnr(cover[:192, :256], stego[:192, :256])) > 30.0

  keyed = str(tmp_path / "keyed.png")
  assert run_cli(capsys, "hide", "--cover", photo_png, "--message", MESSAGE, "--out", keyed,
                 "--key", "s3cret pass")[0] == 0
  code, text, _ = run_cli(capsys, "reveal", "--image", keyed, "--key", "s3cret pass")
  assert code == 0 and text == MESSAGE + "\n"
  for wrong in (["--key", "s3cret pasS"], []):
    code, text, err = run_cli(capsys, "reveal", "--image", keyed, *wrong)
    assert code == cli.EXIT_NO_MESSAGE and text == "" and "no message found" in err


def test_clean_image_and_wrong_model_give_no_message(model, photo_png, tmp_path, capsys):
  code, text, err = run_cli(capsys, "reveal", "--image", photo_png)
  assert code == cli.EXIT_NO_MESSAGE and text == "" and "no message found" in err
  out = str(tmp_path / "stego.png")
  assert run_cli(capsys, "hide", "--cover", photo_png, "--message", MESSAGE, "--out", out)[0] == 0
  other = str(tmp_path / "other_model")
  rng = np.random.default_rng(123)  # same architecture, other weights
  weights = jax.tree.map(lambda x: rng.normal(0, float(np.std(x)) + 1e-2, x.shape).astype(np.float32), model.params)
  hider.save_model(other, weights, dict(model.meta))
  code, text, err = run_cli(capsys, "reveal", "--image", out, "--model", other)
  assert code == cli.EXIT_NO_MESSAGE and text == "" and "no message found" in err


def test_damaged_regions_are_corrected_or_refused(model, photo_png, tmp_path, capsys):
  out = str(tmp_path / "stego.png")
  assert run_cli(capsys, "hide", "--cover", photo_png, "--message", MESSAGE, "--out", out)[0] == 0
  stego = np.asarray(Image.open(out))
  outcomes = []
  for name, region in [("patch", np.s_[70:110, 20:60]), ("tile", np.s_[64:128, 64:128]),
                       ("everything", np.s_[:, :])]:
    damaged = stego.copy()
    damaged[region] ^= 0xFF  # every bit of every pixel in the region flipped
    path = str(tmp_path / f"damaged_{name}.png")
    Image.fromarray(damaged).save(path)
    code, text, err = run_cli(capsys, "reveal", "--image", path)
    # Either the exact text (error correction) or a refusal; never anything else.
    assert (code == 0 and text == MESSAGE + "\n") or (code == cli.EXIT_NO_MESSAGE and text == ""
                                                        and "no message found" in err), (name, code, text, err)
    outcomes.append(code)
  assert outcomes[0] == 0  # a 40x40 patch is within what the repeated RS frame corrects
  assert outcomes[2] == cli.EXIT_NO_MESSAGE  # a fully inverted image holds nothing


def test_longest_message_fits_and_longer_is_refused(model, photo_png, tmp_path, capsys):
  code, text, _ = run_cli(capsys, "capacity", "--cover", photo_png)
  limit = int(text.split("plain=")[1].split()[0])
  assert limit == hider.capacity_bytes(model, 200, 260)
  rng = np.random.default_rng(0)
  longest = "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz ,.0123456789"), limit))
  out = str(tmp_path / "full.png")
  assert run_cli(capsys, "hide", "--cover", photo_png, "--message", longest, "--out", out)[0] == 0
  code, text, _ = run_cli(capsys, "reveal", "--image", out)  # a single copy: RS alone must cope
  assert code == 0 and text == longest + "\n"
  code, _, err = run_cli(capsys, "hide", "--cover", photo_png, "--message", longest + "x", "--out", out)
  assert code == cli.EXIT_BAD_INPUT and f"holds at most {limit} bytes" in err and len(err.splitlines()) == 1


def test_jpeg_and_bad_inputs_are_refused(photo_png, tmp_path, capsys):
  jpeg = str(tmp_path / "photo.jpg")
  Image.open(photo_png).save(jpeg, quality=95)
  disguised = str(tmp_path / "photo_really_jpeg.png")
  shutil.copyfile(jpeg, disguised)
  cases = [
      (["hide", "--cover", jpeg, "--message", "hi", "--out", str(tmp_path / "a.png")], "lossy"),
      (["hide", "--cover", disguised, "--message", "hi", "--out", str(tmp_path / "a.png")], "lossy"),
      (["hide", "--cover", photo_png, "--message", "hi", "--out", str(tmp_path / "a.jpg")], "lossy"),
      (["reveal", "--image", jpeg], "lossy"),
      (["hide", "--cover", str(tmp_path / "absent.png"), "--message", "hi", "--out", str(tmp_path / "a.png")],
       "does not exist"),
      (["reveal", "--image", photo_png, "--model", str(tmp_path / "no_model")], "does not exist"),
      (["hide", "--cover", photo_png, "--message", "", "--out", str(tmp_path / "a.png")], "empty"),
  ]
  for argv, fragment in cases:
    code, out, err = run_cli(capsys, *argv)
    assert code == cli.EXIT_BAD_INPUT and out == "" and fragment in err and len(err.splitlines()) == 1, argv
  tiny = str(tmp_path / "tiny.png")
  Image.fromarray(np.zeros((40, 300, 3), np.uint8)).save(tiny)
  code, _, err = run_cli(capsys, "hide", "--cover", tiny, "--message", "hi", "--out", str(tmp_path / "b.png"))
  assert code == cli.EXIT_BAD_INPUT and "at least 64x64" in err


# ----------------------------------------------------------------------------- training launcher

@pytest.mark.slow  # long: runs with DLBOOK_SLOW=1 (keeps the CI suite in its time budget)
def test_training_smoke_preset_exports_a_model_and_resumes_exactly(tmp_path):
  from configs import stego_tool
  from dlbook.stego import hider_train
  config = stego_tool.get_config("smoke")
  workdir = str(tmp_path / "run")
  results = hider_train.train_and_evaluate(config, workdir)
  m = results["metrics"]
  assert m["bpp"] == 1.0 and 0.0 <= m["bit_error_rate"] <= 1.0 and 16 <= m["rs_parity"] <= 128
  for name in ("results.json", "samples.png", "curves.png", "history.jsonl", "model/params.npz",
               "model/config.json", "model/results.json"):
    assert os.path.exists(os.path.join(workdir, name)), name
  assert glob.glob(os.path.join(workdir, "tensorboard", "events*"))
  first = dict(np.load(os.path.join(workdir, "model", "params.npz")))
  loaded = hider.load_model(os.path.join(workdir, "model"))
  assert loaded.bpp == 1 and loaded.rs_parity == m["rs_parity"]

  # Simulate a kill after step 10: drop the final checkpoint and the results, and rerun the same command.
  shutil.rmtree(os.path.join(workdir, "checkpoints", "20"))
  os.remove(os.path.join(workdir, "results.json"))
  again = hider_train.train_and_evaluate(config, workdir)
  assert again["resumed_from_step"] == 10
  second = np.load(os.path.join(workdir, "model", "params.npz"))
  for k in first:
    np.testing.assert_allclose(second[k], first[k], rtol=1e-5, atol=1e-6)

  config.train_crop = 20
  with pytest.raises(DlbookError, match="train_crop"):
    hider_train.train_and_evaluate(config, str(tmp_path / "bad"))
  with pytest.raises(DlbookError, match="unknown preset"):
    stego_tool.get_config("huge")
