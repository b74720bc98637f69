"""Generated tables of the steganography experiments (book Tables 7.1 and 8.1-8.3).

`write_tables` regenerates
docs/stego_table_7_1.md and docs/stego_tables_8.md from the results.json files of finished runs
(`python -m experiments.stego --tables_from=RUNS_DIR`): runs are grouped by their config minus the
seed, and two groups claiming the same table cell are an error.
"""

import glob
import json
import os
import shutil

import numpy as np

from dlbook.errors import DlbookError, require
from dlbook.tables import STD_NOTE, mean_std, module_command
from dlbook.training.reporting import write_text_atomic


# The book's claimed figures (seed 000, Tables 7.1, 8.1-8.3), shown for reference only.
BOOK_7_1 = {1: (39.27, 0.9375, 99.58, 50), 2: (35.77, 0.9072, 96.34, 47), 3: (32.66, 0.8935, 92.52, 39)}
BOOK_8_1 = {"conventional": (73.81, 0.9351, 70.58, 50.22, 44), "early": (74.30, 0.9490, 72.78, 72.68, 47),
            "mid": (74.20, 0.9349, 89.84, 96.80, 28.90), "late": (74.32, 0.9494, 99.93, 99.99, 50)}
BOOK_8_3 = {1: (77.04, 0.9658, 99.99, 99.99, 50), 2: (74.32, 0.9494, 99.93, 99.99, 50),
            3: (75.11, 0.9457, 50.13, 95.88, 22.1)}
EMBEDDING_ORDER = ("conventional", "early", "mid", "late")


def load_runs(runs_dir: str):
  """results.json payloads under `runs_dir`, grouped by (config without seed)."""
  paths = sorted(glob.glob(os.path.join(runs_dir, "**", "results.json"), recursive=True))
  require(bool(paths), f"no results.json files under {runs_dir}")
  groups = {}
  for path in paths:
    with open(path) as f:
      payload = json.load(f)
    payload["_dir"] = os.path.dirname(path)
    key = json.dumps({k: v for k, v in payload["config"].items() if k != "seed"}, sort_keys=True)
    groups.setdefault(key, []).append(payload)
  return [sorted(g, key=lambda p: p["seed"]) for g in groups.values()]


def cell_of(config: dict):
  """(table family, method, embedding, payload) a run belongs to."""
  method = config["method"]
  embedding = config.get("embedding") if method == "multi_message" else None
  return method, embedding, float(config["payload_bpp"])


def index_runs(groups):
  cells = {}
  for runs in groups:
    cell = cell_of(runs[0]["config"])
    if cell in cells:
      raise DlbookError(f"two different configs claim the table cell {cell}: {cells[cell][0]['_dir']} and "
                        f"{runs[0]['_dir']}; keep one config per cell in the runs directory")
    cells[cell] = runs
  return cells


def stat(runs, key, scale=1.0, digits=2):
  return mean_std([r["metrics"].get(key) for r in runs], digits=digits, scale=scale)


def sizes(runs) -> str:
  c = runs[0]["config"]
  if c["method"] == "lsb":
    return "—"
  p = runs[0].get("num_params", {})
  return (f"G {tuple(c['generator']['channels'])}, shortcut={c['generator']['cover_shortcut']} "
          f"({p.get('generator', 0) / 1e6:.2f}M); extractor {tuple(c['extractor']['channels'])}, "
          f"head_side={c['extractor']['head_side']} ({sum(p.get('extractors', [0])) / 1e6:.2f}M); "
          f"steganalyzer {tuple(c['steganalyzer']['channels'])}")


