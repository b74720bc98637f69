"""Weight averaging: Gen-Soup's inheritance of weights (thesis seed 001 ch. 5, Eq. 5.1) and uniform model
soups (Wortsman et al., ICML 2022, the thesis's [45]).

- `average(trees, weights)`: Σ_i w_i θ_i / Σ_i w_i leaf by leaf (parameters and BatchNorm statistics
  alike), accumulated in float32 and cast back to each leaf's dtype;
- `parent_weights(f1, f2)`: the two parents' shares, f1 / (f1 + f2) and f2 / (f1 + f2), or ½ each when
  the sum is not positive and finite (as the GA engine's arithmetic crossover does for genes);
- `inherit`: Eq. 5.1, the offspring's weights from its two parents: the fitness-weighted average when
  the parents share the architecture, otherwise (or when both parents are one individual, e.g. the
  elite) an unchanged copy of the better parent's;
- `reestimate_batch_stats`: the running mean and variance of every BatchNorm set to the average of its
  per-batch statistics over some training batches (the cumulative average of SWA's `update_bn`), the
  optional repair of an averaged model's statistics.
"""

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dlbook.errors import require


def parent_weights(f1: float, f2: float):
  """Normalised shares of two parents with fitness f1, f2 (thesis Eq. 5.1); ½ each unless f1 + f2 > 0."""
  total = float(f1) + float(f2)
  if not np.isfinite(total) or total <= 0:
    return 0.5, 0.5
  return float(f1) / total, float(f2) / total


def average(trees: Sequence, weights: Sequence[float]):
  """Σ_i w_i θ_i / Σ_i w_i of pytrees with equal structure, leaf by leaf (float32 sums)."""
  require(len(trees) == len(weights) and len(trees) > 0, "average needs one weight per tree")
  w = np.asarray(weights, np.float64)
  require(np.all(np.isfinite(w)) and np.all(w >= 0) and w.sum() > 0,
          f"averaging weights must be finite, non-negative and not all zero, got {list(weights)}")
  w = (w / w.sum()).astype(np.float32)

  def leaf(*xs):
    acc = sum(np.float32(wi) * np.asarray(x, np.float32) for wi, x in zip(w, xs))
    return acc.astype(np.asarray(xs[0]).dtype)
  return jax.tree.map(leaf, *trees)


def uniform(trees: Sequence):
  """The uniform soup: the plain mean of the trees."""
  return average(trees, [1.0] * len(trees))


def inherit(parent1, parent2, f1: float, f2: float, same_architecture: bool, same_individual: bool = False):
  """Thesis Eq. 5.1: (weights, how) of an offspring. ``how`` is ``"copy"`` (one individual is both
  parents: its weights unchanged), ``"better_parent"`` (architectures differ: the better parent's
  weights, parent 1 on a tie) or ``"average"`` (the fitness-weighted average)."""
  if same_individual:
    return parent1, "copy"
  if not same_architecture:
    return (parent1 if not f2 > f1 else parent2), "better_parent"
  return average([parent1, parent2], parent_weights(f1, f2)), "average"


@functools.lru_cache(maxsize=None)
def _batch_stats_fn(model):
  momenta = {}

  def record(next_fun, args, kwargs, context):
    if isinstance(context.module, nn.BatchNorm) and context.method_name == "__call__":
      momenta[tuple(context.module.path)] = float(context.module.momentum)  # at trace time
    return next_fun(*args, **kwargs)

  @jax.jit
  def one(params, zeros, images):
    # Starting from zero statistics, one training-mode pass leaves (1 - momentum) x the batch's own mean
    # and variance; the forward pass itself normalises with the batch's statistics, never the running ones.
    with nn.intercept_methods(record):
      _, updates = model.apply({"params": params, "batch_stats": zeros}, images, train=True, mutable=["batch_stats"])
    return updates["batch_stats"]
  return one, momenta


def reestimate_batch_stats(model, variables: dict, batches: Sequence) -> dict:
  """`variables` with every BatchNorm's running mean and variance replaced by the average over `batches`
  (image arrays) of that layer's batch statistics in a training-mode pass."""
  if not variables.get("batch_stats") or not len(batches):
    return variables
  one, momenta = _batch_stats_fn(model)
  zeros = jax.tree.map(jnp.zeros_like, variables["batch_stats"])
  total = None
  for images in batches:
    stats = one(variables["params"], zeros, jnp.asarray(images))
    total = stats if total is None else jax.tree.map(jnp.add, total, stats)

  def scale(path, x):
    keys = tuple(p.key for p in path[:-1])
    require(keys in momenta, f"batch statistics {'/'.join(keys)} belong to no BatchNorm layer seen in a pass")
    return np.asarray(x / (len(batches) * (1.0 - momenta[keys])), np.asarray(x).dtype)
  return dict(variables, batch_stats=jax.tree_util.tree_map_with_path(scale, total))
