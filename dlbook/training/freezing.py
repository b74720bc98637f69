"""Selective freezing through parameter masks: blocks, SSF/PSF schedules, masked steps.

Book ch. 4.3.2: after coarse training of all weights (Algorithm 1/2,
step III), fine-tuning freezes part of the network.
- SSF (Eqs. 4.1-4.3): the first ⌊N/2⌋ of N blocks (cells or layers) are frozen.
- PSF(K) (Eqs. 4.4-4.6, Algorithm 2): a frozen window of K blocks starts at l = 0
  and slides down by K after each iteration; Algorithm 2 is a do-while, so the
  windows start at l = 0, K, 2K, ..., N-2K inclusive and the last K blocks are
  never frozen.

Mechanism: a frozen segment is a boolean mask pytree (True = trainable) over the
parameters. The optimizer is `optax.multi_transform` of the configured optimizer
(trainable leaves) and `optax.set_to_zero()` (frozen leaves), so frozen leaves get
no update, no weight decay and no optimizer state. The train step differentiates
with respect to the trainable leaves only (frozen leaves enter through
`stop_gradient`), so XLA computes no weight gradients for frozen leaves and no
backward pass at all through a frozen prefix. BatchNorm layers inside frozen
blocks run in inference mode (their running statistics normalise and are never
updated), so a frozen block is a fixed function during fine-tuning and at test
time alike.

Choices where the book is silent (docs/coarse_to_fine.md):
- Blocks. DARTS evaluation network: one block per cell; the stem belongs to the
  first block and the classifier and auxiliary head to the last (so N = number of
  cells = 20 as in the book, the stem freezes with cell 0 and the heads are never
  frozen). `chain_cnn`: one block per conv layer (with its BatchNorm) and per
  dense layer; the classifier belongs to the last block.
- PSF window size: K = max(1, round-half-up(N * freeze_fraction)) with
  1 <= K <= N // 2; for N=20 and 1/4, 1/5, 1/10 that is 5, 4, 2 (3, 4, 9
  iterations). When K does not divide N the windows stop at the last start
  l <= N - 2K, so the last K blocks stay trainable as in the book.
- Optimizer state carries over across phase boundaries for leaves that stay
  trainable (`transfer_opt_state`, matched by tree path), so "traditional" is
  exactly one uninterrupted run and the modes differ only in the masks. Leaves
  that become trainable again start with fresh (zero) moments.
"""

import contextlib
import dataclasses
import re
from typing import Callable, Dict, List, Sequence, Tuple

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import traverse_util

from dlbook.data.augment import augment
from dlbook.errors import require
from dlbook.registry import Registry
from dlbook.training.steps import classification_loss, predicted_labels

Path = Tuple[str, ...]
MODES = ("traditional", "ssf", "psf")
TRAINABLE, FROZEN = "trainable", "frozen"


@dataclasses.dataclass(frozen=True)
class Block:
  """One freezable unit: every variable whose path starts with one of `prefixes`."""
  name: str
  prefixes: Tuple[Path, ...]


# --------------------------------------------------------------------------- blocks

BLOCK_LAYOUTS: Registry[List[Block]] = Registry("block layout")
register_blocks = BLOCK_LAYOUTS.register


def model_blocks(model_name: str, params) -> List[Block]:
  """The ordered blocks (input side first) of `model_name`'s parameter pytree."""
  blocks = BLOCK_LAYOUTS.get(model_name)(params)
  require(len(blocks) >= 2, f"model {model_name!r} has {len(blocks)} block(s); freezing needs at least 2")
  return blocks


def _indexed(keys, pattern: str) -> Dict[int, str]:
  out = {}
  for k in keys:
    m = re.fullmatch(pattern, k)
    if m:
      out[int(m.group(1))] = k
  return out