def provenance(cells, keys) -> list:
  lines = ["| run | seeds | command (seed 0 / first seed) | data | preset | steps | network sizes (params) | "
           "wall time per seed (s) |", "|---|---|---|---|---|---|---|---|"]
  for key in keys:
    runs = cells.get(key)
    if not runs:
      continue
    c = runs[0]["config"]
    name = label(key)
    walls = ", ".join(f"{r['wall_time_s']:.0f}" for r in runs)
    cmd = module_command(runs[0].get("command", "")).replace("|", "\\|")
    lines.append(f"| {name} | {', '.join(str(r['seed']) for r in runs)} | `{cmd}` | {c['data']['name']} | "
                 f"{c['preset']} | {'no training' if c['method'] == 'lsb' else str(c['num_train_steps']) + ' GAN'} + "
                 f"{c['xunet']['num_train_steps'] if c['xunet']['enabled'] else 0} XuNet | "
                 f"{sizes(runs)} | {walls} |")
  return lines


def label(key) -> str:
  method, embedding, bpp = key
  return f"{method}{'_' + embedding if embedding else ''}_{bpp:g}bpp"


def metric_rows(cells, keys, rows):
  out = []
  for title, metric, scale, digits in rows:
    out.append(f"| {title} | " + " | ".join(stat(cells[k], metric, scale, digits) if k in cells else "not run"
                                             for k in keys) + " |")
  return out


QUALITY_ROWS = [("PSNR (dB, 8-bit, MAX=255)", "psnr", 1.0, 2), ("SSIM", "ssim", 1.0, 4)]
SECURITY_ROWS = [("Steganalyzer error, adversary trained with the GAN (%)", "steganalyzer_error", 1.0, 1),
                 ("Steganalysis error, independent XuNet (%)", "xunet_error", 1.0, 1)]
BOOK_STYLE_ROWS = [("book-style 'PSNR', MAX=255 on [0,1] images (not a valid PSNR)",
                    "psnr_book_style_max255_unit_range", 1.0, 2),
                   ("book-style 'PSNR', MAX=255 on [-1,1] images (not a valid PSNR)",
                    "psnr_book_style_max255_symmetric_range", 1.0, 2)]


def header(first: str, keys) -> list:
  return ["| " + first + " | " + " | ".join(f"{k[2]:g} bpp" if first == "" else label(k) for k in keys) + " |",
          "|---" * (len(keys) + 1) + "|"]


def copy_figures(cells, docs_dir) -> list:
  written = []
  fig_dir = os.path.join(docs_dir, "figures")
  os.makedirs(fig_dir, exist_ok=True)
  for key, runs in sorted(cells.items(), key=lambda kv: str(kv[0])):
    src = os.path.join(runs[0]["_dir"], "examples.png")
    if os.path.exists(src):
      dst = os.path.join(fig_dir, f"stego_{label(key)}.png")
      shutil.copyfile(src, dst)
      written.append(dst)
  return written


def seeds_note(cells, keys) -> str:
  counts = sorted({len(cells[k]) for k in keys if k in cells})
  return (f"Cells are the {STD_NOTE}; seeds per cell: "
          f"{', '.join(str(c) for c in counts) or 'none'} (a single value means one seed). ")


