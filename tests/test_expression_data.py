"""Expression sources: the TCGA Pan-Cancer layout on generated files, and the real Debian expression sets."""

import os

import numpy as np
import pytest

from dlbook.data import load_raw
from dlbook.data.expression import R_DATA_DIR
from dlbook.data.splits import check_groups_disjoint
from dlbook.data.transforms import fit_expression_image
from dlbook.errors import DlbookError

GENES = ["TP53|7157", "?|100130426", "BRCA1|672", "EGFR|1956", "MYC|4609", "KRAS|3845", "XIST|7503", "SRY|6736"]
ANNOTATION = {"TP53|7157": ("17", 7661779), "BRCA1|672": ("17", 43044295), "EGFR|1956": ("7", 55019017),
              "MYC|4609": ("8", 127735434), "KRAS|3845": ("12", 25205246), "XIST|7503": ("X", 73820651),
              "SRY|6736": ("Y", 2786855)}


def _barcode(tss, participant, code, vial="A"):
  return f"TCGA-{tss}-{participant:04d}-{code:02d}{vial}-11R-A29S-07"


def write_tcga(root, *, bad_row=None, bad_column=None, bad_value=False, with_annotation=True):
  """Six patients per type over 3 types; one patient with a second tumour sample, normals, an unlabelled one."""
  rng = np.random.default_rng(0)
  columns, types = [], []
  for t, (kind, tss) in enumerate((("BRCA", "A1"), ("LUAD", "B2"), ("KIRC", "C3"))):
    for p in range(6):
      columns.append(_barcode(tss, p, 1))
      types.append((f"TCGA-{tss}-{p:04d}", kind))  # the table is keyed by patient (12 characters)
  columns += [_barcode("A1", 0, 6), _barcode("A1", 1, 11), _barcode("B2", 0, 1, "B"), _barcode("D4", 9, 1)]
  values = rng.gamma(2.0, 50.0, (len(GENES), len(columns)))
  values[7, 3] = np.nan  # one NA: the gene is dropped
  rows = list(GENES) if bad_row is None else list(GENES[:-1]) + [bad_row]
  cols = list(columns) if bad_column is None else columns[:-1] + [bad_column]
  with open(os.path.join(root, "EBPlusPlusAdjustPANCAN_IlluminaHiSeq_RNASeqV2.geneExp.tsv"), "w") as f:
    f.write("gene_id\t" + "\t".join(cols) + "\n")
    for g, row in zip(rows, values):
      cells = ["NA" if np.isnan(v) else f"{v:.4f}" for v in row]
      if bad_value and g == "MYC|4609":
        cells[2] = "high"
      f.write(g + "\t" + "\t".join(cells) + "\n")
  with open(os.path.join(root, "sample_types.tsv"), "w") as f:
    f.write("bcr_patient_barcode\ttype\n" + "".join(f"{b}\t{k}\n" for b, k in types))
  if with_annotation:
    with open(os.path.join(root, "gene_annotation.tsv"), "w") as f:
      f.write("gene_id\tchromosome\tstart\n" + "".join(f"{g}\t{c}\t{s}\n" for g, (c, s) in ANNOTATION.items()))
  return columns, values


def test_tcga_layout(tmp_path):
  columns, values = write_tcga(tmp_path)
  raw = load_raw(f"tcga_pancancer:{tmp_path}")
  assert raw.class_names == ("BRCA", "KIRC", "LUAD")
  samples = np.concatenate([raw.samples_train, raw.samples_test])
  assert len(samples) == 18  # one tumour sample per patient; normal, duplicate and unlabelled ones dropped
  assert _barcode("A1", 0, 1) in samples and _barcode("A1", 0, 6) not in samples  # primary before metastatic
  assert _barcode("B2", 0, 1, "A") in samples and _barcode("B2", 0, 1, "B") not in samples
  assert raw.info["normal_samples_dropped"] == 1 and raw.info["unlabelled_samples_dropped"] == 1
  assert raw.info["genes_with_na_dropped"] == 1 and raw.x_train.shape[1] == 7
  check_groups_disjoint(np.concatenate([raw.groups_train, raw.groups_test]),
                        {"train": np.arange(len(raw.groups_train)),
                         "test": len(raw.groups_train) + np.arange(len(raw.groups_test))})
  assert all(g == s[:12] for g, s in zip(raw.groups_train, raw.samples_train))
  i = list(raw.samples_train).index(_barcode("C3", 2, 1))  # values survive the reshuffle as floats
  np.testing.assert_allclose(raw.x_train[i], values[:7, columns.index(_barcode("C3", 2, 1))], rtol=1e-4)
  assert raw.class_names[raw.y_train[i]] == "KIRC"
  chrom = dict(zip(raw.features["names"], raw.features["chromosome"]))
  assert chrom["EGFR|1956"] == "7" and chrom["?|100130426"] is None
  fitted = fit_expression_image(raw.x_train, raw.features["chromosome"], raw.features["start"])
  order = [raw.features["names"][g] for g in fitted.genes]
  assert order == ["EGFR|1956", "MYC|4609", "KRAS|3845", "TP53|7157", "BRCA1|672", "XIST|7503", "?|100130426"]
  assert fitted.side == 3


