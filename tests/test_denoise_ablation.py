"""The denoising ablation scores what it says on a real DICOM slice (pydicom's bundled MR_small)."""

import numpy as np
import pytest
import scipy.ndimage
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from skimage.util import random_noise

from dlbook.medical import denoise_ablation as ab


def test_ablation_rows_match_skimage_on_a_real_slice():
  (mr,) = ab.dicom_slices((("MR_small.dcm", 0),))
  assert mr.modality == "MR" and mr.image.shape == (64, 64)
  assert mr.image.min() == 0.0 and mr.image.max() == 1.0
  rows = ab.run_ablation([mr], noises=(("s&p", (0.05,)),), seeds=(3,),
                         pipelines=(("none", ()), ("median", ("median",))))
  noisy = random_noise(mr.image, mode="s&p", rng=3, amount=0.05)
  by = {r["pipeline"]: r for r in rows}
  assert by["none"]["psnr"] == pytest.approx(peak_signal_noise_ratio(mr.image, noisy, data_range=1.0), abs=1e-12)
  median = scipy.ndimage.median_filter(noisy, size=3)
  assert by["median"]["psnr"] == pytest.approx(peak_signal_noise_ratio(mr.image, median, data_range=1.0), abs=1e-12)
  assert by["median"]["ssim"] == pytest.approx(structural_similarity(mr.image, median, data_range=1.0), abs=1e-12)
  assert by["median"]["psnr"] > by["none"]["psnr"] + 3  # a median filter does remove salt and pepper


def test_summary_uses_sample_std_and_paired_differences():
  rows = [{"slice": s, "noise": "gaussian", "level": 0.1, "seed": 0, "pipeline": p, "psnr": v, "ssim": v / 100}
          for s, p, v in (("a", "none", 20.0), ("b", "none", 24.0), ("c", "none", 25.0),
                          ("a", "median", 21.0), ("b", "median", 23.0), ("c", "median", 28.0))]
  s = ab.summarize(rows)[("gaussian", 0.1, "none")]
  assert s["psnr"][0] == pytest.approx(23.0) and s["psnr"][1] == pytest.approx(np.std([20, 24, 25], ddof=1))
  mean, std, wins, n = ab.paired_difference(rows, "psnr", "median", "none")
  assert (mean, wins, n) == (pytest.approx(1.0), 2, 3) and std == pytest.approx(np.std([1, -1, 3], ddof=1))
