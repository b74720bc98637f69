"""Secondary-structure metrics: hand-checked SOV vectors, scikit-learn for per-class scores."""

import itertools

import numpy as np
import pytest
from sklearn import metrics as skm

from dlbook.metrics import sequence as sm


def q3(s):
  return sm.encode(s, sm.SS3)


@pytest.mark.parametrize("observed,predicted,sov99,book", [
    ("HHHHCCCC", "HHCCCCCC", 87.5, 93.75),
    ("CHHHC", "CCCCC", 8.0, None),
    ("HHHHHH", "HHCCHH", 50.0, 100 / 3),
    ("HHEEECCH", "HHEEECCH", 100.0, 100.0),
])
def test_hand_vectors(observed, predicted, sov99, book):
  assert sm.sov99(q3(observed), q3(predicted)) == pytest.approx(sov99)
  if book is not None:
    assert sm.sov_book(q3(observed), q3(predicted)) == pytest.approx(book)


def _sov99_from_definition(obs, pred):
  """Zemla et al. 1999 written from residue sets, as an independent check of the segment search."""
  def segs(x):
    out, start = [], 0
    for (state, group) in itertools.groupby(enumerate(x), key=lambda t: t[1]):
      idx = [i for i, _ in group]
      out.append((state, set(idx)))
    return out
  total, norm = 0.0, 0
  for state, s1 in segs(obs):
    pairs = [s2 for st, s2 in segs(pred) if st == state and s1 & s2]
    norm += len(s1) * max(len(pairs), 1)
    for s2 in pairs:
      minov, maxov = len(s1 & s2), max(max(s1), max(s2)) - min(min(s1), min(s2)) + 1
      delta = min(maxov - minov, minov, len(s1) // 2, len(s2) // 2)
      total += (minov + delta) / maxov * len(s1)
  return 100 * total / norm


def test_sov99_agrees_with_the_definition_on_random_sequences():
  rng = np.random.default_rng(0)
  for _ in range(30):
    n = int(rng.integers(1, 60))
    obs = np.repeat(rng.integers(0, 3, n), rng.integers(1, 6, n))
    pred = np.where(rng.random(len(obs)) < 0.7, obs, rng.integers(0, 3, len(obs)))
    assert sm.sov99(obs, pred) == pytest.approx(_sov99_from_definition(list(obs), list(pred)))


def test_q8_to_q3_follows_table_9_1():
  mapped = {s8: sm.SS3[sm.to_q3(i)] for i, s8 in enumerate(sm.SS8)}
  assert mapped == {"H": "H", "G": "H", "I": "H", "E": "E", "B": "E", "T": "C", "S": "C", "L": "C"}


def test_sequence_metrics_against_sklearn_and_padding_excluded():
  rng = np.random.default_rng(1)
  n, length = 6, 40
  labels = rng.integers(0, 8, (n, length))
  preds = np.where(rng.random((n, length)) < 0.5, labels, rng.integers(0, 8, (n, length)))
  lengths = rng.integers(5, length + 1, n)
  mask = np.arange(length)[None] < lengths[:, None]
  # Whatever sits at padded positions must not count.
  m = sm.sequence_metrics(labels, preds, mask)
  m_noise = sm.sequence_metrics(np.where(mask, labels, 0), np.where(mask, preds, 7), mask)
  assert m == m_noise
  y8, p8 = labels[mask], preds[mask]
  y3, p3 = sm.to_q3(y8), sm.to_q3(p8)
  assert m["residues"] == lengths.sum() and m["proteins"] == n
  assert m["q8"] == pytest.approx(100 * skm.accuracy_score(y8, p8))
  assert m["q3"] == pytest.approx(100 * skm.accuracy_score(y3, p3))
  for key, y, p, k in (("q8_scores", y8, p8, 8), ("q3_scores", y3, p3, 3)):
    scores = m[key]
    pr, rc, f1, support = skm.precision_recall_fscore_support(y, p, labels=list(range(k)), zero_division=0)
    np.testing.assert_allclose(scores["precision"], pr)
    np.testing.assert_allclose(scores["recall"], rc)
    np.testing.assert_allclose(scores["f1"], f1)
    np.testing.assert_array_equal(scores["support"], support)
    for avg in ("macro", "micro"):
      assert scores[f"f1_{avg}"] == pytest.approx(skm.f1_score(y, p, labels=list(range(k)), average=avg,
                                                               zero_division=0))
      assert scores[f"precision_{avg}"] == pytest.approx(
          skm.precision_score(y, p, labels=list(range(k)), average=avg, zero_division=0))
    assert scores["f1_micro"] == pytest.approx(skm.accuracy_score(y, p))  # micro-F1 = accuracy
  np.testing.assert_array_equal(m["confusion_q8"], skm.confusion_matrix(y8, p8, labels=list(range(8))))
  np.testing.assert_array_equal(m["confusion_q3"], skm.confusion_matrix(y3, p3, labels=list(range(3))))
  per = [sm.sov99(sm.to_q3(l[k]), sm.to_q3(p[k])) for l, p, k in zip(labels, preds, mask)]
  assert m["sov99_q3"] == pytest.approx(np.mean(per))
  terms = [sm.sov99_terms(l[k], p[k]) for l, p, k in zip(labels, preds, mask)]
  assert m["sov99_q8_pooled"] == pytest.approx(100 * sum(t for t, _ in terms) / sum(n for _, n in terms))
