"""Pictures and the table of the GA transfer-learning search (seed 004): fitness per generation against
random search at the same number of trainings, histograms of the four genes, mean ± sample std over seeds."""

import os

import numpy as np

from dlbook.hpsearch import ga_transfer as gt
from dlbook.hpsearch.report import _plt
from dlbook.tables import STD_NOTE, mean_std


def plot_seed(directory: str, ga: dict, rs, population: int, title: str) -> None:
  """fitness.png and genes.png of one seed's GA (and its random search) from their logs."""
  from dlbook.files import read_json
  rows = read_json(os.path.join(directory, "generations.json")) or []
  draws = read_json(os.path.join(os.path.dirname(directory), "random_search", "draws.json")) if rs else None
  if rows:
    plot_generations(os.path.join(directory, "fitness.png"), rows, draws, population, title)
    plot_gene_histograms(os.path.join(directory, "genes.png"), rows, draws, ga.get("config", {}).get("genes"))


def plot_generations(path: str, rows: list, draws, population: int, title: str) -> None:
  """Every individual's fitness (dots), the population mean and the best so far per generation; random
  search's best so far after the same number of trainings."""
  plt = _plt()
  fig, ax = plt.subplots(figsize=(6.5, 4))
  gens = [r["generation"] for r in rows]
  for r in rows:
    fit = [p["fitness"] for p in r["individuals"] if p["fitness"] is not None]
    ax.scatter([r["generation"]] * len(fit), fit, s=9, color="0.6", zorder=1)
  nan = lambda v: np.nan if v is None else v  # noqa: E731
  ax.plot(gens, [nan(r["population_mean_fitness"]) for r in rows], "o--", color="tab:blue", label="population mean")
  ax.plot(gens, [nan(r["best_fitness_so_far"]) for r in rows], "o-", color="tab:red", label="GA best so far")
  if draws:
    vals = np.asarray([nan(d["fitness"]) for d in draws], np.float64)
    best = [np.nanmax(vals[:population * (g + 1)]) if np.isfinite(vals[:population * (g + 1)]).any() else np.nan
            for g in gens if population * (g + 1) <= len(vals)]
    ax.plot(gens[:len(best)], best, "s-", color="tab:green", label="random search best so far")
  ax.set_xlabel(f"generation ({population} trainings each)")
  ax.set_ylabel("fitness = -(validation cross-entropy)")
  ax.set_xticks(gens)
  ax.grid(alpha=0.3)
  ax.legend(loc="lower right", fontsize=8)
  ax.set_title(title, fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plot_gene_histograms(path: str, rows: list, draws=None, ranges=None) -> None:
  """Histogram of each gene over the first and the last generation (and all random draws); the learning
  rate on a log axis."""
  plt = _plt()
  ranges = ranges or gt.SEED_RANGES
  fig, axes = plt.subplots(1, len(gt.GENES), figsize=(3.2 * len(gt.GENES), 2.8))
  for ax, name in zip(axes, gt.GENES):
    lo, hi = ranges[name]
    if name == "learning_rate":
      bins = np.logspace(np.log10(lo), np.log10(hi), 11)
      ax.set_xscale("log")
    elif name in ("included", "frozen"):
      bins = np.linspace(lo - 0.5, hi + 0.5, min(int(hi - lo) + 2, 13))
    else:
      bins = np.linspace(lo, hi, 11)
    first = [p["genes"][name] for p in rows[0]["individuals"]]
    last = [p["genes"][name] for p in rows[-1]["individuals"]]
    ax.hist(first, bins, alpha=0.5, color="tab:blue", label="generation 0")
    ax.hist(last, bins, alpha=0.5, color="tab:red", label=f"generation {rows[-1]['generation']}")
    if draws:
      ax.hist([d["genes"][name] for d in draws], bins, histtype="step", color="tab:green", label="random search")
    ax.set_title(name, fontsize=9)
  axes[0].set_ylabel("individuals")
  axes[-1].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


ARMS = (("ga", "GA (seed 004)"), ("random_search", "random search"))
COLUMNS = (("best_fitness", "best fitness −(val CE)"), ("best_val_accuracy", "val accuracy of the best"),
           ("best_test_loss", "test CE of the best"), ("best_test_accuracy", "test accuracy of the best"))


def summary(per_seed: list) -> dict:
  """Mean and sample std over seeds of each arm's metrics (and the per-seed values)."""
  out = {}
  for arm, _ in ARMS:
    for key, _ in COLUMNS:
      vals = [s[arm]["metrics"][key] for s in per_seed if s.get(arm) and s[arm]["metrics"].get(key) is not None]
      out[f"{arm}_{key}"] = vals
      out[f"{arm}_{key}_mean"] = float(np.mean(vals)) if vals else None
      out[f"{arm}_{key}_std"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else None
  return out


def _short(best) -> str:
  if not best:
    return "—"
  d = best["decoded"]
  return (f"included {d['included']} (block {d['cut_block']}), frozen {d['frozen']}, lr {d['learning_rate']:.2e}, "
          f"dropout {d['dropout']:.2f}")


def table(config, per_seed: list, pretrain, network: dict, data_info: dict, total_seeds: int = 0) -> str:
  from dlbook.training.transfer import report_command
  seeds = ", ".join(str(s["seed"]) for s in per_seed)
  t, a = config.train, config.ga
  first = per_seed[0]["ga"]["metrics"]
  lines = [f"Generated by `{report_command()}` from the results.json of seeds {seeds}; cells are the {STD_NOTE}.",
           "", f"Target data: {data_info.get('name')} ({data_info.get('train_size')} training / "
           f"{data_info.get('val_size')} validation / {data_info.get('test_size')} test images, "
           f"{config.data.image_size} px, {config.data.channels} channels). Network: {config.model} "
           f"({sum(network['blocks'])} dense layers, blocks {network['blocks']}), head and SE layers "
           f"{'drawn per individual' if any('se_' in x for x in network['fresh_leaves']) else 'from the weight file'}"
           f" (head always drawn)."]
  if pretrain:
    pd = pretrain["dataset"]
    lines.append(f"Weights: the backbone trained from scratch for {pretrain['steps']} steps on {pd.get('name')} "
                 f"({pd.get('train_size')} training images at {config.pretrain.data.image_size} px; its test "
                 f"accuracy {pretrain['test_accuracy']:.4f}), standing in for ImageNet weights.")
  else:
    lines.append(f"Weights: {network.get('weights') or 'random initialisation'} ({network.get('layout')} layout).")
  if total_seeds > len(per_seed):
    lines.append(f"**Partial**: {len(per_seed)} of the {total_seeds} seeds had finished when this table was written.")
  lines += [f"Budget per search: {first['trainings']} trainings (population {a.population_size}, generation 0 and "
            f"{a.generations} more) of {t.steps} Adam steps at batch {t.batch_size}; random search draws the same "
            f"number from the same gene ranges.", "",
            "| search | " + " | ".join(label for _, label in COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
  for arm, label in ARMS:
    cells = [mean_std([s[arm]["metrics"].get(k) for s in per_seed if s.get(arm)], 4, one=" (1 seed)")
             for k, _ in COLUMNS]
    lines.append(f"| {label} | " + " | ".join(cells) + " |")
  lines += ["", "| seed | GA best (decoded) | random search best (decoded) | wall time GA / random (s) |",
            "|---|---|---|---|"]
  for s in per_seed:
    rs = s.get("random_search")
    lines.append(f"| {s['seed']} | {_short(s['ga'].get('best'))} | {_short(rs and rs.get('best'))} | "
                 f"{s['ga']['wall_time_s']:.0f} / {rs['wall_time_s'] if rs else float('nan'):.0f} |")
  return "\n".join(lines) + "\n"