def write_tables(runs_dir: str, docs_dir: str) -> list:
  """Writes docs/stego_table_7_1.md and docs/stego_tables_8.md (+ figures); returns the paths."""
  cells = index_runs(load_runs(runs_dir))
  os.makedirs(docs_dir, exist_ok=True)
  bpps = (1.0, 2.0, 3.0)
  acc1 = [("Extraction accuracy (%)", "extraction_accuracy", 1.0, 2)]
  gen = ("Generated by `python -m experiments.stego --tables_from=RUNS_DIR` from the results.json files; never edit "
         "by hand.")

  lines = ["# Book Table 7.1: two-stage depth-balanced GAN at 1, 2 and 3 bpp", "", gen, "",
           seeds_note(cells, [k for k in cells if k[0] in ("two_stage", "lsb", "gsivat")]) +
           "PSNR and SSIM are computed on the 8-bit cover and the 8-bit stego image (rounded as a PNG would be); "
           "extraction accuracy is read from the 8-bit stego image.", ""]
  for method, title in (("two_stage", "Two-stage depth-balanced GAN (ch. 7)"), ("gsivat", "GSIVAT baseline (§6.3.4)"),
                        ("lsb", "LSB replacement baseline")):
    keys = [(method, None, b) for b in bpps]
    if not any(k in cells for k in keys):
      continue
    lines += [f"## {title}", ""] + header("", keys)
    lines += metric_rows(cells, keys, QUALITY_ROWS + acc1 + SECURITY_ROWS + BOOK_STYLE_ROWS) + [""]
  lines += ["## The book's claimed Table 7.1 (DICOM, 512×512 images; for reference, not reproduced settings)", "",
            "| | 1 bpp | 2 bpp | 3 bpp |", "|---|---|---|---|"]
  for i, name in enumerate(("PSNR", "SSIM", "Extraction accuracy (%)", "Steganalyzer error (%)")):
    lines.append(f"| {name} | " + " | ".join(f"{BOOK_7_1[b][i]}" for b in (1, 2, 3)) + " |")
  keys71 = [(m, None, b) for m in ("two_stage", "gsivat", "lsb") for b in bpps]
  lines += ["", "## Runs", ""] + provenance(cells, keys71) + [""]
  path71 = os.path.join(docs_dir, "stego_table_7_1.md")
  write_text_atomic(path71, "\n".join(lines))

  two = [("Extractor 1 accuracy (%)", "extraction_accuracy_1", 1.0, 2),
         ("Extractor 2 accuracy (%)", "extraction_accuracy_2", 1.0, 2)]
  keys81 = [("multi_message", e, 2.0) for e in EMBEDDING_ORDER]
  keys83 = [("multi_message", "late", b) for b in bpps]
  base2 = [(m, None, 2.0) for m in ("gsivat", "lsb")]
  lines = ["# Book Tables 8.1-8.3: multiple secret messages (two receivers)", "", gen, "",
           seeds_note(cells, keys81 + keys83) + "The payload is split equally between the two messages.", "",
           "## Table 8.1: the four generators at 2 bpp", ""] + header("generator", keys81)
  lines += metric_rows(cells, keys81, QUALITY_ROWS + two + BOOK_STYLE_ROWS)
  lines += ["", "## Table 8.2: security of the four generators at 2 bpp (independent XuNet)", ""]
  lines += header("generator", keys81) + metric_rows(cells, keys81, SECURITY_ROWS)
  lines += ["", "## Table 8.3: late embedding at 1, 2 and 3 bpp", ""] + header("", keys83)
  lines += metric_rows(cells, keys83, QUALITY_ROWS + two + SECURITY_ROWS + BOOK_STYLE_ROWS)
  if any(k in cells for k in base2):
    lines += ["", "## Baselines at 2 bpp (one message)", ""] + header("method", base2)
    lines += metric_rows(cells, base2, QUALITY_ROWS + acc1 + SECURITY_ROWS)
  lines += ["", "## The book's claimed Tables 8.1-8.3 (CelebA; for reference)", "",
            "| generator / payload | 'PSNR' | SSIM | extractor 1 (%) | extractor 2 (%) | steganalyzer error (%) |",
            "|---|---|---|---|---|---|"]
  lines += [f"| {e}, 2 bpp | " + " | ".join(str(v) for v in BOOK_8_1[e]) + " |" for e in EMBEDDING_ORDER]
  lines += [f"| late, {b} bpp | " + " | ".join(str(v) for v in BOOK_8_3[b]) + " |" for b in (1, 2, 3)]
  lines += ["", "## Runs", ""] + provenance(cells, keys81 + keys83[:1] + keys83[2:] + base2) + [""]
  path8 = os.path.join(docs_dir, "stego_tables_8.md")
  write_text_atomic(path8, "\n".join(lines))
  return [path71, path8] + copy_figures(cells, docs_dir)
