"""Fixed-shape supernet for the cell-based search space (book ch. 2, §2.2.1 B, Figs. 2.2, 2.4, 2.7, 2.9).

A cell is a DAG over `num_nodes` feature maps: node 0 is the cell input and node j > 0 is the sum of
one operation per edge (i -> j), i < j; the cell output is the last node. With 4 nodes a cell has 6
edges. The genome holds one operation index per edge (gene ``ops``); the network reads it as the
path-based one-hot encoding of Fig. 2.2, one one-hot row per edge, and every edge computes
``Σ_o onehot[o] · o(x)`` over a fixed set of operations, so all individuals share shapes.
Crossover exchanges operations between corresponding cells and edges (Fig. 2.7); point mutation
changes one edge's operation (Fig. 2.9).

Choices where the book is silent (docs/nas_evolution.md):
- Operations (`OPS`): none (zero), skip_connect (identity), max_pool_3x3, avg_pool_3x3 (stride 1,
  'same'; the average excludes padding), conv_3x3 and conv_5x5 (ReLU -> conv -> BatchNorm, as
  in DARTS). The two convs share one 5x5 weight slot per edge: conv_3x3 uses its centred 3x3
  window. An individual only ever uses one op per edge, so this is the same network as separate
  weights, at the cost of one conv per edge instead of two.
- Network: stem (3x3 conv, stride 2, BN, ReLU) -> `num_stages` stages of `cells_per_stage` cells
  at constant width `channels`, with a 2x2 max-pool between stages -> global average pool ->
  linear classifier. One cell genotype is reused by every cell (``distinct_cells=False``, as the
  book's "once an optimized cell is discovered, it can be reused"); ``distinct_cells=True`` gives
  every cell its own row of genes.
"""

from typing import Tuple

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from dlbook import evolution
from dlbook.errors import require
from dlbook.models.darts import operations as darts_ops
from dlbook.nas.kernels import CONV_IMPLS, centred_kernel_mask, conv2d, max_pool_2x2

OPS = ("none", "skip_connect", "max_pool_3x3", "avg_pool_3x3", "conv_3x3", "conv_5x5")
CONV_KERNEL = {"conv_3x3": 3, "conv_5x5": 5}


def cell_edges(num_nodes: int) -> Tuple[Tuple[int, int], ...]:
  """Edges (i, j), i < j, in the order of the genome: grouped by target node j."""
  return tuple((i, j) for j in range(1, num_nodes) for i in range(j))


def avg_pool_3x3(x):
  """3x3 stride-1 'same' average that excludes the zero padding (count_include_pad=False)."""
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding="SAME", count_include_pad=False)


class Edge(nn.Module):
  """One edge: Σ_o onehot[o] · o(x) over `ops` (the conv ops share a max-size kernel slot)."""
  ops: Tuple[str, ...]
  channels: int
  conv_impl: str = "taps"

  @nn.compact
  def __call__(self, x, onehot, train: bool):
    convs = [o for o in self.ops if o in CONV_KERNEL]
    outs = {"none": jnp.zeros_like(x), "skip_connect": x}
    if "max_pool_3x3" in self.ops:
      # The DARTS op's gather-form gradient: nn.max_pool's gradient is slow under vmap (kernels.max_pool_2x2).
      outs["max_pool_3x3"] = darts_ops.max_pool_3x3(x, 1)
    if "avg_pool_3x3" in self.ops:
      outs["avg_pool_3x3"] = avg_pool_3x3(x)
    if convs:
      max_k = max(CONV_KERNEL[o] for o in convs)
      k = sum(onehot[self.ops.index(o)] * CONV_KERNEL[o] for o in convs)
      k = jnp.where(k > 0, k, max_k).astype(jnp.int32)
      kernel = self.param("kernel", nn.initializers.lecun_normal(), (max_k, max_k, x.shape[-1], self.channels))
      y = conv2d(nn.relu(x), kernel * centred_kernel_mask(max_k, k)[:, :, None, None], self.conv_impl)
      y = nn.BatchNorm(use_running_average=not train, momentum=0.9, name="bn")(y)
      for o in convs:
        outs[o] = y
    return sum(onehot[i] * outs[o] for i, o in enumerate(self.ops))


class Cell(nn.Module):
  ops: Tuple[str, ...]
  num_nodes: int
  channels: int
  conv_impl: str = "taps"

  @nn.compact
  def __call__(self, x, onehot, train: bool):
    chex.assert_shape(onehot, (len(cell_edges(self.num_nodes)), len(self.ops)))
    nodes = [x]
    edges = cell_edges(self.num_nodes)
    for j in range(1, self.num_nodes):
      nodes.append(sum(Edge(self.ops, self.channels, self.conv_impl, name=f"edge_{i}_{j}")(
          nodes[i], onehot[edges.index((i, j))], train) for i in range(j)))
    return nodes[-1]


