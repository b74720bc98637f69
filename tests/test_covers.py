"""The bundled-photo and DICOM cover sources."""

import numpy as np
import pytest
import skimage.data
from ml_collections import ConfigDict

from dlbook import data
from dlbook.data import covers
from dlbook.errors import DlbookError


def test_photos64_are_real_crops_split_by_photo():
  raw = data.load_raw("photos64")
  assert raw.x_train.shape[1:] == (64, 64, 3) and raw.x_train.dtype == np.uint8
  assert raw.max_value == 255.0 and len(raw.x_test) > 200 and len(raw.x_train) > 1000
  names = raw.class_names
  test_sources = {names[i] for i in np.unique(raw.y_test)}
  train_sources = {names[i] for i in np.unique(raw.y_train)}
  assert test_sources == set(covers.PHOTO_TEST) and not (test_sources & train_sources)
  # The first astronaut crop is the top-left 64x64 block of the photo (512 = 8 x 64, no margin).
  astro = raw.x_test[raw.y_test == names.index("astronaut")]
  np.testing.assert_array_equal(astro[0], skimage.data.astronaut()[:64, :64])
  # Training crops come with their mirror images; crops are not flat.
  camera = raw.x_train[raw.y_train == names.index("camera")]
  half = len(camera) // 2
  np.testing.assert_array_equal(camera[half:], camera[:half, :, ::-1])
  assert np.median(raw.x_test.reshape(len(raw.x_test), -1).std(axis=1)) > 5


def test_photos64_load_gives_symmetric_covers_and_is_deterministic():
  ds = data.load(ConfigDict(dict(name="photos64", normalization="symmetric")), seed=0)
  assert ds.train.images.dtype == np.float32
  assert ds.train.images.min() >= -1.0 and ds.train.images.max() <= 1.0
  assert ds.train.images.min() == -1.0 and ds.train.images.max() == 1.0
  again = data.load_raw("photos64")
  np.testing.assert_array_equal(data.load_raw("photos64").x_test, again.x_test)


def test_dicom64_windowed_ct_and_mr_slices():
  raw = data.load_raw("dicom64")
  assert raw.x_train.shape[1:] == (64, 64, 3) and raw.x_test.shape[1:] == (64, 64, 3)
  np.testing.assert_array_equal(raw.x_train[..., 0], raw.x_train[..., 2])  # grey replicated
  assert set(raw.class_names) == set(covers.DICOM_FILES)
  assert {raw.class_names[i] for i in np.unique(raw.y_test)} == set(covers.DICOM_TEST)
  assert raw.x_train.max() == 255 and raw.x_train.min() == 0
  # Nothing kept is mostly black background.
  dark = (raw.x_train[..., 0] <= 5).mean(axis=(1, 2))
  assert dark.max() < 0.9


def test_grid_crops_are_centred_and_window_rejects_constant_slices():
  image = np.arange(150 * 70 * 3, dtype=np.int64).reshape(150, 70, 3)
  crops = covers.grid_crops(image)
  assert crops.shape == (2, 64, 64, 3)
  np.testing.assert_array_equal(crops[1], image[11 + 64:11 + 128, 3:67])
  assert covers.grid_crops(image[:40]).shape == (0, 64, 64, 3)
  with pytest.raises(DlbookError, match="constant"):
    covers.window_to_uint8(np.ones((8, 8)))


def test_corrupt_dicom_is_a_clear_error(tmp_path):
  bad = tmp_path / "bad.dcm"
  bad.write_bytes(b"not a dicom file at all")
  with pytest.raises(DlbookError, match="bad.dcm"):
    covers.read_dicom_slice(str(bad))
  with pytest.raises(DlbookError, match="missing DICOM"):
    covers.read_dicom_slice(str(tmp_path / "absent.dcm"))
