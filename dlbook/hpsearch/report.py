"""Pictures of a Gen-CNN run (thesis seed 001 ch. 3): validation MCC per generation against random
search at the same number of trainings, and histograms of the raw genes."""

import numpy as np

from dlbook.hpsearch.gen_cnn import GENES


def _plt():
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def plot_generations(path: str, rows: list, random_mcc, population: int, title: str) -> None:
  """Every individual's raw validation MCC (dots), the population mean and the best so far per
  generation; random search's best so far after the same number of trainings."""
  plt = _plt()
  fig, ax = plt.subplots(figsize=(6.5, 4))
  gens = [r["generation"] for r in rows]
  for r in rows:
    mcc = [p["mcc"] for p in r["individuals"] if p["mcc"] is not None]
    ax.scatter([r["generation"]] * len(mcc), mcc, s=9, color="0.6", zorder=1)
  ax.plot(gens, [r["population_mean_mcc"] for r in rows], "o--", color="tab:blue", label="population mean")
  ax.plot(gens, [r["best_mcc_so_far"] for r in rows], "o-", color="tab:red", label="Gen-CNN best so far")
  if random_mcc:
    vals = np.asarray([np.nan if m is None else m for m in random_mcc], np.float64)
    best = [np.nanmax(vals[:population * (g + 1)]) if np.isfinite(vals[:population * (g + 1)]).any() else np.nan
            for g in gens if population * (g + 1) <= len(vals)]
    ax.plot(gens[:len(best)], best, "s-", color="tab:green", label="random search best so far")
  ax.set_xlabel(f"generation ({population} low-fidelity trainings each)")
  ax.set_ylabel("validation MCC (low fidelity)")
  ax.set_xticks(gens)
  ax.grid(alpha=0.3)
  ax.legend(loc="lower right", fontsize=8)
  ax.set_title(title, fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plot_gene_histograms(path: str, rows: list, random_genes=None) -> None:
  """Histogram of each raw gene over the first and the last generation (and all random draws)."""
  plt = _plt()
  fig, axes = plt.subplots(1, len(GENES), figsize=(3 * len(GENES), 2.8), sharey=True)
  bins = np.linspace(0, 1, 11)
  for ax, name in zip(axes, GENES):
    first = [p["genes"][name] for p in rows[0]["individuals"]]
    last = [p["genes"][name] for p in rows[-1]["individuals"]]
    ax.hist(first, bins, alpha=0.5, color="tab:blue", label="generation 0", density=True)
    ax.hist(last, bins, alpha=0.5, color="tab:red", label=f"generation {rows[-1]['generation']}", density=True)
    if random_genes:
      ax.hist([g[name] for g in random_genes], bins, histtype="step", color="tab:green", label="random search",
              density=True)
    ax.set_title(name, fontsize=9)
    ax.set_xlabel("raw gene")
  axes[0].set_ylabel("density")
  axes[-1].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