@register_blocks("chain_cnn")
def chain_cnn_blocks(params) -> List[Block]:
  """One block per conv layer (conv_i with bn_i) and per dense layer; the classifier
  joins the last block."""
  keys = set(params)
  convs, bns, denses = (_indexed(keys, p) for p in (r"conv_(\d+)", r"bn_(\d+)", r"dense_(\d+)"))
  unknown = keys - set(convs.values()) - set(bns.values()) - set(denses.values()) - {"classifier"}
  require(not unknown, f"chain_cnn parameters have unexpected top-level names {sorted(unknown)}")
  blocks = [Block(f"conv_{i}", tuple((k,) for k in (convs[i], bns.get(i)) if k)) for i in sorted(convs)]
  blocks += [Block(f"dense_{j}", ((denses[j],),)) for j in sorted(denses)]
  require(bool(blocks), "chain_cnn has no conv or dense layers to form blocks")
  last = blocks[-1]
  blocks[-1] = Block(last.name + "+classifier", last.prefixes + (("classifier",),))
  return blocks


@register_blocks("darts_eval")
def darts_eval_blocks(params) -> List[Block]:
  """One block per cell (cell_0 ... cell_{N-1}); stem* joins the first cell, every other
  top-level module (classifier, auxiliary head) joins the last."""
  keys = set(params)
  cells = _indexed(keys, r"cell_(\d+)")
  require(bool(cells), f"darts_eval parameters have no cell_<i> modules (top-level: {sorted(keys)})")
  require(sorted(cells) == list(range(len(cells))), f"darts_eval cells are not numbered 0..N-1: {sorted(cells)}")
  rest = sorted(keys - set(cells.values()))
  stem = tuple((k,) for k in rest if k.startswith("stem"))
  heads = tuple((k,) for k in rest if not k.startswith("stem"))
  blocks = [Block(cells[i], ((cells[i],),)) for i in range(len(cells))]
  blocks[0] = Block("stem+" + blocks[0].name, stem + blocks[0].prefixes) if stem else blocks[0]
  if heads:
    blocks[-1] = Block(blocks[-1].name + "+heads", blocks[-1].prefixes + heads)
  return blocks


# --------------------------------------------------------------------------- schedules

