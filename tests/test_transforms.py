"""Expression → image is fitted on training data only; denoising equals scipy's filters composed."""

import numpy as np
import pytest
import scipy.ndimage
import scipy.signal
from skimage.exposure import rescale_intensity

from dlbook.data.transforms import (chromosome_rank, denoise, denoise_images, expression_image_shape,
                                    fit_expression_image, genome_order)
from dlbook.errors import DlbookError


def _expression(seed=0, n=40, genes=30):
  rng = np.random.default_rng(seed)
  spread = np.linspace(0.1, 3.0, genes)  # gene g has log-scale spread spread[g]
  return np.exp2(rng.normal(5, 1, (n, genes)) * spread) - 1 + 1e-9


def test_genome_order_and_chromosome_names():
  assert [chromosome_rank(c) for c in ("chr1", "2", 10.0, "X", "chrY", "M", "MT", "Un_gl000220", None)] == \
      [0, 1, 9, 22, 23, 24, 24, 25, 25]
  chrom = ["X", "1", "10", "1", "2", "unknown", "1"]
  start = [5, 300, 1, 100, 7, 1, np.nan]
  np.testing.assert_array_equal(genome_order(chrom, start, 7), [3, 1, 6, 4, 2, 0, 5])
  np.testing.assert_array_equal(genome_order(None, None, 4), np.arange(4))


def test_expression_image_pipeline_by_hand():
  x = _expression(genes=11)
  chrom = ["2", "1", "1", "X", "2", "1", "3", "3", "1", "2", "Y"]
  start = [50, 30, 10, 1, 20, 20, 5, 1, 40, 10, 1]
  fitted = fit_expression_image(x, chrom, start, top_k=7)
  logx = np.log2(x + 1)
  top7 = np.sort(np.argsort(-logx.var(axis=0), kind="stable")[:7])  # genes 4..10 (largest spreads)
  np.testing.assert_array_equal(top7, np.arange(4, 11))
  # genome order of genes 4..10: chr1 {5@20, 8@40}, chr2 {9@10, 4@20}, chr3 {7@1, 6@5}, Y {10}
  np.testing.assert_array_equal(fitted.genes, [5, 8, 9, 4, 7, 6, 10])
  img = fitted.transform(x[:3])
  assert img.shape == (3, 3, 3, 1) == (3,) + expression_image_shape(7)
  np.testing.assert_allclose(img.reshape(3, 9)[:, :7], logx[:3, [5, 8, 9, 4, 7, 6, 10]], rtol=1e-6)
  np.testing.assert_array_equal(img.reshape(3, 9)[:, 7:], 0)  # zero padding to the next square
  assert fit_expression_image(np.ones((2, 10381)), log_transform=False).side == 102  # the book's 102 x 102


def test_variance_threshold_and_scaling_fitted_on_training_only():
  x = _expression(1)
  var = np.log2(x + 1).var(axis=0)
  fitted = fit_expression_image(x, variance_threshold=float(np.median(var)), scale="minmax")
  np.testing.assert_array_equal(fitted.genes, np.flatnonzero(var > np.median(var)))
  train_img = fitted.transform(x).reshape(len(x), -1)[:, :len(fitted.genes)]
  np.testing.assert_allclose(train_img.min(0), 0, atol=1e-6)
  np.testing.assert_allclose(train_img.max(0), 1, atol=1e-6)
  standard = fit_expression_image(x, top_k=5, scale="standard").transform(x).reshape(len(x), -1)[:, :5]
  np.testing.assert_allclose(standard.mean(0), 0, atol=1e-5)


def test_a_test_sample_cannot_change_the_fitted_transform():
  x_train, x_test = _expression(2)[:30], _expression(3)[:10]
  fitted = fit_expression_image(x_train, top_k=8, scale="minmax")
  before = fitted.transform(x_train)
  outlier = x_test.copy()
  outlier[:, 0] = 1e12  # a test sample with a huge value on a gene the training split finds dull
  out = fitted.transform(outlier)
  np.testing.assert_array_equal(fitted.transform(x_train), before)  # transforming the test changed nothing
  assert 0 not in fitted.genes and out.shape == (10,) + before.shape[1:]
  with pytest.raises(ValueError):
    fitted.genes[0] = 0  # the fitted mapping is read-only
  # The check has teeth: fitting on train + test would have kept gene 0.
  leaky = fit_expression_image(np.concatenate([x_train, outlier]), top_k=8, scale="minmax")
  assert 0 in leaky.genes


def test_expression_errors_are_one_line():
  with pytest.raises(DlbookError, match="non-negative"):
    fit_expression_image(-np.ones((3, 4)))
  with pytest.raises(DlbookError, match="not both"):
    fit_expression_image(np.ones((3, 4)), top_k=2, variance_threshold=1.0)
  with pytest.raises(DlbookError, match=r"\[samples, 4\]"):
    fit_expression_image(_expression(genes=4)).transform(np.ones((2, 5)))


@pytest.fixture(scope="module")
def noisy():
  rng = np.random.default_rng(0)
  yy, xx = np.mgrid[:48, :40]
  clean = 200 * np.exp(-((yy - 24) ** 2 + (xx - 20) ** 2) / 200.0) + 30 * (xx > 30)
  return (clean + rng.normal(0, 15, clean.shape)).astype(np.int16)  # integer, as DICOM / .mat slices are


@pytest.mark.parametrize("steps", [("median", "wiener"), ("wiener", "median"), ("median",), ("wiener",), ()])
def test_denoise_is_scipy_filters_composed_then_min_max(noisy, steps):
  ref = noisy.astype(np.float64)
  for step in steps:
    ref = scipy.ndimage.median_filter(ref, size=3) if step == "median" else scipy.signal.wiener(ref, (5, 5))
  ref = rescale_intensity(ref, out_range=(0.0, 1.0))
  np.testing.assert_allclose(denoise(noisy, steps), ref, rtol=0, atol=1e-12)


def test_denoise_orders_differ_and_batches(noisy):
  a, b = denoise(noisy, ("median", "wiener")), denoise(noisy, ("wiener", "median"))
  assert np.abs(a - b).max() > 1e-3  # the order matters, so it is a real choice
  batch = denoise_images(np.stack([noisy, noisy[::-1]])[..., None], ("median", "wiener"))
  assert batch.dtype == np.float32 and batch.shape == (2, 48, 40, 1)
  np.testing.assert_allclose(batch[0, ..., 0], a, atol=1e-6)
  np.testing.assert_array_equal(denoise(np.full((8, 8), 7), ("wiener",)), np.zeros((8, 8)))  # constant image
  with pytest.raises(DlbookError, match="unknown denoising steps"):
    denoise(noisy, ("gaussian",))
