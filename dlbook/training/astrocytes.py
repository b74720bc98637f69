"""Artificial astrocytes for convolutional layers: CNGN (thesis seed 001 ch. 4, Algorithm 3).

Each convolutional layer gets one astrocyte with a counter A_j per output filter j, kept in the
non-trainable ``astrocytes`` collection next to ``params`` (no new parameters). In training:

  A_j += max_{h,w} tanh( Σ_batch conv_out[:, h, w, j] )     after every forward pass,
  every NG steps:  W_j ← W_j · Str  if A_j > AS,   W_j ← W_j · Weak  if A_j < −AS,   then A ← 0,

where W_j is filter j's kernel (not its bias) and NG = 4, AS = 2 in the thesis (Table 4.1);
Str, Weak ∈ [0.5, 1.5] are searched. Every ``flax.linen.Conv`` of any model is wrapped without
changing the model: `astrocytes()` is a method interceptor that updates the counters whenever a
conv runs while the ``astrocytes`` collection is mutable (the training step), so evaluation and
plain models are untouched. The modulation is a pure function (`modulate`) applied between
optimizer steps: the thesis's Algorithm 3 modulates inside the forward pass, before the backward
pass of the same batch, which PyTorch's autograd would reject for in-place edits of saved weights;
the order here is forward → gradient step → modulation.

Modes: ``as_described`` (default) does the above. ``reference_noop`` reproduces the thesis
author's published code, whose modulation loop rebinds a local variable and so never changes a
weight (it still counts and resets): with it, or with Str = Weak = 1, training is bit-identical
to the plain CNN (tested). As described, at batch 256 the tanh of a batch sum saturates, so
nearly every filter crosses ±AS within NG steps and kernels grow or shrink geometrically: the
statistics of `modulate` (fraction of filters scaled) and `kernel_norms` show how much.
"""

import dataclasses
from typing import Any, Dict

import chex
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from dlbook.data.augment import augment
from dlbook.errors import require
from dlbook.training.state import TrainState, init_variables
from dlbook.training.steps import cross_entropy, split_logits

COLLECTION = "astrocytes"
MODES = ("as_described", "reference_noop")


@dataclasses.dataclass(frozen=True)
class AstrocyteConfig:
  """NG, AS, Str, Weak of thesis Table 4.1 / §4.3.1 and the mode."""
  ng: int = 4  # neuron-glia power connection: steps between modulations
  sensitivity: float = 2.0  # astrocytic sensitivity AS (symmetric threshold)
  strong: float = 1.0  # Str: factor for filters with A_j > AS
  weak: float = 1.0  # Weak: factor for filters with A_j < -AS
  mode: str = "as_described"

  def __post_init__(self):
    require(self.ng >= 1, f"astrocyte ng must be >= 1, got {self.ng}")
    require(self.sensitivity > 0, f"astrocyte sensitivity must be > 0, got {self.sensitivity}")
    require(self.mode in MODES, f"unknown astrocyte mode {self.mode!r}; valid: {', '.join(MODES)}")


def _record(next_fun, args, kwargs, context):
  out = next_fun(*args, **kwargs)
  module = context.module
  if (context.method_name == "__call__" and isinstance(module, nn.Conv)
      and module.is_mutable_collection(COLLECTION)):
    activity = module.variable(COLLECTION, "activity", lambda: jnp.zeros(out.shape[-1], jnp.float32))
    count = module.variable(COLLECTION, "count", lambda: jnp.zeros((), jnp.int32))
    if not module.is_initializing():
      summed = out.reshape((-1,) + out.shape[-3:]).sum(axis=0)  # Σ over the batch: [H, W, C]
      activity.value = activity.value + jnp.max(jnp.tanh(summed.astype(jnp.float32)), axis=(0, 1))
      count.value = count.value + 1
  return out


def astrocytes():
  """Context in which every ``nn.Conv`` updates its astrocyte counters (when the collection is mutable)."""
  return nn.intercept_methods(_record)


class AstrocyteTrainState(TrainState):
  """`TrainState` plus the ``astrocytes`` collection ({conv path: {activity [C], count}})."""
  astrocytes: Any = flax.struct.field(default_factory=dict)


