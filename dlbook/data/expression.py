"""Gene-expression sources: TCGA Pan-Cancer (book ch. 12) and real expression sets shipped by Debian.

Every source returns a `RawData` of [samples, genes] float32 vectors (unscaled: see
``info['expression_scale']``; `dlbook.data.transforms.fit_expression_image` maps them to
images), the patient of each sample in ``groups_*``, the sample id in ``samples_*``, and a
gene annotation in ``features`` (``names``, ``chromosome``, ``start``; chromosome ``None`` where
unknown). None of these datasets has an official test split: a stratified ``test_fraction``
(default 0.2, seed 0, independent of the run seed) is held out, as for ``digits``.

- ``tcga_pancancer:PATH`` — a folder in the TCGA Pan-Cancer Atlas layout:
  * the expression matrix, genes × samples, tab-separated: first row ``gene_id`` then TCGA
    sample barcodes (``TCGA-XX-XXXX-01A-…``); first column ``SYMBOL|ENTREZ`` (``?|100130426``
    where the symbol is unknown); ``NA`` allowed. Found as the one ``*geneExp*.tsv`` or
    ``expression.tsv`` in PATH, or named by ``expression_file``;
  * ``sample_types.tsv`` (or ``types_file``): a sample or patient barcode column (``sample``,
    ``barcode``, ``bcr_patient_barcode``, … or the first column) and a cancer-type column
    (``cancer_type``, ``type``, ``acronym``, ``_primary_disease``, …); barcodes match on the full
    id, then the sample (15 characters), then the patient (12 characters);
  * optionally ``gene_annotation.tsv`` (or ``annotation_file``): ``gene_id`` (as in the matrix),
    ``entrez`` or ``symbol``, with ``chromosome`` and ``start``.
  Only tumour samples are kept (sample-type code, barcode characters 14–15, of 01–09), and one
  per patient (barcode characters 1–12): the lowest sample-type code (primary before recurrent
  before metastatic), then the first barcode. Genes with any ``NA`` among the kept samples are
  dropped. Values are RSEM-normalised counts (``expression_scale='linear'``: apply log2(x+1)).
- ``chiaretti_all`` — the Chiaretti et al. (2004) adult ALL arrays of Bioconductor's ``ALL``
  package (Debian ``r-bioc-all``): 12,625 hgu95av2 probe sets × 128 patients, RMA values on a log2
  scale. ``label``: ``lineage`` (B or T, from ``BT``; default), ``mol_biol`` (molecular subtype),
  or ``stage`` (``BT`` as is: B, B1–B4, T, T1–T4). No probe → chromosome map exists offline
  (Debian ships no ``hgu95av2.db``), so the chromosome is unknown for every probe and the image
  keeps the probe-set order of the array.
- ``golub_leukaemia`` — Golub et al. (1999) training set from Bioconductor ``multtest`` (Debian
  ``r-bioc-multtest``): 3,051 genes × 38 patients, ALL (27) vs AML (11); values already
  thresholded, log-transformed and standardised (``expression_scale='standardized'``).
- ``bladderbatch`` — Dyrskjøt et al. bladder arrays of Bioconductor ``bladderbatch`` (Debian
  ``r-bioc-bladderbatch``): 22,283 hgu133a probe sets × 57 samples, ``cancer`` labels Biopsy /
  Cancer / Normal, RMA log2. Processing batch is confounded with the labels (``info['batch']``).

``min_class_size`` drops classes with fewer samples (recorded in ``info['dropped_classes']``).
The Debian ``.rda`` files are read from ``data_dir`` (the file or its folder), else from
`R_DATA_DIR` (where ``.ci/setup`` extracts them), else from the R library of an installed package.
"""

import glob
import os
import re
from typing import Dict, List, Optional, Sequence

import numpy as np

from dlbook.data import r_objects
from dlbook.data.sources import SOURCES, RawData, stratified_split
from dlbook.errors import DlbookError, require

R_DATA_DIR = "/usr/share/dlbook-data"
R_LIBRARY = "/usr/lib/R/site-library"
GENE_ID = re.compile(r"^[^|\s]+\|\d+$")
TCGA_SAMPLE = re.compile(r"^TCGA-[A-Z0-9]{2}-[A-Z0-9]{4}-\d{2}")
SAMPLE_COLUMNS = ("sample", "barcode", "sample_id", "sampleid", "bcr_sample_barcode", "bcr_patient_barcode",
                  "patient")
TYPE_COLUMNS = ("cancer_type", "type", "acronym", "cancer type abbreviation", "_primary_disease", "disease",
                "project", "cohort")


