"""Operators of the GA engine, each reached by name through a registry (an unknown name is a
`DlbookError` listing the valid ones). All are pure and jit/vmap-compatible; crossover and mutation act
on one genome's flat float32 [D] view (`GenomeSpec.to_flat`), selection and replacement on the population.

- selection ``roulette`` (book §2.2.2 D: p_i = f_i / Σ f), ``tournament`` (k = `tournament_size`;
  seed 004 uses k=2, seed 001 a binary tournament);
- crossover ``uniform`` (book §2.2.2 E: each gene from either parent; P(second parent) per gene =
  `gene_crossover_prob`, ½ by default), ``two_point`` (seed 004: the segment between two cut points
  comes from the second parent), ``arithmetic`` (seed 001 Eq. 3.5: fitness-weighted mean, applied per
  gene with probability `gene_crossover_prob`);
- mutation ``point`` (book §2.2.2 E: with probability `mutation_prob` one gene chosen uniformly is
  changed), ``uniform_reset`` (seed 001 Eq. 3.6: every gene is redrawn with its own `gene_mutation_prob`);
- replacement ``replace_worst`` (book §2.2.2 F: the offspring replace the lowest-fitness members),
  ``elitism`` (seed 001: the `num_elites` best survive, the offspring fill the rest).

Choices where the sources are silent (docs/nas_evolution.md):
- Roulette needs non-negative fitness: when some fitness is negative, all are shifted by -min(f)
  (unchanged for accuracies, the book's case); if every weight is zero the draw is uniform.
- Both parents are drawn independently, so a parent may mate with itself (then the child is a copy
  before mutation).
- Point mutation of an integer/categorical gene always changes it (a uniform draw among the other
  values); a real gene is redrawn uniformly (log-uniformly for log-real) within its bounds.
- Arithmetic crossover: integer genes are rounded, log-real genes are averaged in log space, and a
  categorical gene (no mean exists) comes from parent 1 with probability w1 = f1 / (f1 + f2);
  w1 = ½ when f1 + f2 <= 0.
- Two-point crossover: cut points a < b drawn uniformly among the D-1 inner gene boundaries; genes
  [a, b) come from parent 2 (needs D >= 3 scalar genes).
"""

from typing import Callable

import jax
import jax.numpy as jnp

from dlbook.evolution.genome import CATEGORICAL, INTEGER, KIND_CODE, LOG_REAL
from dlbook.registry import Registry

SELECTIONS: Registry[Callable] = Registry("selection")
CROSSOVERS: Registry[Callable] = Registry("crossover")
MUTATIONS: Registry[Callable] = Registry("mutation")
REPLACEMENTS: Registry[Callable] = Registry("replacement")


@SELECTIONS.register("roulette")
def roulette(key, fitness, num: int, ga=None, size=None) -> jax.Array:
  """Roulette wheel (book §2.2.2 D): P(i) = f_i / Σ_j f_j over evaluated individuals.

  `size` (may be traced): only the first `size` rows are candidates (a shrinking population)."""
  finite = jnp.isfinite(fitness)
  shift = jnp.minimum(0.0, jnp.min(jnp.where(finite, fitness, jnp.inf)))
  w = jnp.where(finite, fitness - shift, 0.0)
  total = w.sum()
  uniform = 1.0 / fitness.shape[0]
  if size is not None:
    w = jnp.where(jnp.arange(fitness.shape[0]) < size, w, 0.0)
    total = w.sum()
    uniform = jnp.where(jnp.arange(fitness.shape[0]) < size, 1.0 / size, 0.0)
  p = jnp.where(total > 0, w / jnp.where(total > 0, total, 1.0), uniform)
  return jax.random.choice(key, fitness.shape[0], (num,), p=p)


@SELECTIONS.register("tournament")
def tournament(key, fitness, num: int, ga=None, size=None) -> jax.Array:
  """Tournament(k): k contestants drawn uniformly with replacement, the fittest wins (seeds 001, 004).

  `size` (may be traced): contestants come from the first `size` rows (a shrinking population)."""
  k = 2 if ga is None else ga.tournament_size
  contestants = jax.random.randint(key, (num, k), 0, fitness.shape[0] if size is None else size)
  return contestants[jnp.arange(num), jnp.argmax(fitness[contestants], axis=1)]


@CROSSOVERS.register("uniform")
def uniform_crossover(key, p1, p2, f1, f2, params, spec) -> jax.Array:
  """Uniform (book Fig. 2.6): gene d comes from parent 2 with probability gene_crossover_prob[d]."""
  take2 = jax.random.uniform(key, p1.shape) < params.gene_crossover_prob
  return jnp.where(take2, p2, p1)


