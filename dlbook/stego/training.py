"""The GAN steganography experiment (book ch. 6-8): train, evaluate, run the XuNet security test.

`train_and_evaluate(config, workdir)` reads the config once (`Settings`), trains the generator,
extractors and steganalyzer on the shared runner (`train_generator`; LSB has nothing to train),
evaluates on the test covers (`evaluation`), and, when enabled, trains an independent XuNet
steganalyzer from scratch on fresh cover/stego pairs (`train_xunet`, book §8.3.2). Both trainings
resume after a kill; rerunning a finished run returns its results unchanged.
"""

import os
import time

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from dlbook import data as data_lib
from dlbook.metrics import image as im
from dlbook.errors import require
from dlbook.stego import evaluation, xunet
from dlbook.stego.networks import build_networks
from dlbook.stego.images import save_examples
from dlbook.stego.settings import Settings
from dlbook.stego.steps import StegoState, create_state, make_train_step, train_state
from dlbook.training import checkpoint, optim, reporting, runner
from dlbook.training.state import TrainState, count_params


def adam(learning_rate: float, b1: float, b2: float = 0.999, final_learning_rate: float = -1.0,
         total_steps: int = 0):
  """Adam (book: lr 2e-4, §7.4.1); with `final_learning_rate` >= 0 the rate follows a cosine decay
  to it over `total_steps` (a choice of the CPU presets, docs/stego.md)."""
  cosine = final_learning_rate >= 0 and total_steps > 0
  return optim.make_optimizer(ml_collections.ConfigDict(dict(
      name="adam", learning_rate=learning_rate, b1=b1, b2=b2, schedule="cosine" if cosine else "constant",
      final_learning_rate=max(final_learning_rate, 0.0))), total_steps)


def train_generator(s: Settings, dataset, workdir: str, started: float):
  """Trains (or resumes) the GAN; returns (final state, training info, runner result)."""
  gen, extractors, stegan = build_networks(s)
  init_key, train_key = jax.random.split(jax.random.key(s.seed))
  state = create_state(init_key, gen, extractors, stegan, dataset.image_shape, s.message_bits,
                       lambda: adam(s.learning_rate, s.b1, s.b2, s.final_learning_rate, s.num_train_steps))
  require(s.batch_size <= len(dataset.train),
          f"batch_size {s.batch_size} is larger than the {len(dataset.train)} training covers")
  train_step = jax.jit(make_train_step(s.step), donate_argnums=0)

  def step_fn(state, step):
    batch = data_lib.train_batch(dataset.train, s.batch_size, s.seed, step)
    return train_step(state, {"image": batch["image"]}, jax.random.fold_in(train_key, step))

  bit_keys = tuple(f"bit_acc_{i + 1}" for i in range(len(extractors)))
  result = runner.train(state, step_fn, s.num_train_steps, workdir, log_every=s.log_every_steps,
                        checkpoint_every=s.checkpoint_every_steps, name="stego", max_checkpoints=s.max_checkpoints,
                        started=started, progress_keys=("l_cr", "l_d", "l_st", "psnr_float") + bit_keys)
  state, log = result.state, result.log
  reporting.plot_curves(os.path.join(workdir, "curves.png"), log,
                        [["train/l_cr"], ["train/l_d"], ["train/l_st", "train/l_adv"], ["train/psnr_float"],
                         [f"train/{k}" for k in bit_keys]], s.title)
  log.close()
  info = {"total_steps": s.num_train_steps, "resumed_from_step": result.start_step,
          "train_steps_per_s": result.steps_per_s,
          "num_params": {"generator": count_params(state.generator.params),
                         "extractors": [count_params(x.params) for x in state.extractors],
                         "steganalyzer": count_params(state.steganalyzer.params)}}
  return state, info, result


@flax.struct.dataclass
class XuNetState:
  """XuNet's train state and the parameters of its best validation accuracy so far."""
  train: TrainState
  best_params: dict
  best_batch_stats: dict
  best_val_accuracy: jax.Array
  best_step: jax.Array