def expression_raw(x: np.ndarray, labels: Sequence[str], samples: Sequence[str], groups: Sequence[str],
                   features: Dict[str, object], info: dict, test_fraction: float = 0.2,
                   min_class_size: int = 0) -> RawData:
  """[samples, genes] values and string labels → `RawData` with a stratified held-out test split."""
  require(0.0 < test_fraction < 1.0, f"test_fraction must be in (0, 1), got {test_fraction}")
  labels = np.asarray(labels, dtype=object)
  require(all(v is not None for v in labels), f"{info.get('source')}: some samples have no label")
  names, counts = np.unique(labels.astype(str), return_counts=True)
  dropped = {str(n): int(c) for n, c in zip(names, counts) if c < min_class_size}
  keep = ~np.isin(labels.astype(str), list(dropped))
  require(keep.any(), f"min_class_size {min_class_size} drops every class")
  x, labels = x[keep], labels[keep].astype(str)
  samples, groups = np.asarray(samples)[keep], np.asarray(groups)[keep]
  class_names = tuple(sorted(set(labels)))
  y = np.array([class_names.index(v) for v in labels], np.int32)
  test_idx, train_idx = stratified_split(y, test_fraction, seed=0)
  info = dict(info, num_samples=int(len(y)), num_genes=int(x.shape[1]), dropped_classes=dropped,
              test_split=f"stratified {test_fraction:.0%}, seed 0")
  x = np.ascontiguousarray(x, np.float32)
  return RawData(x[train_idx], y[train_idx], x[test_idx], y[test_idx], 1.0, class_names, info,
                 groups_train=groups[train_idx], groups_test=groups[test_idx],
                 samples_train=samples[train_idx], samples_test=samples[test_idx], features=features)


# ---------------------------------------------------------------------------------------------
# TCGA Pan-Cancer


def _read_table(path: str, **kwargs):
  import pandas as pd
  require(os.path.isfile(path), f"missing file {path}")
  try:
    return pd.read_csv(path, sep="\t", **kwargs)
  except Exception as e:  # pandas raises several parser error types
    raise DlbookError(f"cannot read tab-separated file {path}: {str(e).splitlines()[0][:200]}") from None


def _pick_column(columns, wanted: Sequence[str], path: str, what: str, default_first: bool = False) -> str:
  lower = {str(c).strip().lower(): c for c in columns}
  for w in wanted:
    if w in lower:
      return lower[w]
  require(default_first, f"{path} has no {what} column; expected one of {list(wanted)}, has {list(columns)[:10]}")
  return columns[0]


def _find_expression_file(path: str, expression_file: Optional[str]) -> str:
  if expression_file:
    return expression_file if os.path.isabs(expression_file) else os.path.join(path, expression_file)
  found = sorted(set(glob.glob(os.path.join(path, "*geneExp*.tsv")) + glob.glob(os.path.join(path, "expression.tsv"))))
  require(len(found) == 1, f"{path} must hold exactly one '*geneExp*.tsv' or 'expression.tsv' expression matrix "
                           f"(found {len(found)}); or set expression_file")
  return found[0]


def _sample_type_code(barcode: str) -> int:
  return int(barcode[13:15])


def _tcga_types(path: str) -> Dict[str, str]:
  table = _read_table(path, dtype=str, keep_default_na=False)
  sample_col = _pick_column(table.columns, SAMPLE_COLUMNS, path, "sample", default_first=True)
  type_col = _pick_column(table.columns, TYPE_COLUMNS, path, "cancer-type")
  types = {}
  for barcode, kind in zip(table[sample_col], table[type_col]):
    barcode, kind = str(barcode).strip(), str(kind).strip()
    require(barcode.startswith("TCGA-") and len(barcode) >= 12,
            f"{path}: {barcode!r} in column {sample_col!r} is not a TCGA barcode")
    if kind and kind.upper() not in ("NA", "NAN"):
      types[barcode] = kind
  require(bool(types), f"{path} has no labelled samples in column {type_col!r}")
  return types


