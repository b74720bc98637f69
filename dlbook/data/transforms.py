"""Transforms fitted on training data only, and the image denoising of book ch. 13.

**Expression → image (book §12.2; Lyu & Haque 2018).** `fit_expression_image` learns, from the
training split alone, which genes to keep and in which order; the returned `ExpressionImage`
is frozen and `transform` applies the same mapping to any split, so no test sample can change
what the model sees. Steps:

1. log2(x + 1) (``log_transform``; off for data already on a log scale, such as RMA arrays);
2. gene filter on the training variance (population variance, ddof 0, as sklearn's
   ``VarianceThreshold``): ``variance_threshold`` keeps genes above it (≈1.2 in the book,
   10,381 genes of TCGA), ``top_k`` the k most variable (ties by gene index), or neither;
3. optional per-gene scaling fitted on the training split (``scale``: ``none``, ``minmax`` to
   [0, 1] on the training range, ``standard``); the book names none, so the default is ``none``;
4. genes ordered by chromosome (1–22, X, Y, MT, then unknown) and start position (unknown
   start last within its chromosome; ties by original index), because neighbouring genes
   interact (book §12.2). Without an annotation the original gene order is kept;
5. zero-padded to the next square, side ⌈√n⌉ (10,381 → 102×102), reshaped row-major to
   [N, side, side, 1].

**Denoising (book §13.2).** `denoise` applies a median filter (``scipy.ndimage.median_filter``,
3×3, reflected borders; against salt-and-pepper noise) and an adaptive Wiener filter
(``scipy.signal.wiener``, 5×5, noise power estimated as the mean local variance, zero-padded
borders as MATLAB's ``wiener2``; against Gaussian and speckle noise) in the order given by
``steps`` — the book names both filters but no order, so both orders and each alone are
available — then scales to [0, 1] (min-max). ``steps=()`` only scales.
"""

import dataclasses
from typing import Optional, Sequence, Tuple

import numpy as np

from dlbook.errors import require

CHROMOSOMES = tuple(str(i) for i in range(1, 23)) + ("X", "Y", "MT")
SCALES = ("none", "minmax", "standard")
DENOISE_STEPS = ("median", "wiener")


def chromosome_rank(name) -> int:
  """Sort key of a chromosome name ('1'..'22', 'X', 'Y', 'MT'; 'chr' prefix and 'M' accepted); unknown last."""
  s = str(name).strip()
  if s.lower().startswith("chr"):
    s = s[3:]
  s = {"M": "MT", "x": "X", "y": "Y", "m": "MT", "mt": "MT"}.get(s, s)
  if s.endswith(".0"):  # numbers read as floats from a table
    s = s[:-2]
  return CHROMOSOMES.index(s) if s in CHROMOSOMES else len(CHROMOSOMES)


def genome_order(chromosome: Optional[Sequence], start: Optional[Sequence], n: int) -> np.ndarray:
  """Permutation of n genes by (chromosome rank, start, index); identity without an annotation."""
  if chromosome is None:
    return np.arange(n)
  require(len(chromosome) == n, f"gene annotation has {len(chromosome)} chromosomes for {n} genes")
  ranks = np.array([chromosome_rank(c) for c in chromosome])
  starts = np.full(n, np.inf) if start is None else np.asarray(start, np.float64)
  require(len(starts) == n, f"gene annotation has {len(starts)} start positions for {n} genes")
  starts = np.where(np.isnan(starts), np.inf, starts)
  return np.lexsort((np.arange(n), starts, ranks))


@dataclasses.dataclass(frozen=True)
class ExpressionImage:
  """A fitted expression → image mapping; `transform` never refits."""
  genes: np.ndarray  # indices of the kept genes, in image (genome) order
  side: int
  log_transform: bool
  offset: np.ndarray  # per kept gene, subtracted after the log
  scale: np.ndarray  # per kept gene, divided after the offset
  num_input_genes: int

  def transform(self, x: np.ndarray) -> np.ndarray:
    """[N, genes] expression → float32 [N, side, side, 1] images."""
    x = np.asarray(x, np.float64)
    require(x.ndim == 2 and x.shape[1] == self.num_input_genes,
            f"expression matrix must be [samples, {self.num_input_genes}], got {x.shape}")
    v = _log2p1(x[:, self.genes]) if self.log_transform else x[:, self.genes]
    v = (v - self.offset) / self.scale
    out = np.zeros((len(x), self.side * self.side), np.float32)
    out[:, :len(self.genes)] = v
    return out.reshape(len(x), self.side, self.side, 1)


def _log2p1(x: np.ndarray) -> np.ndarray:
  require(np.all(x >= 0), "log2(x + 1) needs non-negative expression values "
                          "(data already on a log scale: set log_transform=False)")
  return np.log2(x + 1.0)


