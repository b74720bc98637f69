"""The four aggregation rules of the pan-cancer ensemble (book §12.2.2, Eq. for y* of each rule).

Every rule takes the class probabilities of the k base models, ``probs`` [k, N, K] (softmax
outputs d_j(z)), and returns ``(predictions [N], scores [N, K])``; the scores rank the classes
for ROC-AUC.

- ``hard``: majority (hard) voting, y* = Mod[d_1(z), ..., d_k(z)] over each model's argmax. The
  book gives no tie rule. **Choice:** among the classes with the most votes, the one with the
  highest mean probability over the k models; if that is tied too (equal floats), the lowest
  class index. Scores: the vote fraction of each class.
- ``average``: y* = argmax_c (1/k) Σ_j d_j(z).
- ``soft``: the book's "soft voting", y* = argmax_c Σ_j w_j d_j(z) (unnormalised).
- ``weighted_average``: y* = argmax_c Σ_j w_j d_j(z) / Σ_j w_j.

"soft" and "weighted average" differ by the positive factor 1 / Σ_j w_j, the same for every
class, so they always pick the same class (tested); the book reports them as two methods.
**Choice:** w_j is base model j's macro-F1 on the validation split, never a test score
(`validation_weights`). Ties in the probability rules go to the lowest class index (argmax).
"""

from typing import Dict, Sequence, Tuple

import numpy as np

from dlbook.errors import require

AGGREGATORS = ("hard", "average", "soft", "weighted_average")
NAMES = {"hard": "Hard (majority) voting", "average": "Average voting", "soft": "Soft voting Σ w_j d_j",
         "weighted_average": "Weighted average voting"}


def _check(probs) -> np.ndarray:
  probs = np.asarray(probs, np.float64)
  require(probs.ndim == 3 and probs.shape[0] >= 1, f"ensemble probabilities must be [models, N, K], got "
                                                   f"{probs.shape}")
  require(bool(np.isfinite(probs).all()) and bool((probs >= 0).all()),
          "ensemble probabilities must be finite and non-negative")
  return probs


def _check_weights(weights, k: int) -> np.ndarray:
  w = np.asarray(weights, np.float64).reshape(-1)
  require(len(w) == k, f"{len(w)} ensemble weights for {k} models")
  require(bool(np.isfinite(w).all()) and bool((w >= 0).all()), f"ensemble weights must be finite and >= 0, got {w}")
  require(w.sum() > 0, f"ensemble weights sum to 0 ({w.tolist()}): weighted voting is undefined")
  return w


def hard_vote(probs) -> Tuple[np.ndarray, np.ndarray]:
  """Majority vote of each model's argmax; ties by mean probability, then lowest class index."""
  probs = _check(probs)
  k, n, classes = probs.shape
  votes = np.zeros((n, classes))
  np.add.at(votes, (np.arange(n)[None, :].repeat(k, 0), probs.argmax(-1)), 1.0)
  mean = probs.mean(0)
  # Lexicographic: votes first, then mean probability among the most-voted classes; argmax keeps the
  # lowest index among exact ties.
  top = votes == votes.max(-1, keepdims=True)
  tie_break = np.where(top, mean, -np.inf)
  return tie_break.argmax(-1), votes / k


def average_vote(probs) -> Tuple[np.ndarray, np.ndarray]:
  probs = _check(probs)
  mean = probs.mean(0)
  return mean.argmax(-1), mean


def soft_vote(probs, weights) -> Tuple[np.ndarray, np.ndarray]:
  """Σ_j w_j d_j(z), unnormalised (the book's soft voting)."""
  probs = _check(probs)
  w = _check_weights(weights, probs.shape[0])
  scores = np.einsum("j,jnc->nc", w, probs)
  return scores.argmax(-1), scores


def weighted_average_vote(probs, weights) -> Tuple[np.ndarray, np.ndarray]:
  """Σ_j w_j d_j(z) / Σ_j w_j."""
  probs = _check(probs)
  w = _check_weights(weights, probs.shape[0])
  scores = np.einsum("j,jnc->nc", w, probs) / w.sum()
  return scores.argmax(-1), scores


def aggregate(name: str, probs, weights=None) -> Tuple[np.ndarray, np.ndarray]:
  """(predictions, scores) of aggregator `name` (one of `AGGREGATORS`)."""
  require(name in AGGREGATORS, f"unknown aggregator {name!r}; valid: {', '.join(AGGREGATORS)}")
  if name == "hard":
    return hard_vote(probs)
  if name == "average":
    return average_vote(probs)
  require(weights is not None, f"aggregator {name!r} needs one weight per model")
  return (soft_vote if name == "soft" else weighted_average_vote)(probs, weights)


def validation_weights(val_f1: Dict[str, float], models: Sequence[str]) -> Tuple[np.ndarray, bool]:
  """(weights, fallback): each model's validation macro-F1, in `models` order. When every one is 0
  the weighted rules are undefined; the weights become uniform and `fallback` is True (recorded)."""
  missing = [m for m in models if m not in val_f1]
  require(not missing, f"no validation macro-F1 for models {missing}")
  w = np.array([float(val_f1[m]) for m in models], np.float64)
  require(bool(np.isfinite(w).all()) and bool((w >= 0).all()), f"validation macro-F1 weights must be in [0, 1], got {w}")
  if w.sum() == 0:
    return np.ones(len(models)), True
  return w, False