def create_astrocyte_train_state(model, key, input_shape, tx: optax.GradientTransformation,
                                 **call_kwargs) -> AstrocyteTrainState:
  """Like `create_train_state` (same parameters for the same key), with zeroed astrocyte counters."""
  with astrocytes():
    variables = init_variables(model, key, input_shape, **call_kwargs)
  require(COLLECTION in variables, f"{type(model).__name__} has no flax.linen.Conv layer to attach astrocytes to")
  return AstrocyteTrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx,
                                    batch_stats=variables.get("batch_stats", {}),
                                    astrocytes=variables[COLLECTION])


def _layers(tree, prefix=()):
  """(path, {activity, count}) for every astrocyte in the collection."""
  if "activity" in tree and "count" in tree:
    yield prefix, tree
    return
  for name, sub in tree.items():
    yield from _layers(sub, prefix + (name,))


def _get(tree, path):
  for p in path:
    tree = tree[p]
  return tree


def _set(tree, path, value):
  if not path:
    return value
  out = dict(tree)
  out[path[0]] = _set(tree[path[0]], path[1:], value)
  return out


def modulate(params, astro, config: AstrocyteConfig):
  """Pure post-step update: (params, astro, stats). Layers whose counter reached NG are modulated and reset.

  ``stats``: fraction of all filters multiplied by Str and by Weak at this call (0 when none was due;
  in ``reference_noop`` the filters that *would* be scaled).
  """
  params = flax.core.unfreeze(params) if isinstance(params, flax.core.FrozenDict) else params
  strong_n = weak_n = total = 0
  new_astro = astro
  for path, layer in _layers(astro):
    activity, count = layer["activity"], layer["count"]
    due = count >= config.ng
    is_strong = due & (activity > config.sensitivity)
    is_weak = due & (activity < -config.sensitivity)
    if config.mode == "as_described":
      factor = jnp.where(is_strong, config.strong, jnp.where(is_weak, config.weak, 1.0))
      kernel = _get(params, path + ("kernel",))
      chex.assert_equal(kernel.shape[-1], activity.shape[0])
      params = _set(params, path + ("kernel",), kernel * factor.astype(kernel.dtype))  # bias untouched
    new_astro = _set(new_astro, path, {"activity": jnp.where(due, 0.0, activity),
                                       "count": jnp.where(due, 0, count)})
    strong_n = strong_n + is_strong.sum()
    weak_n = weak_n + is_weak.sum()
    total += activity.shape[0]
  stats = {"astro_fraction_strong": strong_n / max(total, 1), "astro_fraction_weak": weak_n / max(total, 1)}
  return params, new_astro, stats


def kernel_norms(params, astro) -> Dict[str, jnp.ndarray]:
  """L2 norm of every filter's kernel of every astrocyte-wrapped conv ({'a/b': [C]})."""
  out = {}
  for path, _ in _layers(astro):
    kernel = _get(params, path + ("kernel",))
    out["/".join(path)] = jnp.sqrt((kernel.reshape(-1, kernel.shape[-1]) ** 2).sum(axis=0))
  return out


def make_astrocyte_train_step(config: AstrocyteConfig, augment_config=None, label_smoothing: float = 0.0):
  """`train_step(state, batch, key) -> (state, metrics)` of `make_train_step`, with astrocytes (jit it once)."""

  def train_step(state: AstrocyteTrainState, batch, key):
    chex.assert_rank(batch["image"], 4)
    aug_key, dropout_key = jax.random.split(key)
    images = augment(aug_key, batch["image"], augment_config)

    def loss_fn(params):
      with astrocytes():
        outputs, updates = state.apply_fn(
            {"params": params, "batch_stats": state.batch_stats, COLLECTION: state.astrocytes}, images,
            train=True, rngs={"dropout": dropout_key}, mutable=["batch_stats", COLLECTION])
      logits, _ = split_logits(outputs)
      return cross_entropy(logits, batch["label"], label_smoothing), (logits, updates)

    (loss, (logits, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    state = state.apply_gradients(grads=grads, batch_stats=updates.get("batch_stats", state.batch_stats))
    params, astro, stats = modulate(state.params, updates[COLLECTION], config)  # between optimizer steps
    state = state.replace(params=params, astrocytes=astro)
    metrics = {"loss": loss, "accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["label"]),
               "grad_norm": optax.tree.norm(grads), **stats}
    return state, metrics

  return train_step