def ssf_frozen_blocks(num_blocks: int) -> Tuple[int, ...]:
  """SSF (Eq. 4.1): the first ⌊N/2⌋ blocks form ω1, which is frozen."""
  return tuple(range(num_blocks // 2))


def psf_window_size(num_blocks: int, freeze_fraction: float) -> int:
  """K for a freeze fraction (1/4, 1/5, 1/10 of N=20 -> 5, 4, 2); round half up, >= 1."""
  require(0 < freeze_fraction <= 0.5, f"freeze_fraction must be in (0, 1/2], got {freeze_fraction}")
  k = max(1, int(num_blocks * freeze_fraction + 0.5))
  require(k <= num_blocks // 2, f"freeze_fraction {freeze_fraction} gives a window of {k} of {num_blocks} blocks; "
          f"PSF needs 1 <= K <= N/2 (use a smaller freeze_fraction or a deeper network)")
  return k


def psf_windows(num_blocks: int, k: int) -> List[Tuple[int, int]]:
  """Algorithm 2's frozen windows [l, l+K): l = 0, K, 2K, ..., up to N-2K inclusive."""
  require(1 <= k <= num_blocks // 2, f"PSF window K={k} must be between 1 and N/2 = {num_blocks // 2}")
  return [(l, l + k) for l in range(0, num_blocks - 2 * k + 1, k)]


def fine_iterations(mode: str, num_blocks: int, freeze_fraction: float = 0.25) -> List[Tuple[int, ...]]:
  """The frozen block indices of each fine-tuning iteration of `mode`."""
  require(mode in MODES, f"unknown freezing mode {mode!r}; valid: {', '.join(MODES)}")
  if mode == "traditional":
    return [()]
  if mode == "ssf":
    return [ssf_frozen_blocks(num_blocks)]
  k = psf_window_size(num_blocks, freeze_fraction)
  return [tuple(range(a, b)) for a, b in psf_windows(num_blocks, k)]


@dataclasses.dataclass(frozen=True)
class Phase:
  """Global steps [start, stop) trained with the blocks `frozen` fixed; iteration 0 is coarse."""
  iteration: int
  start: int
  stop: int
  frozen: Tuple[int, ...]

  @property
  def name(self) -> str:
    return "coarse" if self.iteration == 0 else f"fine_{self.iteration}"


def phase_plan(mode: str, num_blocks: int, coarse_steps: int, fine_steps: int,
               freeze_fraction: float = 0.25) -> List[Phase]:
  """Coarse training then the fine iterations of `mode`, splitting `fine_steps` evenly
  (earlier iterations take the remainder), so every mode trains the same total steps."""
  require(coarse_steps > 0, f"coarse training needs at least one step, got {coarse_steps}")
  windows = fine_iterations(mode, num_blocks, freeze_fraction)
  require(fine_steps >= len(windows), f"fine_steps={fine_steps} cannot cover the {len(windows)} "
          f"fine-tuning iterations of {mode}; raise fine_epochs")
  plan = [Phase(0, 0, coarse_steps, ())]
  base, extra = divmod(fine_steps, len(windows))
  start = coarse_steps
  for i, frozen in enumerate(windows):
    stop = start + base + (1 if i < extra else 0)
    plan.append(Phase(i + 1, start, stop, frozen))
    start = stop
  return plan


def phase_index(plan: Sequence[Phase], step: int) -> int:
  """Index of the phase that runs global step `step` (0-based); the last phase for the end."""
  for i, p in enumerate(plan):
    if p.start <= step < p.stop:
      return i
  require(step == plan[-1].stop, f"step {step} lies outside the plan (0..{plan[-1].stop})")
  return len(plan) - 1


# --------------------------------------------------------------------------- masks

def frozen_prefixes(blocks: Sequence[Block], frozen: Sequence[int]) -> Tuple[Path, ...]:
  return tuple(p for i in frozen for p in blocks[i].prefixes)


def _is_frozen(path: Path, prefixes: Sequence[Path]) -> bool:
  return any(tuple(path[:len(p)]) == tuple(p) for p in prefixes)


def trainable_mask(tree, prefixes: Sequence[Path]):
  """Boolean pytree shaped like `tree`: True where a leaf is trainable."""
  flat = traverse_util.flatten_dict(tree)
  return traverse_util.unflatten_dict({k: not _is_frozen(k, prefixes) for k in flat})


def partition(tree, mask) -> Tuple[dict, dict]:
  """(trainable, frozen) flat dicts {path: leaf} of a nested-dict pytree under `mask`."""
  flat, flat_mask = traverse_util.flatten_dict(tree), traverse_util.flatten_dict(mask)
  return ({k: v for k, v in flat.items() if flat_mask[k]}, {k: v for k, v in flat.items() if not flat_mask[k]})


def merge(trainable: dict, frozen: dict):
  """Inverse of `partition`."""
  return traverse_util.unflatten_dict({**trainable, **frozen})


def keep_frozen(new_tree, old_tree, prefixes: Sequence[Path]):
  """`new_tree` with every leaf under a frozen prefix taken from `old_tree` (static selection)."""
  if not prefixes or not old_tree:
    return new_tree
  new, old = traverse_util.flatten_dict(new_tree), traverse_util.flatten_dict(old_tree)
  return traverse_util.unflatten_dict({k: old[k] if _is_frozen(k, prefixes) else v for k, v in new.items()})


def count_trainable(params, mask) -> int:
  trainable, _ = partition(params, mask)
  return int(sum(x.size for x in trainable.values()))


def parameter_costs(params, blocks: Sequence[Block], plan: Sequence[Phase]) -> dict:
  """Book Tables 4.1-4.6: P1 (coarse trainable), P2 (fine trainable, per iteration) and (P1+P2)/2."""
  p1 = count_trainable(params, trainable_mask(params, ()))
  p2 = [count_trainable(params, trainable_mask(params, frozen_prefixes(blocks, p.frozen))) for p in plan[1:]]
  return {"P1": p1, "P2": p2, "average": [(p1 + x) / 2 for x in p2]}


def masked_optimizer(tx: optax.GradientTransformation, mask) -> optax.GradientTransformation:
  """`tx` on trainable leaves, `set_to_zero` on frozen ones: no update, decay or state."""
  labels = jax.tree.map(lambda m: TRAINABLE if m else FROZEN, mask)
  return optax.multi_transform({TRAINABLE: tx, FROZEN: optax.set_to_zero()}, labels)


def transfer_opt_state(old_state, new_state):
  """`new_state` with every leaf that exists in `old_state` at the same tree path (and shape)
  copied over: momenta of leaves that stay trainable and the schedule step count."""
  old = {jax.tree_util.keystr(p): x for p, x in jax.tree_util.tree_flatten_with_path(old_state)[0]}

  def pick(path, x):
    y = old.get(jax.tree_util.keystr(path))
    return y if y is not None and jnp.shape(y) == jnp.shape(x) and jnp.result_type(y) == jnp.result_type(x) else x

  return jax.tree_util.tree_map_with_path(pick, new_state)


def retarget(state, masked_tx: optax.GradientTransformation):
  """The train state switched to `masked_tx` (a `masked_optimizer`), its optimizer state
  carried over by path. Reusing one `masked_tx` object per mask lets jit reuse compilations."""
  return state.replace(tx=masked_tx, opt_state=transfer_opt_state(state.opt_state, masked_tx.init(state.params)))


def with_frozen_blocks(state, base_tx: optax.GradientTransformation, mask):
  """The train state re-targeted to `mask`: masked optimizer, state carried over by path."""
  return retarget(state, masked_optimizer(base_tx, mask))


# --------------------------------------------------------------------------- step

@contextlib.contextmanager
def frozen_batchnorm(prefixes: Sequence[Path]):
  """Runs every `nn.BatchNorm` under a frozen prefix in inference mode (running statistics
  normalise and are not updated), whatever `train` the model was called with."""
  prefixes = tuple(prefixes)

  def interceptor(next_fun, args, kwargs, context):
    module = context.module
    if (prefixes and context.method_name == "__call__" and isinstance(module, nn.BatchNorm)
        and module.path and _is_frozen(module.path, prefixes)):
      inference = module.clone(parent=None, use_running_average=True)
      return inference.apply({c: module.variables[c] for c in ("params", "batch_stats")
                              if c in module.variables}, *args, **kwargs)
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(interceptor):
    yield


def make_freeze_train_step(mask, prefixes: Sequence[Path] = (), augment_config=None, aux_weight: float = 0.0,
                           label_smoothing: float = 0.0, loss_fn: Callable = classification_loss) -> Callable:
  """The pure step `train_step(state, batch, key) -> (state, metrics)` for one frozen segment.

  `mask` (True = trainable) and `prefixes` (the frozen blocks' paths) are static: each
  segment is its own compiled step. `state.tx` must be `masked_optimizer(tx, mask)`.
  Gradients are taken with respect to the trainable leaves only (Eqs. 4.3, 4.4, 4.6);
  frozen leaves are passed through unchanged (Eqs. 4.2, 4.5) and so stay bit-identical.
  """
  prefixes = tuple(prefixes)

  def train_step(state, batch, key):
    chex.assert_rank(batch["image"], 4)
    chex.assert_equal_shape_prefix([batch["image"], batch["label"]], 1)
    aug_key, dropout_key = jax.random.split(key)
    images = augment(aug_key, batch["image"], augment_config)
    trainable, frozen = partition(state.params, mask)
    frozen_constant = jax.lax.stop_gradient(frozen)

    def trainable_loss(trainable_params):
      with frozen_batchnorm(prefixes):
        return loss_fn(merge(trainable_params, frozen_constant), state.batch_stats, state.apply_fn,
                       images, batch["label"], dropout_key, aux_weight=aux_weight, label_smoothing=label_smoothing)

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(trainable_loss, has_aux=True)(trainable)
    zeros = {k: jnp.zeros_like(v) for k, v in frozen.items()}  # set_to_zero discards them
    updates, opt_state = state.tx.update(merge(grads, zeros), state.opt_state, state.params)
    new_trainable, _ = partition(optax.apply_updates(state.params, updates), mask)
    new_state = state.replace(step=state.step + 1, params=merge(new_trainable, frozen), opt_state=opt_state,
                              batch_stats=keep_frozen(batch_stats, state.batch_stats, prefixes))
    metrics = {"loss": loss, "accuracy": jnp.mean(predicted_labels(logits) == batch["label"]),
               "grad_norm": optax.tree.norm(grads)}
    return new_state, metrics

  return train_step
