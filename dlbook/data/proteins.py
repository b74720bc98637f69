"""Protein secondary-structure data (book section 9.2 and chapter 11), reached by name through `SOURCES`
like every data set: ``load_raw("cb513:PATH")`` returns a `SequenceData` (not the image `RawData`).

Names:
- ``cb6133:PATH`` -- ``cullpdb+profile_6133.npy[.gz]`` with its published split: rows [0, 5600) train,
  [5605, 5877) test, [5877, 6133) validation. Overlaps CB513: never train on it to test on CB513.
- ``cb6133_filtered:PATH`` -- ``cullpdb+profile_6133_filtered.npy[.gz]`` (5,534 proteins filtered against
  CB513): all rows train; the training set when testing on CB513.
- ``cb513:PATH`` -- ``cb513+profile_split1.npy[.gz]`` (514 rows): all rows test.
- ``cullpdb5926:PATH`` -- the 2018 de-duplicated ``cullpdb+profile_5926.npy[.gz]``: [0, 5430) train,
  [5435, 5690) test, [5690, 5926) validation; ``cullpdb5926_filtered:PATH`` all train (filtered against CB513).
- ``pdb_dssp`` -- the real chains built by ``python -m dlbook.data.build_pdb_dssp`` (in ``data_dir`` or
  ``~/.cache/dlbook/pdb_dssp``): DSSP 8-state labels, one-hot residues only (no PSSM profiles exist offline).

Published layout (Zhou & Troyanskaya 2014): a 2-D array (N, 39,900) = (N, 700 residues x 57 features).
Per residue: [0, 22) residue one-hot ``A C E D G F I H K M L N Q P S R T W V Y X NoSeq``; [22, 31) label
one-hot ``L B E G I H S T NoSeq`` (not the book's order); [31, 33) N/C-terminal flags; [33, 35) solvent
accessibility (never an input); [35, 57) PSSM profile. The mask is 1 - the NoSeq label column. Inputs:
``features="onehot+profile"`` (residue one-hot [0, 21) + profile [35, 56): 42 features, the default) or
``"onehot"`` (21 features).
"""

import dataclasses
import gzip
import json
import os
from typing import Optional, Sequence, Tuple

import numpy as np

from dlbook.data.sources import SOURCES
from dlbook.errors import DlbookError, require
from dlbook.metrics.sequence import SS8, to_q3

MAX_LENGTH = 700
NUM_COLUMNS = 57
RESIDUES = ("A", "C", "E", "D", "G", "F", "I", "H", "K", "M", "L", "N", "Q", "P", "S", "R", "T", "W", "V", "Y", "X")
RESIDUE_COLUMNS = slice(0, 22)  # 21 residues + NoSeq
LABEL_COLUMNS = slice(22, 31)  # SS8 + NoSeq
TERMINAL_COLUMNS = slice(31, 33)
SOLVENT_COLUMNS = slice(33, 35)
PROFILE_COLUMNS = slice(35, 57)
FEATURE_SETS = {
    "onehot+profile": np.r_[0:21, 35:56],
    "onehot": np.r_[0:21],
}
# Published files with a split: (rows in the file, {split: (first, stop) rows}).
PUBLISHED_SPLITS = {
    "cb6133": (6133, {"train": (0, 5600), "test": (5605, 5877), "val": (5877, 6133)}),
    "cullpdb5926": (5926, {"train": (0, 5430), "test": (5435, 5690), "val": (5690, 5926)}),
}
# Training sets that share proteins with CB513 (the filtered files exist to remove that overlap).
LEAKY_WITH_CB513 = ("cb6133", "cullpdb5926")


