"""Data registry: real sources, splits, deterministic batching, augmentation, bad input."""

import gzip
import os

import jax
import ml_collections
import numpy as np
import pytest

from dlbook import data
from dlbook.data import augment as aug
from dlbook.data.sources import FASHION_MNIST_DIR
from dlbook.errors import DlbookError


def cfg(**kw):
  base = dict(name="digits", train_fraction=1.0, val_fraction=0.1, normalization="standardize")
  base.update(kw)
  return ml_collections.ConfigDict(base)


def test_digits_shapes_and_standardisation():
  ds = data.load(cfg())
  assert ds.train.images.dtype == np.float32 and ds.train.labels.dtype == np.int32
  assert ds.image_shape == (8, 8, 1) and ds.num_classes == 10
  assert len(ds.train) + len(ds.val) + len(ds.test) == 1797
  np.testing.assert_allclose(ds.train.images.mean(), 0.0, atol=1e-4)
  np.testing.assert_allclose(ds.train.images.std(), 1.0, atol=1e-3)
  # the test split never overlaps training images
  train_rows = {r.tobytes() for r in ds.train.images}
  assert sum(r.tobytes() in train_rows for r in ds.test.images) < 5  # digits has a few exact duplicates


@pytest.mark.parametrize("fraction", [0.6, 0.8])
def test_train_fraction_is_stratified_and_val_fixed(fraction):
  full, part = data.load(cfg()), data.load(cfg(train_fraction=fraction))
  assert abs(len(part.train) / len(full.train) - fraction) < 0.01
  np.testing.assert_array_equal(full.val.labels, part.val.labels)  # same validation images
  np.testing.assert_allclose(np.bincount(part.train.labels) / len(part.train),
                             np.bincount(full.train.labels) / len(full.train), atol=0.01)


def test_batches_are_deterministic_and_resumable():
  ds = data.load(cfg())
  a = [b["label"] for _, b in data.train_batches(ds.train, 32, seed=3, num_steps=60)]
  b = [b["label"] for _, b in data.train_batches(ds.train, 32, seed=3, start_step=45, num_steps=60)]
  for x, y in zip(a[45:], b):
    np.testing.assert_array_equal(x, y)
  c = [b["label"] for _, b in data.train_batches(ds.train, 32, seed=4, num_steps=2)]
  assert not np.array_equal(a[0], c[0])
  # one epoch visits every example once
  spe = len(ds.train) // 32
  seen = np.concatenate([data.train_batch(ds.train, 32, 3, s)["label"] for s in range(spe)])
  assert len(seen) == spe * 32


def test_eval_batches_pad_and_mask():
  ds = data.load(cfg())
  batches = list(data.eval_batches(ds.test, 100))
  assert all(b["image"].shape[0] == 100 for b in batches)
  assert sum(b["mask"].sum() for b in batches) == len(ds.test)


def test_fashion_mnist_real_files():
  if not os.path.exists(os.path.join(FASHION_MNIST_DIR, "train-images-idx3-ubyte.gz")):
    pytest.skip("Debian package dataset-fashion-mnist is not installed (apt-get could not install it)")
  ds = data.load(cfg(name="fashion_mnist", val_fraction=0.0, normalization="unit"))
  assert ds.train.images.shape == (60000, 28, 28, 1) and ds.test.images.shape == (10000, 28, 28, 1)
  assert ds.train.images.min() == 0.0 and ds.train.images.max() == 1.0
  assert np.bincount(ds.test.labels).tolist() == [1000] * 10


def write_idx(path, array, truncate=0):
  header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
  payload = header + array.astype(np.uint8).tobytes()
  with gzip.open(path, "wb") as f:
    f.write(payload[:len(payload) - truncate])


def make_fashion_dir(root, truncate=0):
  rng = np.random.default_rng(0)
  write_idx(root / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (20, 28, 28)), truncate)
  write_idx(root / "train-labels-idx1-ubyte.gz", np.arange(20) % 10)
  write_idx(root / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (10, 28, 28)))
  write_idx(root / "t10k-labels-idx1-ubyte.gz", np.arange(10))


def test_fashion_mnist_from_data_dir_and_truncated(tmp_path):
  make_fashion_dir(tmp_path)
  ds = data.load(cfg(name="fashion_mnist", data_dir=str(tmp_path), val_fraction=0.0))
  assert ds.train.images.shape == (20, 28, 28, 1)
  bad = tmp_path / "bad"
  bad.mkdir()
  make_fashion_dir(bad, truncate=100)
  with pytest.raises(DlbookError, match="truncated"):
    data.load(cfg(name="fashion_mnist", data_dir=str(bad)))
  with pytest.raises(DlbookError, match="dataset-fashion-mnist"):
    data.load(cfg(name="fashion_mnist", data_dir=str(tmp_path / "nowhere")))


