"""The results table of docs/gan.md, generated from finished runs' results.json.

Nothing in the table is typed by hand: every number comes from a run directory's
results.json, and each run's final sample grid is copied next to the document.
"""

import json
import os
import re
import shutil
from typing import List, Sequence

from dlbook.errors import require
from dlbook.tables import module_command
from dlbook.training.reporting import write_text_atomic

BEGIN, END = "<!-- gan-results:begin -->", "<!-- gan-results:end -->"


def load_run(run_dir: str) -> dict:
  path = os.path.join(run_dir, "results.json")
  require(os.path.exists(path), f"{run_dir} has no results.json (is the run finished?)")
  with open(path) as f:
    results = json.load(f)
  results["run_dir"] = run_dir
  return results


def run_name(results: dict) -> str:
  """The GAN, plus the options that set this run apart from its preset (ACGAN conditioning, ADA, loss)."""
  c = results["config"]
  parts = [c["gan"]]
  if c["gan"] == "acgan":
    parts.append(c["model"].get("conditioning", "concat"))
  if c["data"].get("limit_train"):
    parts.append(f"{c['data']['limit_train']}_images")
  if c.get("ada", {}).get("enabled"):
    parts.append("ada")
  if c.get("loss"):
    parts.append(c["loss"])
  return "_".join(parts)


def figure_name(results: dict) -> str:
  data = re.sub(r"[^a-z0-9]+", "_", results["config"]["data"]["name"].lower()).strip("_")
  return f"gan_{run_name(results)}_{data}.png"


def wall_s(results: dict) -> float:
  """Wall time of the whole run, summed over resumed invocations."""
  return float(results["wall_time_s"])


def _fmt(value, digits: int = 3) -> str:
  return "–" if value is None else f"{value:.{digits}f}"


def table(runs: Sequence[dict], figures_rel: str) -> List[str]:
  lines = ["| run | loss | data | steps (G) × n_critic | wall time | final D loss | final G loss | W estimate | "
           "classifier score (real) | class coverage (real) | within-class diversity | class consistency |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in runs:
    c, m = r["config"], r["metrics"]
    size = r["dataset"].get("train_size")
    side = c["data"].get("image_size")
    data = c["data"]["name"] + (f" {side}×{side}" if side else "") + (f", {size:,} images" if size else "")
    score = (f"{_fmt(m.get('classifier_score'), 2)} ({_fmt(m.get('classifier_score_real'), 2)})"
             if "classifier_score" in m else "–")
    coverage = (f"{_fmt(m.get('class_coverage'))} ({_fmt(m.get('class_coverage_real'))})"
                if "class_coverage" in m else "–")
    lines.append(
        f"| {run_name(r)} | {r.get('loss', c['loss'])} | {data} | {r['total_steps']} × {c['n_critic']} | "
        f"{wall_s(r) / 60:.1f} min | {_fmt(m.get('final_d_loss'))} | {_fmt(m.get('final_g_loss'))} | "
        f"{_fmt(m.get('final_wasserstein_estimate'))} | {score} | {coverage} | "
        f"{_fmt(m.get('within_class_diversity'))} | {_fmt(m.get('class_consistency'))} |")
  lines.append("")
  lines.append("Final losses are means over the last `log_every_steps` generator steps; the D loss of WGAN-GP "
               "includes the penalty, and W estimate = E D(x) − E D(G(z)) on the last batches. Wall time includes "
               "data loading, compilation and scoring, summed over invocations when a run was killed and "
               "resumed (a killed invocation counts up to its last checkpoint).")
  lines.append("")
  for r in runs:
    lines.append(f"**{run_name(r)}** ({r['total_steps']} generator steps):")
    lines.append("")
    lines.append(f"![{run_name(r)} samples]({figures_rel}/{figure_name(r)})")
    lines.append("")
  lines.append("Commands, seeds and the reference classifier (chain CNN trained on the real training images):")
  lines.append("")
  for r in runs:
    m = r["metrics"]
    acc = m.get("classifier_test_accuracy")
    lines.append(f"- {run_name(r)}: `{module_command(r['command'])}` — seed {r['seed']}, {wall_s(r):.0f} s wall"
                 + (f" over two or more invocations (resumed at step {r['resumed_from_step']})"
                    if r.get("resumed_from_step") else "") + f" on "
                 f"{r['backend']} ({', '.join(r['devices'])}), {r['train_steps_per_s']:.2f} G steps/s"
                 + (f"; classifier test accuracy {acc:.4f} after {m['classifier_steps']} steps, "
                    f"{m['eval_samples']} samples scored" if acc is not None else ""))
    if "class_consistency_per_class" in m:
      per = ", ".join(f"{k} {v:.2f}" for k, v in m["class_consistency_per_class"].items())
      lines.append(f"  - class consistency per class: {per}")
  return lines


def update_docs(run_dirs: Sequence[str], docs_path: str, figures_dir: str) -> str:
  """Copies each run's samples.png into `figures_dir` and rewrites the table between the markers."""
  runs = [load_run(d) for d in run_dirs]
  os.makedirs(figures_dir, exist_ok=True)
  for r in runs:
    shutil.copyfile(os.path.join(r["run_dir"], "samples.png"), os.path.join(figures_dir, figure_name(r)))
  rel = os.path.relpath(figures_dir, os.path.dirname(os.path.abspath(docs_path)))
  block = "\n".join([BEGIN, *table(runs, rel), END])
  text = open(docs_path).read() if os.path.exists(docs_path) else f"# GANs\n\n{BEGIN}\n{END}\n"
  require(BEGIN in text and END in text, f"{docs_path} lacks the markers {BEGIN} ... {END}")
  text = text[:text.index(BEGIN)] + block + text[text.index(END) + len(END):]
  write_text_atomic(docs_path, text)
  return docs_path