def _tcga_annotation(path: str, gene_ids: List[str]):
  table = _read_table(path, dtype=str, keep_default_na=False)
  chrom_col = _pick_column(table.columns, ("chromosome", "chr", "chrom", "seqname", "chromosome_name"), path,
                           "chromosome")
  start_col = _pick_column(table.columns, ("start", "start_position", "txstart", "chromstart", "gene_start"), path,
                           "start")
  lookup = {}
  for key_cols, key_of in ((("gene_id", "gene"), lambda g: g), (("entrez", "entrez_id", "entrezgene"),
                                                                lambda g: g.split("|")[1]),
                           (("symbol", "gene_symbol", "hgnc_symbol"), lambda g: g.split("|")[0])):
    col = next((c for c in table.columns if str(c).strip().lower() in key_cols), None)
    if col is not None:
      lookup[key_of] = dict(zip(table[col].astype(str).str.strip(), zip(table[chrom_col], table[start_col])))
  require(bool(lookup), f"{path} needs a gene_id, entrez or symbol column; has {list(table.columns)}")
  chromosome, start = [], []
  for g in gene_ids:
    hit = next((table_[key_of(g)] for key_of, table_ in lookup.items() if key_of(g) in table_), None)
    chrom, pos = hit if hit is not None else ("", "")
    chromosome.append(chrom.strip() or None)
    try:
      start.append(float(pos))
    except ValueError:
      start.append(np.nan)
  return np.array(chromosome, dtype=object), np.array(start, np.float64)


@SOURCES.register("tcga_pancancer:")
def tcga_pancancer(path, data_dir=None, expression_file=None, types_file="sample_types.tsv",
                   annotation_file="gene_annotation.tsv", test_fraction=0.2, min_class_size=0, **_) -> RawData:
  require(os.path.isdir(path), f"TCGA Pan-Cancer folder {path} does not exist")
  expr_path = _find_expression_file(path, expression_file)
  with open(expr_path) as f:
    barcodes = f.readline().rstrip("\r\n").split("\t")[1:]
  bad = [b for b in barcodes if not TCGA_SAMPLE.match(b)]
  if bad:
    raise DlbookError(f"{expr_path}: column {bad[0]!r} is not a TCGA sample barcode (TCGA-XX-XXXX-01...)")
  require(len(set(barcodes)) == len(barcodes), f"{expr_path}: a sample barcode appears twice in the header")
  # float32 halves the memory of the full matrix (20,531 genes x 11,069 samples: 0.9 GB)
  frame = _read_table(expr_path, index_col=0, na_values=["NA", "NaN", ""], dtype={b: np.float32 for b in barcodes})
  gene_ids = [str(g) for g in frame.index]
  bad = [g for g in gene_ids if not GENE_ID.match(g)]
  if bad:
    raise DlbookError(f"{expr_path}: row id {bad[0]!r} is not SYMBOL|ENTREZ (e.g. 'TP53|7157')")

  types = _tcga_types(types_file if os.path.isabs(types_file) else os.path.join(path, types_file))
  tumour = [b for b in barcodes if 1 <= _sample_type_code(b) <= 9]
  labelled = {b: types.get(b, types.get(b[:15], types.get(b[:12]))) for b in tumour}
  chosen: Dict[str, str] = {}  # patient -> barcode
  for b in sorted((b for b in tumour if labelled[b] is not None), key=lambda b: (_sample_type_code(b), b)):
    chosen.setdefault(b[:12], b)
  require(bool(chosen), f"{expr_path}: no tumour sample has a cancer type in {types_file}")
  keep = sorted(chosen.values())
  values = frame[keep].to_numpy(np.float32).T  # [samples, genes]
  finite = np.isfinite(values).all(axis=0)
  annotation_path = annotation_file if os.path.isabs(annotation_file) else os.path.join(path, annotation_file)
  if os.path.isfile(annotation_path):
    chromosome, start = _tcga_annotation(annotation_path, gene_ids)
    order_note = f"chromosome and start from {os.path.basename(annotation_path)}"
  else:
    chromosome, start = np.full(len(gene_ids), None, dtype=object), np.full(len(gene_ids), np.nan)
    order_note = "no gene annotation: matrix row order"
  genes = np.array(gene_ids, dtype=object)[finite]
  info = {"source": os.path.abspath(path), "expression_file": os.path.basename(expr_path),
          "expression_scale": "linear", "gene_order": order_note,
          "normal_samples_dropped": len(barcodes) - len(tumour),
          "unlabelled_samples_dropped": sum(v is None for v in labelled.values()),
          "extra_samples_per_patient_dropped": sum(v is not None for v in labelled.values()) - len(keep),
          "genes_with_na_dropped": int((~finite).sum())}
  return expression_raw(values[:, finite], [labelled[b] for b in keep], keep, [b[:12] for b in keep],
                        {"names": genes, "chromosome": chromosome[finite], "start": start[finite]}, info,
                        test_fraction, min_class_size)


# ---------------------------------------------------------------------------------------------
# Debian Bioconductor data packages


