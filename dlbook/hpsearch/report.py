"""Pictures and tables of the hyperparameter searches (thesis seed 001): Gen-CNN's validation MCC per
generation against random search at the same number of trainings (ch. 3), Gen-Soup's per generation
with its population and image size (ch. 5), histograms of the raw genes, and the tables over seeds."""

import numpy as np

from dlbook.hpsearch.gen_cnn import GENES


def _plt():
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def plot_generations(path: str, rows: list, random_scores, population: int, title: str, *, score: str = "mcc",
                     ga_label: str = "Gen-CNN best so far", trainings: str = "low-fidelity trainings",
                     ylabel: str = "validation MCC (low fidelity)") -> None:
  """Every individual's `score` (dots; rows' individuals carry it, None = failed), the population mean and
  the best so far per generation (rows' `population_mean_<score>` / `best_<score>_so_far`); random
  search's best so far after the same number of trainings (`random_scores`, in draw order)."""
  plt = _plt()
  fig, ax = plt.subplots(figsize=(6.5, 4))
  gens = [r["generation"] for r in rows]
  for r in rows:
    vals = [p[score] for p in r["individuals"] if p[score] is not None]
    ax.scatter([r["generation"]] * len(vals), vals, s=9, color="0.6", zorder=1)
  nan = lambda v: np.nan if v is None else v  # noqa: E731
  ax.plot(gens, [nan(r[f"population_mean_{score}"]) for r in rows], "o--", color="tab:blue", label="population mean")
  ax.plot(gens, [nan(r[f"best_{score}_so_far"]) for r in rows], "o-", color="tab:red", label=ga_label)
  if random_scores:
    vals = np.asarray([nan(m) for m in random_scores], np.float64)
    best = [np.nanmax(vals[:population * (g + 1)]) if np.isfinite(vals[:population * (g + 1)]).any() else np.nan
            for g in gens if population * (g + 1) <= len(vals)]
    ax.plot(gens[:len(best)], best, "s-", color="tab:green", label="random search best so far")
  ax.set_xlabel(f"generation ({population} {trainings} each)")
  ax.set_ylabel(ylabel)
  ax.set_xticks(gens)
  ax.grid(alpha=0.3)
  ax.legend(loc="lower right", fontsize=8)
  ax.set_title(title, fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plot_gene_histograms(path: str, rows: list, random_genes=None, genes=GENES) -> None:
  """Histogram of each raw gene over the first and the last generation (and all random draws)."""
  plt = _plt()
  fig, axes = plt.subplots(1, len(genes), figsize=(3 * len(genes), 2.8), sharey=True)
  bins = np.linspace(0, 1, 11)
  for ax, name in zip(axes, genes):
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


def plot_soup_generations(path: str, rows: list, title: str) -> None:
  """Gen-Soup: every individual's validation MCC per generation (dots), the population mean and the best
  so far, with the population and the image size on a second axis."""
  plt = _plt()
  fig, ax = plt.subplots(figsize=(7, 4))
  gens = [r["generation"] for r in rows]
  for r in rows:
    mcc = [p["mcc"] for p in r["individuals"] if p["mcc"] is not None]
    ax.scatter([r["generation"]] * len(mcc), mcc, s=9, color="0.6", zorder=1)
  ax.plot(gens, [r["population_mean_mcc"] for r in rows], "o--", color="tab:blue", label="population mean")
  ax.plot(gens, [r["best_mcc_so_far"] for r in rows], "o-", color="tab:red", label="best so far")
  ax.set_xlabel("generation (one epoch of training each)")
  ax.set_ylabel("validation MCC")
  ax.grid(alpha=0.3)
  ax.legend(loc="lower right", fontsize=8)
  ax2 = ax.twinx()
  ax2.plot(gens, [r["population"] for r in rows], ":", color="tab:green", label="population")
  ax2.plot(gens, [r["image_size"] for r in rows], ":", color="tab:purple", label="image size")
  ax2.set_ylabel("population / image size")
  ax2.legend(loc="center right", fontsize=8)
  ax.set_title(title, fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def comparison_markdown(payloads: list, command: str) -> str:
  """Gen-CNN against random search at the same budget over seeds (one results.json each): the low-fidelity
  validation MCC of each search's best individual and that individual's test metrics after the high-fidelity
  retraining; cells are mean ± sample std over seeds."""
  from dlbook.tables import STD_NOTE, mean_std
  m = lambda key: [p["metrics"].get(key) for p in payloads]
  test = lambda arm, key: [p["final"][arm]["test"][key] if arm in p.get("final", {}) else None for p in payloads]
  first = payloads[0]
  c = first["config"]
  seeds = ", ".join(str(p["seed"]) for p in payloads)
  lines = [f"Generated by `{command}` from the results.json of seeds {seeds}; cells are the {STD_NOTE}.", "",
           f"Data: {first['dataset'].get('name', c['data']['name'])}; pool {', '.join(c['pool'])}; population "
           f"{c['ga']['population_size']}, generations after the first: {first['metrics']['generations']}; "
           f"{first['metrics']['budget_low_fidelity_trainings']} low-fidelity trainings "
           f"({first['low_fidelity_steps']} steps) per search; the best individual retrained for "
           f"{first['high_fidelity_steps']} steps with cosine decay.", "",
           "| search | best validation MCC (low fidelity) | test MCC | test accuracy | test macro-F1 (sklearn) | "
           "test F1 of macro P/R (thesis) |", "|---|---|---|---|---|---|"]
  for arm, label, val in (("gen_cnn", "Gen-CNN (GA)", m("gen_cnn_best_validation_mcc")),
                          ("random_search", "random search", m("random_search_best_validation_mcc"))):
    lines.append(f"| {label} | {mean_std(val, 4)} | {mean_std(test(arm, 'mcc'), 4)} | "
                 f"{mean_std(test(arm, 'accuracy'), 4)} | {mean_std(test(arm, 'f1_macro'), 4)} | "
                 f"{mean_std(test(arm, 'f1_of_macro_pr'), 4)} |")
  lines += ["", "| seed | Gen-CNN best (decoded) | random search best (decoded) | wall time (s) |", "|---|---|---|---|"]
  short = lambda d: (f"{d['architecture']}, {d['loss']}, {d['optimizer']}, lr {d['learning_rate']:.2e}, "
                     f"wd {d['weight_decay']:.2e}")
  for p in payloads:
    f = p.get("final", {})
    lines.append(f"| {p['seed']} | {short(f['gen_cnn']['decoded']) if 'gen_cnn' in f else '—'} | "
                 f"{short(f['random_search']['decoded']) if 'random_search' in f else '—'} | "
                 f"{p['wall_time_s']:.0f} |")
  return "\n".join(lines) + "\n"


SOUP_ARMS = (("gen_soup", "Gen-Soup (best individual over all generations)"),
             ("uniform_soup", "uniform soup"),
             ("best_ingredient", "uniform soup's best ingredient (by validation MCC)"),
             ("gen_cnn", "Gen-CNN (GA, winner retrained)"),
             ("random_search", "random search (winner retrained)"))


def soup_comparison_markdown(payloads: list, command: str) -> str:
  """Gen-Soup against the uniform soup, Gen-CNN and random search at the same epoch budget over seeds (one
  unit results.json each): test metrics of each method's model; cells are mean ± sample std over seeds."""
  from dlbook.tables import STD_NOTE, mean_std
  first = payloads[0]
  c, m = first["config"], first["metrics"]
  test = lambda arm, key: [p["final"][arm]["test"][key] if arm in p.get("final", {}) else None for p in payloads]
  seeds = ", ".join(str(p["seed"]) for p in payloads)
  info = first["dataset"]
  gb = first.get("gen_cnn_budget") or {}
  lines = [f"Generated by `{command}` from the results.json of GA seeds {seeds}; cells are the {STD_NOTE}.", "",
           f"Data: {info.get('name', c['data']['name'])} ({info.get('train_size')} train / {info.get('val_size')} "
           f"validation / {info.get('test_size')} test images); pool {', '.join(c['pool'])}; Gen-Soup population "
           f"{' → '.join(str(x) for x in _runs(m['population_sizes']))} over {m['generations'] + 1} generations, "
           f"image sizes {' → '.join(str(x) for x in _runs(m['image_sizes']))}; every method trains "
           f"{m['epoch_budget']} epochs (passes of one network over the training split)."]
  if gb:
    lines[-1] += (f" Gen-CNN and random search: {gb['population']} × {gb['generations'] + 1} trainings of "
                  f"{gb['low_fidelity_epochs']} epochs, the winner retrained for {gb['final_epochs']} epochs.")
  u = first["final"].get("uniform_soup")
  if u:
    lines[-1] += (f" Uniform soup: {u['ingredients']} ingredients × {u['epochs_per_ingredient']} epochs of "
                  f"{u['decoded']['architecture']}, {u['decoded']['optimizer']} (learning rate "
                  f"{u['decoded']['learning_rate']:g}), {u['decoded']['loss']}, from one shared initialisation.")
  lines += ["", "| method | test MCC | test accuracy | test macro-F1 (sklearn) | test F1 of macro P/R (thesis) | "
            "validation MCC |", "|---|---|---|---|---|---|"]
  for arm, label in SOUP_ARMS:
    if not any(arm in p.get("final", {}) for p in payloads):
      continue
    val = [p["final"][arm].get("validation_mcc", p["final"][arm].get("validation_mcc_low_fidelity"))
           if arm in p["final"] else None for p in payloads]
    lines.append(f"| {label} | {mean_std(test(arm, 'mcc'), 4)} | {mean_std(test(arm, 'accuracy'), 4)} | "
                 f"{mean_std(test(arm, 'f1_macro'), 4)} | {mean_std(test(arm, 'f1_of_macro_pr'), 4)} | "
                 f"{mean_std(val, 4)} |")
  lines += ["", "| seed | Gen-Soup best (generation, image size: decoded) | last generation's architectures | "
            "wall time (s) |", "|---|---|---|---|"]
  for p in payloads:
    b = p["final"]["gen_soup"]
    d = b["decoded"]
    lines.append(f"| {p['seed']} | {b['generation']}, {b['image_size']}: {d['architecture']}, {d['loss']}, "
                 f"{d['optimizer']}, lr {d['learning_rate']:.2e}, wd {d['weight_decay']:.2e}, Str {d['strong']:.2f}, "
                 f"Weak {d['weak']:.2f} | {', '.join(f'{k} ×{v}' for k, v in p['metrics']['final_architectures'].items())}"
                 f" | {p['wall_time_s']:.0f} |")
  return "\n".join(lines) + "\n"


def _runs(values):
  """[a, a, b, b, b, c] -> [a, b, c] (the distinct values in order)."""
  out = []
  for v in values:
    if not out or out[-1] != v:
      out.append(v)
  return out