@CROSSOVERS.register("two_point")
def two_point_crossover(key, p1, p2, f1, f2, params, spec) -> jax.Array:
  """Two-point (seed 004 Fig. 13): genes in [a, b) from parent 2, the rest from parent 1."""
  d = p1.shape[-1]
  cuts = jnp.sort(jax.random.choice(key, d - 1, (2,), replace=False) + 1)
  pos = jnp.arange(d)
  return jnp.where((pos >= cuts[0]) & (pos < cuts[1]), p2, p1)


@CROSSOVERS.register("arithmetic")
def arithmetic_crossover(key, p1, p2, f1, f2, params, spec) -> jax.Array:
  """Fitness-weighted arithmetic mean (seed 001 Eq. 3.5), per gene with prob gene_crossover_prob."""
  k_gene, k_cat = jax.random.split(key)
  total = f1 + f2
  ok = jnp.isfinite(total) & (total > 0)
  w = jnp.where(ok, f1 / jnp.where(ok, total, 1.0), 0.5)
  kinds = jnp.asarray(spec.kinds)
  mean = w * p1 + (1 - w) * p2
  log_mean = jnp.exp(w * jnp.log(jnp.maximum(p1, 1e-30)) + (1 - w) * jnp.log(jnp.maximum(p2, 1e-30)))
  cat = jnp.where(jax.random.uniform(k_cat, p1.shape) < w, p1, p2)
  child = jnp.where(kinds == KIND_CODE[INTEGER], jnp.round(mean), mean)
  child = jnp.where(kinds == KIND_CODE[LOG_REAL], log_mean, child)
  child = jnp.where(kinds == KIND_CODE[CATEGORICAL], cat, child)
  apply = jax.random.uniform(k_gene, p1.shape) < params.gene_crossover_prob
  return spec.clip(jnp.where(apply, child, p1))


def _redraw(key, genome, spec, force_change):
  """A fresh value for every gene; discrete genes differ from `genome` where `force_change`."""
  k_new, k_off = jax.random.split(key)
  fresh = spec.sample_flat(k_new, 1)[0]
  lows, highs = jnp.asarray(spec.lows), jnp.asarray(spec.highs)
  n = highs - lows + 1
  offset = jnp.floor(1 + jax.random.uniform(k_off, genome.shape) * (n - 1))  # 1..n-1
  other = lows + jnp.mod(genome - lows + offset, n)
  changed = jnp.where(n > 1, other, genome)
  return jnp.where(jnp.asarray(spec.discrete) & force_change, changed, fresh)


@MUTATIONS.register("point")
def point_mutation(key, genome, params, spec) -> jax.Array:
  """Point mutation (book Figs. 2.8-2.9): with prob mutation_prob, one uniformly chosen gene changes."""
  k_apply, k_pos, k_val = jax.random.split(key, 3)
  pos = jax.random.randint(k_pos, (), 0, genome.shape[-1])
  new = _redraw(k_val, genome, spec, force_change=True)
  hit = (jnp.arange(genome.shape[-1]) == pos) & (jax.random.uniform(k_apply) < params.mutation_prob)
  return jnp.where(hit, new, genome)


@MUTATIONS.register("uniform_reset")
def uniform_reset_mutation(key, genome, params, spec) -> jax.Array:
  """Uniform reset (seed 001 Eq. 3.6): gene d is redrawn within bounds with prob gene_mutation_prob[d]."""
  k_apply, k_val = jax.random.split(key)
  new = _redraw(k_val, genome, spec, force_change=False)
  return jnp.where(jax.random.uniform(k_apply, genome.shape) < params.gene_mutation_prob, new, genome)


@REPLACEMENTS.register("replace_worst")
def replace_worst(flat, fitness, off_flat, off_fitness, ga):
  """Book §2.2.2 F: the offspring take the places of the lowest-fitness members."""
  worst = jnp.argsort(fitness)[:off_flat.shape[0]]
  return flat.at[worst].set(off_flat), fitness.at[worst].set(off_fitness)


@REPLACEMENTS.register("elitism")
def elitism(flat, fitness, off_flat, off_fitness, ga):
  """Seed 001: the num_elites best survive (first rows), the offspring fill the other rows."""
  elites = jnp.argsort(-fitness)[:ga.num_elites]
  return (jnp.concatenate([flat[elites], off_flat]), jnp.concatenate([fitness[elites], off_fitness]))

