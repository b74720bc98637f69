"""Training, evaluation and export of the tool's hiding model (`dlbook.stego.hider`).

`train_and_evaluate(config, workdir)` trains encoder and decoder jointly on cover crops
(photos64 by default) with fresh random message bits every step:

    L = BCE(decoder(round8(encoder(C, M))), M) + mse_weight · MSE(round8(encoder(C, M)), C)

(SteganoGAN's encoder-decoder losses without its critic: **choice**, the tool's model is
trained for reliable transport at high quality; its steganalysis security is not claimed).
Images are in [-1, 1]; ``round8`` is `hider.quantize`. Batches are
`dlbook.data.train_batch(seed, step)` and the random crop offsets and bits come from
``fold_in(key, step)``, so a resumed run is exact.

Evaluation hides random bits in every test crop (64×64, the tool's tile), saves it as
8 bits, and reads it back: PSNR and SSIM (dlbook.metrics.image, on uint8), bpp, and the
raw bit accuracy before error correction (mean, and the per-tile 95th percentile of the
bit error rate, which sets the exported model's Reed-Solomon parity through
`payload.choose_parity`). The model is exported to ``workdir/model`` (params.npz,
config.json, results.json) in the format `dlbook-stego --model` reads.
"""

import os
import shutil
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from dlbook import data as data_lib
from dlbook.errors import require
from dlbook.metrics import image as image_metrics
from dlbook.stego import hider, payload
from dlbook.stego.images import save_examples
from dlbook.training import checkpoint, optim, reporting, runner
from dlbook.training.state import TrainState, count_params


def validate_config(c) -> None:
  require(int(c.batch_size) > 0, f"batch_size must be positive, got {c.batch_size}")
  require(int(c.num_train_steps) > 0, f"num_train_steps must be positive, got {c.num_train_steps}")
  require(int(c.train_crop) in range(16, hider.TILE + 1) and int(c.train_crop) % 8 == 0,
          f"train_crop must be a multiple of 8 in [16, {hider.TILE}], got {c.train_crop}")
  require(float(c.mse_weight) > 0, f"mse_weight must be positive, got {c.mse_weight}")
  require(int(c.log_every_steps) > 0 and int(c.checkpoint_every_steps) > 0,
          "log_every_steps and checkpoint_every_steps must be positive")
  require(float(c.rs_margin) >= 1.0, f"rs_margin must be >= 1, got {c.rs_margin}")


def random_crops(images, size: int, key):
  """One random size×size crop per image (offsets from `key`)."""
  n, h, w, _ = images.shape
  ky, kx = jax.random.split(key)
  ys = jax.random.randint(ky, (n,), 0, h - size + 1)
  xs = jax.random.randint(kx, (n,), 0, w - size + 1)
  crop = lambda im, y, x: jax.lax.dynamic_slice(im, (y, x, 0), (size, size, im.shape[-1]))
  return jax.vmap(crop)(images, ys, xs)


def make_train_step(model: hider.Hider, crop: int, mse_weight: float):
  """`step(state, batch, key) -> (state, metrics)`; jit it once."""

  def step(state: TrainState, batch, key):
    crop_key, bits_key = jax.random.split(key)
    cover = random_crops(batch["image"], crop, crop_key)
    bits = jax.random.bernoulli(bits_key, 0.5, cover.shape[:3] + (model.payload_bpp,)).astype(jnp.float32)

    def loss_fn(params):
      stego, logits = state.apply_fn({"params": params}, cover, bits)
      stego8 = hider.quantize(stego)
      bce = optax.sigmoid_binary_cross_entropy(logits, bits).mean()
      mse = jnp.mean((stego8 - cover) ** 2)
      acc = jnp.mean((logits > 0) == (bits > 0.5))
      return bce + mse_weight * mse, {"bce": bce, "mse": mse, "bit_accuracy": acc}

    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    state = state.apply_gradients(grads=grads)
    # PSNR of the 8-bit stego crop on the 0..255 scale: MSE on [-1, 1] times (255/2)².
    psnr = 10.0 * jnp.log10(255.0 ** 2 / (aux["mse"] * 127.5 ** 2 + 1e-12))
    return state, dict(aux, loss=loss, psnr=psnr)

  return step


def evaluate(model: hider.HidingModel, covers_uint8: np.ndarray, seed: int) -> dict:
  """Hides random bits in each 64×64 cover, rounds to 8 bits, reads them back."""
  rng = np.random.default_rng([seed, 7])
  bits = rng.integers(0, 2, covers_uint8.shape[:3] + (model.bpp,), dtype=np.uint8)
  stego = model.hide_tiles(covers_uint8, bits)
  decoded = (model.reveal_tiles(stego) > 0).astype(np.uint8)
  ber = 1.0 - (decoded == bits).mean(axis=(1, 2, 3))
  return {
      "psnr": float(image_metrics.psnr(covers_uint8, stego)),
      "ssim": float(image_metrics.ssim(covers_uint8, stego)),
      "bpp": image_metrics.bits_per_pixel(bits[0].size, hider.TILE, hider.TILE),
      "bit_accuracy": image_metrics.extraction_accuracy(bits, decoded),
      "bit_error_rate": float(ber.mean()),
      "bit_error_rate_p95": float(np.percentile(ber, 95)),
      "bit_error_rate_max": float(ber.max()),
      "num_test_tiles": int(len(covers_uint8)),
      "_stego": stego,
  }