@dataclasses.dataclass
class SequenceSplit:
  """Padded proteins: `features` float32 [N, L, F]; `labels` int32 [N, L] 8-state indices in `SS8` order
  (0 at padding); `mask` float32 [N, L], 1 on real residues (a prefix of each row)."""
  features: np.ndarray
  labels: np.ndarray
  mask: np.ndarray
  names: Tuple[str, ...] = ()

  def __len__(self):
    return len(self.labels)

  @property
  def lengths(self) -> np.ndarray:
    return self.mask.sum(axis=1).astype(np.int32)

  @property
  def labels_q3(self) -> np.ndarray:
    return to_q3(self.labels)

  def batch(self, idx) -> dict:
    return {"features": self.features[idx], "labels": self.labels[idx], "mask": self.mask[idx]}

  def subset(self, idx) -> "SequenceSplit":
    idx = np.asarray(idx)
    return SequenceSplit(self.features[idx], self.labels[idx], self.mask[idx],
                         tuple(self.names[i] for i in idx) if self.names else ())


@dataclasses.dataclass
class SequenceData:
  """A protein data set: any split may be None (a training-only file has no test split)."""
  train: Optional[SequenceSplit]
  val: Optional[SequenceSplit]
  test: Optional[SequenceSplit]
  feature_names: Tuple[str, ...]
  info: dict
  class_names: Tuple[str, ...] = SS8

  @property
  def num_features(self) -> int:
    return len(self.feature_names)


def read_profile_file(path: str) -> np.ndarray:
  """A CB6133/CB513-layout ``.npy`` or ``.npy.gz`` file as float32 [N, 700, 57]."""
  require(os.path.exists(path), f"missing data file {path}")
  opener = gzip.open if path.endswith(".gz") else open
  try:
    with opener(path, "rb") as f:
      data = np.load(f, allow_pickle=False)
  except (OSError, ValueError, EOFError) as e:
    raise DlbookError(f"cannot read {path} as .npy{'.gz' if path.endswith('.gz') else ''}: {e}") from None
  flat = MAX_LENGTH * NUM_COLUMNS
  require(data.ndim == 2 and data.shape[1] == flat,
          f"{path}: expected shape (N, {flat}) = (N, {MAX_LENGTH} residues x {NUM_COLUMNS} features), "
          f"the CB6133/CB513 layout; got {data.shape}")
  return data.reshape(len(data), MAX_LENGTH, NUM_COLUMNS).astype(np.float32)


def rows_to_split(rows: np.ndarray, features: str, names: Sequence[str] = (), source: str = "?") -> SequenceSplit:
  """[N, L, 57] rows in the published layout -> a `SequenceSplit` (checks the one-hot labels and that
  each protein's residues come before its padding)."""
  require(features in FEATURE_SETS, f"unknown features {features!r}; valid: {', '.join(FEATURE_SETS)}")
  labels_onehot = rows[..., LABEL_COLUMNS]
  sums = labels_onehot.sum(-1)
  require(np.all(sums == 1), f"{source}: {int(np.sum(sums != 1))} residues have not exactly one of the label "
          f"columns 22-30 ({' '.join(SS8)} NoSeq) set; is the file in the published 57-column layout?")
  mask = 1.0 - labels_onehot[..., -1]
  lengths = mask.sum(1)
  prefix = np.arange(rows.shape[1])[None] < lengths[:, None]
  bad = np.flatnonzero(np.any(prefix != (mask > 0), axis=1))
  require(bad.size == 0, f"{source}: row {bad[:1].tolist()} has residues after NoSeq padding")
  labels = np.where(mask > 0, labels_onehot[..., :8].argmax(-1), 0).astype(np.int32)
  x = rows[..., FEATURE_SETS[features]] * mask[..., None]
  return SequenceSplit(x.astype(np.float32), labels, mask.astype(np.float32), tuple(names))


def feature_names(features: str) -> Tuple[str, ...]:
  names = [f"residue_{r}" for r in RESIDUES]
  if features == "onehot+profile":
    names += [f"profile_{r}" for r in RESIDUES]
  return tuple(names)


