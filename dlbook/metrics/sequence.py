"""Per-residue secondary-structure metrics (book section 11.5): Q8, Q3, per-class precision / recall /
F1 with macro and micro averages, 8x8 and 3x3 confusion matrices, and segment overlap.

- Q8 / Q3 are accuracies over real residues only (the mask excludes padding). Micro-averaged
  precision, recall and F1 over all classes all equal the accuracy (every wrong residue is one false
  positive and one false negative), so micro-F1 = Q8 (or Q3); the macro averages are the informative ones.
- SOV'99 (Zemla, Venclovas, Fidelis & Rost, Proteins 1999): for each observed segment s1 and every
  predicted segment s2 of the same state that overlaps it, (minov + delta) / maxov * len(s1), with
  delta = min(maxov - minov, minov, int(len(s1)/2), int(len(s2)/2)); normalised by N, the sum of len(s1)
  over the pairs plus the length of every observed segment that no predicted segment of its state overlaps.
  Per protein it is 100 * sum / N; "pooled" sums the numerators and the N of all proteins first.
- The book's own formula (section 11.5) differs: it normalises by all residues and weights each pair by
  the predicted segment's length, with delta's halves not rounded. It is offered only as the named
  comparison `sov_book`; hand vectors where the two differ are in the tests.
"""

from typing import Dict, Sequence, Tuple

import numpy as np

from dlbook.metrics.classification import confusion_matrix

# The published CB6133/CB513 label columns, in order (Zhou & Troyanskaya 2014): not the book's order.
SS8 = ("L", "B", "E", "G", "I", "H", "S", "T")
SS3 = ("H", "E", "C")
# Book Table 9.1: H, G, I -> H; E, B -> E; T, S, L -> C.
Q8_TO_Q3 = np.array([SS3.index({"H": "H", "G": "H", "I": "H", "E": "E", "B": "E"}.get(s, "C")) for s in SS8],
                    np.int32)


def to_q3(labels8):
  """8-state indices (SS8 order) -> 3-state indices (SS3 order)."""
  return Q8_TO_Q3[np.asarray(labels8)]


def encode(states: str, alphabet: Sequence[str]) -> np.ndarray:
  """A string of state letters -> indices into `alphabet`."""
  return np.array([alphabet.index(s) for s in states], np.int32)


