"""Denoising ablation on real MR and CT slices (book ch. 13, §13.2).

The book applies median and Wiener filtering "to remove common noise types (Gaussian,
salt-and-pepper, and speckle noise)" and gives no order and no measurement. This measures it:
real DICOM slices (pydicom's bundled test files and, when installed, PyPI ``pydicom-data``),
scaled to [0, 1], get each noise at several levels and seeds (``skimage.util.random_noise``);
every pipeline (none, median, Wiener, median → Wiener, Wiener → median; the filters of
`dlbook.data.transforms.denoise`) is scored against the clean slice with PSNR and SSIM
(``skimage.metrics``, data range 1). The scores are taken before the pipeline's final min-max,
which would rescale each output differently and so change PSNR for reasons other than noise.

Summaries are mean ± sample standard deviation (ddof 1) over slices × seeds.
"""

import dataclasses
import statistics
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from dlbook.data.transforms import denoise
from dlbook.errors import DlbookError, require

# (file name, frame) of uncompressed, distinct MR and CT slices; pydicom ships the first two,
# pydicom-data the rest (absent files are skipped and the list actually used is reported).
DEFAULT_SLICES = (("MR_small.dcm", 0), ("CT_small.dcm", 0), ("emri_small.dcm", 0), ("emri_small.dcm", 5),
                  ("MR-SIEMENS-DICOM-WithOverlays.dcm", 0), ("MR2_UNCR.dcm", 0), ("693_UNCR.dcm", 0),
                  ("eCT_Supplemental.dcm", 0))
DEFAULT_NOISES = (("gaussian", (0.001, 0.005, 0.01)), ("s&p", (0.01, 0.05, 0.1)), ("speckle", (0.01, 0.05, 0.1)))
NOISE_PARAMETER = {"gaussian": "var", "s&p": "amount", "speckle": "var"}
PIPELINES = (("none", ()), ("median", ("median",)), ("wiener", ("wiener",)),
             ("median→wiener", ("median", "wiener")), ("wiener→median", ("wiener", "median")))


@dataclasses.dataclass
class Slice:
  name: str
  modality: str
  image: np.ndarray  # float64 in [0, 1]


def dicom_slices(entries: Sequence[Tuple[str, int]] = DEFAULT_SLICES) -> List[Slice]:
  """Reads the listed (file, frame) DICOM test files that exist, as min-max scaled 2-D images."""
  import pydicom
  from pydicom.data import get_testdata_file
  out = []
  for name, frame in entries:
    path = get_testdata_file(name)
    if path is None:
      continue
    try:
      ds = pydicom.dcmread(path)
      pixels = np.asarray(ds.pixel_array, np.float64)
    except Exception as e:  # pydicom raises many types for bad or undecodable files
      raise DlbookError(f"cannot decode DICOM file {path}: {' '.join(str(e).split())[:200]}") from None
    if pixels.ndim == 3:
      pixels = pixels[frame]
    require(pixels.ndim == 2, f"{name}: expected a grey-level slice, got pixel shape {pixels.shape}")
    lo, span = pixels.min(), np.ptp(pixels)
    label = name if ds.get("NumberOfFrames", 1) in (None, 1) and pixels.shape == ds.pixel_array.shape \
        else f"{name}[{frame}]"
    out.append(Slice(label, str(ds.get("Modality", "?")), (pixels - lo) / span))
  require(bool(out), "no DICOM test file found (pydicom's bundled files are missing?)")
  return out


def add_noise(clean: np.ndarray, kind: str, level: float, seed: int) -> np.ndarray:
  """``skimage.util.random_noise`` of `kind` at `level` (variance or amount), clipped to [0, 1]."""
  from skimage.util import random_noise
  require(kind in NOISE_PARAMETER, f"unknown noise {kind!r}; valid: {', '.join(NOISE_PARAMETER)}")
  return random_noise(clean, mode=kind, rng=seed, clip=True, **{NOISE_PARAMETER[kind]: level})


def run_ablation(slices: Sequence[Slice], noises=DEFAULT_NOISES, seeds: Sequence[int] = (0, 1, 2),
                 pipelines=PIPELINES) -> List[Dict[str, object]]:
  """One row per (slice, noise, level, seed, pipeline) with its PSNR (dB) and SSIM."""
  from skimage.metrics import peak_signal_noise_ratio, structural_similarity
  rows = []
  for s in slices:
    for kind, levels in noises:
      for level in levels:
        for seed in seeds:
          noisy = add_noise(s.image, kind, level, seed)
          for name, steps in pipelines:
            out = denoise(noisy, steps, scale=False)
            rows.append({"slice": s.name, "modality": s.modality, "noise": kind, "level": level, "seed": seed,
                         "pipeline": name,
                         "psnr": float(peak_signal_noise_ratio(s.image, out, data_range=1.0)),
                         "ssim": float(structural_similarity(s.image, out, data_range=1.0))})
  return rows


def mean_std(values: Sequence[float]) -> Tuple[float, float]:
  """Mean and sample standard deviation (ddof 1; 0 for a single value)."""
  values = list(values)
  return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize(rows: Sequence[Dict[str, object]]) -> Dict[tuple, Dict[str, Tuple[float, float]]]:
  """{(noise, level, pipeline): {'psnr': (mean, std), 'ssim': (mean, std), 'n': count}}."""
  groups: Dict[tuple, list] = {}
  for r in rows:
    groups.setdefault((r["noise"], r["level"], r["pipeline"]), []).append(r)
  return {k: {"psnr": mean_std([r["psnr"] for r in v]), "ssim": mean_std([r["ssim"] for r in v]), "n": len(v)}
          for k, v in groups.items()}


def paired_difference(rows, metric: str, a: str, b: str, noise: Optional[str] = None):
  """Per (slice, noise, level, seed) difference metric(a) − metric(b): (mean, std, wins of a, cases)."""
  by_case: Dict[tuple, Dict[str, float]] = {}
  for r in rows:
    if noise is None or r["noise"] == noise:
      by_case.setdefault((r["slice"], r["noise"], r["level"], r["seed"]), {})[r["pipeline"]] = r[metric]
  diffs = [v[a] - v[b] for v in by_case.values() if a in v and b in v]
  mean, std = mean_std(diffs)
  return mean, std, sum(d > 0 for d in diffs), len(diffs)
