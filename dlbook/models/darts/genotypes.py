"""DARTS genotypes (book ch. 3 §3.2.4), in the reference's format (quark0/darts `cnn/genotypes.py`):
`Genotype(normal=[(op, input_index), ...], normal_concat=[2, 3, 4, 5], reduce=..., reduce_concat=...)`.

Edges come in pairs, one pair per intermediate node; input index 0 is c_{k-2}, 1 is c_{k-1}, and
i >= 2 is intermediate node i - 2. `derive_genotype` is the reference's discretisation: per node, the
2 incoming edges with the strongest non-`none` softmax weight, each with its argmax non-`none` op.
Genotypes are validated on every load; anything malformed is a `DlbookError` naming what is wrong.
Inside dlbook they are normalised to tuples (hashable, so a genotype can be a flax module field).
"""

import collections
import json
import os
from typing import Sequence, Union

import numpy as np

from dlbook.errors import DlbookError, require
from dlbook.models.darts.operations import OPS, PRIMITIVES

Genotype = collections.namedtuple("Genotype", "normal normal_concat reduce reduce_concat")

# The published cells (reference cnn/genotypes.py): first-order (V1) and second-order (V2) search.
DARTS_V1 = Genotype(
    normal=[("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 0), ("sep_conv_3x3", 1),
            ("skip_connect", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 2)],
    normal_concat=[2, 3, 4, 5],
    reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 0),
            ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("avg_pool_3x3", 0)],
    reduce_concat=[2, 3, 4, 5])
DARTS_V2 = Genotype(
    normal=[("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)],
    normal_concat=[2, 3, 4, 5],
    reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
            ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)],
    reduce_concat=[2, 3, 4, 5])
DARTS = DARTS_V2

PUBLISHED = {"DARTS_V1": DARTS_V1, "DARTS_V2": DARTS_V2, "DARTS": DARTS}


def _validate_cell(name: str, edges, concat) -> tuple:
  require(isinstance(edges, (list, tuple)) and len(edges) >= 2 and len(edges) % 2 == 0,
          f"genotype.{name} must be a non-empty list of (op, input) pairs, two per node; got {edges!r}")
  steps = len(edges) // 2
  out = []
  for k, edge in enumerate(edges):
    require(isinstance(edge, (list, tuple)) and len(edge) == 2,
            f"genotype.{name}[{k}] must be an (op, input_index) pair, got {edge!r}")
    op, index = edge
    require(isinstance(op, str) and op in OPS,
            f"genotype.{name}[{k}]: unknown op {op!r}; valid: {', '.join(sorted(OPS))}")
    node = k // 2
    require(isinstance(index, (int, np.integer)) and not isinstance(index, bool) and 0 <= index < node + 2,
            f"genotype.{name}[{k}]: input index {index!r} of node {node} must be an int in [0, {node + 1}]")
    out.append((str(op), int(index)))
  require(isinstance(concat, (list, tuple, range)) and len(concat) > 0,
          f"genotype.{name}_concat must be a non-empty list of node indices, got {concat!r}")
  for c in concat:
    require(isinstance(c, (int, np.integer)) and not isinstance(c, bool) and 0 <= c < steps + 2,
            f"genotype.{name}_concat: index {c!r} must be an int in [0, {steps + 1}]")
  return tuple(out), tuple(int(c) for c in concat)


def validate_genotype(genotype) -> Genotype:
  """Returns `genotype` as a tuple-normalised `Genotype`, or raises a `DlbookError` saying what is wrong."""
  if isinstance(genotype, dict):
    missing = [f for f in Genotype._fields if f not in genotype]
    require(not missing, f"genotype lacks fields {missing}; it needs {list(Genotype._fields)}")
    extra = sorted(set(genotype) - set(Genotype._fields))
    require(not extra, f"genotype has unknown fields {extra}; valid: {list(Genotype._fields)}")
    genotype = Genotype(**{f: genotype[f] for f in Genotype._fields})
  require(isinstance(genotype, tuple) and len(genotype) == 4,
          f"a genotype must be a Genotype(normal, normal_concat, reduce, reduce_concat), got {type(genotype).__name__}")
  normal, normal_concat = _validate_cell("normal", genotype[0], genotype[1])
  reduce, reduce_concat = _validate_cell("reduce", genotype[2], genotype[3])
  return Genotype(normal, normal_concat, reduce, reduce_concat)


def genotype_to_dict(genotype) -> dict:
  g = validate_genotype(genotype)
  return {"normal": [list(e) for e in g.normal], "normal_concat": list(g.normal_concat),
          "reduce": [list(e) for e in g.reduce], "reduce_concat": list(g.reduce_concat)}


def save_genotype(path: str, genotype) -> None:
  """Writes the genotype as JSON (atomically)."""
  payload = genotype_to_dict(genotype)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(payload, f, indent=2)
  os.replace(tmp, path)


def load_genotype(path: str) -> Genotype:
  require(os.path.exists(path), f"genotype file {path} does not exist")
  try:
    with open(path) as f:
      payload = json.load(f)
  except (OSError, ValueError) as e:
    raise DlbookError(f"cannot read genotype file {path}: {e}") from None
  require(isinstance(payload, dict), f"genotype file {path} must hold a JSON object, got {type(payload).__name__}")
  try:
    return validate_genotype(payload)
  except DlbookError as e:
    raise DlbookError(f"invalid genotype in {path}: {e}") from None


def resolve_genotype(spec: Union[str, Genotype, dict]) -> Genotype:
  """A published name (DARTS_V1, DARTS_V2, DARTS), a path to a genotype.json, or a Genotype/dict."""
  if isinstance(spec, str):
    if spec in PUBLISHED:
      return validate_genotype(PUBLISHED[spec])
    if spec.endswith(".json") or os.path.sep in spec or os.path.exists(spec):
      return load_genotype(spec)
    raise DlbookError(f"unknown genotype {spec!r}; valid: {', '.join(PUBLISHED)} or a path to a genotype.json")
  return validate_genotype(spec)


def derive_genotype(weights_normal, weights_reduce, steps: int = 4, multiplier: int = 4) -> Genotype:
  """Discretises softmax weights [num_edges, len(PRIMITIVES)] into a genotype (reference
  `Network.genotype`): per node keep the 2 inputs whose best non-`none` weight is largest (ties go to
  the lower input index, as the reference's stable sort) and on each its argmax non-`none` op."""
  none = PRIMITIVES.index("none")

  def parse(w):
    w = np.asarray(w, np.float64)
    num_edges = sum(2 + i for i in range(steps))
    require(w.shape == (num_edges, len(PRIMITIVES)),
            f"op weights must have shape {(num_edges, len(PRIMITIVES))}, got {w.shape}")
    masked = w.copy()
    masked[:, none] = -np.inf
    gene, start = [], 0
    for i in range(steps):
      rows = masked[start:start + i + 2]
      strength = rows.max(axis=1)
      edges = sorted(range(i + 2), key=lambda j: -strength[j])[:2]
      gene += [(PRIMITIVES[int(np.argmax(rows[j]))], j) for j in edges]
      start += i + 2
    return gene

  concat = list(range(2 + steps - multiplier, steps + 2))
  return validate_genotype(Genotype(parse(weights_normal), concat, parse(weights_reduce), concat))
