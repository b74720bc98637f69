"""What an evolutionary NAS run writes besides its checkpoints (book ch. 2, Fig. 2.1 H): the table of
generations, the fitness plot, a picture of the best architecture and the command that retrains it."""

from dlbook import evolution


def generation_table(ga, state, space) -> list:
  """One record per finished generation: fitness of the population, the best so far and its genome."""
  return evolution.history_table(ga, state, space.decode, genome_key="best_architecture")


def plot_generations(path: str, rows: list, title: str) -> None:
  """Best-so-far and population fitness per generation (every individual as a dot)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6, 4))
  for r in rows:
    fit = [f for f in r["population_fitness"] if f is not None]
    ax.scatter([r["generation"]] * len(fit), fit, s=10, color="0.6", zorder=1)
  gens = [r["generation"] for r in rows]
  ax.plot(gens, [r["population_mean"] for r in rows], "o--", color="tab:blue", label="population mean", zorder=2)
  ax.plot(gens, [r["best_fitness"] for r in rows], "o-", color="tab:red", label="best so far (global)", zorder=3)
  ax.set_xlabel("generation")
  ax.set_ylabel("fitness (validation accuracy)")
  ax.set_xticks(gens)
  ax.grid(alpha=0.3)
  ax.legend(loc="lower right")
  ax.set_title(title, fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plot_architecture(path: str, space, architecture: dict, title: str) -> None:
  """The best genome as a picture: a cell DAG with one labelled edge per op, or the layer chain."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  if space.name == "cell":
    cells = architecture["cells"]
    size = (1.8 * space.num_nodes, 1.2 * space.num_nodes * len(cells))
    fig, axes = plt.subplots(len(cells), 1, figsize=size, squeeze=False)
    for ax, cell in zip(axes[:, 0], cells):
      n = space.num_nodes
      for op, i, j in cell:
        if op == "none":
          continue
        rad = 0.3 * (j - i - 1)
        ax.annotate("", xy=(j - 0.13, 0), xytext=(i + 0.13, 0), arrowprops=dict(
            arrowstyle="-|>", connectionstyle=f"arc3,rad={-rad}", color="tab:blue", shrinkA=0, shrinkB=0))
        ax.text((i + j) / 2, rad * (j - i) / 2 + 0.03, op, ha="center", fontsize=8)
      for k in range(n):
        ax.add_patch(plt.Circle((k, 0), 0.12, color="lightgray" if 0 < k < n - 1 else "tab:orange", zorder=3))
        ax.text(k, 0, "in" if k == 0 else ("out" if k == n - 1 else str(k)), ha="center", va="center",
                fontsize=8, zorder=4)
      ax.set_xlim(-0.3, n - 0.7)
      ax.set_ylim(-0.2, 0.15 * n * (n - 1) / 2 + 0.2)
      ax.set_aspect("equal")
      ax.axis("off")
  else:
    a = architecture
    layers = [f"conv {f}@{k}x{k}" for f, k in zip(a["conv_filters"], a["conv_kernel"])]
    layers += ["flatten"] + [f"dense {u}" for u in a["dense_units"]] + ["classifier"]
    fig, ax = plt.subplots(figsize=(1.5 * len(layers) + 1, 1.8))
    for i, name in enumerate(layers):
      ax.text(i, 0, name, ha="center", va="center", fontsize=8,
              bbox=dict(boxstyle="round", facecolor="lightyellow" if "conv" in name else "lightblue"))
      if i:
        ax.annotate("", xy=(i - 0.42, 0), xytext=(i - 0.58, 0), arrowprops=dict(arrowstyle="->"))
    ax.text(len(layers) / 2 - 0.5, -0.6, f"activation: {a['activation']}", ha="center", fontsize=8)
    ax.set_xlim(-0.7, len(layers) - 0.3)
    ax.set_ylim(-0.9, 0.5)
    ax.axis("off")
  fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def retrain_command(architecture: dict, data_name: str) -> str:
  """The experiments.train command that trains a chain architecture as a plain chain_cnn."""
  preset = "fashion_mnist" if data_name == "fashion_mnist" else f"cpu --config.data.name={data_name}"
  tup = lambda v: "'(" + ",".join(str(int(x)) for x in v) + ",)'"
  a = architecture
  return (f"python -m experiments.train --config=configs/classify.py:{preset} --config.model.n_conv={a['n_conv']} "
          f"--config.model.conv_filters={tup(a['conv_filters'])} --config.model.conv_kernel={tup(a['conv_kernel'])} "
          f"--config.model.n_dense={a['n_dense']} --config.model.dense_units={tup(a['dense_units'])} "
          f"--config.model.activation={a['activation']} --workdir=runs/retrain_best_chain")