def _segments(seq: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Maximal runs of one state: (states, starts, ends) with ends exclusive."""
  seq = np.asarray(seq)
  if seq.size == 0:
    return seq, np.zeros(0, int), np.zeros(0, int)
  starts = np.concatenate([[0], np.flatnonzero(seq[1:] != seq[:-1]) + 1])
  ends = np.concatenate([starts[1:], [len(seq)]])
  return seq[starts], starts, ends


def _overlapping_pairs(reference, other):
  """For each segment of `reference`, the same-state segments of `other` that overlap it:
  yields (len_ref, len_other, minov, maxov) per pair, and (len_ref, None, 0, 0) for a lone segment."""
  rs, r0, r1 = _segments(reference)
  os_, o0, o1 = _segments(other)
  for state, a0, a1 in zip(rs, r0, r1):
    lo, hi = np.searchsorted(o1, a0, side="right"), np.searchsorted(o0, a1, side="left")
    found = False
    for j in range(lo, hi):
      if os_[j] != state:
        continue
      found = True
      b0, b1 = o0[j], o1[j]
      yield a1 - a0, b1 - b0, min(a1, b1) - max(a0, b0), max(a1, b1) - min(a0, b0)
    if not found:
      yield a1 - a0, None, 0, 0


def sov99_terms(observed, predicted) -> Tuple[float, int]:
  """(sum over pairs of (minov + delta) / maxov * len(s1), N) for one protein (SOV'99)."""
  observed, predicted = np.asarray(observed), np.asarray(predicted)
  assert observed.shape == predicted.shape, (observed.shape, predicted.shape)
  total, norm = 0.0, 0
  for len1, len2, minov, maxov in _overlapping_pairs(observed, predicted):
    norm += int(len1)
    if len2 is not None:
      delta = min(maxov - minov, minov, len1 // 2, len2 // 2)
      total += (minov + delta) / maxov * len1
  return total, norm


def sov99(observed, predicted) -> float:
  """SOV'99 of one protein in percent (NaN for an empty protein)."""
  total, norm = sov99_terms(observed, predicted)
  return 100.0 * total / norm if norm else float("nan")


def sov_book(observed, predicted) -> float:
  """The book's SOV formula (section 11.5), as printed: each predicted segment z1 paired with each
  overlapping observed segment z2 of its state adds (minov + delta) / maxov * len(z1), delta =
  min(maxov - minov, minov, len(z1)/2, len(z2)/2); the sum is divided by all residues. Not SOV'99."""
  observed, predicted = np.asarray(observed), np.asarray(predicted)
  if observed.size == 0:
    return float("nan")
  total = 0.0
  for len1, len2, minov, maxov in _overlapping_pairs(predicted, observed):
    if len2 is not None:
      total += (minov + min(maxov - minov, minov, len1 / 2, len2 / 2)) / maxov * len1
  return 100.0 * total / observed.size


def per_class_scores(y_true, y_pred, num_classes: int) -> Dict[str, object]:
  """Per-class precision / recall / F1 / support and their macro and micro averages (0 where a
  denominator is 0, as scikit-learn's zero_division=0); micro-F1 equals the accuracy."""
  cm = confusion_matrix(y_true, y_pred, num_classes).astype(np.float64)
  tp = np.diag(cm)
  fp, fn = cm.sum(0) - tp, cm.sum(1) - tp

  def div(a, b):
    return np.divide(a, b, out=np.zeros_like(a, dtype=np.float64), where=b != 0)

  precision, recall, f1 = div(tp, tp + fp), div(tp, tp + fn), div(2 * tp, 2 * tp + fp + fn)
  micro = float(div(np.array(tp.sum()), np.array(cm.sum())))
  return {"precision": precision.tolist(), "recall": recall.tolist(), "f1": f1.tolist(),
          "support": cm.sum(1).astype(int).tolist(),
          "precision_macro": float(precision.mean()), "recall_macro": float(recall.mean()),
          "f1_macro": float(f1.mean()), "precision_micro": micro, "recall_micro": micro, "f1_micro": micro}


def _sov_summary(proteins, fn_terms):
  per_protein, totals, norms = [], 0.0, 0
  for obs, pred in proteins:
    total, norm = fn_terms(obs, pred)
    totals, norms = totals + total, norms + norm
    per_protein.append(100.0 * total / norm if norm else float("nan"))
  return per_protein, (100.0 * totals / norms if norms else float("nan"))


def sequence_metrics(labels, preds, mask, per_protein: bool = False) -> Dict[str, object]:
  """All book section 11.5 metrics for a set of proteins.

  `labels`, `preds`: int [N, L] 8-state indices (SS8 order); `mask`: [N, L], 1 on real residues (each
  protein's residues are taken where its mask is 1). Returns Q8, Q3 (percent), per-class scores and
  confusion matrices for 8 and 3 states, SOV'99 (mean over proteins and pooled) for 8 and 3 states, and
  the book's SOV formula (mean over proteins) as a named comparison.
  """
  labels, preds = np.asarray(labels), np.asarray(preds)
  mask = np.asarray(mask).astype(bool)
  assert labels.shape == preds.shape == mask.shape, (labels.shape, preds.shape, mask.shape)
  y8, p8 = labels[mask], preds[mask]
  y3, p3 = to_q3(y8), to_q3(p8)
  out: Dict[str, object] = {
      "residues": int(mask.sum()), "proteins": int(mask.any(axis=-1).sum()),
      "q8": 100.0 * float(np.mean(y8 == p8)) if y8.size else float("nan"),
      "q3": 100.0 * float(np.mean(y3 == p3)) if y3.size else float("nan"),
      "q8_scores": per_class_scores(y8, p8, len(SS8)), "q3_scores": per_class_scores(y3, p3, len(SS3)),
      "confusion_q8": confusion_matrix(y8, p8, len(SS8)).tolist(),
      "confusion_q3": confusion_matrix(y3, p3, len(SS3)).tolist(),
  }
  proteins8 = [(l[m], p[m]) for l, p, m in zip(labels, preds, mask) if m.any()]
  proteins3 = [(to_q3(l), to_q3(p)) for l, p in proteins8]
  for name, proteins in (("q8", proteins8), ("q3", proteins3)):
    values, pooled = _sov_summary(proteins, sov99_terms)
    book = [sov_book(l, p) for l, p in proteins]
    out[f"sov99_{name}"] = float(np.mean(values)) if values else float("nan")
    out[f"sov99_{name}_pooled"] = pooled
    out[f"sov_book_{name}"] = float(np.mean(book)) if book else float("nan")
    if per_protein:
      out[f"sov99_{name}_per_protein"] = values
  return out
