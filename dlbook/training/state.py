"""Train state that carries BatchNorm statistics next to parameters and optimizer state."""

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state


class TrainState(train_state.TrainState):
  """`flax` TrainState plus `batch_stats` (an empty dict for models without BatchNorm)."""
  batch_stats: Any = flax.struct.field(default_factory=dict)


def init_variables(model, key, input_shape, **call_kwargs):
  """Initialises `model` on zeros of `input_shape` (batch dim included), in train mode."""
  params_key, dropout_key = jax.random.split(key)
  x = jnp.zeros(input_shape, jnp.float32)
  return model.init({"params": params_key, "dropout": dropout_key}, x, train=False, **call_kwargs)


def create_train_state(model, key, input_shape, tx: optax.GradientTransformation, **call_kwargs) -> TrainState:
  variables = init_variables(model, key, input_shape, **call_kwargs)
  return TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx,
                           batch_stats=variables.get("batch_stats", {}))


def count_params(params) -> int:
  return int(sum(x.size for x in jax.tree_util.tree_leaves(params)))
