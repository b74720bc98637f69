"""DARTS bilevel optimisation (book ch. 3 §3.2.3, Eqs. 3.3-3.8), after quark0/darts `cnn/architect.py`
and `train_search.py`.

One search step, as the reference's training loop:
1. architecture step: alpha <- Adam(alpha, d L_val / d alpha) with
   - first order: the gradient of L_val(w, alpha) at the current weights;
   - second order (Eq. 3.6): the gradient of L_val(w', alpha) with w' the unrolled weight step
     w' = w - xi (mu m + grad_w L_train(w, alpha) + lambda w) (Eq. 3.7 with the SGD momentum buffer m
     and weight decay lambda, as the reference), xi being the weights' current learning rate.
     `hessian="exact"` differentiates through the unrolled step with `jax.grad` (no approximation);
     `hessian="finite_difference"` is the reference's approximation
     d L_val(w', alpha)/d alpha - xi (g+ - g-) / (2 eps), g+- = grad_alpha L_train(w +- eps v, alpha),
     v = grad_w' L_val(w', alpha), eps = 0.01 / ||v||.
2. weight step: w <- SGD(w, grad_w L_train(w, alpha_new)) (clip, coupled weight decay, momentum: the
   `optimizer` config through `dlbook.training.optim`). BatchNorm running statistics are updated by this
   forward pass only (a choice: the reference's architecture forward passes also update them, which
   matters only for eval-mode statistics).

The step is a pure function `step(state, train_batch, val_batch, key) -> (state, metrics)`; the caller
jits it once. Both batches are augmented with `augment_config` (the reference searches on augmented
images for both halves).
"""

from typing import Any, Callable, Optional

import chex
import flax
import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from dlbook.data.augment import augment
from dlbook.errors import require
from dlbook.models.darts.operations import on_accelerator
from dlbook.models.darts.search_network import merge_arch, split_arch
from dlbook.training.steps import cross_entropy

ORDERS = (1, 2)
HESSIANS = ("exact", "finite_difference")


class SearchState(flax.struct.PyTreeNode):
  """Weights w and architecture alphas with their optimizers, and BatchNorm statistics."""
  step: jax.Array
  weights: Any
  alphas: Any
  batch_stats: Any
  w_opt_state: Any
  a_opt_state: Any
  apply_fn: Callable = flax.struct.field(pytree_node=False)
  w_tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)
  a_tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

  @classmethod
  def create(cls, apply_fn, variables, w_tx, a_tx):
    weights, alphas = split_arch(variables["params"])
    return cls(step=jnp.zeros((), jnp.int32), weights=weights, alphas=alphas,
               batch_stats=variables.get("batch_stats", {}), w_opt_state=w_tx.init(weights),
               a_opt_state=a_tx.init(alphas), apply_fn=apply_fn, w_tx=w_tx, a_tx=a_tx)


def train_loss(apply_fn, weights, alphas, batch_stats, images, labels):
  """Train-mode cross-entropy of the search network; returns (loss, (logits, new_batch_stats))."""
  logits, updates = apply_fn({"params": merge_arch(weights, alphas), "batch_stats": batch_stats}, images,
                             train=True, mutable=["batch_stats"])
  return cross_entropy(logits, labels), (logits, updates["batch_stats"])


def momentum_buffer(w_opt_state, weights):
  """The SGD momentum trace m inside the weights' optax state (zeros without momentum)."""
  trace = optax.tree_utils.tree_get(w_opt_state, "trace", None)
  return jax.tree.map(jnp.zeros_like, weights) if trace is None else trace


def unrolled_weights(apply_fn, weights, alphas, batch_stats, batch, xi, momentum_trace, momentum, weight_decay):
  """Eq. 3.7: w' = w - xi (mu m + grad_w L_train(w, alpha) + lambda w), as the reference's unrolled model."""
  grads = jax.grad(lambda w: train_loss(apply_fn, w, alphas, batch_stats, *batch)[0])(weights)
  return jax.tree.map(lambda w, g, m: w - xi * (momentum * m + g + weight_decay * w), weights, grads, momentum_trace)


def first_order_alpha_grad(apply_fn, weights, alphas, batch_stats, val_batch):
  """grad_alpha L_val(w, alpha) (first-order DARTS, xi = 0); returns (grad, val_loss)."""
  loss_fn = lambda a: train_loss(apply_fn, weights, a, batch_stats, *val_batch)[0]
  val_loss, grad = jax.value_and_grad(loss_fn)(alphas)
  return grad, val_loss


