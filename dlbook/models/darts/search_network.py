"""The DARTS search network (book ch. 3 §3.2.1-3.2.3, Eqs. 3.1-3.2, Fig. 3.2), after quark0/darts
`cnn/model_search.py`.

A cell is a DAG with inputs c_{k-2}, c_{k-1} and `steps` intermediate nodes x_j = sum_{i<j} o_ij(x_i)
(Eq. 3.1); every edge is a mixed op o_ij(x) = sum_o softmax(alpha_ij)_o o(x) over `PRIMITIVES` (Eq. 3.2);
the cell output concatenates the last `multiplier` nodes. The network is a 3x3 conv stem (3C channels,
BN), `layers` cells with reductions (stride 2, channels doubled) at depth 1/3 and 2/3, global average
pooling and a linear classifier. The architecture parameters are two top-level params,
`alphas_normal` and `alphas_reduce`, each [num_edges = 14, len(PRIMITIVES) = 8], initialised to
1e-3 * N(0, 1) as in the reference; `split_arch` separates them from the weights w.

Choices: the `none` op contributes exactly zero, so it is not computed (its alpha still enters the
softmax, so gradients are those of the reference); pooling ops are followed by an affine-free BN and
all op BNs are affine-free, as in the reference; the stem BN is affine.
"""

from typing import Optional, Tuple

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from dlbook.errors import require
from dlbook.models.darts.operations import (DEFAULT_CONV_IMPL, DEFAULT_POOL_IMPL, OPS, PRIMITIVES, FactorizedReduce,
                                            ReLUConvBN, Stem, check_conv_impl, check_pool_impl, on_accelerator,
                                            torch_default_init)
from dlbook.models.registry import register

ARCH_NAMES = ("alphas_normal", "alphas_reduce")
EDGE_IMPLS = ("auto", "scan", "unrolled", "wide")


def check_edges(edges: str) -> None:
  require(edges in EDGE_IMPLS, f"unknown edges {edges!r}; valid: {', '.join(EDGE_IMPLS)}")


def resolve_edges(edges: str, backend=None) -> str:
  """"auto": "scan" on the CPU (it keeps the program small enough to compile there and is the fastest
  step measured there), "wide" on accelerators (the 2*steps independent input edges as one mixed op of
  `2*steps` times the channels, the inner edges scanned: the smallest program measured, and the largest
  kernels; docs/accelerators.md)."""
  if edges != "auto":
    return edges
  return "wide" if on_accelerator(backend) else "scan"


def num_edges(steps: int = 4) -> int:
  return sum(2 + i for i in range(steps))