def carve_validation(train: SequenceSplit, fraction: float, seed: int = 0):
  """(train, val) with `fraction` of the proteins (at least one) held out at random with `seed`."""
  require(0.0 <= fraction < 1.0, f"val_fraction must be in [0, 1), got {fraction}")
  if not fraction:
    return train, None
  perm = np.random.default_rng(seed).permutation(len(train))
  k = max(1, int(round(fraction * len(train))))
  return train.subset(np.sort(perm[k:])), train.subset(np.sort(perm[:k]))


def _published(path, kind, features, val_fraction, splits=None):
  rows = read_profile_file(path)
  if splits is None:
    expected_rows, splits = PUBLISHED_SPLITS[kind]
    require(len(rows) == expected_rows, f"{path}: {kind} has {expected_rows} proteins in the published "
            f"file, this one has {len(rows)}; its split indices would be wrong")
  names = [f"{kind}_{i}" for i in range(len(rows))]
  out = {"train": None, "val": None, "test": None}
  for split, (a, b) in splits.items():
    out[split] = rows_to_split(rows[a:b], features, names[a:b], f"{path}[{a}:{b}]")
  if out["val"] is None and out["train"] is not None:
    out["train"], out["val"] = carve_validation(out["train"], val_fraction)
  info = {"source": os.path.abspath(path), "dataset": kind, "features": features,
          "splits": {k: len(v) for k, v in out.items() if v is not None},
          "profiles": features == "onehot+profile"}
  return SequenceData(out["train"], out["val"], out["test"], feature_names(features), info)


@SOURCES.register("cb6133:")
def cb6133(path, data_dir=None, features="onehot+profile", val_fraction=0.0, **_) -> SequenceData:
  return _published(path, "cb6133", features, val_fraction)


@SOURCES.register("cb6133_filtered:")
def cb6133_filtered(path, data_dir=None, features="onehot+profile", val_fraction=0.0, **_) -> SequenceData:
  return _published(path, "cb6133_filtered", features, val_fraction, {"train": (0, None)})


@SOURCES.register("cb513:")
def cb513(path, data_dir=None, features="onehot+profile", **_) -> SequenceData:
  return _published(path, "cb513", features, 0.0, {"test": (0, None)})


@SOURCES.register("cullpdb5926:")
def cullpdb5926(path, data_dir=None, features="onehot+profile", val_fraction=0.0, **_) -> SequenceData:
  return _published(path, "cullpdb5926", features, val_fraction)


@SOURCES.register("cullpdb5926_filtered:")
def cullpdb5926_filtered(path, data_dir=None, features="onehot+profile", val_fraction=0.0, **_) -> SequenceData:
  return _published(path, "cullpdb5926_filtered", features, val_fraction, {"train": (0, None)})


def check_not_leaky(train_name: str, test_name: str) -> None:
  """Refuses a CB513 test after training on a set that contains CB513's proteins (the unfiltered
  CB6133 or CullPDB-5926): the filtered files exist to remove exactly that overlap."""
  train_kind, test_kind = train_name.split(":", 1)[0], test_name.split(":", 1)[0]
  require(not (test_kind == "cb513" and train_kind in LEAKY_WITH_CB513),
          f"training on {train_kind!r} and testing on CB513 leaks test proteins into training; "
          f"train on '{train_kind}_filtered:PATH' instead")


def encode_rows(sequence: str, dssp: str, length: int = MAX_LENGTH) -> np.ndarray:
  """One protein in the published 57-column layout (profile, terminal and solvent columns left 0)."""
  require(len(sequence) == len(dssp), f"sequence and DSSP string differ in length ({len(sequence)}, {len(dssp)})")
  require(len(sequence) <= length, f"protein of {len(sequence)} residues does not fit max_length {length}")
  rows = np.zeros((length, NUM_COLUMNS), np.float32)
  n = len(sequence)
  rows[np.arange(n), [RESIDUES.index(r if r in RESIDUES else "X") for r in sequence]] = 1
  rows[n:, RESIDUE_COLUMNS.stop - 1] = 1  # NoSeq residue
  rows[np.arange(n), LABEL_COLUMNS.start + np.array([SS8.index(s) for s in dssp], int)] = 1
  rows[n:, LABEL_COLUMNS.stop - 1] = 1  # NoSeq label
  return rows


