"""Genomes of the GA engine: named genes with kinds and bounds, and populations as one batched pytree.

A `GenomeSpec` lists genes of four kinds (integer, real, log-real, categorical), each a scalar or a
fixed-shape array. A population is ONE pytree ``{gene_name: array[P, *gene_shape]}``, never a list of
objects (the evosax convention); the operators work on its flat float32 [P, D] view. Book ch. 2,
§2.2.1 (genome encoding) and §2.2.2 A (random initial population within per-gene bounds).
"""

import dataclasses
import math
from typing import Any, Dict, Optional, Sequence, Tuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from dlbook.errors import require

INTEGER, REAL, LOG_REAL, CATEGORICAL = "integer", "real", "log_real", "categorical"
GENE_KINDS = (INTEGER, REAL, LOG_REAL, CATEGORICAL)
KIND_CODE = {k: i for i, k in enumerate(GENE_KINDS)}

Population = Dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class Gene:
  """One named gene: a scalar (shape ()) or a fixed-shape array of scalar genes of one kind.

  Integer genes hold values in [low, high]; real genes in [low, high); log-real genes in [low, high)
  drawn log-uniformly; categorical genes hold an index into `choices` (decode maps it to the value).
  """
  name: str
  kind: str
  low: float = 0.0
  high: float = 1.0
  choices: Optional[Tuple[Any, ...]] = None
  shape: Tuple[int, ...] = ()

  @property
  def size(self) -> int:
    return int(np.prod(self.shape, dtype=np.int64))

  @property
  def dtype(self):
    return jnp.int32 if self.kind in (INTEGER, CATEGORICAL) else jnp.float32


def integer(name: str, low: int, high: int, shape: Sequence[int] = ()) -> Gene:
  """Integer gene with values low..high inclusive."""
  return Gene(name, INTEGER, int(low), int(high), None, tuple(shape))


def real(name: str, low: float, high: float, shape: Sequence[int] = ()) -> Gene:
  return Gene(name, REAL, float(low), float(high), None, tuple(shape))


def log_real(name: str, low: float, high: float, shape: Sequence[int] = ()) -> Gene:
  """Real gene drawn log-uniformly (e.g. a learning rate in [1e-6, 1e-1], seed 004)."""
  return Gene(name, LOG_REAL, float(low), float(high), None, tuple(shape))


def categorical(name: str, choices: Sequence[Any], shape: Sequence[int] = ()) -> Gene:
  """Categorical gene; the genome stores the index 0..len(choices)-1."""
  choices = tuple(choices)
  return Gene(name, CATEGORICAL, 0, len(choices) - 1, choices, tuple(shape))