def is_reduction(i: int, layers: int) -> bool:
  """Cells at depth 1/3 and 2/3 reduce (reference: `i in [layers // 3, 2 * layers // 3]`)."""
  return i in (layers // 3, 2 * layers // 3)


def split_arch(params) -> Tuple[dict, dict]:
  """(weights w, architecture alphas) from the search network's params."""
  weights = {k: v for k, v in params.items() if k not in ARCH_NAMES}
  alphas = {k: v for k, v in params.items() if k in ARCH_NAMES}
  return weights, alphas


def merge_arch(weights, alphas) -> dict:
  return {**weights, **alphas}


class MixedOp(nn.Module):
  """Eq. 3.2: the softmax-weighted sum of every candidate op on one edge.

  `edges` > 1: that many independent edges at once, their inputs stacked on channels ([..., edges * C],
  edge-major), `weights` [edges, len(PRIMITIVES)], parameters stacked on a leading edge axis as
  `nn.scan` stacks them: every op is one kernel over all edges (per-channel ops are simply wider, convs
  get one feature group per edge)."""
  channels: int
  stride: int
  conv_impl: str = DEFAULT_CONV_IMPL
  pool_impl: str = DEFAULT_POOL_IMPL
  edges: int = 1

  @nn.compact
  def __call__(self, x, weights, train: bool):
    out = 0.0
    for k, primitive in enumerate(PRIMITIVES):
      if primitive == "none":
        continue
      kw = {"bn_after": True} if "pool" in primitive else {}
      kw.update({"edges": self.edges} if self.edges > 1 else {})
      op = OPS[primitive](self.channels, self.stride, False, conv_impl=self.conv_impl, pool_impl=self.pool_impl,
                          name=primitive, **kw)
      w = weights[k] if self.edges == 1 else jnp.repeat(weights[:, k], self.channels)  # per stacked channel
      out = out + w * op(x, train)
    return out


def edge_index(node: int, input_index: int) -> int:
  """Row of alpha for the edge input_index -> node (reference order: node by node, inputs in order)."""
  return sum(2 + i for i in range(node)) + input_index


class EdgeModule(nn.Module):
  """What every edge formulation holds: the mixed op's settings."""
  channels: int
  stride: int
  train: bool
  conv_impl: str = DEFAULT_CONV_IMPL
  pool_impl: str = DEFAULT_POOL_IMPL

  def mixed_op(self, edges: int = 1) -> "MixedOp":
    return MixedOp(self.channels, self.stride, self.conv_impl, self.pool_impl, edges, name="mixed_op")


class EdgeStep(EdgeModule):
  """One edge of a cell as a scan step: nodes[dst] += MixedOp(sources[src]) (Eq. 3.1)."""

  @nn.compact
  def __call__(self, nodes, xs, sources):
    src, dst, weights = xs
    x = jax.lax.dynamic_index_in_dim(nodes if sources is None else sources, src, keepdims=False)
    out = self.mixed_op()(x, weights, self.train)
    current = jax.lax.dynamic_index_in_dim(nodes, dst, keepdims=False)
    return jax.lax.dynamic_update_index_in_dim(nodes, current + out, dst, 0), None


class WideEdges(EdgeModule):
  """`num` independent edges as one channel-stacked `MixedOp` (`edges=num`); the variables' tree is
  `scan_edges`'s (`<name>/mixed_op/...`, stacked on a leading edge axis)."""
  num: int = 1

  @nn.compact
  def __call__(self, x, weights):
    return self.mixed_op(self.num)(x, weights, self.train)


def scan_edges(num: int, name: str, remat: bool = False, unrolled: bool = False, **kw) -> nn.Module:
  """`EdgeStep` scanned over `num` edges; parameters stacked on a leading edge axis. With `remat`, each
  edge's activations are recomputed in the backward pass instead of being stacked across the scan.
  `unrolled` unrolls the scan completely (same parameters, no loop in the program)."""
  step = nn.remat(EdgeStep, prevent_cse=False) if remat else EdgeStep
  scanned = nn.scan(step, variable_axes={"params": 0, "batch_stats": 0}, split_rngs={"params": True},
                    in_axes=(0, nn.broadcast), out_axes=0, length=num, unroll=num if unrolled else 1)
  return scanned(name=name, **kw)


class SearchCell(nn.Module):
  """A search cell: preprocess both inputs to C channels, then `steps` nodes of mixed ops (Eq. 3.1).

  The edges run as two `lax.scan`s over one compiled mixed op each: first the 2*steps edges leaving
  c_{k-2} and c_{k-1} (strided in a reduction cell), then the edges between intermediate nodes in the
  reference's order (all edges into node i before any edge out of it). The result equals 14 separate
  mixed ops; XLA compiles 2 instead of 14 (the unrolled supernet took many minutes to compile), and
  the kernels inside are the same. Parameters are stacked per scan: `input_edges` in the order
  (node 0: c_{k-2}, c_{k-1}; node 1: ...), `inner_edges` by target node then source.

  `remat_edges` rematerialises every edge (`nn.remat` inside the scan): the backward pass recomputes an
  edge's mixed op instead of keeping its activations for all edges of the scan. Results are identical;
  it trades compute for memory, which second-order DARTS needs (its hypergradient differentiates the
  whole weight-gradient computation again, and at batch 64 the kept activations outgrow a 24 GB host).

  `edges="unrolled"` unrolls both scans (`lax.scan`'s `unroll`): the same parameters and results, but a
  program of 14 mixed ops in straight-line code. `edges="wide"` runs the 2*steps edges leaving c_{k-2} and
  c_{k-1}, which do not depend on each other, as ONE mixed op on their inputs stacked on channels
  (`MixedOp(edges=2*steps)`: each op one kernel over all of them, convs with one feature group per edge)
  and scans the inner edges; the same variables (created through the scan, so also the same initial
  values for a seed) and results. "auto" (default) scans on the CPU and is "wide" elsewhere
  (`resolve_edges`)."""
  channels: int
  reduction: bool
  reduction_prev: bool
  steps: int = 4
  multiplier: int = 4
  conv_impl: str = DEFAULT_CONV_IMPL
  remat_edges: bool = False
  pool_impl: str = DEFAULT_POOL_IMPL
  edges: str = "auto"

  @nn.compact
  def __call__(self, s0, s1, weights, train: bool):
    c, steps = self.channels, self.steps
    chex.assert_shape(weights, (num_edges(steps), len(PRIMITIVES)))
    if self.reduction_prev:
      s0 = FactorizedReduce(c, affine=False, name="preprocess0")(s0, train)
    else:
      s0 = ReLUConvBN(c, 1, 1, 0, affine=False, name="preprocess0")(s0, train)
    s1 = ReLUConvBN(c, 1, 1, 0, affine=False, name="preprocess1")(s1, train)
    stride = 2 if self.reduction else 1
    h, w = ((s1.shape[1] + 1) // 2, (s1.shape[2] + 1) // 2) if self.reduction else s1.shape[1:3]
    nodes = jnp.zeros((steps, s1.shape[0], h, w, c), s1.dtype)
    kw = dict(channels=c, train=train, conv_impl=self.conv_impl, pool_impl=self.pool_impl)
    edges = resolve_edges(self.edges)
    unrolled = edges == "unrolled"

    pairs = [(j, i) for i in range(steps) for j in (0, 1)]
    input_weights = weights[jnp.asarray([edge_index(i, j) for j, i in pairs])]
    # The edges leaving c_{k-2}, c_{k-1} do not depend on each other: with "wide" they run as one mixed op
    # on their inputs stacked on channels. Its variables are created by the scan (the same tree and, for a
    # seed, the same values).
    if edges == "wide" and not self.is_initializing():
      wide = nn.remat(WideEdges, prevent_cse=False) if self.remat_edges else WideEdges
      out = wide(num=len(pairs), stride=stride, name="input_edges", **kw)(
          jnp.concatenate([s0, s1] * steps, axis=-1), input_weights)  # edge order of `pairs`
      out = out.reshape(out.shape[:3] + (steps, 2, c)).sum(4)
      nodes = jnp.moveaxis(out, 3, 0)
    else:
      xs = (jnp.asarray([j for j, _ in pairs]), jnp.asarray([i for _, i in pairs]), input_weights)
      nodes, _ = scan_edges(len(pairs), "input_edges", self.remat_edges, unrolled, stride=stride, **kw)(
          nodes, xs, jnp.stack([s0, s1]))
    pairs = [(j, i) for i in range(steps) for j in range(2, i + 2)]
    if pairs:
      xs = (jnp.asarray([j - 2 for j, _ in pairs]), jnp.asarray([i for _, i in pairs]),
            weights[jnp.asarray([edge_index(i, j) for j, i in pairs])])
      nodes, _ = scan_edges(len(pairs), "inner_edges", self.remat_edges, unrolled, stride=1, **kw)(nodes, xs, None)
    kept = nodes[steps - self.multiplier:]  # the last `multiplier` nodes, concatenated on channels
    return jnp.concatenate(list(kept), axis=-1)


class SearchNetwork(nn.Module):
  """The 8-cell DARTS supernet. `__call__(x, train, weights_normal=None, weights_reduce=None)` returns
  logits; given, `weights_*` [num_edges, len(PRIMITIVES)] replace softmax(alpha_*) as op weights.
  `conv_impl`, `pool_impl` and `edges` pick kernel formulations ("auto": per backend; operations.py and
  `SearchCell`); none of them changes parameters or results beyond float rounding."""
  num_classes: int
  init_channels: int = 16
  layers: int = 8
  steps: int = 4
  multiplier: int = 4
  stem_multiplier: int = 3
  conv_impl: str = DEFAULT_CONV_IMPL
  remat_edges: bool = False
  pool_impl: str = DEFAULT_POOL_IMPL
  edges: str = "auto"

  def arch_weights(self):
    init = lambda key, shape: 1e-3 * jax.random.normal(key, shape)
    shape = (num_edges(self.steps), len(PRIMITIVES))
    return self.param("alphas_normal", init, shape), self.param("alphas_reduce", init, shape)

  @nn.compact
  def __call__(self, x, train: bool = False, weights_normal: Optional[jax.Array] = None,
               weights_reduce: Optional[jax.Array] = None):
    require(self.layers >= 3 and self.init_channels > 0 and self.steps >= 1 and 1 <= self.multiplier <= self.steps,
            f"darts_search needs layers >= 3, init_channels > 0 and 1 <= multiplier <= steps; got layers="
            f"{self.layers}, init_channels={self.init_channels}, steps={self.steps}, multiplier={self.multiplier}")
    check_conv_impl(self.conv_impl)
    check_pool_impl(self.pool_impl)
    check_edges(self.edges)
    chex.assert_rank(x, 4)
    alphas_normal, alphas_reduce = self.arch_weights()
    shape = alphas_normal.shape
    weights_normal = jax.nn.softmax(alphas_normal, -1) if weights_normal is None else weights_normal
    weights_reduce = jax.nn.softmax(alphas_reduce, -1) if weights_reduce is None else weights_reduce
    chex.assert_shape([weights_normal, weights_reduce], shape)

    c_curr = self.stem_multiplier * self.init_channels
    s0 = s1 = Stem(c_curr, name="stem")(x, train)
    c_curr, reduction_prev = self.init_channels, False
    for i in range(self.layers):
      reduction = is_reduction(i, self.layers)
      c_curr = c_curr * 2 if reduction else c_curr
      cell = SearchCell(c_curr, reduction, reduction_prev, self.steps, self.multiplier, self.conv_impl,
                        self.remat_edges, self.pool_impl, self.edges, name=f"cell_{i}")
      s0, s1 = s1, cell(s0, s1, weights_reduce if reduction else weights_normal, train)
      reduction_prev = reduction
    out = jnp.mean(s1, axis=(1, 2))
    logits = nn.Dense(self.num_classes, kernel_init=torch_default_init, name="classifier")(out)
    chex.assert_shape(logits, (x.shape[0], self.num_classes))
    return logits


@register("darts_search")
def darts_search(num_classes: int, init_channels: int = 16, layers: int = 8, steps: int = 4, multiplier: int = 4,
                 stem_multiplier: int = 3, conv_impl: str = DEFAULT_CONV_IMPL, remat_edges: bool = False,
                 pool_impl: str = DEFAULT_POOL_IMPL, edges: str = "auto") -> SearchNetwork:
  check_conv_impl(conv_impl)
  check_pool_impl(pool_impl)
  check_edges(edges)
  require(isinstance(remat_edges, (bool, int)), f"darts_search remat_edges must be true or false, got {remat_edges!r} "
          f"(\"auto\" is resolved by the search from the DARTS order: dlbook.nas.darts.bilevel.resolve_remat)")
  return SearchNetwork(num_classes, init_channels, layers, steps, multiplier, stem_multiplier, conv_impl,
                       bool(remat_edges), pool_impl, edges)