def exact_alpha_grad(apply_fn, weights, alphas, batch_stats, train_batch, val_batch, xi, momentum_trace,
                     momentum, weight_decay):
  """Eq. 3.6 exactly: jax.grad through the unrolled weight step; returns (grad, val_loss at w')."""

  def unrolled_val_loss(a):
    w_prime = unrolled_weights(apply_fn, weights, a, batch_stats, train_batch, xi, momentum_trace, momentum,
                               weight_decay)
    return train_loss(apply_fn, w_prime, a, batch_stats, *val_batch)[0]

  val_loss, grad = jax.value_and_grad(unrolled_val_loss)(alphas)
  return grad, val_loss


def finite_difference_alpha_grad(apply_fn, weights, alphas, batch_stats, train_batch, val_batch, xi, momentum_trace,
                                 momentum, weight_decay, r: float = 1e-2):
  """Eq. 3.6 with the reference's central-difference Hessian-vector product (eps = r / ||v||)."""
  w_prime = unrolled_weights(apply_fn, weights, alphas, batch_stats, train_batch, xi, momentum_trace, momentum,
                             weight_decay)
  val_fn = lambda w, a: train_loss(apply_fn, w, a, batch_stats, *val_batch)[0]
  val_loss, (v, d_alpha) = jax.value_and_grad(val_fn, argnums=(0, 1))(w_prime, alphas)
  eps = r / optax.tree.norm(v)
  alpha_grad_at = lambda w: jax.grad(lambda a: train_loss(apply_fn, w, a, batch_stats, *train_batch)[0])(alphas)
  g_plus = alpha_grad_at(jax.tree.map(lambda w, d: w + eps * d, weights, v))
  g_minus = alpha_grad_at(jax.tree.map(lambda w, d: w - eps * d, weights, v))
  grad = jax.tree.map(lambda d, p, m: d - xi * (p - m) / (2 * eps), d_alpha, g_plus, g_minus)
  return grad, val_loss


def alpha_gradient(order: int, hessian: str, apply_fn, weights, alphas, batch_stats, train_batch, val_batch, xi,
                   momentum_trace, momentum: float, weight_decay: float):
  """The architecture gradient of the chosen order; returns (grad, val_loss)."""
  if order == 1:
    return first_order_alpha_grad(apply_fn, weights, alphas, batch_stats, val_batch)
  fn = exact_alpha_grad if hessian == "exact" else finite_difference_alpha_grad
  return fn(apply_fn, weights, alphas, batch_stats, train_batch, val_batch, xi, momentum_trace, momentum,
            weight_decay)


def check_settings(order: int, hessian: str) -> None:
  require(order in ORDERS, f"unknown DARTS order {order!r}; valid: 1 (first order), 2 (second order)")
  require(hessian in HESSIANS, f"unknown DARTS hessian {hessian!r}; valid: {', '.join(HESSIANS)}")


PASSES = ("separate", "shared", "auto")


def resolve_passes(passes: str, order: int, backend=None) -> str:
  """"auto": "shared" for the first order on a GPU/TPU (half the program to compile), "separate" on the
  CPU (it skips the validation pass's weight gradient) and for the second order."""
  require(passes in PASSES, f"passes must be one of {', '.join(PASSES)}, got {passes!r}")
  if passes != "auto":
    return passes
  return "shared" if order == 1 and on_accelerator(backend) else "separate"