def train_xunet(s: Settings, pairs: dict, workdir: str) -> dict:
  """Trains XuNet from scratch on paired cover/stego uint8 images (resumable, best-on-val parameters
  kept) and returns its test error rate (book §6.2.2: (1 − accuracy)·100)."""
  x = s.xunet
  model = xunet.XuNet(channels=x.channels)
  variables = model.init(jax.random.key(s.seed + 7919), jnp.zeros((2,) + pairs["train_cover"].shape[1:]),
                         train=False)
  ts = train_state(model, variables, adam(x.learning_rate, 0.9))
  state = XuNetState(ts, ts.params, ts.batch_stats, jnp.float32(-1.0), jnp.int32(0))
  n_train, bp = len(pairs["train_cover"]), x.batch_pairs
  require(bp <= n_train, f"xunet.batch_pairs {bp} is larger than the {n_train} training pairs")
  xunet_step = jax.jit(xunet.make_train_step())
  predict = jax.jit(xunet.predict_cover)
  chunk = 128

  def predict_all(ts, images):  # fixed-size chunks, so one compilation serves every split
    out = []
    for i in range(0, len(images), chunk):
      part = images[i:i + chunk]
      padded = np.concatenate([part, np.zeros((chunk - len(part),) + part.shape[1:], part.dtype)])
      out.append(np.asarray(predict(ts, padded))[:len(part)])
    return np.concatenate(out)

  def accuracy(ts, covers, stegos):
    preds = np.concatenate([predict_all(ts, covers), predict_all(ts, stegos)])
    labels = np.concatenate([np.ones(len(covers), bool), np.zeros(len(stegos), bool)])
    return 1.0 - im.steganalysis_error_rate(labels, preds) / 100.0

  steps_per_epoch = n_train // bp

  def step_fn(state, step):
    epoch, i = divmod(step, steps_per_epoch)
    idx = np.random.default_rng([s.seed, 7919, epoch]).permutation(n_train)[i * bp:(i + 1) * bp]
    ts, metrics = xunet_step(state.train, {"cover": pairs["train_cover"][idx], "stego": pairs["train_stego"][idx]},
                             None)
    return state.replace(train=ts), metrics

  def keep_best(state, step, log):
    val_acc = accuracy(state.train, pairs["val_cover"], pairs["val_stego"])
    log.write(step, {"val_accuracy": val_acc})
    logging.info("xunet step %d: validation accuracy %.4f", step, val_acc)
    if val_acc > float(state.best_val_accuracy):
      return state.replace(best_params=state.train.params, best_batch_stats=state.train.batch_stats,
                           best_val_accuracy=jnp.float32(val_acc), best_step=jnp.int32(step))

  xdir = os.path.join(workdir, "xunet")
  os.makedirs(xdir, exist_ok=True)
  result = runner.train(state, step_fn, x.num_train_steps, xdir, log_every=x.eval_every_steps,
                        checkpoint_every=x.eval_every_steps, name="xunet", prefix="", max_checkpoints=2,
                        hooks=[runner.Hook(runner.every(x.eval_every_steps, also_at=x.num_train_steps), keep_best)])
  state, log = result.state, result.log
  reporting.plot_curves(os.path.join(xdir, "curves.png"), log, [["loss"], ["accuracy", "val_accuracy"]],
                        "XuNet steganalyzer")
  log.close()
  chosen = state.train.replace(params=state.best_params, batch_stats=state.best_batch_stats)
  test_acc = accuracy(chosen, pairs["test_cover"], pairs["test_stego"])
  return {"xunet_error": (1.0 - test_acc) * 100.0, "xunet_val_accuracy": float(state.best_val_accuracy) * 100.0,
          "xunet_best_step": int(state.best_step), "xunet_train_steps": x.num_train_steps,
          "xunet_pairs": {k: int(len(pairs[f"{k}_cover"])) for k in ("train", "val", "test")}}


def train_and_evaluate(config, workdir: str) -> dict:
  """The whole experiment; returns the results.json payload (that of the finished run, unchanged,
  when `workdir` holds one). Rerunning resumes."""
  t0 = time.time()
  s = Settings.from_config(config)
  run_dir = checkpoint.Workdir(workdir, config.to_dict())
  if run_dir.finished:
    return run_dir.results()
  dataset = data_lib.load(config.data, seed=s.seed)
  require(dataset.image_shape == (s.image_size, s.image_size, 3),
          f"stego covers must be {s.image_size}x{s.image_size}x3, got {dataset.image_shape}; "
          f"set data.image_size and data.channels=3")
  run_dir.start()
  info, state, earlier_s = {}, None, 0.0
  if s.trains_gan:
    state, info, result = train_generator(s, dataset, run_dir.path, t0)
    earlier_s = result.earlier_s
  eval_key = jax.random.fold_in(jax.random.key(s.seed), 1_000_003)
  result = evaluation.embed_split(s, dataset.test.images, state, eval_key, s.message_bits)
  metrics = evaluation.image_metrics(result, s.message_bits)
  metrics["payload_bpp"] = s.payload_bpp
  logging.info("test: PSNR %.2f dB, SSIM %.4f, extraction %.2f%%, steganalyzer error %s", metrics["psnr"],
               metrics["ssim"], metrics["extraction_accuracy"], metrics.get("steganalyzer_error"))
  save_examples(os.path.join(workdir, "examples.png"), result,
                title=f"{s.title}, {config.data.name} test covers (seed {s.seed})")
  if s.xunet.enabled:
    pairs = evaluation.xunet_pairs(s, dataset, state, s.message_bits)
    metrics.update(train_xunet(s, pairs, run_dir.path))
    logging.info("XuNet steganalysis error %.2f%% (best val accuracy %.2f%%)", metrics["xunet_error"],
                 metrics["xunet_val_accuracy"])
  return reporting.write_results(workdir, config=config, seed=s.seed, dataset=dataset.info, metrics=metrics,
                                 wall_time_s=earlier_s + time.time() - t0, **info)
