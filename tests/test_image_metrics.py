"""PSNR / SSIM agree with scikit-image; capacity, extraction accuracy and steganalysis error."""

import jax
import numpy as np
import pytest
import skimage.data
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from dlbook.errors import DlbookError
from dlbook.metrics import image as im


def sk_ssim(a, b, data_range=255.0, channel_axis=-1):
  return structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                               data_range=data_range, channel_axis=channel_axis)


def noisy(a, std, seed):
  rng = np.random.default_rng(seed)
  return np.clip(np.rint(a + rng.normal(0, std, a.shape)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("std", [2.0, 25.0])
def test_psnr_ssim_match_skimage_on_real_colour_photo(std):
  a = skimage.data.astronaut()[100:260, 150:330]  # HWC uint8
  b = noisy(a, std, seed=1)
  assert abs(float(im.ssim(a, b)) - sk_ssim(a, b)) < 1e-4
  assert abs(float(im.psnr(a, b)) - peak_signal_noise_ratio(a, b, data_range=255)) < 1e-4


def test_ssim_matches_skimage_on_grey_photo_and_random_images():
  a = skimage.data.camera()[::2, ::2]  # HW
  b = noisy(a, 8.0, seed=2)
  assert abs(float(im.ssim(a, b)) - sk_ssim(a, b, channel_axis=None)) < 1e-4
  rng = np.random.default_rng(3)
  for shape in [(64, 64, 3), (23, 40, 1), (11, 11, 3)]:
    x = rng.integers(0, 256, shape, dtype=np.uint8)
    y = rng.integers(0, 256, shape, dtype=np.uint8)
    assert abs(float(im.ssim(x, y)) - sk_ssim(x, y)) < 1e-4
    assert abs(float(im.psnr(x, y)) - peak_signal_noise_ratio(x, y, data_range=255)) < 1e-4


def test_float_images_with_explicit_range():
  rng = np.random.default_rng(4)
  x = rng.random((32, 48, 3))
  y = np.clip(x + rng.normal(0, 0.05, x.shape), 0, 1)
  assert abs(float(im.ssim(x, y, data_range=1.0)) - sk_ssim(x, y, data_range=1.0)) < 1e-4
  assert abs(float(im.psnr(x, y, data_range=1.0)) - peak_signal_noise_ratio(x, y, data_range=1.0)) < 1e-4


def test_batches_average_per_image_values_and_jit():
  a = skimage.data.astronaut()[:64, :128].reshape(64, 2, 64, 3).transpose(1, 0, 2, 3)  # 2 x 64x64x3
  b = np.stack([noisy(a[0], 3.0, 5), noisy(a[1], 30.0, 6)])
  per = np.asarray(im.ssim(a, b, per_image=True))
  ref = np.array([sk_ssim(a[i], b[i]) for i in range(2)])
  np.testing.assert_allclose(per, ref, atol=1e-4)
  assert abs(float(im.ssim(a, b)) - ref.mean()) < 1e-4
  jitted = jax.jit(im.psnr, static_argnames=("data_range", "per_image"))
  ref_psnr = [peak_signal_noise_ratio(a[i], b[i], data_range=255) for i in range(2)]
  np.testing.assert_allclose(np.asarray(jitted(a, b, per_image=True)), ref_psnr, atol=1e-4)
  assert float(im.ssim(a, a)) == pytest.approx(1.0, abs=1e-6)
  assert np.isinf(float(im.psnr(a, a)))


def test_to_uint8_maps_symmetric_range_and_rounds():
  x = np.array([-1.0, -0.999, 0.0, 1.0, 1.5, -3.0])
  np.testing.assert_array_equal(im.to_uint8(x), [0, 0, 128, 255, 255, 0])
  np.testing.assert_array_equal(im.to_uint8(np.array([0.0, 0.5, 1.0]), (0, 1)), [0, 128, 255])
  with pytest.raises(DlbookError, match="value_range"):
    im.to_uint8(x, (1, 1))


def test_capacity_accuracy_and_steganalysis_error():
  assert im.bits_per_pixel(64 * 64 * 2, 64, 64) == 2.0
  bits = np.array([[0, 1, 1, 0], [1, 1, 0, 0]])
  decoded = np.array([[0, 1, 0, 0], [1, 1, 0, 1]])
  assert im.extraction_accuracy(bits, decoded) == 0.75
  labels = np.array([1, 1, 0, 0, 1, 0, 1, 0])
  assert im.steganalysis_error_rate(labels, labels) == 0.0
  assert im.steganalysis_error_rate(labels, 1 - labels) == 100.0
  assert im.steganalysis_error_rate(labels, np.ones(8)) == 50.0


def test_bad_inputs_raise_clear_errors():
  with pytest.raises(DlbookError, match="same shape"):
    im.psnr(np.zeros((8, 8)), np.zeros((8, 9)))
  with pytest.raises(DlbookError, match="at least 11x11"):
    im.ssim(np.zeros((8, 8)), np.zeros((8, 8)))
  with pytest.raises(DlbookError, match="shapes differ"):
    im.extraction_accuracy(np.zeros(3), np.zeros(4))
