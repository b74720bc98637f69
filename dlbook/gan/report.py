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

BEGIN, END = "<!-- gan-results:begin -->", "<!-- gan-results:end -->"


def load_run(run_dir: str) -> dict:
  path = os.path.join(run_dir, "results.json")
  require(os.path.exists(path), f"{run_dir} has no results.json (is the run finished?)")
  with open(path) as f:
    results = json.load(f)
  results["run_dir"] = run_dir
  return results


def figure_name(results: dict) -> str:
  data = re.sub(r"[^a-z0-9]+", "_", results["config"]["data"]["name"].lower()).strip("_")
  return f"gan_{results['config']['gan']}_{data}.png"


def _fmt(value, digits: int = 3) -> str:
  return "–" if value is None else f"{value:.{digits}f}"


def table(runs: Sequence[dict], figures_rel: str) -> List[str]:
  lines = ["| GAN | loss | data | steps (G) × n_critic | wall time | final D loss | final G loss | "
           "classifier score (real) | class coverage (real) | class consistency | samples |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in runs:
    c, m = r["config"], r["metrics"]
    data = f"{c['data']['name']} {c['data']['image_size']}×{c['data']['image_size']}"
    score = (f"{_fmt(m.get('classifier_score'), 2)} ({_fmt(m.get('classifier_score_real'), 2)})"
             if "classifier_score" in m else "–")
    coverage = (f"{_fmt(m.get('class_coverage'))} ({_fmt(m.get('class_coverage_real'))})"
                if "class_coverage" in m else "–")
    lines.append(
        f"| {c['gan']} | {r.get('loss', c['loss'])} | {data} | {r['total_steps']} × {c['n_critic']} | "
        f"{r['wall_time_s'] / 60:.1f} min | {_fmt(m.get('final_d_loss'))} | {_fmt(m.get('final_g_loss'))} | "
        f"{score} | {coverage} | {_fmt(m.get('class_consistency'))} | "
        f"[grid]({figures_rel}/{figure_name(r)}) |")
  lines.append("")
  lines.append("Commands, seeds and the reference classifier (chain CNN trained on the real training images):")
  lines.append("")
  for r in runs:
    m = r["metrics"]
    acc = m.get("classifier_test_accuracy")
    lines.append(f"- {r['config']['gan']}: `{r['command']}` — seed {r['seed']}, {r['wall_time_s']:.0f} s wall on "
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
  tmp = docs_path + ".tmp"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, docs_path)
  return docs_path