@SOURCES.register("pdb_dssp")
def pdb_dssp(data_dir=None, features="onehot", max_length=MAX_LENGTH, val_fraction=0.0, **_) -> SequenceData:
  """The real chains of ``python -m dlbook.data.build_pdb_dssp`` with its chain-level split. With
  `val_fraction` > 0, whole groups of training chains (same entry, identical sequence or shared 4-mers;
  `build_pdb_dssp.assign_split`) holding about that fraction of the training residues become `val`."""
  from dlbook.data.build_pdb_dssp import DATA_FILE, DEFAULT_DIR, FORMAT_VERSION
  path = os.path.join(data_dir or DEFAULT_DIR, DATA_FILE)
  require(os.path.exists(path), f"pdb_dssp is not built: {path} is missing; run "
          f"'python -m dlbook.data.build_pdb_dssp --fetch' (needs Debian's dssp package)")
  require(features == "onehot", f"pdb_dssp has one-hot residues only (no PSSM profiles exist offline); "
          f"got features={features!r}")
  try:
    with open(path) as f:
      record = json.load(f)
    chains = record["chains"]
  except (OSError, ValueError, KeyError) as e:
    raise DlbookError(f"corrupt pdb_dssp file {path}: {e}; rebuild it with --force") from None
  require(record.get("format_version") == FORMAT_VERSION,
          f"{path} has format {record.get('format_version')}, expected {FORMAT_VERSION}; rebuild it with --force")
  too_long = [c["name"] for c in chains if len(c["sequence"]) > max_length]
  require(not too_long, f"pdb_dssp chains {too_long} are longer than max_length {max_length}")
  require(0.0 <= val_fraction < 1.0, f"val_fraction must be in [0, 1), got {val_fraction}")
  sides = [c["split"] for c in chains]
  if val_fraction:
    # Validation chains come from the training side by whole groups (entry, identical sequence, shared
    # 4-mers), exactly as the test side was chosen, so no near-copy of a validation chain is trained on.
    from dlbook.data.build_pdb_dssp import Chain, assign_split
    train_idx = [i for i, side in enumerate(sides) if side == "train"]
    held = assign_split([Chain(chains[i]["entry"], chains[i]["chain"], chains[i]["sequence"], chains[i]["dssp"])
                         for i in train_idx], val_fraction)
    for i, side in zip(train_idx, held):
      sides[i] = "val" if side == "test" else "train"
  splits = {}
  for side in ("train", "val", "test"):
    part = [c for c, s in zip(chains, sides) if s == side]
    if not part:
      splits[side] = None
      continue
    rows = np.stack([encode_rows(c["sequence"], c["dssp"], max_length) for c in part])
    splits[side] = rows_to_split(rows, features, [c["name"] for c in part], f"{path}:{side}")
  train, val = splits["train"], splits["val"]
  info = {"source": path, "dataset": "pdb_dssp", "features": features, "profiles": False,
          "mkdssp": record.get("mkdssp"), "entries": sorted({c["entry"] for c in chains}),
          "splits": {"train": len(train), "val": 0 if val is None else len(val), "test": len(splits["test"])},
          "residues": {s: int(v.mask.sum()) for s, v in splits.items() if v is not None},
          "note": "real DSSP labels of PDB structures shipped in packages; one-hot residues only, no PSSM "
                  "profiles; a small stand-in, not CB6133/CB513"}
  return SequenceData(train, val, splits["test"], feature_names(features), info)


def protein_sources() -> Sequence[str]:
  return ("cb6133:", "cb6133_filtered:", "cb513:", "cullpdb5926:", "cullpdb5926_filtered:", "pdb_dssp")