def fit_expression_image(x_train: np.ndarray, chromosome: Optional[Sequence] = None,
                         start: Optional[Sequence] = None, *, log_transform: bool = True,
                         variance_threshold: Optional[float] = None, top_k: Optional[int] = None,
                         scale: str = "none") -> ExpressionImage:
  """Fits the gene filter, scaling and genome order on the training split `x_train` [N, genes]."""
  x = np.asarray(x_train, np.float64)
  require(x.ndim == 2 and len(x) >= 2, f"x_train must be [samples >= 2, genes], got {x.shape}")
  require(variance_threshold is None or top_k is None, "give variance_threshold or top_k, not both")
  require(scale in SCALES, f"unknown scale {scale!r}; valid: {', '.join(SCALES)}")
  n_genes = x.shape[1]
  v = _log2p1(x) if log_transform else x
  var = v.var(axis=0)
  if variance_threshold is not None:
    keep = np.flatnonzero(var > variance_threshold)
  elif top_k is not None:
    require(1 <= top_k <= n_genes, f"top_k must be in [1, {n_genes}], got {top_k}")
    keep = np.sort(np.lexsort((np.arange(n_genes), -var))[:top_k])
  else:
    keep = np.arange(n_genes)
  require(len(keep) > 0, f"no gene has training variance above {variance_threshold} "
                         f"(largest {var.max():.4g})")
  order = genome_order(None if chromosome is None else np.asarray(chromosome, dtype=object)[keep],
                       None if start is None else np.asarray(start, np.float64)[keep], len(keep))
  genes = keep[order]
  kept = v[:, genes]
  if scale == "minmax":
    offset, span = kept.min(axis=0), np.ptp(kept, axis=0)
  elif scale == "standard":
    offset, span = kept.mean(axis=0), kept.std(axis=0)
  else:
    offset, span = np.zeros(len(genes)), np.ones(len(genes))
  offset, span = np.array(offset), np.where(span > 0, span, 1.0)  # a gene constant on the training split maps to 0
  for array in (genes, offset, span):
    array.setflags(write=False)  # the fitted mapping is read-only
  side = int(np.ceil(np.sqrt(len(genes))))
  return ExpressionImage(genes, side, log_transform, offset, span, n_genes)


def min_max(image: np.ndarray) -> np.ndarray:
  """Scales to [0, 1]; a constant image becomes zeros."""
  image = np.asarray(image, np.float64)
  lo, span = image.min(), np.ptp(image)
  return (image - lo) / span if span > 0 else np.zeros_like(image)


def _wiener(image: np.ndarray, size: int, noise: Optional[float]) -> np.ndarray:
  from scipy.signal import wiener
  if np.ptp(image) == 0:  # no local variance anywhere: the filter is 0/0
    return image.copy()
  with np.errstate(divide="ignore", invalid="ignore"):  # flat windows: scipy picks the local mean there
    out = wiener(image, (size, size), noise)
  require(bool(np.isfinite(out).all()), "Wiener filter produced non-finite values")
  return out


def denoise(image: np.ndarray, steps: Sequence[str] = ("median", "wiener"), median_size: int = 3,
            wiener_size: int = 5, wiener_noise: Optional[float] = None, scale: bool = True) -> np.ndarray:
  """Median and/or Wiener filtering of one 2-D image in the order of `steps`, then min-max to [0, 1]."""
  from scipy.ndimage import median_filter
  image = np.asarray(image, np.float64)  # integer images would overflow in the Wiener variance
  require(image.ndim == 2, f"denoise expects one 2-D image, got shape {image.shape}")
  bad = [s for s in steps if s not in DENOISE_STEPS]
  require(not bad, f"unknown denoising steps {bad}; valid: {', '.join(DENOISE_STEPS)}")
  for step in steps:
    if step == "median":
      image = median_filter(image, size=median_size, mode="reflect")
    else:
      image = _wiener(image, wiener_size, wiener_noise)
  return min_max(image) if scale else image


def denoise_images(images: np.ndarray, steps: Sequence[str] = ("median", "wiener"), **kwargs) -> np.ndarray:
  """`denoise` over [N, H, W] or [N, H, W, C] (each channel alone); float32 in [0, 1]."""
  images = np.asarray(images)
  require(images.ndim in (3, 4), f"denoise_images expects [N, H, W] or [N, H, W, C], got {images.shape}")
  x = images if images.ndim == 4 else images[..., None]
  out = np.empty(x.shape, np.float32)
  for i in range(x.shape[0]):
    for c in range(x.shape[-1]):
      out[i, :, :, c] = denoise(x[i, :, :, c], steps, **kwargs)
  return out if images.ndim == 4 else out[..., 0]


def expression_image_shape(num_genes: int) -> Tuple[int, int, int]:
  """(side, side, 1) of the padded square image for `num_genes` genes."""
  side = int(np.ceil(np.sqrt(num_genes)))
  return side, side, 1
