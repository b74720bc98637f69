"""`search(config, workdir)`: the DARTS architecture search loop (book ch. 3; reference `cnn/train_search.py`).

The training set is split 50/50 (stratified) into a half for the weights w and a half for the
architecture alphas (`data.val_fraction = 0.5`). Every step takes the next batch of the w half and the
batch of the alpha half with the same step index (both are pure functions of (seed, step), so a run
resumed from a checkpoint continues exactly), and runs the jitted bilevel step (`bilevel.py`). Each
epoch logs the derived genotype; the run ends by writing `genotype.json`, the cell pictures
`normal.png` / `reduce.png` (book Figs. 3.6 / 3.7), the softmax(alpha) heat map `alphas.png`, training
curves, TensorBoard events and `results.json`.

Choices: the reference draws the alpha batch with replacement from a fresh shuffle each step; here the
alpha half is walked through in its own per-epoch shuffles (seed + 1). The supernet is evaluated on the
alpha half in eval mode (running BatchNorm statistics) every `eval_every_epochs`.
"""

import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from dlbook import data as data_lib
from dlbook import models
from dlbook.errors import require
from dlbook.models.darts.genotypes import derive_genotype, genotype_to_dict, save_genotype
from dlbook.models.darts.search_network import merge_arch
from dlbook.nas.darts import bilevel, visualize
from dlbook.training import checkpoint, optim, reporting, runner


def validate_config(config) -> None:
  require(int(config.batch_size) > 0, f"batch_size must be positive, got {config.batch_size}")
  require(float(config.num_epochs) > 0, f"num_epochs must be positive, got {config.num_epochs}")
  require(int(config.get("num_train_steps", 0)) >= 0,
          f"num_train_steps must be >= 0 (0: from num_epochs), got {config.num_train_steps}")
  require(int(config.checkpoint_every_steps) > 0, "checkpoint_every_steps must be positive")
  require(int(config.log_every_steps) > 0, "log_every_steps must be positive")
  require(0.0 < float(config.data.val_fraction) < 1.0,
          f"data.val_fraction (the alpha half) must be in (0, 1), got {config.data.val_fraction}")
  bilevel.check_settings(int(config.order), str(config.hessian))


def op_weights(alphas) -> tuple:
  """softmax(alpha) for the normal and the reduction cell, as numpy arrays."""
  return (np.asarray(jax.nn.softmax(alphas["alphas_normal"], -1)),
          np.asarray(jax.nn.softmax(alphas["alphas_reduce"], -1)))


def current_genotype(state: bilevel.SearchState, steps: int, multiplier: int):
  return derive_genotype(*op_weights(state.alphas), steps=steps, multiplier=multiplier)


def evaluate_supernet(eval_fn, state, split, batch_size: int, limit: int) -> dict:
  """Eval-mode accuracy and loss of the supernet on (the first `limit` examples of) a split."""
  n = min(len(split), limit) if limit else len(split)
  sub = data_lib.Split(split.images[:n], split.labels[:n])
  correct, loss_sum = 0.0, 0.0
  for batch in data_lib.eval_batches(sub, batch_size):
    out = jax.device_get(eval_fn(state, batch))
    correct += float(out["correct"])
    loss_sum += float(out["loss"])
  return {"accuracy": correct / n, "loss": loss_sum / n}


def make_eval_fn():
  def eval_fn(state, batch):
    variables = {"params": merge_arch(state.weights, state.alphas), "batch_stats": state.batch_stats}
    logits = state.apply_fn(variables, batch["image"], train=False)
    losses = -jnp.take_along_axis(jax.nn.log_softmax(logits), batch["label"][:, None], 1)[:, 0]
    correct = (jnp.argmax(logits, -1) == batch["label"]) * batch["mask"]
    return {"correct": correct.sum(), "loss": (losses * batch["mask"]).sum()}
  return eval_fn


