"""The report of a CNGN experiment: the Str x Weak grid against the CNN-vs-CNN noise floor, the moving grid,
kernel-norm statistics and the fraction of filters the astrocytes scaled.

`write_report(config, workdir, paths)` reads every unit's results.json and writes `table.md`,
`grid_delta.png` (accuracy difference to the plain CNN of the same seed), `moving.png` and the
experiment's results.json.
"""

import itertools
import json
import os
import shutil
from typing import List, Optional

import numpy as np

from dlbook.astro.experiment import cnn_dir, grid_dir, moving_dir
from dlbook.tables import STD_NOTE, mean_std, module_command
from dlbook.training import reporting


def _read(path: str) -> Optional[dict]:
  path = os.path.join(path, "results.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def _pp(values) -> str:
  return mean_std(values, digits=2, scale=100.0, one=" (1 seed)")


def summarize(config, workdir: str, paths: List[dict]) -> dict:
  """Everything the table shows, as numbers (accuracies as fractions)."""
  cnn = {int(s): _read(cnn_dir(workdir, s)) for s in config.noise_seeds}
  cnn = {s: r["metrics"] for s, r in cnn.items() if r}
  accs = [cnn[s]["test_accuracy"] for s in sorted(cnn)]
  pairs = [a - b for a, b in itertools.combinations(accs, 2)]
  noise = dict(seeds=sorted(cnn), test_accuracy=accs, pairwise_differences=pairs,
               max_abs_difference=float(np.max(np.abs(pairs))) if pairs else None,
               std=float(np.std(accs, ddof=1)) if len(accs) > 1 else None)
  cells = []
  for strong in config.grid.strong:
    for weak in config.grid.weak:
      runs = [(int(s), _read(grid_dir(workdir, s, strong, weak))) for s in config.seeds]
      runs = [(s, r["metrics"]) for s, r in runs if r]
      if not runs:
        continue
      col = lambda k: [m[k] for _, m in runs]
      cells.append(dict(strong=float(strong), weak=float(weak), seeds=[s for s, _ in runs],
                        test_accuracy=col("test_accuracy"),
                        delta=[m["test_accuracy"] - cnn[s]["test_accuracy"] for s, m in runs if s in cnn],
                        **{k: col(k) for k in ("kernel_norm_ratio_median", "kernel_norm_ratio_min",
                                               "kernel_norm_ratio_max", "filters_near_zero", "modulated_strong",
                                               "modulated_weak")}))
  limit = noise["max_abs_difference"]
  for cell in cells:
    m = float(np.mean(cell["delta"])) if cell["delta"] else None
    cell["beyond_noise"] = bool(m is not None and limit is not None and abs(m) > limit)
  moving = []
  for p in paths:
    last = p["path"][-1]
    final = {}
    for arm in ("cngn", "cnn"):
      r = _read(moving_dir(workdir, p["seed"], last["epoch"], arm, last[arm]["candidate"]))
      final[arm] = r["metrics"]
    moving.append(dict(seed=p["seed"], centres=[e["cngn"]["centre"] for e in p["path"]],
                       cngn_test_accuracy=final["cngn"]["test_accuracy"], cnn_test_accuracy=final["cnn"]["test_accuracy"],
                       delta=final["cngn"]["test_accuracy"] - final["cnn"]["test_accuracy"],
                       cngn_val=[e["cngn"]["val_accuracy"] for e in p["path"]],
                       cnn_val=[e["cnn"]["val_accuracy"] for e in p["path"]],
                       cngn_kernel_norm_ratio_median=final["cngn"]["kernel_norm_ratio_median"],
                       cngn_filters_near_zero=final["cngn"]["filters_near_zero"]))
  return dict(noise_floor=noise, grid=cells, moving=moving)


def table_markdown(config, summary: dict, dataset: dict, command: str, expected: int, finished: int) -> str:
  c, noise = config, summary["noise_floor"]
  lines = [f"# Artificial astrocytes (CNGN) on {c.data.name} (generated)", ""]
  if finished < expected:
    lines += [f"**PARTIAL RESULTS: {finished} of {expected} grid and noise-floor units have finished.**", ""]
  lines += [
      f"- Command: `{command}`",
      f"- Data: {dataset.get('name', c.data.name)}, {dataset.get('train_size', '?')} training / "
      f"{dataset.get('val_size', '?')} validation / {dataset.get('test_size', '?')} test images; network "
      f"`{c.model_name}` {json.dumps(c.model.to_dict())}; {c.optimizer.name} lr {c.optimizer.learning_rate:g}, "
      f"weight decay {c.optimizer.weight_decay:g}, batch {c.batch_size}, label smoothing {c.label_smoothing:g}.",
      f"- Astrocytes: mode `{c.astro.mode}`, NG = {c.astro.ng}, AS = ±{c.astro.sensitivity:g}; the grid trains "
      f"{c.epochs:g} epochs per cell ({c.optimizer.schedule} learning rate).",
      f"- Cells are the {STD_NOTE}, in percentage points. Δ = test accuracy of the CNGN minus that of the plain "
      "CNN with the same seed (same initial parameters, batches and keys).", ""]
  lines += ["## Noise floor: the plain CNN against itself", "",
            f"Plain CNN test accuracy over seeds {noise['seeds']}: {_pp(noise['test_accuracy'])} %; "
            f"the {len(noise['pairwise_differences'])} seed-to-seed differences range over "
            f"±{100 * (noise['max_abs_difference'] or 0):.2f} points (largest |CNN − CNN|). A grid cell whose mean Δ "
            "is within this range is not distinguishable from changing the seed.", ""]
  cells = {(x["strong"], x["weak"]): x for x in summary["grid"]}
  weaks = [float(w) for w in c.grid.weak]
  lines += ["## Exp 1: Str × Weak grid, Δ test accuracy (points)", "",
            "| Str \\ Weak | " + " | ".join(f"{w:g}" for w in weaks) + " |", "|---" * (len(weaks) + 1) + "|"]
  for s in c.grid.strong:
    row = []
    for w in weaks:
      x = cells.get((float(s), w))
      row.append("—" if x is None else _pp(x["delta"]) + (" *" if x["beyond_noise"] else ""))
    lines.append(f"| {float(s):g} | " + " | ".join(row) + " |")
  lines += ["", "`*`: |mean Δ| larger than the largest CNN-vs-CNN difference.", "",
            "## Exp 1: kernel norms and modulation per cell", "",
            "Kernel-norm ratio: each conv filter's final kernel L2 norm over its initial norm (all conv layers "
            f"pooled; median and extremes, mean over seeds). Near zero: fraction of filters below {100 * 0.01:g} % "
            "of their initial norm. Scaled by Str / Weak: fraction of filters multiplied at a modulation "
            "(every NG steps), averaged over training.", "",
            "| Str | Weak | test accuracy (%) | Δ (points) | norm ratio median | min | max | near zero | "
            "scaled by Str | scaled by Weak |", "|---" * 10 + "|"]
  g = lambda x, k: f"{np.mean(x[k]):.3g}"
  for x in summary["grid"]:
    lines.append(f"| {x['strong']:g} | {x['weak']:g} | {_pp(x['test_accuracy'])} | {_pp(x['delta'])} | "
                 f"{g(x, 'kernel_norm_ratio_median')} | {g(x, 'kernel_norm_ratio_min')} | "
                 f"{g(x, 'kernel_norm_ratio_max')} | {np.mean(x['filters_near_zero']):.2f} | "
                 f"{np.mean(x['modulated_strong']):.2f} | {np.mean(x['modulated_weak']):.2f} |")
  if summary["moving"]:
    mv = summary["moving"]
    lines += ["", f"## Exp 2: greedy moving grid ({c.moving.epochs} epochs, {c.moving.neighbourhood} neighbourhood "
              f"of ±{c.moving.step:g}, {c.moving.schedule} learning rate)", "",
              "Each epoch both arms train the same number of candidates from their previous best (candidate k of "
              "both arms sees the same batches and keys); the CNN arm differs only by having no astrocytes.", "",
              "| seed | CNGN centres per epoch (Str, Weak) | CNGN test (%) | CNN control test (%) | Δ (points) | "
              "CNGN norm ratio median |", "|---" * 6 + "|"]
    for m in mv:
      centres = " → ".join(f"({a:g}, {b:g})" for a, b in m["centres"])
      lines.append(f"| {m['seed']} | {centres} | {100 * m['cngn_test_accuracy']:.2f} | "
                   f"{100 * m['cnn_test_accuracy']:.2f} | {100 * m['delta']:+.2f} | "
                   f"{m['cngn_kernel_norm_ratio_median']:.3g} |")
    lines.append(f"| all | | {_pp([m['cngn_test_accuracy'] for m in mv])} | {_pp([m['cnn_test_accuracy'] for m in mv])}"
                 f" | {_pp([m['delta'] for m in mv])} | |")
  return "\n".join(lines) + "\n"


def plot_grid(path: str, config, summary: dict) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  strongs, weaks = [float(s) for s in config.grid.strong], [float(w) for w in config.grid.weak]
  z = np.full((len(strongs), len(weaks)), np.nan)
  for x in summary["grid"]:
    if x["delta"]:
      z[strongs.index(x["strong"]), weaks.index(x["weak"])] = 100 * np.mean(x["delta"])
  lim = max(1e-3, np.nanmax(np.abs(z)) if np.isfinite(z).any() else 1.0)
  fig, ax = plt.subplots(figsize=(1.2 * len(weaks) + 2.5, 1.0 * len(strongs) + 1.8))
  im = ax.imshow(z, cmap="RdBu", vmin=-lim, vmax=lim, origin="lower")
  for i, j in itertools.product(range(len(strongs)), range(len(weaks))):
    if np.isfinite(z[i, j]):
      ax.text(j, i, f"{z[i, j]:+.2f}", ha="center", va="center", fontsize=8)
  ax.set_xticks(range(len(weaks)), [f"{w:g}" for w in weaks])
  ax.set_yticks(range(len(strongs)), [f"{s:g}" for s in strongs])
  ax.set_xlabel("Weak")
  ax.set_ylabel("Str")
  floor = summary["noise_floor"]["max_abs_difference"]
  ax.set_title(f"CNGN − CNN test accuracy (points)\nnoise floor |CNN−CNN| ≤ {100 * (floor or 0):.2f}", fontsize=9)
  fig.colorbar(im, ax=ax)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot_moving(path: str, summary: dict) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(5, 3.5))
  for i, m in enumerate(summary["moving"]):
    ep = np.arange(1, len(m["cngn_val"]) + 1)
    ax.plot(ep, 100 * np.asarray(m["cngn_val"]), "-o", color=f"C{i}", label=f"CNGN seed {m['seed']}")
    ax.plot(ep, 100 * np.asarray(m["cnn_val"]), "--x", color=f"C{i}", label=f"CNN seed {m['seed']}")
  ax.set_xlabel("epoch")
  ax.set_ylabel("best validation accuracy (%)")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def write_report(config, workdir: str, paths: List[dict], dataset: dict, docs_dir: Optional[str] = None) -> dict:
  summary = summarize(config, workdir, paths)
  expected = len(config.noise_seeds) + len(config.seeds) * len(config.grid.strong) * len(config.grid.weak)
  finished = len(summary["noise_floor"]["seeds"]) + sum(len(x["seeds"]) for x in summary["grid"])
  command = module_command(reporting.command_line())
  table = table_markdown(config, summary, dataset, command, expected, finished)
  reporting.write_text_atomic(os.path.join(workdir, "table.md"), table)
  plot_grid(os.path.join(workdir, "grid_delta.png"), config, summary)
  pictures = ["grid_delta.png"]
  if summary["moving"]:
    plot_moving(os.path.join(workdir, "moving.png"), summary)
    pictures.append("moving.png")
  if docs_dir:
    os.makedirs(os.path.join(docs_dir, "figures"), exist_ok=True)
    reporting.write_text_atomic(os.path.join(docs_dir, "astrocytes_table.md"), table)
    for p in pictures:
      shutil.copy(os.path.join(workdir, p), os.path.join(docs_dir, "figures", f"astrocytes_{p}"))
  noise = summary["noise_floor"]
  metrics = dict(units_finished=finished, units_expected=expected,
                 cnn_test_accuracy_mean=float(np.mean(noise["test_accuracy"])),
                 noise_floor_max_abs_difference=noise["max_abs_difference"],
                 cells_beyond_noise=sum(x["beyond_noise"] for x in summary["grid"]))
  if summary["moving"]:
    metrics["moving_delta_mean"] = float(np.mean([m["delta"] for m in summary["moving"]]))
  return reporting.write_results(workdir, config=config, seed=list(config.seeds), dataset=dataset, metrics=metrics,
                                 wall_time_s=sum(_wall(workdir, config)), summary=summary, moving_paths=paths,
                                 partial=finished < expected)


def _wall(workdir: str, config):
  for root, _, files in os.walk(workdir):
    if "results.json" in files and root != os.path.abspath(workdir) and root != workdir:
      r = _read(root)
      if r and "wall_time_s" in r:
        yield float(r["wall_time_s"])
