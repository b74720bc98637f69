"""`train_and_evaluate(config, workdir)`: the supervised classification loop.

Builds data, model and optimizer from the config, restores the latest orbax
checkpoint in `workdir` if any, trains with a jitted (and, over several devices,
data-parallel) step, evaluates, and writes results.json, TensorBoard events and
pictures. Batches and random keys are pure functions of (seed, step), so a run
resumed after a kill ends with the same parameters as an uninterrupted one.
"""

import os
import time

import jax
import numpy as np
from absl import logging

from dlbook import data as data_lib
from dlbook import models
from dlbook.errors import require
from dlbook.metrics import classification_metrics
from dlbook.training import checkpoint, distributed, optim, reporting, runner, sharding
from dlbook.training.state import count_params, create_train_state
from dlbook.training.steps import eval_step, make_train_step


def validate_config(config) -> None:
  """Rejects nonsensical values with a message naming the key and what is valid."""
  require(int(config.batch_size) > 0, f"batch_size must be positive, got {config.batch_size}")
  require(int(config.get("eval_batch_size", config.batch_size)) > 0, "eval_batch_size must be positive")
  require(float(config.num_epochs) > 0, f"num_epochs must be positive, got {config.num_epochs}")
  require(int(config.get("num_train_steps", 0)) >= 0,
          f"num_train_steps must be >= 0 (0: from num_epochs), got {config.num_train_steps}")
  require(int(config.checkpoint_every_steps) > 0,
          f"checkpoint_every_steps must be positive, got {config.checkpoint_every_steps}")
  require(int(config.log_every_steps) > 0, f"log_every_steps must be positive, got {config.log_every_steps}")
  require(float(config.get("aux_weight", 0.0)) >= 0, "aux_weight must be >= 0")
  require(0 <= float(config.get("label_smoothing", 0.0)) < 1, "label_smoothing must be in [0, 1)")


def evaluate(eval_fn, state, split, batch_size, mesh, num_classes):
  """Metrics over a whole split (padding excluded)."""
  preds, losses = [], []
  for batch in data_lib.eval_batches(split, batch_size):
    out = distributed.gather(eval_fn(state, sharding.shard_batch(batch, mesh)))
    keep = batch["mask"] > 0
    preds.append(out["pred"][keep])
    losses.append(out["loss"][keep])
  metrics = classification_metrics(split.labels, np.concatenate(preds), num_classes)
  metrics["loss"] = float(np.concatenate(losses).mean())
  return metrics


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains, evaluates on the test split, and returns the results.json payload (that of the finished
  run, unchanged, when `workdir` holds one)."""
  t0 = time.time()
  validate_config(config)
  run_dir = checkpoint.Workdir(workdir, config.to_dict())
  if run_dir.finished:
    return run_dir.results()
  dataset = data_lib.load(config.data, seed=config.seed)
  mesh = sharding.data_mesh(config.get("num_devices", 0))
  sharding.check_divisible(config.batch_size, mesh)
  eval_batch_size = int(config.get("eval_batch_size", config.batch_size))
  sharding.check_divisible(eval_batch_size, mesh, "eval_batch_size")
  require(config.batch_size <= len(dataset.train),
          f"batch_size {config.batch_size} is larger than the {len(dataset.train)} training examples")

  steps_per_epoch = len(dataset.train) // config.batch_size
  total_steps = int(config.get("num_train_steps", 0) or round(config.num_epochs * steps_per_epoch))
  model = models.build(config.model_name, num_classes=dataset.num_classes, **config.model.to_dict())
  tx = optim.make_optimizer(config.optimizer, total_steps)
  key = jax.random.key(config.seed)
  init_key, train_key = jax.random.split(key)
  state = create_train_state(model, init_key, (1,) + dataset.image_shape, tx)
  num_params = count_params(state.params)
  state = sharding.replicate(state, mesh)
  train_step = jax.jit(make_train_step(config.data.get("augment"), config.get("aux_weight", 0.0),
                                       config.get("label_smoothing", 0.0)), donate_argnums=0)
  eval_fn = jax.jit(eval_step)
  logging.info("model %s: %d parameters; %d steps (%d per epoch) on %d device(s)", config.model_name,
               num_params, total_steps, steps_per_epoch, mesh.devices.size)

  def step_fn(state, step):
    batch = data_lib.train_batch(dataset.train, config.batch_size, config.seed, step)
    return train_step(state, sharding.shard_batch(batch, mesh), jax.random.fold_in(train_key, step))

  def validate(state, step, log):
    val = evaluate(eval_fn, state, dataset.val, eval_batch_size, mesh, dataset.num_classes)
    log.write(step, {"accuracy": val["accuracy"], "loss": val["loss"]}, prefix="val/")
    logging.info("step %d: val accuracy %.4f", step, val["accuracy"])

  hooks = []
  if dataset.val is not None:
    hooks.append(runner.Hook(runner.every(steps_per_epoch * config.get("eval_every_epochs", 1), skip=total_steps),
                             validate))
  run_dir.start()
  result = runner.train(state, step_fn, total_steps, run_dir.path, log_every=config.log_every_steps,
                        checkpoint_every=config.checkpoint_every_steps, hooks=hooks,
                        max_checkpoints=config.get("max_checkpoints", 3), started=t0)
  state, log = result.state, result.log

  metrics = {}
  if dataset.val is not None:
    val = evaluate(eval_fn, state, dataset.val, eval_batch_size, mesh, dataset.num_classes)
    metrics.update({f"val_{k}": v for k, v in val.items() if k != "confusion_matrix"})
    log.write(total_steps, {"accuracy": val["accuracy"], "loss": val["loss"]}, prefix="val/")
  test = evaluate(eval_fn, state, dataset.test, eval_batch_size, mesh, dataset.num_classes)
  metrics.update({f"test_{k}": v for k, v in test.items()})
  log.write(total_steps, {"accuracy": test["accuracy"], "loss": test["loss"]}, prefix="test/")
  log.close()
  logging.info("test accuracy %.4f  macro-F1 %.4f  MCC %.4f", test["accuracy"], test["f1_macro"], test["mcc"])

  reporting.plot_curves(os.path.join(workdir, "curves.png"), log,
                        [["train/loss", "val/loss"], ["train/accuracy", "val/accuracy"]],
                        f"{config.model_name} on {config.data.name}")
  reporting.plot_confusion(os.path.join(workdir, "confusion_matrix.png"), test["confusion_matrix"],
                           dataset.class_names, f"test confusion ({config.data.name})")
  return reporting.write_results(
      workdir, config=config, seed=config.seed, dataset=dataset.info, metrics=metrics,
      wall_time_s=result.wall_time_s(t0), num_params=num_params, total_steps=total_steps,
      resumed_from_step=result.start_step, train_steps_per_s=result.steps_per_s)
