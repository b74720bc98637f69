"""Pure classification steps: `train_step(state, batch, key) -> (state, metrics)` and
`eval_step(state, batch) -> outputs`. `make_train_step` binds the static settings;
the caller jits the result once.

A model may return `(logits, aux_logits)` in train mode (the DARTS evaluation
network's auxiliary head); the auxiliary cross-entropy is added with `aux_weight`.
"""

from typing import Any, Callable, Optional

import chex
import jax
import jax.numpy as jnp
import optax

from dlbook.data.augment import augment


def cross_entropy(logits, labels, label_smoothing: float = 0.0):
  """Mean softmax cross-entropy over integer labels, with optional label smoothing."""
  chex.assert_rank(logits, 2)
  one_hot = jax.nn.one_hot(labels, logits.shape[-1])
  if label_smoothing:
    one_hot = optax.smooth_labels(one_hot, label_smoothing)
  return optax.softmax_cross_entropy(logits, one_hot).mean()


def split_logits(outputs):
  """(logits, aux_logits or None) from a model's output."""
  if isinstance(outputs, (tuple, list)):
    return outputs[0], outputs[1]
  return outputs, None


def classification_loss(params, batch_stats, apply_fn, images, labels, dropout_key, *,
                        aux_weight: float = 0.0, label_smoothing: float = 0.0):
  """Train-mode loss; returns (loss, (logits, new_batch_stats))."""
  outputs, updates = apply_fn({"params": params, "batch_stats": batch_stats}, images, train=True,
                              rngs={"dropout": dropout_key}, mutable=["batch_stats"])
  logits, aux = split_logits(outputs)
  loss = cross_entropy(logits, labels, label_smoothing)
  if aux is not None and aux_weight:
    loss = loss + aux_weight * cross_entropy(aux, labels, label_smoothing)
  return loss, (logits, updates.get("batch_stats", batch_stats))


def binary_cross_entropy(logits, labels):
  """Mean sigmoid cross-entropy of one logit per example [N, 1] against 0/1 labels (seed 003's loss)."""
  chex.assert_shape(logits, (labels.shape[0], 1))
  return optax.sigmoid_binary_cross_entropy(logits[:, 0], labels.astype(logits.dtype)).mean()


def binary_loss(params, batch_stats, apply_fn, images, labels, dropout_key, *, aux_weight: float = 0.0,
                label_smoothing: float = 0.0):
  """`classification_loss` for a one-logit binary head: sigmoid cross-entropy (no auxiliary head or
  smoothing)."""
  del aux_weight, label_smoothing
  outputs, updates = apply_fn({"params": params, "batch_stats": batch_stats}, images, train=True,
                              rngs={"dropout": dropout_key}, mutable=["batch_stats"])
  logits, _ = split_logits(outputs)
  return binary_cross_entropy(logits, labels), (logits, updates.get("batch_stats", batch_stats))


def predicted_labels(logits):
  """Class predictions: argmax over K logits, or logit > 0 for a single binary logit."""
  return (logits[:, 0] > 0).astype(jnp.int32) if logits.shape[-1] == 1 else jnp.argmax(logits, -1)


def make_train_step(augment_config=None, aux_weight: float = 0.0, label_smoothing: float = 0.0) -> Callable:
  """Returns the pure train step for these settings (jit it once)."""

  def train_step(state, batch, key):
    chex.assert_rank(batch["image"], 4)
    aug_key, dropout_key = jax.random.split(key)
    images = augment(aug_key, batch["image"], augment_config)
    grad_fn = jax.value_and_grad(classification_loss, has_aux=True)
    (loss, (logits, batch_stats)), grads = grad_fn(
        state.params, state.batch_stats, state.apply_fn, images, batch["label"], dropout_key,
        aux_weight=aux_weight, label_smoothing=label_smoothing)
    state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    metrics = {"loss": loss, "accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["label"]),
               "grad_norm": optax.tree.norm(grads)}
    return state, metrics

  return train_step


def eval_step(state, batch):
  """Inference-mode predictions and per-example loss; padding rows have mask 0."""
  outputs = state.apply_fn({"params": state.params, "batch_stats": state.batch_stats}, batch["image"], train=False)
  logits, _ = split_logits(outputs)
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
  return {"pred": jnp.argmax(logits, -1), "loss": losses * batch["mask"]}