class GenomeSpec:
  """An ordered set of genes; converts populations between the pytree and a flat [P, D] view.

  The flat view (float32, one column per scalar gene, genes in declared order, each in C order)
  is what the operators work on; integer and categorical values are exact in float32.
  """

  def __init__(self, genes: Sequence[Gene]):
    genes = tuple(genes)
    require(len(genes) > 0, "a genome spec needs at least one gene")
    names = [g.name for g in genes]
    require(len(set(names)) == len(names), f"gene names must be unique, got {names}")
    for g in genes:
      require(g.kind in GENE_KINDS, f"gene {g.name!r}: unknown kind {g.kind!r}; valid: {', '.join(GENE_KINDS)}")
      require(all(int(s) > 0 for s in g.shape), f"gene {g.name!r}: shape must be positive, got {g.shape}")
      if g.kind == CATEGORICAL:
        require(g.choices is not None and len(g.choices) >= 1, f"gene {g.name!r}: categorical needs choices")
      elif g.kind == INTEGER:
        require(g.low <= g.high, f"gene {g.name!r}: integer bounds need low <= high, got [{g.low}, {g.high}]")
      else:
        require(g.low < g.high and math.isfinite(g.low) and math.isfinite(g.high),
                f"gene {g.name!r}: real bounds need finite low < high, got [{g.low}, {g.high}]")
        require(g.kind != LOG_REAL or g.low > 0, f"gene {g.name!r}: log-real bounds must be > 0, got {g.low}")
    self.genes = genes
    self.names = tuple(names)
    self.sizes = tuple(g.size for g in genes)
    self.num_genes = int(sum(self.sizes))
    rep = lambda f: np.concatenate([np.full(g.size, f(g)) for g in genes])
    self.kinds = rep(lambda g: KIND_CODE[g.kind]).astype(np.int32)
    self.lows = rep(lambda g: g.low).astype(np.float32)
    self.highs = rep(lambda g: g.high).astype(np.float32)
    self.gene_index = rep(lambda g: names.index(g.name)).astype(np.int32)  # flat slot -> gene

  def __repr__(self):
    genes = (f"{g.name}:{g.kind}{list(g.shape) if g.shape else ''}" for g in self.genes)
    return f"GenomeSpec({', '.join(genes)})"

  @property
  def discrete(self) -> np.ndarray:
    return (self.kinds == KIND_CODE[INTEGER]) | (self.kinds == KIND_CODE[CATEGORICAL])

  # -- conversions
  def to_flat(self, population: Population) -> jax.Array:
    """{name: [P, *shape]} -> float32 [P, D]."""
    cols = []
    for g in self.genes:
      v = jnp.asarray(population[g.name])
      cols.append(v.reshape(v.shape[:v.ndim - len(g.shape)] + (g.size,)).astype(jnp.float32))
    return jnp.concatenate(cols, axis=-1)

  def from_flat(self, flat: jax.Array) -> Population:
    """float32 [..., D] -> {name: [..., *shape]}; discrete genes rounded and clipped to bounds."""
    chex.assert_axis_dimension(flat, -1, self.num_genes)
    flat = self.clip(flat)
    out, start = {}, 0
    for g in self.genes:
      v = flat[..., start:start + g.size]
      start += g.size
      if g.kind in (INTEGER, CATEGORICAL):
        v = jnp.round(v).astype(jnp.int32)
      out[g.name] = v.reshape(v.shape[:-1] + g.shape)
    return out

  def clip(self, flat: jax.Array) -> jax.Array:
    return jnp.clip(flat, self.lows, self.highs)

  # -- sampling (step A)
  def sample_flat(self, key: jax.Array, n: int) -> jax.Array:
    """[n, D] genes drawn uniformly within bounds (log-uniformly for log-real)."""
    k_int, k_real = jax.random.split(key)
    u = jax.random.uniform(k_real, (n, self.num_genes))
    lows, highs = jnp.asarray(self.lows), jnp.asarray(self.highs)
    kinds = jnp.asarray(self.kinds)
    reals = lows + u * (highs - lows)
    log_reals = jnp.exp(jnp.log(jnp.maximum(lows, 1e-30)) +
                        u * (jnp.log(jnp.maximum(highs, 1e-30)) - jnp.log(jnp.maximum(lows, 1e-30))))
    ints = jnp.floor(lows + jax.random.uniform(k_int, (n, self.num_genes)) * (highs - lows + 1))
    ints = jnp.minimum(ints, highs)
    out = jnp.where(kinds == KIND_CODE[LOG_REAL], log_reals, reals)
    out = jnp.where(jnp.asarray(self.discrete), ints, out)
    # A real draw may round up to `high` in float32; keep the half-open interval.
    return jnp.where(jnp.asarray(self.discrete), out, jnp.minimum(out, jnp.nextafter(highs, lows)))

  def sample(self, key: jax.Array, n: int) -> Population:
    return self.from_flat(self.sample_flat(key, n))

  # -- per-gene settings
  def per_gene(self, value, name: str = "value") -> np.ndarray:
    """Expands a scalar or ``{gene_name: value}`` (missing genes -> 0) to a float32 [D] vector."""
    if isinstance(value, dict) or hasattr(value, "to_dict"):
      value = dict(value)
      unknown = sorted(set(value) - set(self.names))
      require(not unknown, f"{name} names unknown genes {unknown}; valid: {', '.join(self.names)}")
      return np.asarray([float(value.get(self.names[i], 0.0)) for i in self.gene_index], np.float32)
    if np.ndim(value) == 0:
      return np.full(self.num_genes, float(value), np.float32)
    value = np.asarray(value, np.float32)
    require(value.shape == (self.num_genes,), f"{name} must be a scalar, a dict by gene, or length "
            f"{self.num_genes}; got shape {value.shape}")
    return value

  # -- human-readable values
  def encode(self, values: dict) -> Population:
    """One genome (no population axis) from readable values; categorical values are looked up.

    Raises `DlbookError` naming the gene and the valid values for anything out of the space.
    """
    missing = [n for n in self.names if n not in values]
    extra = sorted(set(values) - set(self.names))
    require(not missing and not extra, f"genome needs exactly genes {list(self.names)}; "
            f"missing {missing}, unknown {extra}")
    out = {}
    for g in self.genes:
      v = np.asarray(values[g.name], dtype=object).reshape(-1)
      require(v.size == g.size, f"gene {g.name!r} needs {g.size} value(s) (shape {g.shape}), got {v.size}")
      if g.kind == CATEGORICAL:
        idx = []
        for x in v:
          require(x in g.choices, f"gene {g.name!r}: {x!r} is not a valid choice; valid: {list(g.choices)}")
          idx.append(list(g.choices).index(x))
        arr = np.asarray(idx, np.int32)
      elif g.kind == INTEGER:
        require(all(float(x) == int(x) and g.low <= int(x) <= g.high for x in v),
                f"gene {g.name!r}: {list(v)} must be integers in [{int(g.low)}, {int(g.high)}]")
        arr = np.asarray([int(x) for x in v], np.int32)
      else:
        require(all(g.low <= float(x) <= g.high for x in v),
                f"gene {g.name!r}: {list(v)} must lie in [{g.low}, {g.high}]")
        arr = np.asarray([float(x) for x in v], np.float32)
      out[g.name] = jnp.asarray(arr.reshape(g.shape))
    return out

  def decode(self, genome) -> dict:
    """One genome (no population axis) -> {name: python value or tuple}; categoricals -> choices."""
    out = {}
    for g in self.genes:
      v = np.asarray(jax.device_get(genome[g.name])).reshape(-1)
      if g.kind == CATEGORICAL:
        vals = [g.choices[int(i)] for i in v]
      elif g.kind == INTEGER:
        vals = [int(i) for i in v]
      else:
        vals = [float(i) for i in v]
      out[g.name] = vals[0] if g.shape == () else tuple(vals)
    return out


def stack(genomes: Sequence[Population]) -> Population:
  """A population from single genomes."""
  return jax.tree.map(lambda *xs: jnp.stack(xs), *genomes)


def take(population: Population, i) -> Population:
  """Individual `i` (or a sub-population for an index array)."""
  return jax.tree.map(lambda x: x[i], population)


def population_size(population: Population) -> int:
  return int(jax.tree.leaves(population)[0].shape[0])