def first_order_shared_pass(state: "SearchState", train_batch, val_batch):
  """Both first-order passes as ONE differentiated program: a two-iteration `lax.scan` over (validation,
  training) batches whose body differentiates the training-mode loss with respect to weights and alphas.
  Iteration 0 (validation batch, current alphas) updates the alphas with its alpha gradient; iteration 1
  (training batch, new alphas) supplies the weight gradient, loss, logits and BatchNorm statistics; both
  read `state.weights` and `state.batch_stats`, exactly as the two separate passes. XLA compiles the
  supernet's forward and backward once instead of twice; each pass also computes the gradient the other
  one needs (the weight gradient of the validation pass is the extra work). Returns a dict of the step's
  pieces."""
  require(jax.tree.map(jnp.shape, train_batch) == jax.tree.map(jnp.shape, val_batch),
          "passes='shared' needs training and validation batches of the same shape")
  grad_fn = jax.value_and_grad(train_loss, argnums=(1, 2), has_aux=True)

  def body(carry, x):
    alphas, a_opt_state = carry
    index, images, labels = x
    (loss, (logits, batch_stats)), (w_grad, a_grad) = grad_fn(state.apply_fn, state.weights, alphas,
                                                              state.batch_stats, images, labels)
    a_updates, new_a_opt_state = state.a_tx.update(a_grad, a_opt_state, alphas)
    keep_new = lambda new, old: jnp.where(index == 0, new, old)  # noqa: E731 (only the alpha pass updates)
    carry = (jax.tree.map(keep_new, optax.apply_updates(alphas, a_updates), alphas),
             jax.tree.map(keep_new, new_a_opt_state, a_opt_state))
    # The weight gradient and statistics leave the loop as one flat vector each: one stacked output
    # instead of one per leaf (hundreds of small copies in and after the loop).
    return carry, (loss, logits, ravel_pytree(batch_stats)[0], ravel_pytree(w_grad)[0], a_grad)

  xs = (jnp.arange(2), jnp.stack([val_batch[0], train_batch[0]]), jnp.stack([val_batch[1], train_batch[1]]))
  (alphas, a_opt_state), (losses, logits, flat_stats, flat_grad, a_grad) = jax.lax.scan(
      body, (state.alphas, state.a_opt_state), xs)
  unravel_stats = ravel_pytree(state.batch_stats)[1]
  unravel_weights = ravel_pytree(state.weights)[1]
  return dict(val_loss=losses[0], a_grad=jax.tree.map(lambda t: t[0], a_grad), alphas=alphas,
              a_opt_state=a_opt_state, loss=losses[1], logits=logits[1], batch_stats=unravel_stats(flat_stats[1]),
              w_grad=unravel_weights(flat_grad[1]))


def make_search_step(order: int, w_schedule: optax.Schedule, momentum: float, weight_decay: float,
                     hessian: str = "exact", augment_config=None, passes: str = "separate") -> Callable:
  """Returns the pure DARTS search step for these settings (jit it once). `passes="shared"` (first order
  only) compiles the alpha and weight passes as one program (`first_order_shared_pass`): about half the
  program, the same step up to float rounding; "auto" picks it for the first order on accelerators."""
  check_settings(order, hessian)
  passes = resolve_passes(passes, order)
  require(passes == "separate" or order == 1,
          "passes='shared' is for the first order only (the second order differentiates an unrolled step)")

  def step(state: SearchState, train_batch: dict, val_batch: dict, key: Optional[jax.Array] = None):
    chex.assert_rank([train_batch["image"], val_batch["image"]], 4)
    if key is not None:
      k_train, k_val = jax.random.split(key)
      train_images = augment(k_train, train_batch["image"], augment_config)
      val_images = augment(k_val, val_batch["image"], augment_config)
    else:
      train_images, val_images = train_batch["image"], val_batch["image"]
    tb, vb = (train_images, train_batch["label"]), (val_images, val_batch["label"])
    xi = w_schedule(state.step)
    if passes == "shared":
      p = first_order_shared_pass(state, tb, vb)
      return finish(state, tb, xi, p["alphas"], p["a_opt_state"], p["a_grad"], p["val_loss"], p["loss"],
                    p["logits"], p["batch_stats"], p["w_grad"])

    # 1. architecture step (Eqs. 3.5-3.8).
    a_grad, val_loss = alpha_gradient(order, hessian, state.apply_fn, state.weights, state.alphas, state.batch_stats,
                                      tb, vb, xi, momentum_buffer(state.w_opt_state, state.weights), momentum,
                                      weight_decay)
    a_updates, a_opt_state = state.a_tx.update(a_grad, state.a_opt_state, state.alphas)
    alphas = optax.apply_updates(state.alphas, a_updates)

    # 2. weight step on the train half with the new alphas.
    grad_fn = jax.value_and_grad(train_loss, argnums=1, has_aux=True)
    (loss, (logits, batch_stats)), w_grad = grad_fn(state.apply_fn, state.weights, alphas, state.batch_stats, *tb)
    return finish(state, tb, xi, alphas, a_opt_state, a_grad, val_loss, loss, logits, batch_stats, w_grad)

  def finish(state, tb, xi, alphas, a_opt_state, a_grad, val_loss, loss, logits, batch_stats, w_grad):
    w_updates, w_opt_state = state.w_tx.update(w_grad, state.w_opt_state, state.weights)
    weights = optax.apply_updates(state.weights, w_updates)
    metrics = {"loss": loss, "accuracy": jnp.mean(jnp.argmax(logits, -1) == tb[1]), "val_loss": val_loss,
               "grad_norm": optax.tree.norm(w_grad), "alpha_grad_norm": optax.tree.norm(a_grad), "lr": xi}
    new_state = state.replace(step=state.step + 1, weights=weights, alphas=alphas, batch_stats=batch_stats,
                              w_opt_state=w_opt_state, a_opt_state=a_opt_state)
    return new_state, metrics

  return step
