"""Protein secondary-structure prediction: the pure training step and the evaluation of book
chapter 11 (sections 11.3-11.5).

A launcher plugs these into the shared runner:

  data = dlbook.data.load_raw("pdb_dssp")                        # or "cb6133_filtered:PATH", ...
  model = dlbook.models.build("pssp_attention_inception_bgru")  # any pssp_* name
  state = create_train_state(model, key, (1, L, data.num_features), tx)
  step = jax.jit(make_train_step())                             # step(state, batch, key)
  batches: dlbook.data.train_batches(data.train, 64, seed)      # {"features", "labels", "mask"}
  metrics = evaluate(state, dlbook.data.eval_batches(data.test, 64))

Training loss (section 11.3): softmax cross-entropy over the 8 states, averaged over the real residues
of the batch (padding has weight 0).
"""

from typing import Callable, Dict, Iterable, Optional

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from dlbook.metrics.sequence import sequence_metrics


def masked_cross_entropy(logits, labels, mask, label_smoothing: float = 0.0):
  """Mean cross-entropy over residues with mask 1: logits [B, L, K], labels [B, L], mask [B, L]."""
  chex.assert_rank(logits, 3)
  chex.assert_equal_shape([labels, mask])
  one_hot = jax.nn.one_hot(labels, logits.shape[-1])
  if label_smoothing:
    one_hot = optax.smooth_labels(one_hot, label_smoothing)
  losses = optax.softmax_cross_entropy(logits, one_hot)
  return jnp.sum(losses * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def make_train_step(label_smoothing: float = 0.0) -> Callable:
  """The pure step `step(state, batch, key) -> (state, metrics)` (jit it once). `batch` holds
  "features" [B, L, F], "labels" [B, L] (8-state indices) and "mask" [B, L]."""

  def loss_fn(params, state, batch, dropout_key):
    logits, updates = state.apply_fn({"params": params, "batch_stats": state.batch_stats}, batch["features"],
                                     batch["mask"], train=True, rngs={"dropout": dropout_key},
                                     mutable=["batch_stats"])
    loss = masked_cross_entropy(logits, batch["labels"], batch["mask"], label_smoothing)
    return loss, (logits, updates.get("batch_stats", state.batch_stats))

  def step(state, batch, key):
    chex.assert_rank(batch["features"], 3)
    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, state, batch, key)
    state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    mask = batch["mask"]
    correct = (jnp.argmax(logits, -1) == batch["labels"]) * mask
    metrics = {"loss": loss, "q8": 100.0 * correct.sum() / jnp.maximum(mask.sum(), 1.0),
               "grad_norm": optax.tree.norm(grads)}
    return state, metrics

  return step


def eval_step(state, batch) -> Dict[str, jax.Array]:
  """Inference-mode predictions [B, L] and the summed loss and residue count of the batch."""
  logits = state.apply_fn({"params": state.params, "batch_stats": state.batch_stats}, batch["features"],
                          batch["mask"], train=False)
  mask = batch["mask"]
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"])
  return {"pred": jnp.argmax(logits, -1), "loss_sum": jnp.sum(losses * mask), "residues": jnp.sum(mask)}


def evaluate(state, batches: Iterable[dict], step_fn: Optional[Callable] = None,
             per_protein: bool = False) -> Dict[str, object]:
  """Book section 11.5 metrics (Q8, Q3, per-class scores, confusion matrices, SOV'99, the book's SOV)
  and the mean loss over real residues. `step_fn` defaults to `jax.jit(eval_step)`; padded batch rows
  (from `eval_batches`) have mask 0 and do not count."""
  step_fn = step_fn or jax.jit(eval_step)
  labels, preds, masks, loss, residues = [], [], [], 0.0, 0.0
  for batch in batches:
    out = jax.device_get(step_fn(state, batch))
    keep = np.asarray(batch["mask"]).any(axis=1)  # drop the all-padding rows of the last batch
    labels.append(np.asarray(batch["labels"])[keep])
    preds.append(np.asarray(out["pred"])[keep])
    masks.append(np.asarray(batch["mask"])[keep])
    loss, residues = loss + float(out["loss_sum"]), residues + float(out["residues"])
  metrics = sequence_metrics(np.concatenate(labels), np.concatenate(preds), np.concatenate(masks), per_protein)
  metrics["loss"] = loss / max(residues, 1.0)
  return metrics


def majority_baseline(train_split, test_split) -> Dict[str, object]:
  """The metrics of predicting the training set's most frequent 8-state class at every residue."""
  counts = np.bincount(train_split.labels[train_split.mask > 0], minlength=8)
  preds = np.full_like(test_split.labels, int(np.argmax(counts)))
  return sequence_metrics(test_split.labels, preds, test_split.mask)
