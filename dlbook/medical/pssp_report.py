"""The report of the protein secondary-structure grid (`pssp_experiment`): tables laid out like book
Tables 11.1-11.3 with the book's figures beside ours, and pictures.

`write_report(config, workdir, data_info, baseline)` reads every finished unit's results.json under
`workdir` and writes `table.md`, `pssp_models.png` (Q8 and Q3 per model against the majority class),
`pssp_confusion_q8.png` / `pssp_confusion_q3.png` (the figure model's test confusion matrices summed over
its seeds), `pssp_strips.png` (its per-residue predictions for a few test proteins) and the grid's
results.json; with `docs_dir`, also `docs_dir/pssp_results.md` and the figures under `docs_dir/figures/`.
A partial grid is labelled partial.
"""

import glob
import json
import os
import shutil
from typing import Dict, List, Optional, Sequence

import numpy as np

from dlbook.errors import require
from dlbook.medical.pssp_experiment import BOOK_ONLY_11_3, FAMILIES, GRID_KEYS, unit_dir
from dlbook.metrics.sequence import SS3, SS8, to_q3
from dlbook.tables import STD_NOTE, mean_std, module_command
from dlbook.training import reporting
from dlbook.training.reporting import write_text_atomic

FIGURES = ("pssp_models.png", "pssp_confusion_q8.png", "pssp_confusion_q3.png", "pssp_strips.png")
TABLES = (("11.1", "Convolutional networks (layout of book Table 11.1)"),
          ("11.2", "Recurrent networks (layout of book Table 11.2)"),
          ("11.3", "Hybrid networks (layout of book Table 11.3)"))
METRICS = (("q3", "Q3 (%)"), ("q8", "Q8 (%)"), ("sov99_q3", "SOV'99 Q3"), ("sov99_q8", "SOV'99 Q8"))


def collect_units(workdir: str, config) -> List[dict]:
  """The results.json of every finished unit of the grid (in grid order: models, then seeds)."""
  out = []
  for family in config.models:
    for seed in config.seeds:
      path = os.path.join(unit_dir(workdir, family, int(seed)), "results.json")
      if os.path.exists(path):
        with open(path) as f:
          out.append(json.load(f))
  return out


def summarize(units: List[dict]) -> List[dict]:
  """One row per model: per-seed values of each metric, in the order the models first appear."""
  rows: Dict[str, dict] = {}
  for u in units:
    m = u["metrics"]
    r = rows.setdefault(u["model"], {"model": u["model"], "seeds": [], "num_params": u["num_params"],
                                     **{k: [] for k in ("q3", "q8", "sov99_q3", "sov99_q8", "f1_macro_q8", "val_q8",
                                                        "best_epoch", "epochs_trained", "wall_time_s")}})
    r["seeds"].append(u["seed"])
    for k in ("q3", "q8", "sov99_q3", "sov99_q8", "val_q8", "best_epoch", "epochs_trained"):
      r[k].append(m[k])
    r["f1_macro_q8"].append(100.0 * m["q8_scores"]["f1_macro"])
    r["wall_time_s"].append(u["wall_time_s"])
  return list(rows.values())


def _ms(values) -> str:
  return mean_std(values, digits=2, one=" (1 seed)")


def _book(x: Optional[float]) -> str:
  return "—" if x is None else f"{x:g}"