class CellSupernet(nn.Module):
  """`__call__(x, arch, train)` -> logits; `arch["onehot"]` is [num_cell_genomes, num_edges, num_ops]."""
  num_classes: int
  ops: Tuple[str, ...] = OPS
  num_nodes: int = 4
  channels: int = 16
  num_stages: int = 2
  cells_per_stage: int = 1
  conv_impl: str = "taps"

  @nn.compact
  def __call__(self, x, arch, train: bool = False):
    chex.assert_rank(x, 4)
    stem = self.param("stem_kernel", nn.initializers.lecun_normal(), (3, 3, x.shape[-1], self.channels))
    x = conv2d(x, stem, self.conv_impl, stride=2)
    x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, name="stem_bn")(x))
    onehot = arch["onehot"]
    c = 0
    for s in range(self.num_stages):
      if s > 0 and x.shape[1] >= 2:
        x = max_pool_2x2(x)
      for _ in range(self.cells_per_stage):
        x = Cell(self.ops, self.num_nodes, self.channels, self.conv_impl, name=f"cell_{c}")(
            x, onehot[c % onehot.shape[0]], train)
        c += 1
    logits = nn.Dense(self.num_classes, name="classifier")(x.mean(axis=(1, 2)))
    chex.assert_shape(logits, (x.shape[0], self.num_classes))
    return logits


class CellSpace:
  """The cell-based search space: one categorical gene (an op index) per edge (and per cell when
  `distinct_cells`)."""
  name = "cell"

  def __init__(self, ops=OPS, num_nodes=4, channels=16, num_stages=2, cells_per_stage=1,
               distinct_cells=False, conv_impl="taps"):
    ops = tuple(ops)
    bad = [o for o in ops if o not in OPS]
    require(len(ops) >= 2 and not bad and len(set(ops)) == len(ops),
            f"cell ops must be >= 2 distinct names from {list(OPS)}; got {list(ops)}")
    require(int(num_nodes) >= 2, f"num_nodes must be >= 2, got {num_nodes}")
    require(int(channels) > 0 and int(num_stages) >= 1 and int(cells_per_stage) >= 1,
            "cell space needs channels > 0, num_stages >= 1 and cells_per_stage >= 1")
    require(conv_impl in CONV_IMPLS, f"unknown conv_impl {conv_impl!r}; valid: {', '.join(CONV_IMPLS)}")
    self.ops, self.num_nodes, self.channels = ops, int(num_nodes), int(channels)
    self.num_stages, self.cells_per_stage = int(num_stages), int(cells_per_stage)
    self.num_cell_genomes = self.num_stages * self.cells_per_stage if distinct_cells else 1
    self.conv_impl = conv_impl
    self.edges = cell_edges(self.num_nodes)
    self.spec = evolution.GenomeSpec([
        evolution.categorical("ops", self.ops, (self.num_cell_genomes, len(self.edges)))])

  def model(self, num_classes: int) -> CellSupernet:
    return CellSupernet(num_classes, self.ops, self.num_nodes, self.channels, self.num_stages,
                        self.cells_per_stage, self.conv_impl)

  def arch(self, genome) -> dict:
    """Genome -> path-based one-hot encoding (book Fig. 2.2), [cells, edges, ops]."""
    return {"onehot": jax.nn.one_hot(genome["ops"], len(self.ops))}

  def init(self, model, key, image_shape, genome) -> dict:
    return model.init(key, jnp.zeros((1,) + tuple(image_shape), jnp.float32), self.arch(genome), train=False)

  def decode(self, genome) -> dict:
    """{"cells": [[(op, from_node, to_node), ...] per cell genome]}."""
    ops = self.spec.decode(genome)["ops"]
    e = len(self.edges)
    rows = [ops[c * e:(c + 1) * e] for c in range(self.num_cell_genomes)]
    return {"cells": [[(op, i, j) for op, (i, j) in zip(row, self.edges)] for row in rows]}

  def encode(self, architecture: dict):
    """Inverse of `decode`; also accepts {"ops": [op per edge]} for a single shared cell."""
    if "ops" in architecture:
      rows = [list(architecture["ops"])] * self.num_cell_genomes
    else:
      cells = list(architecture.get("cells", []))
      require(len(cells) == self.num_cell_genomes, f"architecture needs {self.num_cell_genomes} cell(s), "
              f"got {len(cells)}")
      rows = []
      for cell in cells:
        require([tuple(c[1:]) for c in cell] == list(self.edges),
                f"cell edges must be {list(self.edges)}, got {[tuple(c[1:]) for c in cell]}")
        rows.append([c[0] for c in cell])
    require(all(len(r) == len(self.edges) for r in rows), f"each cell needs {len(self.edges)} edge ops")
    return self.spec.encode({"ops": [o for r in rows for o in r]})

  def baseline_architecture(self) -> dict:
    """Every edge a 3x3 conv (or the last listed op if conv_3x3 is not in the space)."""
    op = "conv_3x3" if "conv_3x3" in self.ops else self.ops[-1]
    return {"ops": [op] * len(self.edges)}