def to_uint8_covers(split) -> np.ndarray:
  return image_metrics.to_uint8(split.images, (-1.0, 1.0))


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains (resuming from the latest checkpoint), evaluates, exports; returns results.json (that of
  the finished run, unchanged, when `workdir` holds one)."""
  t0 = time.time()
  validate_config(config)
  run_dir = checkpoint.Workdir(workdir, config.to_dict())
  if run_dir.finished:
    return run_dir.results()
  dataset = data_lib.load(config.data, seed=config.seed)
  require(dataset.image_shape == (hider.TILE, hider.TILE, 3),
          f"the hiding model trains on {hider.TILE}x{hider.TILE}x3 covers; data {config.data.name!r} "
          f"gives {dataset.image_shape} (set data.image_size={hider.TILE}, data.channels=3)")
  require(config.batch_size <= len(dataset.train),
          f"batch_size {config.batch_size} is larger than the {len(dataset.train)} training covers")
  total = int(config.num_train_steps)
  module = hider.build(config.model.architecture, config.model.hidden, config.model.payload_bpp)
  key = jax.random.key(config.seed)
  init_key, train_key = jax.random.split(key)
  params = hider.init_params(module, init_key)
  tx = optim.make_optimizer(config.optimizer, total)
  state = TrainState.create(apply_fn=module.apply, params=params, tx=tx)
  num_params = count_params(params)
  train_step = jax.jit(make_train_step(module, int(config.train_crop), float(config.mse_weight)), donate_argnums=0)
  logging.info("hider %s (hidden %d, %d bpp): %d parameters; %d steps of %d crops %dx%d",
               config.model.architecture, config.model.hidden, config.model.payload_bpp, num_params, total,
               config.batch_size, config.train_crop, config.train_crop)

  def step_fn(state, step):
    batch = data_lib.train_batch(dataset.train, config.batch_size, config.seed, step)
    return train_step(state, {"image": batch["image"]}, jax.random.fold_in(train_key, step))

  run_dir.start()
  result = runner.train(state, step_fn, total, run_dir.path, log_every=config.log_every_steps,
                        checkpoint_every=config.checkpoint_every_steps, max_checkpoints=config.get("max_checkpoints", 2),
                        started=t0)
  state, log = result.state, result.log

  # Evaluate the exported form (uint8 in, uint8 out), exactly as the tool runs it.
  covers = to_uint8_covers(dataset.test)
  if config.get("limit_eval_tiles"):
    covers = covers[:int(config.limit_eval_tiles)]
  meta = {"architecture": config.model.architecture, "hidden": int(config.model.hidden),
          "payload_bpp": int(config.model.payload_bpp), "tile": hider.TILE, "rs_parity": 16}
  model = hider.HidingModel(meta, jax.device_get(state.params))
  ev = evaluate(model, covers, config.seed)
  stego = ev.pop("_stego")
  rs_parity = payload.choose_parity(ev["bit_error_rate_p95"], float(config.rs_margin))
  meta.update(rs_parity=rs_parity, rs_parity_rule=f"payload.choose_parity(bit_error_rate_p95, margin={config.rs_margin})",
              measured=dict(ev), trained_on=config.data.name, num_params=num_params)
  ev["rs_parity"] = rs_parity
  # Above 128 the margin rule cannot be met: a single copy of a long message may not decode.
  ev["rs_parity_needed"] = payload.parity_needed(ev["bit_error_rate_p95"], float(config.rs_margin))
  ev["rs_code_rate"] = (255 - rs_parity) / 255
  ev["net_bpp_single_copy"] = ev["bpp"] * ev["rs_code_rate"]
  ev["message_bytes_512x512"] = payload.capacity_bytes(512 * 512 * model.bpp, rs_parity)
  log.write(total, {k: v for k, v in ev.items() if isinstance(v, float)}, prefix="test/")
  log.close()
  logging.info("test: PSNR %.2f dB  SSIM %.4f  bit accuracy %.5f (p95 BER %.4f) at %d bpp -> RS parity %d",
               ev["psnr"], ev["ssim"], ev["bit_accuracy"], ev["bit_error_rate_p95"], model.bpp, rs_parity)

  reporting.plot_curves(os.path.join(workdir, "curves.png"), log,
                        [["train/bce"], ["train/psnr"], ["train/bit_accuracy"]],
                        f"hider {config.model.architecture} {config.model.payload_bpp} bpp on {config.data.name}")
  save_examples(os.path.join(workdir, "samples.png"), {"cover": covers, "stego": stego}, 6,
                f"{config.model.architecture}, {model.bpp} bpp: PSNR {ev['psnr']:.2f} dB, SSIM {ev['ssim']:.4f}")
  export_dir = os.path.join(workdir, "model")
  hider.save_model(export_dir, state.params, meta)
  results = reporting.write_results(
      workdir, config=config, seed=config.seed, dataset=dataset.info, metrics=ev, wall_time_s=result.wall_time_s(t0),
      num_params=num_params, total_steps=total, resumed_from_step=result.start_step,
      train_steps_per_s=result.steps_per_s, model_dir=export_dir)
  shutil.copyfile(os.path.join(workdir, "results.json"), os.path.join(export_dir, "results.json"))
  return results