def table_markdown(config, units: List[dict], data_info: dict, baseline: dict, expected: int) -> str:
  rows = {r["model"]: r for r in summarize(units)}
  c = config
  es = c.early_stopping
  title_data = data_info.get("dataset", c.data.train)
  lines = [f"# Protein secondary structure prediction on {title_data}: book Tables 11.1-11.3 (generated)", ""]
  if len(units) < expected:
    lines += [f"**PARTIAL RESULTS: {len(units)} of {expected} runs of the grid have finished.** Rows show "
              "whatever seeds exist so far.", ""]
  commands = sorted({module_command(u["command"]) for u in units if u.get("command")})
  res, spl = data_info.get("residues", {}), data_info.get("splits", {})
  lines += [
      "- Command: " + ("; ".join(f"`{cmd}`" for cmd in commands) or "—"),
      f"- Data: `{c.data.train}`" + (f" → test `{c.data.test}`" if c.data.test else "") +
      f"; {spl.get('train')} training / {spl.get('val')} validation / {spl.get('test')} test proteins with "
      f"{res.get('train')} / {res.get('val')} / {res.get('test')} residues; inputs `{c.data.features}` "
      f"({'with' if data_info.get('profiles') else 'no'} PSSM profiles)."
      + (f" {data_info['note'][0].upper()}{data_info['note'][1:]}." if data_info.get("note") else "")
      + (f" Labels: {data_info['mkdssp']}." if data_info.get("mkdssp") else ""),
      f"- Validation: {c.data.val_fraction:g} of the training residues held out from the training chains "
      "(never the test chains)" + (" by whole groups of related chains (same entry, identical sequence or "
                                   "shared 4-mers)" if title_data == "pdb_dssp" else "") + ".",
      f"- Training: {c.optimizer.name} learning rate {c.optimizer.learning_rate:g}"
      + (f", × {c.optimizer.decay_factor:g} every {c.lr_decay_every_epochs} epochs" if c.optimizer.schedule == "step"
         else f", schedule {c.optimizer.schedule}")
      + f", batch {c.batch_size}, at most {c.max_epochs} epochs; early stopping on the validation "
      f"{es.monitor.upper() if es.monitor != 'loss' else 'loss'} (evaluated every {c.eval_every_epochs} epoch(s), "
      f"patience {es.patience_epochs} epochs), test metrics of the best validation epoch's parameters.",
      f"- Widths: {json.dumps(c.widths.to_dict())} (each model takes the ones it has).",
      f"- Seeds: {', '.join(str(s) for s in c.seeds)}; cells are the {STD_NOTE}; SOV'99 is the mean over "
      "test proteins.",
      f"- Majority-class baseline (the training set's most frequent state, "
      f"{SS8[int(np.argmax(np.asarray(baseline['confusion_q8']).sum(0)))]},"
      f" at every residue): Q8 {baseline['q8']:.2f}, Q3 {baseline['q3']:.2f}, SOV'99 Q3 {baseline['sov99_q3']:.2f}, "
      f"SOV'99 Q8 {baseline['sov99_q8']:.2f}.",
      "- **Book's claims**: the book's own figures, on its test set (not named in the book; CB513 by its "
      "section 11.6) with PSSM profiles and CB6133 training, printed beside ours for the layout only: they "
      "are not reproduced here and not comparable with these numbers.", ""]
  base_cells = " | ".join(f"{baseline[k]:.2f}" for k, _ in METRICS)
  header = " | ".join(h for _, h in METRICS)
  for table, title in TABLES:
    fams = [f for f in FAMILIES.values() if f.table == table]
    if not any(f.key in c.models for f in fams):
      continue
    lines += [f"## {title}", ""]
    if table == "11.1":
      lines += [f"| Method | Filter size | {header} | Book's claim: Q3 (%) |", "|---|---|---|---|---|---|---|",
                f"| Majority class (baseline) | — | {base_cells} | — |"]
    elif table == "11.2":
      lines += [f"| Method | {header} | Book's claim: Q3 (%) |", "|---|---|---|---|---|---|",
                f"| Majority class (baseline) | {base_cells} | — |"]
    else:
      lines += [f"| Methods | {header} | Book's claim: Q3 (%) | Book's claim: Q8 (%) |", "|---|---|---|---|---|---|---|",
                f"| Majority class (baseline) | {base_cells} | — | — |"]
    for f in fams:
      if f.key not in c.models:
        continue
      r = rows.get(f.key)
      cells = " | ".join(_ms(r[k]) if r else "not run yet" for k, _ in METRICS)
      if table == "11.1":
        lines.append(f"| {f.method} | {f.filter_sizes} | {cells} | {_book(f.book_q3)} |")
      elif table == "11.2":
        lines.append(f"| {f.method} | {cells} | {_book(f.book_q3)} |")
      else:
        lines.append(f"| {f.method} | {cells} | {_book(f.book_q3)} | {_book(f.book_q8)} |")
    if table == "11.3":
      for method, q3, q8 in BOOK_ONLY_11_3:
        lines.append(f"| {method} (published method; not built here) | " + " | ".join("—" for _ in METRICS)
                     + f" | {_book(q3)} | {_book(q8)} |")
    lines.append("")
  lines += ["## Against the baseline, early stopping and cost", "",
            "| Model | Registry name | Parameters | Q8 − baseline | Q3 − baseline | macro-F1 (8 states, %) | "
            "Validation Q8 at the best epoch | Best epoch | Epochs trained | Wall time per run (s) |",
            "|---|---|---|---|---|---|---|---|---|---|"]
  for key in c.models:
    r, f = rows.get(key), FAMILIES[key]
    if r is None:
      lines.append(f"| {key} | `{f.model_name}` | not run yet |" + " |" * 7)
      continue
    lines.append(f"| {key} | `{f.model_name}` | {r['num_params']:,} | {_ms(np.subtract(r['q8'], baseline['q8']))} | "
                 f"{_ms(np.subtract(r['q3'], baseline['q3']))} | {_ms(r['f1_macro_q8'])} | {_ms(r['val_q8'])} | "
                 f"{_ms(r['best_epoch'])} | {_ms(r['epochs_trained'])} | {_ms(r['wall_time_s'])} |")
  walls = [u["wall_time_s"] for u in units]
  lines += ["", f"Wall time: {sum(walls):,.0f} s summed over the {len(units)} finished runs (compilation "
            "included; measured on the machine in `results.json`'s platform field, shared with other work).",
            f"Baseline macro-F1 (8 states): {100.0 * baseline['q8_scores']['f1_macro']:.2f}%.", ""]
  versions = units[0].get("versions", {}) if units else {}
  if versions:
    lines += ["Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()), ""]
  return "\n".join(lines)


# ------------------------------------------------------------------------------------------ pictures
def _plt():
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def plot_strips(path: str, strips: Sequence[dict], title: str = "") -> None:
  """Per-residue strips of true and predicted states (8 and 3 states) for a few proteins."""
  if not strips:
    return
  plt = _plt()
  from matplotlib.colors import ListedColormap
  from matplotlib.patches import Patch
  colors8 = ["#d9d9d9", "#fdb462", "#fb8072", "#80b1d3", "#bebada", "#1f78b4", "#b3de69", "#8dd3c7"]
  colors3 = ["#1f78b4", "#fb8072", "#d9d9d9"]
  width = max(len(s["true"]) for s in strips)
  fig, axes = plt.subplots(len(strips), 1, figsize=(min(16, 3 + width / 12), 1.3 * len(strips) + 0.9), squeeze=False)
  for ax, s in zip(axes[:, 0], strips):
    t8 = np.array([SS8.index(x) for x in s["true"]])
    p8 = np.array([SS8.index(x) for x in s["pred"]])
    n = len(t8)
    ax.imshow(np.stack([t8, p8]), cmap=ListedColormap(colors8), vmin=-0.5, vmax=7.5, aspect="auto",
              extent=(0, n, 2, 0), interpolation="nearest")
    ax.imshow(np.stack([to_q3(t8), to_q3(p8)]), cmap=ListedColormap(colors3), vmin=-0.5, vmax=2.5, aspect="auto",
              extent=(0, n, 4.3, 2.3), interpolation="nearest")
    q8 = 100.0 * np.mean(t8 == p8)
    q3 = 100.0 * np.mean(to_q3(t8) == to_q3(p8))
    ax.set_xlim(0, width)
    ax.set_ylim(4.3, 0)
    ax.set_yticks([0.5, 1.5, 2.8, 3.8], ["true 8", "pred 8", "true 3", "pred 3"], fontsize=7)
    ax.set_title(f"{s['name']} ({n} residues): Q8 {q8:.0f}%, Q3 {q3:.0f}%", fontsize=8, loc="left")
    ax.tick_params(axis="x", labelsize=7)
  handles = [Patch(color=c, label=f"{s8}") for c, s8 in zip(colors8, SS8)]
  handles += [Patch(color=c, label=f"{s3} (3-state)") for c, s3 in zip(colors3, SS3)]
  fig.legend(handles=handles, loc="lower center", ncol=11, fontsize=7, frameon=False)
  axes[-1, 0].set_xlabel("residue", fontsize=8)
  fig.suptitle(title, fontsize=9)
  fig.tight_layout(rect=(0, 0.06, 1, 1))
  fig.savefig(path, dpi=100)
  plt.close(fig)


def plot_models(path: str, rows: List[dict], baseline: dict) -> None:
  """Test Q8 and Q3 per model (mean ± sample std over seeds) against the majority class."""
  plt = _plt()
  fig, axes = plt.subplots(1, 2, figsize=(11, 0.35 * len(rows) + 1.6), sharey=True)
  ys = np.arange(len(rows))
  for ax, key, label in ((axes[0], "q8", "Q8 (%)"), (axes[1], "q3", "Q3 (%)")):
    means = [np.mean(r[key]) for r in rows]
    stds = [np.std(r[key], ddof=1) if len(r[key]) > 1 else 0.0 for r in rows]
    ax.barh(ys, means, xerr=stds, color="tab:blue", alpha=0.8, capsize=3)
    ax.axvline(baseline[key], color="k", ls="--", label="majority class")
    ax.set_xlabel(f"test {label}")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
  axes[0].set_yticks(ys, [r["model"] for r in rows], fontsize=8)
  axes[0].invert_yaxis()
  fig.suptitle("mean ± sample std over seeds", fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def write_report(config, workdir: str, data_info: dict, baseline: dict, docs_dir: Optional[str] = None,
                 wall_time_s: float = 0.0) -> dict:
  """table.md, the pictures and the grid's results.json from the finished units."""
  units = collect_units(workdir, config)
  require(bool(units), f"no finished runs under {workdir}; train first (without --report_only)")
  expected = len(config.models) * len(config.seeds)
  rows = summarize(units)
  table = table_markdown(config, units, data_info, baseline, expected)
  write_text_atomic(os.path.join(workdir, "table.md"), table)
  plot_models(os.path.join(workdir, "pssp_models.png"), rows, baseline)
  shown = [u for u in units if u["model"] == config.figure_model] or [u for u in units if u["model"] == units[0]["model"]]
  for states, names in (("q8", SS8), ("q3", SS3)):
    cm = np.sum([u["metrics"][f"confusion_{states}"] for u in shown], axis=0)
    reporting.plot_confusion(os.path.join(workdir, f"pssp_confusion_{states}.png"), cm, names,
                             f"{shown[0]['model']}: {states.upper()} test confusion, summed over seeds "
                             f"{', '.join(str(u['seed']) for u in shown)}")
  plot_strips(os.path.join(workdir, "pssp_strips.png"), shown[0].get("strips", []),
              f"{shown[0]['model']} (seed {shown[0]['seed']}): true and predicted states of test proteins")
  if docs_dir:
    os.makedirs(os.path.join(docs_dir, "figures"), exist_ok=True)
    write_text_atomic(os.path.join(docs_dir, "pssp_results.md"), table)
    for name in FIGURES:
      if os.path.exists(os.path.join(workdir, name)):
        shutil.copyfile(os.path.join(workdir, name), os.path.join(docs_dir, "figures", name))
  keep = ("q3", "q8", "sov99_q3", "sov99_q8", "f1_macro_q8", "best_epoch", "epochs_trained", "wall_time_s", "seeds")
  metrics = {"complete": len(units) == expected, "units_finished": len(units), "units_expected": expected,
             "baseline": {k: baseline[k] for k in ("q8", "q3", "sov99_q3", "sov99_q8")},
             "summary": [{"model": r["model"], **{k: r[k] for k in keep}} for r in rows]}
  grid_config = {k: v for k, v in config.to_dict().items()}
  return reporting.write_results(workdir, config=grid_config, seed=[int(s) for s in config.seeds], dataset=data_info,
                                 metrics=metrics, wall_time_s=wall_time_s or sum(u["wall_time_s"] for u in units),
                                 units=[os.path.relpath(unit_dir(workdir, u["model"], u["seed"]), workdir)
                                        for u in units], grid_keys=list(GRID_KEYS))