def r_data_file(filename: str, package: str, debian_package: str, data_dir: Optional[str] = None) -> str:
  """Path of a Bioconductor data file: `data_dir` (file or folder), `R_DATA_DIR`, or the R library."""
  if data_dir:
    candidate = data_dir if os.path.isfile(data_dir) else os.path.join(data_dir, filename)
    require(os.path.isfile(candidate), f"missing R data file {candidate}")
    return candidate
  for candidate in (os.path.join(R_DATA_DIR, filename), os.path.join(R_LIBRARY, package, "data", filename)):
    if os.path.isfile(candidate):
      return candidate
  raise DlbookError(f"{filename} not found in {R_DATA_DIR} or {R_LIBRARY}/{package}/data: run .ci/setup, or "
                    f"'apt-get download {debian_package}' and 'dpkg -x' it, and set data_dir to the file")


def _unknown_annotation(names) -> Dict[str, object]:
  return {"names": np.asarray(names, dtype=object), "chromosome": np.full(len(names), None, dtype=object),
          "start": np.full(len(names), np.nan)}


def _bioconductor_set(filename, package, debian_package, data_dir, object_name, columns):
  """(path, ExpressionSet parts) of `object_name` in a Bioconductor data file, with `columns` in its phenoData."""
  path = r_data_file(filename, package, debian_package, data_dir)
  objects = r_objects.read_r_objects(path)
  require(object_name in objects, f"{path} has no {object_name!r} object (has {sorted(objects)})")
  es = r_objects.expression_set(objects[object_name])
  missing = [c for c in columns if c not in es["pheno"]]
  require(not missing, f"{path}: phenoData lacks the columns {missing}")
  return path, es


CHIARETTI_LABELS = ("lineage", "mol_biol", "stage")


@SOURCES.register("chiaretti_all")
def chiaretti_all(data_dir=None, label="lineage", test_fraction=0.2, min_class_size=0, **_) -> RawData:
  require(label in CHIARETTI_LABELS, f"unknown chiaretti_all label {label!r}; valid: {', '.join(CHIARETTI_LABELS)}")
  path, es = _bioconductor_set("ALL.rda", "ALL", "r-bioc-all", data_dir, "ALL", ("BT", "mol.biol"))
  pheno = es["pheno"]
  stage = pheno["BT"]
  labels = {"lineage": [s[0] for s in stage], "stage": stage, "mol_biol": pheno["mol.biol"]}[label]
  samples = es["samples"]
  info = {"source": path, "dataset": "Chiaretti et al. 2004 adult ALL (Bioconductor ALL, hgu95av2, RMA)",
          "label": label, "expression_scale": "log2",
          "gene_order": "probe-set order of the array (no offline hgu95av2 chromosome map)"}
  return expression_raw(es["exprs"].T, labels, samples, samples, _unknown_annotation(es["features"]), info,
                        test_fraction, min_class_size)


@SOURCES.register("golub_leukaemia")
def golub_leukaemia(data_dir=None, test_fraction=0.2, min_class_size=0, **_) -> RawData:
  path = r_data_file("golub.RData", "multtest", "r-bioc-multtest", data_dir)
  objects = r_objects.read_r_objects(path)
  missing = [k for k in ("golub", "golub.cl", "golub.gnames") if k not in objects]
  require(not missing, f"{path} lacks objects {missing}")
  x = r_objects.vector(objects["golub"]).T  # [38 samples, 3051 genes]
  cl = r_objects.vector(objects["golub.cl"]).astype(int)
  names = np.array(r_objects.strings(objects["golub.gnames"]), dtype=object).reshape(-1, 3, order="F")[:, 2]
  samples = [f"golub_{i + 1:02d}" for i in range(len(cl))]
  info = {"source": path, "dataset": "Golub et al. 1999 training set (Bioconductor multtest)",
          "expression_scale": "standardized", "gene_order": "order of the matrix (no chromosome map)"}
  return expression_raw(x, [("ALL", "AML")[c] for c in cl], samples, samples, _unknown_annotation(names), info,
                        test_fraction, min_class_size)


@SOURCES.register("bladderbatch")
def bladderbatch(data_dir=None, test_fraction=0.2, min_class_size=0, **_) -> RawData:
  path, es = _bioconductor_set("bladderdata.rda", "bladderbatch", "r-bioc-bladderbatch", data_dir, "bladderEset",
                               ("cancer", "batch"))
  pheno = es["pheno"]
  info = {"source": path, "dataset": "bladder cancer arrays (Bioconductor bladderbatch, hgu133a, RMA)",
          "expression_scale": "log2", "gene_order": "probe-set order of the array (no offline chromosome map)",
          "batch": {s: int(b) for s, b in zip(es["samples"], pheno["batch"])}}
  return expression_raw(es["exprs"].T, pheno["cancer"], es["samples"], es["samples"],
                        _unknown_annotation(es["features"]), info, test_fraction, min_class_size)
