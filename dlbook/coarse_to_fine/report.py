"""The report of a coarse-to-fine grid (book Tables 4.1-4.6 and a PSF accuracy figure).

`write_report(config, workdir)` reads every finished unit's results.json under `workdir` and writes
`table.md`, `psf_accuracy.png` and the grid's results.json (a partial grid is labelled partial).
"""

import glob
import json
import os
import shutil
from fractions import Fraction
from typing import Dict, List, Optional

import numpy as np

from dlbook.coarse_to_fine.grid import grid_runs
from dlbook.errors import require
from dlbook.tables import STD_NOTE, mean_std, module_command
from dlbook.training import reporting
from dlbook.training.reporting import write_text_atomic


def collect_runs(workdir: str) -> List[dict]:
  """Every finished fine-tuning run's results.json under `workdir`."""
  out = []
  for path in sorted(glob.glob(os.path.join(workdir, "data_*", "seed_*", "*", "results.json"))):
    with open(path) as f:
      payload = json.load(f)
    if payload.get("mode"):
      out.append(payload)
  return out


def _mean_std(values) -> str:
  return mean_std(values, digits=2, scale=100.0, one=" (1 seed)")


def _params(x) -> str:
  return f"{x:,.0f}" if float(x) == int(x) else f"{x:,.1f}"


def _ordinal(i: int) -> str:
  return f"{i}{'th' if 10 <= i % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(i % 10, 'th')}"


def summarize(runs: List[dict]) -> dict:
  """Rows of the main table and the PSF per-iteration tables, mean ± std over seeds."""
  by_cell: Dict = {}
  for r in runs:
    by_cell.setdefault((r["label"], r["train_fraction"]), []).append(r)
  trad = {(r["train_fraction"], r["seed"]): r["metrics"]["test_accuracy"] for r in runs if r["mode"] == "traditional"}
  order = {"traditional": 0, "ssf": 1, "psf": 2}
  rows = []
  for (label, fraction), rs in sorted(by_cell.items(), key=lambda kv: (order[kv[1][0]["mode"]],
                                                                       -kv[1][0]["freeze_fraction"], kv[0][1])):
    r0 = rs[0]
    accs = [r["metrics"]["test_accuracy"] for r in rs]
    deltas = [r["metrics"]["test_accuracy"] - trad[(fraction, r["seed"])] for r in rs
              if (fraction, r["seed"]) in trad]
    rows.append(dict(label=label, method=r0["method"], mode=r0["mode"], fraction=fraction, P1=r0["P1"],
                     P2=float(np.mean(r0["P2"])), accuracy=accs, seeds=sorted(r["seed"] for r in rs),
                     coarse=[r["metrics"]["coarse_test_accuracy"] for r in rs], delta=deltas,
                     window=r0.get("psf_window"), iterations=[r["iterations"] for r in rs]))
  return {"rows": rows}


def table_markdown(config, runs: List[dict], expected: int) -> str:
  rows = summarize(runs)["rows"]
  c = config
  lines = [f"# Coarse-to-fine training with selective freezing on {c.data.name} (generated)", ""]
  if len(runs) < expected:
    lines += [f"**PARTIAL RESULTS: {len(runs)} of {expected} runs of the grid have finished.** "
              "Rows show whatever seeds exist so far.", ""]
  r0 = runs[0] if runs else {}
  walls = [r["fine_wall_time_s"] for r in runs]
  coarse_walls = {(r["train_fraction"], r["seed"]): r["coarse_wall_time_s"] for r in runs}
  commands = sorted({module_command(r["command"]) for r in runs})
  lines += [
      "- Command: " + "; ".join(f"`{cmd}`" for cmd in commands),
      f"- Network: `{c.model_name}` {json.dumps(c.model.to_dict())}; {r0.get('num_blocks', '?')} blocks "
      f"({', '.join(r0.get('blocks', []))})",
      f"- Data: `{c.data.name}`, train fractions {list(c.train_fractions)}, limit_train={c.data.limit_train}, "
      f"val_fraction={c.data.val_fraction}; accuracy is on the full test split "
      f"({r0.get('dataset', {}).get('test_size', '?')} images)",
      f"- Epochs: coarse {c.coarse_epochs if not c.coarse_epochs_by_fraction else list(c.coarse_epochs_by_fraction)}"
      f" + fine {c.fine_epochs} (traditional trains the same total without freezing; PSF splits the fine "
      f"epochs evenly over its iterations); batch {c.batch_size}; optimizer {c.optimizer.name} lr "
      f"{c.optimizer.learning_rate} {c.optimizer.schedule} over the whole run, weight decay "
      f"{c.optimizer.weight_decay}",
      f"- Seeds: {sorted({r['seed'] for r in runs})}; accuracy is the {STD_NOTE}; Δ is the "
      f"paired difference to traditional training with the same seed and data (same coarse phase)",
      f"- Wall time: {sum(coarse_walls.values()) + sum(walls):.0f} s in total "
      f"({sum(coarse_walls.values()):.0f} s shared coarse phases, {sum(walls):.0f} s fine-tuning), "
      f"on {r0.get('backend', '?')} {r0.get('devices', [''])[0] if r0 else ''}",
      "", "## Traditional vs coarse-to-fine (layout of book Tables 4.1-4.3)", "",
      "| Training method | Data (%) | P1 | P2 | (P1+P2)/2 | Accuracy (%) | Δ vs traditional (pp) | "
      "After coarse only (%) |",
      "|---|---|---|---|---|---|---|---|"]
  for r in rows:
    p2 = "—" if r["mode"] == "traditional" else _params(r["P2"])
    avg = r["P1"] if r["mode"] == "traditional" else (r["P1"] + r["P2"]) / 2
    name = r["method"] + (" (last iteration)" if r["mode"] == "psf" else "")
    delta = "—" if r["mode"] == "traditional" or not r["delta"] else _mean_std(r["delta"]).replace(" (1 seed)", "")
    lines.append(f"| {name} | {round(100 * r['fraction'])} | {_params(r['P1'])} | {p2} | {_params(avg)} | "
                 f"{_mean_std(r['accuracy'])} | {delta} | {_mean_std(r['coarse'])} |")
  psf = [r for r in rows if r["mode"] == "psf"]
  if psf:
    lines += ["", "## PSF accuracy per iteration (layout of book Tables 4.4-4.6)", "",
              "| Variant | Data (%) | Iteration | Frozen blocks | P1 | P2 | (P1+P2)/2 | Accuracy (%) |",
              "|---|---|---|---|---|---|---|---|"]
    for r in psf:
      f = Fraction(r["label"].split("_")[1].replace("-", "/"))
      n_iter = len(r["iterations"][0])
      for i in range(n_iter):
        its = [it[i] for it in r["iterations"]]
        fb = its[0]["frozen_blocks"]
        lines.append(f"| {r['method']} (K={r['window']}) | {round(100 * r['fraction'])} | {_ordinal(i + 1)} "
                     f"{f} frozen | {fb[0] if len(fb) == 1 else f'{fb[0]}-{fb[-1]}'} | {_params(r['P1'])} | {_params(its[0]['P2'])} | "
                     f"{_params((r['P1'] + its[0]['P2']) / 2)} | {_mean_std([it['test_accuracy'] for it in its])} |")
  lines += ["", "P1: parameters trained in coarse training (all); P2: parameters trained while fine-tuning "
            "(per iteration for PSF; the main table gives their mean); counts are exact, not millions.", ""]
  return "\n".join(lines)