def test_npz_source(tmp_path):
  rng = np.random.default_rng(0)
  path = tmp_path / "d.npz"
  np.savez(path, x_train=rng.integers(0, 256, (30, 12, 12), dtype=np.uint8), y_train=np.arange(30) % 3,
           x_test=rng.integers(0, 256, (9, 12, 12), dtype=np.uint8), y_test=np.arange(9) % 3)
  ds = data.load(cfg(name=f"npz:{path}", val_fraction=0.0, image_size=16))
  assert ds.image_shape == (16, 16, 1) and ds.num_classes == 3
  np.savez(tmp_path / "bad.npz", x_train=np.zeros((2, 4, 4)))
  with pytest.raises(DlbookError, match="lacks arrays"):
    data.load(cfg(name=f"npz:{tmp_path / 'bad.npz'}"))


def make_image_folder(root, n=4):
  from PIL import Image
  rng = np.random.default_rng(0)
  for cname in ("cat", "dog"):
    (root / cname).mkdir(parents=True)
    for i in range(n):
      ext = ["png", "jpg", "bmp", "png"][i % 4]
      Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(root / cname / f"{i}.{ext}")


def test_image_folder_and_corrupt_image(tmp_path):
  make_image_folder(tmp_path / "ok", n=8)
  ds = data.load(cfg(name=f"image_folder:{tmp_path / 'ok'}", image_size=16, val_fraction=0.0))
  assert ds.image_shape == (16, 16, 3) and ds.class_names == ("cat", "dog")
  assert len(ds.train) + len(ds.test) == 16
  make_image_folder(tmp_path / "bad")
  (tmp_path / "bad" / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really an image")
  with pytest.raises(DlbookError, match="broken.png"):
    data.load(cfg(name=f"image_folder:{tmp_path / 'bad'}", image_size=16))


def test_unknown_names_and_bad_values():
  with pytest.raises(DlbookError, match="unknown dataset 'cifar11'.*digits"):
    data.load(cfg(name="cifar11"))
  with pytest.raises(DlbookError, match="train_fraction"):
    data.load(cfg(train_fraction=1.5))
  with pytest.raises(DlbookError, match="normalization"):
    data.load(cfg(normalization="zscore"))
  with pytest.raises(DlbookError, match="does not exist"):
    data.load(cfg(name="image_folder:/no/such/dir"))


def test_tfds_mock_data():
  tfds = pytest.importorskip("tensorflow_datasets", reason="tensorflow-datasets (the optional [tfds] extra) is not installed")
  with tfds.testing.mock_data(num_examples=24, policy=tfds.testing.MockPolicy.USE_CODE):
    ds = data.load(cfg(name="tfds:mnist", val_fraction=0.25, normalization="unit"))
  assert ds.image_shape == (28, 28, 1) and len(ds.train) == 18 and len(ds.test) == 24
  assert ds.class_names[:2] == ("0", "1")
  with pytest.raises(DlbookError, match="unknown TFDS dataset"):
    data.load(cfg(name="tfds:not_a_dataset_xyz"))


def test_tfds_unprepared_dataset_is_an_error_and_downloads_nothing(tmp_path):
  pytest.importorskip("tensorflow_datasets", reason="tensorflow-datasets (the optional [tfds] extra) is not installed")
  data_dir = tmp_path / "tfds"
  with pytest.raises(DlbookError, match="not prepared under"):
    data.load(cfg(name="tfds:mnist", data_dir=str(data_dir), val_fraction=0.0))
  assert not data_dir.exists() or not any(data_dir.rglob("*.tfrecord*")), "nothing may be downloaded by default"


def test_augmentations():
  key = jax.random.key(0)
  x = jax.random.normal(key, (6, 10, 10, 2))
  np.testing.assert_allclose(aug.rotate(key, x, 0.0), x)
  np.testing.assert_allclose(aug.pad_and_crop(key, x, 0), x)
  cropped = np.asarray(aug.pad_and_crop(key, x, 2))
  # every crop is the image shifted by at most 2 pixels, with zeros shifted in
  for i in range(6):
    found = any(np.allclose(cropped[i], np.pad(x[i], ((2, 2), (2, 2), (0, 0)))[dy:dy + 10, dx:dx + 10])
                for dy in range(5) for dx in range(5))
    assert found
  flipped = np.asarray(aug.horizontal_flip(key, x, p=1.0))
  np.testing.assert_allclose(flipped, np.asarray(x)[:, :, ::-1])
  cut = np.asarray(aug.cutout(key, jax.numpy.ones((4, 16, 16, 1)), 4))
  for i in range(4):  # one 4x4 square, possibly clipped at the border
    ys, xs = np.nonzero(cut[i, :, :, 0] == 0)
    h, w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    assert h <= 4 and w <= 4 and len(ys) == h * w
    assert (h == 4 or ys.min() == 0 or ys.max() == 15) and (w == 4 or xs.min() == 0 or xs.max() == 15)
  rotated = np.asarray(aug.rotate(key, jax.numpy.ones((3, 9, 9, 1)), 30.0))
  assert rotated[:, 4, 4, 0].tolist() == [1.0, 1.0, 1.0] and rotated.min() < 1.0


def test_dihedral_draws_all_eight_symmetries_exactly():
  x = np.arange(4 * 4 * 2, dtype=np.float32).reshape(1, 4, 4, 2)
  images = np.repeat(x, 400, axis=0)
  out = np.asarray(aug.dihedral(jax.random.key(0), images))
  variants = [np.rot90(x[0], k, axes=(0, 1)) for k in range(4)]
  variants += [v[:, ::-1] for v in variants]
  seen = [next(i for i, v in enumerate(variants) if np.array_equal(o, v)) for o in out]  # StopIteration if none
  counts = np.bincount(seen, minlength=8)
  assert (counts > 20).all(), counts  # all 8, roughly uniform (expected 50 each)
  with pytest.raises(ValueError, match="square"):
    aug.dihedral(jax.random.key(0), np.zeros((1, 4, 6, 1)))


def _npz(path, **arrays):
  base = dict(x_train=np.zeros((20, 4, 4), np.uint8), y_train=np.arange(20) % 2,
              x_test=np.zeros((6, 4, 4), np.uint8), y_test=np.arange(6) % 2)
  base.update(arrays)
  np.savez(path, **base)
  return f"npz:{path}"


@pytest.mark.parametrize("arrays, message", [
    (dict(y_train=np.r_[np.arange(19) % 2, 2 ** 30]), "largest is 1073741824 with only 3 distinct labels"),
    (dict(y_train=np.r_[np.arange(19) % 2, -1]), "negative label"),
    (dict(y_train=np.arange(20) % 2 + 0.5), "integer class indices"),
    (dict(x_train=np.zeros((0, 4, 4), np.uint8), y_train=np.zeros(0, np.int64)), "empty"),
    (dict(x_test=np.zeros((5, 4, 4), np.uint8)), "image and label counts differ"),
])
def test_npz_labels_shapes_and_emptiness_are_checked_before_training(tmp_path, arrays, message):
  name = _npz(tmp_path / "d.npz", **arrays)
  with pytest.raises(DlbookError, match=message):
    data.load(ml_collections.ConfigDict(dict(name=name)))


@pytest.mark.parametrize("damage", ["truncate", "bad_crc"])
def test_a_corrupt_npz_is_one_error(tmp_path, damage):
  path = tmp_path / "d.npz"
  np.savez_compressed(path, x_train=np.random.default_rng(0).integers(0, 255, (50, 8, 8)).astype(np.uint8),
                      y_train=np.arange(50) % 2, x_test=np.zeros((4, 8, 8), np.uint8), y_test=np.arange(4) % 2)
  raw = bytearray(path.read_bytes())
  if damage == "truncate":
    raw = raw[:len(raw) // 2]
  else:
    raw[200:210] = bytes(b ^ 0xFF for b in raw[200:210])  # inside the first member's compressed data
  path.write_bytes(bytes(raw))
  with pytest.raises(DlbookError, match="cannot read npz file .*truncated or corrupt"):
    data.load(ml_collections.ConfigDict(dict(name=f"npz:{path}")))


def test_degenerate_splits_are_refused_before_training(tmp_path):
  with pytest.raises(DlbookError, match="limit_train=3 keeps no training example of the 10 classes"):
    data.load(ml_collections.ConfigDict(dict(name="digits", limit_train=3)))
  make_image_folder(tmp_path / "imgs", n=4)  # 3 training images per class: a 10% validation split is empty
  with pytest.raises(DlbookError, match="empty validation split"):
    data.load(ml_collections.ConfigDict(dict(name=f"image_folder:{tmp_path / 'imgs'}", image_size=8,
                                             val_fraction=0.1)))