def test_tcga_without_annotation_keeps_row_order(tmp_path):
  write_tcga(tmp_path, with_annotation=False)
  raw = load_raw(f"tcga_pancancer:{tmp_path}")
  assert "no gene annotation" in raw.info["gene_order"]
  assert list(raw.features["names"]) == GENES[:7]


@pytest.mark.parametrize("kind,match", [("row", "is not SYMBOL|ENTREZ"), ("column", "is not a TCGA sample barcode"),
                                        ("value", "cannot read tab-separated file .*high"),
                                        ("missing", "exactly one")])
def test_tcga_rejects_malformed_layouts(tmp_path, kind, match):
  if kind == "row":
    write_tcga(tmp_path, bad_row="SRY")
  elif kind == "column":
    write_tcga(tmp_path, bad_column="patient_17")
  elif kind == "value":
    write_tcga(tmp_path, bad_value=True)
  with pytest.raises(DlbookError, match=match) as e:
    load_raw(f"tcga_pancancer:{tmp_path}")
  assert "\n" not in str(e.value)


def _need(filename):
  if not os.path.isfile(os.path.join(R_DATA_DIR, filename)):
    pytest.skip(f"{R_DATA_DIR}/{filename} absent (run .ci/setup as root)")


def test_chiaretti_all_real_data():
  _need("ALL.rda")
  raw = load_raw("chiaretti_all")
  assert raw.x_train.shape[1] == raw.x_test.shape[1] == 12625
  assert len(raw.y_train) + len(raw.y_test) == 128 and raw.class_names == ("B", "T")
  assert np.bincount(np.concatenate([raw.y_train, raw.y_test])).tolist() == [95, 33]
  assert raw.features["names"][0] == "1000_at" and raw.info["expression_scale"] == "log2"
  assert 1.0 < raw.x_train.min() and raw.x_train.max() < 16.0  # RMA values on a log2 scale
  assert not set(raw.groups_train) & set(raw.groups_test)
  sub = load_raw("chiaretti_all", label="mol_biol", min_class_size=5)
  assert sub.class_names == ("ALL1/AF4", "BCR/ABL", "E2A/PBX1", "NEG")
  assert sub.info["dropped_classes"] == {"NUP-98": 1, "p15/p16": 1}
  with pytest.raises(DlbookError, match="unknown chiaretti_all label"):
    load_raw("chiaretti_all", label="sex")


def test_golub_and_bladderbatch_real_data():
  _need("golub.RData")
  _need("bladderdata.rda")
  golub = load_raw("golub_leukaemia")
  assert golub.x_train.shape[1] == 3051 and golub.class_names == ("ALL", "AML")
  assert np.bincount(np.concatenate([golub.y_train, golub.y_test])).tolist() == [27, 11]
  assert golub.features["names"][0] == "AFFX-HUMISGF3A/M97935_MA_at"
  bladder = load_raw("bladderbatch")
  assert bladder.x_train.shape[1] == 22283 and bladder.class_names == ("Biopsy", "Cancer", "Normal")
  assert len(bladder.y_train) + len(bladder.y_test) == 57


def test_missing_r_data_file_is_one_line(tmp_path):
  with pytest.raises(DlbookError, match="missing R data file"):
    load_raw("chiaretti_all", data_dir=str(tmp_path))
  bad = tmp_path / "ALL.rda"
  bad.write_bytes(b"not an R file at all")
  with pytest.raises(DlbookError, match="cannot read R data file"):
    load_raw("chiaretti_all", data_dir=str(bad))