def plot_psf(path: str, runs: List[dict]) -> None:
  """Test accuracy after coarse training (iteration 0) and after each PSF iteration, per data
  fraction, mean ± std over seeds; traditional and SSF as horizontal lines."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  rows = summarize(runs)["rows"]
  fractions = sorted({r["fraction"] for r in rows})
  fig, axes = plt.subplots(1, max(1, len(fractions)), figsize=(4.5 * max(1, len(fractions)), 3.6), squeeze=False)
  for ax, fraction in zip(axes[0], fractions):
    for r in rows:
      if r["fraction"] != fraction:
        continue
      if r["mode"] == "psf":
        acc = 100 * np.array([[run_coarse] + [it["test_accuracy"] for it in its]
                              for run_coarse, its in zip(r["coarse"], r["iterations"])])
        xs = np.arange(acc.shape[1])
        std = acc.std(0, ddof=1) if len(acc) > 1 else np.zeros(acc.shape[1])
        ax.errorbar(xs, acc.mean(0), yerr=std, marker="o", capsize=3, label=f"PSF {r['label'][4:]} (K={r['window']})")
      else:
        ax.axhline(100 * np.mean(r["accuracy"]), ls="--" if r["mode"] == "traditional" else ":",
                   color="k" if r["mode"] == "traditional" else "tab:red", label=r["method"])
    ax.set_title(f"{round(100 * fraction)}% of the training data")
    ax.set_xlabel("PSF iteration (0 = after coarse training)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def write_report(config, workdir: str, docs_dir: Optional[str] = None, wall_time_s: float = 0.0) -> dict:
  """results.json with every run, table.md and psf_accuracy.png, from whatever runs exist (a finished
  grid's results.json is kept as it is)."""
  runs = collect_runs(workdir)
  expected = len(grid_runs(config))
  require(bool(runs), f"no finished runs under {workdir}; train first (without --report_only)")
  table = table_markdown(config, runs, expected)
  write_text_atomic(os.path.join(workdir, "table.md"), table)
  plot_psf(os.path.join(workdir, "psf_accuracy.png"), runs)
  if docs_dir:
    os.makedirs(os.path.join(docs_dir, "figures"), exist_ok=True)
    shutil.copyfile(os.path.join(workdir, "table.md"), os.path.join(docs_dir, "coarse_to_fine_table.md"))
    shutil.copyfile(os.path.join(workdir, "psf_accuracy.png"), os.path.join(docs_dir, "figures", "psf_accuracy.png"))
  path = os.path.join(workdir, "results.json")
  if os.path.exists(path):
    with open(path) as f:
      recorded = json.load(f)
    m = recorded.get("metrics", {})
    if m.get("complete") and m.get("runs_expected") == expected and len(recorded.get("runs", [])) == len(runs):
      return recorded  # a finished grid's record stays as it was
  rows = summarize(runs)["rows"]
  metrics = {"complete": len(runs) == expected, "runs_finished": len(runs), "runs_expected": expected,
             "summary": [{k: r[k] for k in ("label", "fraction", "P1", "P2", "accuracy", "delta", "seeds")}
                         for r in rows]}
  return reporting.write_results(workdir, config=config, seed=list(config.seeds),
                                 dataset={"name": config.data.name}, metrics=metrics,
                                 wall_time_s=wall_time_s or sum(r["fine_wall_time_s"] for r in runs),
                                 runs=runs)
