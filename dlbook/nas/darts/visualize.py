"""Pictures of DARTS cells (book Figs. 3.6 and 3.7) and of the architecture weights, drawn with matplotlib.

The reference (`cnn/visualize.py`) renders the same graph with graphviz: inputs c_{k-2} and c_{k-1} on
the left, intermediate nodes 0..steps-1, the output c_{k} on the right, one labelled edge per kept op.
matplotlib is used so that no external `dot` binary is needed.
"""

import numpy as np

from dlbook.models.darts.genotypes import validate_genotype
from dlbook.models.darts.operations import PRIMITIVES

OP_COLORS = {"max_pool_3x3": "#1f77b4", "avg_pool_3x3": "#17becf", "skip_connect": "#7f7f7f",
             "sep_conv_3x3": "#d62728", "sep_conv_5x5": "#ff7f0e", "sep_conv_7x7": "#8c564b",
             "dil_conv_3x3": "#2ca02c", "dil_conv_5x5": "#9467bd", "conv_7x1_1x7": "#e377c2", "none": "#000000"}


def _pyplot():
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def draw_cell(ax, edges, concat, title: str = "") -> None:
  """Draws one cell (a list of (op, input_index) pairs, two per node) on a matplotlib axis."""
  from matplotlib.patches import FancyArrowPatch
  steps = len(edges) // 2
  pos = {0: (0.0, 1.2), 1: (0.0, -1.2)}
  for i in range(steps):
    pos[i + 2] = (1.6 * (i + 1), 0.9 if i % 2 == 0 else -0.9)
  out = (1.6 * (steps + 1), 0.0)
  names = {0: "c_{k-2}", 1: "c_{k-1}", **{i + 2: str(i) for i in range(steps)}}
  colors = {0: "#b4eeb4", 1: "#b4eeb4", **{i + 2: "#add8e6" for i in range(steps)}}

  def arrow(a, b, color, rad, label=None):
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=12, color=color, lw=1.6,
                                 connectionstyle=f"arc3,rad={rad}", shrinkA=16, shrinkB=16, zorder=1))
    if label:
      # The midpoint of the arc: the chord's midpoint pushed along its normal by rad * length / 2.
      (x0, y0), (x1, y1) = a, b
      mx, my = (x0 + x1) / 2, (y0 + y1) / 2
      nx, ny = (y1 - y0), -(x1 - x0)
      ax.text(mx + rad * nx / 2, my + rad * ny / 2, label, fontsize=7, ha="center", va="center", color=color,
              bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.85), zorder=3)

  for k, (op, j) in enumerate(edges):
    node = k // 2 + 2
    rad = 0.18 if k % 2 == 0 else -0.18
    arrow(pos[j], pos[node], OP_COLORS.get(op, "#000000"), rad, op)
  for c in concat:
    arrow(pos[c], out, "#999999", 0.0)
  for n, (x, y) in pos.items():
    ax.text(x, y, names[n], ha="center", va="center", fontsize=9, zorder=4,
            bbox=dict(boxstyle="round,pad=0.35", fc=colors[n], ec="black"))
  ax.text(*out, "c_{k}", ha="center", va="center", fontsize=9, zorder=4,
          bbox=dict(boxstyle="round,pad=0.35", fc="#eee8aa", ec="black"))
  ax.set_xlim(-0.7, out[0] + 0.7)
  ax.set_ylim(-2.0, 2.0)
  ax.set_title(title)
  ax.axis("off")


def plot_genotype(genotype, normal_path: str, reduce_path: str, title: str = "") -> None:
  """Writes the normal and the reduction cell of `genotype` as two PNGs (Figs. 3.6 and 3.7)."""
  g = validate_genotype(genotype)
  plt = _pyplot()
  for path, edges, concat, kind in ((normal_path, g.normal, g.normal_concat, "normal"),
                                    (reduce_path, g.reduce, g.reduce_concat, "reduction")):
    fig, ax = plt.subplots(figsize=(1.6 * (len(edges) // 2 + 2) + 1, 3.6))
    draw_cell(ax, edges, concat, f"{kind} cell" + (f" ({title})" if title else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_op_weights(path: str, weights_normal, weights_reduce, title: str = "") -> None:
  """Heat maps of softmax(alpha) [edges x ops] for the normal and the reduction cell."""
  plt = _pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(11, 4.6))
  for ax, w, kind in zip(axes, (weights_normal, weights_reduce), ("normal", "reduce")):
    w = np.asarray(w)
    im = ax.imshow(w, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(PRIMITIVES)), PRIMITIVES, rotation=60, fontsize=7)
    ax.set_yticks(range(len(w)), [f"edge {e}" for e in range(len(w))], fontsize=7)
    ax.set_title(f"softmax(alpha_{kind})")
    fig.colorbar(im, ax=ax, fraction=0.046)
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