def search(config, workdir: str) -> dict:
  """Runs (or resumes) a DARTS search; returns the results.json payload (that of the finished run,
  unchanged, when `workdir` holds one)."""
  t0 = time.time()
  validate_config(config)
  run_dir = checkpoint.Workdir(workdir, config.to_dict())
  if run_dir.finished:
    return run_dir.results()
  dataset = data_lib.load(config.data, seed=config.seed)
  require(dataset.val is not None, "the search needs the alpha half: set data.val_fraction > 0")
  batch_size = int(config.batch_size)
  require(batch_size <= min(len(dataset.train), len(dataset.val)),
          f"batch_size {batch_size} is larger than a half of the search data "
          f"({len(dataset.train)} / {len(dataset.val)} examples)")
  steps_per_epoch = len(dataset.train) // batch_size
  total_steps = int(config.get("num_train_steps", 0) or round(config.num_epochs * steps_per_epoch))

  model = models.build("darts_search", num_classes=dataset.num_classes, **config.model.to_dict())
  w_tx = optim.make_optimizer(config.optimizer, total_steps)
  w_schedule = optim.make_schedule(config.optimizer, total_steps)
  a_tx = optim.make_optimizer(config.arch_optimizer, total_steps)
  init_key, train_key = jax.random.split(jax.random.key(config.seed))
  # One compiled init: op-by-op (eager) init of the supernet dispatches thousands of small ops.
  variables = jax.jit(lambda key: model.init({"params": key}, jnp.zeros((2,) + dataset.image_shape), train=False))(
      init_key)
  state = bilevel.SearchState.create(model.apply, variables, w_tx, a_tx)
  num_weights = int(sum(x.size for x in jax.tree_util.tree_leaves(state.weights)))

  search_step = jax.jit(bilevel.make_search_step(
      int(config.order), w_schedule, float(config.optimizer.momentum), float(config.optimizer.weight_decay),
      str(config.hessian), config.data.get("augment"), passes=str(config.get("passes", "separate"))),
      donate_argnums=0)
  eval_fn = jax.jit(make_eval_fn())
  steps, multiplier = int(config.model.steps), int(config.model.multiplier)
  logging.info("DARTS search (order %d, hessian %s): %d weights, %d steps (%d per epoch) on %s",
               config.order, config.hessian, num_weights, total_steps, steps_per_epoch, dataset.name)

  def step_fn(state, step):
    batch = data_lib.train_batch(dataset.train, batch_size, config.seed, step)
    val_batch = data_lib.train_batch(dataset.val, batch_size, config.seed + 1, step)
    return search_step(state, batch, val_batch, jax.random.fold_in(train_key, step))

  def log_genotype(state, step, log):
    logging.info("epoch %d genotype = %s", step // steps_per_epoch, current_genotype(state, steps, multiplier))

  def validate(state, step, log):
    val = evaluate_supernet(eval_fn, state, dataset.val, int(config.eval_batch_size),
                            int(config.get("eval_examples", 0)))
    log.write(step, val, prefix="val/")
    logging.info("step %d: supernet accuracy on the alpha half %.4f", step, val["accuracy"])

  hooks = [runner.Hook(runner.every(steps_per_epoch), log_genotype),
           runner.Hook(runner.every(int(config.get("eval_every_epochs", 1)) * steps_per_epoch, skip=total_steps),
                       validate)]
  run_dir.start()
  result = runner.train(state, step_fn, total_steps, run_dir.path, log_every=config.log_every_steps,
                        checkpoint_every=config.checkpoint_every_steps, name="search", prefix="search/",
                        hooks=hooks, max_checkpoints=config.get("max_checkpoints", 3), started=t0)
  state, log = result.state, result.log

  val = evaluate_supernet(eval_fn, state, dataset.val, int(config.eval_batch_size), int(config.get("eval_examples", 0)))
  log.write(total_steps, val, prefix="val/")
  log.close()

  weights_normal, weights_reduce = op_weights(state.alphas)
  genotype = derive_genotype(weights_normal, weights_reduce, steps=steps, multiplier=multiplier)
  save_genotype(os.path.join(workdir, "genotype.json"), genotype)
  title = f"DARTS order {config.order} on {config.data.name}"
  visualize.plot_genotype(genotype, os.path.join(workdir, "normal.png"), os.path.join(workdir, "reduce.png"), title)
  visualize.plot_op_weights(os.path.join(workdir, "alphas.png"), weights_normal, weights_reduce, title)
  reporting.plot_curves(os.path.join(workdir, "curves.png"), log,
                        [["search/loss", "search/val_loss"], ["search/accuracy", "val/accuracy"]], title)
  logging.info("derived genotype = %s", genotype)
  last = next((r for r in reversed(log.records) if "search/loss" in r), {})
  metrics = {"supernet_val_accuracy": val["accuracy"], "supernet_val_loss": val["loss"],
             "final_train_loss": last.get("search/loss"), "final_train_accuracy": last.get("search/accuracy")}
  return reporting.write_results(
      workdir, config=config, seed=config.seed, dataset=dataset.info, metrics=metrics,
      wall_time_s=result.wall_time_s(t0), genotype=genotype_to_dict(genotype),
      op_weights={"normal": weights_normal, "reduce": weights_reduce}, num_weights=num_weights,
      total_steps=total_steps, resumed_from_step=result.start_step, search_steps_per_s=result.steps_per_s)
