"""Training of the GAN steganography systems: jitted pure steps and the resumable loops.

One `StegoState` holds a generator, one extractor per receiver and a steganalyzer, each a
`TrainState` with its own Adam (book: lr 2e-4, §7.4.1 and §8.3.1). One step
(`make_train_step`) is `step(state, batch, key) -> (state, metrics)`:

1. messages are drawn from `key` (fresh random bits every step);
2. generator + extractors (ch. 8 Algorithms 1 and 3; ch. 7 Eqs. 7.4, 7.6, 7.7): the
   generator minimises L_SC = λ_G L_CR + λ_D Σ L_D,i + λ_S L_ST; with ``split_stages``
   its stage-1 parameters θ_CR get the gradient of L_CR alone (Algorithm 1 step 5) and
   stage 2 θ_SC that of L_SC (step 6). Each extractor descends its own L_D,i
   (Algorithm 3). All come from one forward pass and ``jax.vjp`` with the cotangents
   (λ_G, λ_D, λ_S) and (1, 0, 0): L_CR and L_ST do not depend on the extractors, so
   ∂L_SC/∂θ_D,i = λ_D ∂L_D,i/∂θ_D,i exactly;
3. steganalyzer (Algorithm 2): sigmoid cross-entropy on the covers and the (now fixed)
   stego images of step 2, covers labelled 1 (Eq. 7.5).

GSIVAT (§6.3.4) is the same step with ``split_stages=False`` and L_CR = d(C, C'),
which makes L_SC equal L_G = λ_G d(C, C') + λ_E L_E + λ_S L_S.

**Choices** (docs/stego.md): the extractors and the steganalyzer see the stego image
rounded to 8 bits (``quantize``, straight-through gradient), since a stego image is saved
as an 8-bit file; the steganalyzer in the generator's loss sees covers and stego images in
one batch, as in its own update, so its batch norm statistics are those it is trained on.
"""

import dataclasses
import functools
import os
import time
from typing import Optional, Sequence, Tuple

import chex
import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from dlbook.data import augment
from dlbook.errors import DlbookError, require
from dlbook.stego import losses
from dlbook.stego.hider import quantize as quantize_8bit  # clip, round to 256 levels, straight-through
from dlbook.stego.two_stage import pool_to, stage1_mask
from dlbook.training.state import TrainState


COVER_AUGMENTS = ("none", "dihedral")


@dataclasses.dataclass(frozen=True)
class StepConfig:
  """Static settings of the train step (hashable, so a changed value recompiles)."""
  message_bits: Tuple[int, ...]
  lambda_g: float = 1.0
  lambda_d: float = 1.0
  lambda_s: float = 0.01
  distance: str = "mse"
  cr_target: str = "stego"
  split_stages: bool = True
  quantize: bool = True
  # λ_G schedule (a choice, docs/stego.md): λ_G rises linearly from lambda_g_start to lambda_g
  # between steps lambda_g_ramp[0] and [1], so the message is learnt first and the
  # distortion is pushed down afterwards. lambda_g_start < 0 means a constant λ_G.
  lambda_g_start: float = -1.0
  lambda_g_ramp: Tuple[int, int] = (0, 0)
  # Cover augmentation inside the step (a choice, docs/stego.md): "dihedral" draws one of
  # the 8 symmetries of the square per cover (exact pixel permutations); "none" uses the
  # covers as loaded.
  cover_augment: str = "none"
  # Message loss: "distance" = d(M, M') on the tanh outputs (Eq. 7.4, with `distance`);
  # "bce" = sigmoid cross-entropy on the extractors' logits (a choice, docs/stego.md).
  message_loss: str = "distance"

  def __post_init__(self):
    require(self.lambda_g >= 0 and self.lambda_s >= 0, "loss weights lambda_g and lambda_s must be >= 0")
    require(self.lambda_d > 0, f"lambda_d must be > 0 (the extractors learn from L_D), got {self.lambda_d}")
    require(self.distance in losses.DISTANCES,
            f"unknown loss.distance {self.distance!r}; valid: {', '.join(losses.DISTANCES)}")
    require(self.cr_target in losses.CR_TARGETS,
            f"unknown loss.cr_target {self.cr_target!r}; valid: {', '.join(losses.CR_TARGETS)}")
    require(self.message_loss in losses.MESSAGE_LOSSES,
            f"unknown loss.message_loss {self.message_loss!r}; valid: {', '.join(losses.MESSAGE_LOSSES)}")
    require(self.cover_augment in COVER_AUGMENTS,
            f"unknown cover_augment {self.cover_augment!r}; valid: {', '.join(COVER_AUGMENTS)}")
    a, b = self.lambda_g_ramp
    require(0 <= a <= b, f"loss.lambda_g_ramp must be (start_step, end_step) with 0 <= start <= end, got {(a, b)}")

  def lambda_g_at(self, step):
    """λ_G at a (traced) training step."""
    if self.lambda_g_start < 0:
      return jnp.float32(self.lambda_g)
    a, b = self.lambda_g_ramp
    frac = jnp.clip((step - a) / max(b - a, 1), 0.0, 1.0)
    return jnp.float32(self.lambda_g_start + (self.lambda_g - self.lambda_g_start) * frac)


@flax.struct.dataclass
class StegoState:
  generator: TrainState
  extractors: Tuple[TrainState, ...]
  steganalyzer: TrainState

  @property
  def step(self):
    return self.generator.step


def adam(learning_rate: float, b1: float, b2: float = 0.999, final_learning_rate: Optional[float] = None,
         total_steps: int = 0) -> optax.GradientTransformation:
  """Adam (book: lr 2e-4); with `final_learning_rate` the rate follows a cosine decay to it
  over `total_steps` (a choice of the CPU presets, docs/stego.md)."""
  require(learning_rate > 0, f"optimizer.learning_rate must be positive, got {learning_rate}")
  require(0 <= b1 < 1 and 0 <= b2 < 1, f"optimizer b1, b2 must be in [0, 1), got {b1}, {b2}")
  lr = learning_rate
  if final_learning_rate is not None and final_learning_rate >= 0 and total_steps > 0:
    require(final_learning_rate <= learning_rate,
            f"optimizer.final_learning_rate must be in [0, learning_rate], got {final_learning_rate}")
    lr = optax.cosine_decay_schedule(learning_rate, total_steps, alpha=final_learning_rate / learning_rate)
  return optax.adam(lr, b1=b1, b2=b2)


def _train_state(module, variables, tx) -> TrainState:
  return TrainState.create(apply_fn=module.apply, params=variables["params"], tx=tx,
                           batch_stats=variables.get("batch_stats", {}))


def sample_messages(key, batch_size: int, message_bits: Sequence[int]) -> Tuple[jax.Array, ...]:
  """One independent uniform {0, 1} message per receiver, [batch_size, bits_i] int32."""
  keys = jax.random.split(key, len(message_bits))
  return tuple(jax.random.bernoulli(k, 0.5, (batch_size, int(b))).astype(jnp.int32)
               for k, b in zip(keys, message_bits))


def create_state(key, generator, extractors, steganalyzer, image_shape, message_bits, tx_fn) -> StegoState:
  """Initialises all networks (`tx_fn()` gives each a fresh optimizer)."""
  kg, ks, *kx = jax.random.split(key, 2 + len(extractors))
  cover = jnp.zeros((2,) + tuple(image_shape), jnp.float32)
  signs = [jnp.zeros((2, int(b)), jnp.float32) for b in message_bits]
  g = _train_state(generator, generator.init(kg, cover, signs, train=False), tx_fn())
  xs = tuple(_train_state(x, x.init(k, cover, train=False), tx_fn()) for x, k in zip(extractors, kx))
  s = _train_state(steganalyzer, steganalyzer.init(ks, cover, train=False), tx_fn())
  return StegoState(g, xs, s)


def _apply(ts: TrainState, params, x, *args, train: bool):
  variables = {"params": params, "batch_stats": ts.batch_stats}
  if train:
    out, updates = ts.apply_fn(variables, x, *args, train=True, mutable=["batch_stats"])
    return out, updates.get("batch_stats", ts.batch_stats)
  return ts.apply_fn(variables, x, *args, train=False), ts.batch_stats


def make_train_step(cfg: StepConfig):
  """The pure step for these settings; the caller jits it once."""

  def step(state: StegoState, batch, key):
    weights = jnp.stack([cfg.lambda_g_at(state.step), jnp.float32(cfg.lambda_d), jnp.float32(cfg.lambda_s)])
    cover = batch["image"]
    chex.assert_rank(cover, 4)
    if cfg.cover_augment == "dihedral":  # its own key: the messages stay those of the un-augmented run
      cover = augment.dihedral(jax.random.fold_in(key, 0x5D1), cover)
    n = cover.shape[0]
    bits = sample_messages(key, n, cfg.message_bits)
    signs = [losses.bits_to_signs(b) for b in bits]
    g, xs, st = state.generator, state.extractors, state.steganalyzer

    def cr_loss(g_params):
      (stego, aux), g_stats = _apply(g, g_params, cover, signs, train=True)
      if cfg.cr_target == "reconstruction":
        recon = aux["reconstruction_rgb"]
        return losses.distance(pool_to(cover, recon.shape[1]), recon, cfg.distance), (stego, g_stats)
      return losses.cover_reconstruction_loss(cover, stego, target="stego", kind=cfg.distance), (stego, g_stats)

    def forward(g_params, x_params):
      l_cr, (stego, g_stats) = cr_loss(g_params)
      seen = quantize_8bit(stego) if cfg.quantize else stego
      decoded, x_stats = [], []
      for x, p in zip(xs, x_params):
        out, stats = _apply(x, p, seen, train=True)
        decoded.append(out)
        x_stats.append(stats)
      # The steganalyzer judges covers and stego images together, as in its own update.
      logits, _ = _apply(st, st.params, jnp.concatenate([cover, seen]), train=True)
      l_d, each = losses.multi_message_decoder_loss(
          bits, decoded, "bce" if cfg.message_loss == "bce" else cfg.distance)
      l_st = losses.generator_adversarial_loss(logits[n:])
      return jnp.stack([l_cr, l_d, l_st]), (stego, seen, decoded, each, g_stats, tuple(x_stats))

    x_params = tuple(x.params for x in xs)
    parts, vjp_fn, aux = jax.vjp(forward, g.params, x_params, has_aux=True)
    stego, seen, decoded, each, g_stats, x_stats = aux
    g_grads, x_grads = vjp_fn(weights)
    x_grads = jax.tree.map(lambda t: t / cfg.lambda_d, x_grads)  # = ∂L_D,i/∂θ_D,i (Algorithm 3)
    if cfg.split_stages:  # Algorithm 1 step 5: θ_CR descends L_CR alone (a G-only backward pass)
      cr_grads = jax.grad(lambda p: cr_loss(p)[0])(g.params)
      mask = stage1_mask(g.params)
      g_grads = jax.tree.map(lambda m, a, b: a if m else b, mask, cr_grads, g_grads)
    new_g = g.apply_gradients(grads=g_grads, batch_stats=g_stats)
    new_xs = tuple(x.apply_gradients(grads=gr, batch_stats=bs) for x, gr, bs in zip(xs, x_grads, x_stats))

    # Algorithm 2: the steganalyzer on the covers and the fixed stego images.
    images = jnp.concatenate([cover, jax.lax.stop_gradient(seen)])

    def st_loss(params):
      logits, stats = _apply(st, params, images, train=True)
      return losses.steganalyzer_loss(logits[:n], logits[n:]), (logits, stats)

    (l_st_own, (logits, st_stats)), st_grads = jax.value_and_grad(st_loss, has_aux=True)(st.params)
    new_st = st.apply_gradients(grads=st_grads, batch_stats=st_stats)

    mse = jnp.mean((stego - cover) ** 2)
    metrics = {"l_cr": parts[0], "l_d": parts[1], "l_adv": parts[2], "l_st": l_st_own,
               "l_sc": jnp.dot(weights, parts), "lambda_g": weights[0],
               "psnr_float": 10.0 * jnp.log10(4.0 / jnp.maximum(mse, 1e-12)),
               "steganalyzer_acc": 0.5 * (jnp.mean(logits[:n] > 0) + jnp.mean(logits[n:] <= 0))}
    for i, (b, d) in enumerate(zip(bits, decoded)):
      metrics[f"bit_acc_{i + 1}"] = jnp.mean(losses.signs_to_bits(d) == b)
    return StegoState(new_g, new_xs, new_st), metrics

  return step


def make_embed_fn(message_bits: Sequence[int]):
  """Inference: (state, cover [−1,1], key) -> dict of cover and 8-bit-rounded stego (both still
  in [−1, 1]; `embed_split` converts them to uint8), bits, decoded bits (read from the rounded
  stego image) and steganalyzer logits on both."""

  def embed(state: StegoState, cover, key):
    n = cover.shape[0]
    bits = sample_messages(key, n, message_bits)
    signs = [losses.bits_to_signs(b) for b in bits]
    (stego, _), _ = _apply(state.generator, state.generator.params, cover, signs, train=False)
    stego_q = quantize_8bit(stego)
    decoded = tuple(losses.signs_to_bits(_apply(x, x.params, stego_q, train=False)[0]) for x in state.extractors)
    logits, _ = _apply(state.steganalyzer, state.steganalyzer.params, jnp.concatenate([cover, stego_q]), train=False)
    return {"cover": cover, "stego": stego_q, "bits": bits, "decoded": decoded,
            "cover_logits": logits[:n], "stego_logits": logits[n:]}

  return embed


def state_tree(state: StegoState) -> dict:
  """The arrays of a `StegoState` that a checkpoint holds."""
  part = lambda t: {"params": t.params, "batch_stats": t.batch_stats, "opt_state": t.opt_state, "step": t.step}
  return {"generator": part(state.generator), "extractors": [part(x) for x in state.extractors],
          "steganalyzer": part(state.steganalyzer)}


def restore_state(state: StegoState, tree: dict) -> StegoState:
  return StegoState(state.generator.replace(**tree["generator"]),
                    tuple(x.replace(**t) for x, t in zip(state.extractors, tree["extractors"])),
                    state.steganalyzer.replace(**tree["steganalyzer"]))


# ----------------------------------------------------------------------------------------
# The experiment: build from a config, train (resumable), evaluate, XuNet security test.

METHODS = ("two_stage", "multi_message", "gsivat", "lsb")


def validate_config(config) -> None:
  """Rejects nonsense values with one message naming the key and what is valid."""
  require(config.method in METHODS, f"unknown method {config.method!r}; valid: {', '.join(METHODS)}")
  require(float(config.payload_bpp) > 0, f"payload_bpp must be positive, got {config.payload_bpp}")
  require(int(config.num_messages) >= 1, f"num_messages must be >= 1, got {config.num_messages}")
  require(config.method == "multi_message" or int(config.num_messages) == 1,
          f"method {config.method!r} carries one message; num_messages={config.num_messages} needs "
          f"method='multi_message'")
  require(int(config.batch_size) > 0, f"batch_size must be positive, got {config.batch_size}")
  require(int(config.eval_batch_size) > 0, f"eval_batch_size must be positive, got {config.eval_batch_size}")
  require(int(config.num_train_steps) >= 0, f"num_train_steps must be >= 0, got {config.num_train_steps}")
  require(config.method == "lsb" or int(config.num_train_steps) > 0,
          f"num_train_steps must be positive for method {config.method!r}")
  require(int(config.log_every_steps) > 0 and int(config.checkpoint_every_steps) > 0,
          "log_every_steps and checkpoint_every_steps must be positive")
  require(int(config.data.image_size) > 0, "data.image_size must be set (64 in the book)")
  require(config.data.get("normalization", "symmetric") == "symmetric",
          "stego covers must use data.normalization='symmetric' ([-1, 1], the generators' tanh range)")
  message_bits(config)
  if config.method != "lsb":
    build_networks(config)  # shape errors (payload vs. embedding resolution) before any data is loaded
    step_config(config)
  x = config.xunet
  if x.enabled:
    require(int(x.num_train_steps) > 0 and int(x.batch_pairs) > 0 and int(x.eval_every_steps) > 0,
            "xunet.num_train_steps, xunet.batch_pairs and xunet.eval_every_steps must be positive")


def message_bits(config) -> Tuple[int, ...]:
  from dlbook.stego.multi_message import message_sizes
  return message_sizes(float(config.payload_bpp), int(config.num_messages), int(config.data.image_size))


def build_networks(config):
  """(generator, extractors, steganalyzer) for `config.method` (not for LSB)."""
  from dlbook.stego import gsivat, multi_message, two_stage
  bits = message_bits(config)
  g = config.generator
  size = int(config.data.image_size)
  residual = str(g.get("residual", "clip"))
  require(residual in two_stage.RESIDUALS,
          f"unknown generator.residual {residual!r}; valid: {', '.join(two_stage.RESIDUALS)}")
  if config.method == "two_stage":
    gen = two_stage.two_stage_generator(bits[0], int(config.stage1_depth), tuple(g.channels), size,
                                        bool(g.cover_shortcut), config.loss.cr_target == "reconstruction", residual)
  elif config.method == "multi_message":
    gen = multi_message.multi_message_generator(config.embedding, bits, tuple(g.channels), size,
                                                bool(g.cover_shortcut), config.loss.cr_target == "reconstruction",
                                                residual)
  else:
    gen = gsivat.gsivat_generator(bits[0], tuple(g.channels), size, bool(g.cover_shortcut), residual)
  head_side = int(config.extractor.head_side)
  depth = (int(config.stage1_depth) if config.method == "two_stage" else
           multi_message.stage1_depth(config.embedding) if config.method == "multi_message" else two_stage.CONVENTIONAL)
  # Decode each bit where the generator wrote it (ConvAnalyzer.message_side); the single-stage
  # generators mix the message in an FC layer, so they have no message grid.
  sides = [two_stage.embedding_shape(size, depth, b)[0] if depth >= 0 else 0 for b in bits]
  head = "logits" if message_loss(config) == "bce" else "tanh"
  extractors = tuple(two_stage.extractor(b, tuple(config.extractor.channels), head_side, m, head)
                     for b, m in zip(bits, sides))
  return gen, extractors, two_stage.steganalyzer(tuple(config.steganalyzer.channels))


def message_loss(config) -> str:
  """config.loss.message_loss, checked ("distance" for configs made before it existed)."""
  kind = str(config.loss.get("message_loss", "distance"))
  require(kind in losses.MESSAGE_LOSSES,
          f"unknown loss.message_loss {kind!r}; valid: {', '.join(losses.MESSAGE_LOSSES)}")
  return kind


def step_config(config) -> StepConfig:
  l = config.loss
  single_stage = config.method == "gsivat" or (config.method == "multi_message" and config.embedding == "conventional")
  return StepConfig(message_bits=message_bits(config), lambda_g=float(l.lambda_g), lambda_d=float(l.lambda_d),
                    lambda_s=float(l.lambda_s), distance=l.distance,
                    cr_target="stego" if config.method == "gsivat" else l.cr_target,
                    split_stages=bool(l.split_stages) and not single_stage, quantize=bool(l.quantize),
                    lambda_g_start=float(l.lambda_g_start), lambda_g_ramp=tuple(int(v) for v in l.lambda_g_ramp),
                    cover_augment=str(config.get("cover_augment", "none")), message_loss=message_loss(config))


def _count(tree) -> int:
  return int(sum(x.size for x in jax.tree_util.tree_leaves(tree)))


def _log_means(pending):
  return {k: float(np.mean([float(m[k]) for m in pending])) for k in pending[0]}


def train_generator(config, dataset, workdir, networks) -> Tuple[StegoState, dict]:
  """Trains (or resumes) the GAN; returns the final state and training info."""
  from dlbook import data as data_lib
  from dlbook.training import checkpoint, reporting
  gen, extractors, stegan = networks
  cfg = step_config(config)
  o = config.optimizer
  key = jax.random.key(int(config.seed))
  init_key, train_key = jax.random.split(key)
  state = create_state(init_key, gen, extractors, stegan, dataset.image_shape, cfg.message_bits,
                       lambda: adam(float(o.learning_rate), float(o.b1), float(o.b2),
                                    float(o.get("final_learning_rate", -1.0)), int(config.num_train_steps)))
  total = int(config.num_train_steps)
  require(config.batch_size <= len(dataset.train),
          f"batch_size {config.batch_size} is larger than the {len(dataset.train)} training covers")
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), int(config.get("max_checkpoints", 2)))
  start = 0
  if ckpt.latest_step() is not None:
    state = restore_state(state, ckpt.restore(state_tree(state)))
    start = int(state.step)
    logging.info("resumed the stego GAN from step %d in %s", start, ckpt.directory)
  log = reporting.MetricsLog(workdir, resume_step=start)
  step_fn = jax.jit(make_train_step(cfg), donate_argnums=0)
  progress = reporting.Progress(total, start, name="stego")
  pending, last_good = [], start
  for step, batch in data_lib.train_batches(dataset.train, int(config.batch_size), int(config.seed), start, total):
    state, metrics = step_fn(state, {"image": batch["image"]}, jax.random.fold_in(train_key, step))
    pending.append(jax.device_get(metrics))
    done = step + 1
    if done % config.log_every_steps == 0 or done % config.checkpoint_every_steps == 0 or done == total:
      means = _log_means(pending)
      pending = []
      if not all(np.isfinite(v) for v in means.values()):
        raise DlbookError(f"a loss became non-finite before step {done} ({means}); stopped, the last good "
                          f"checkpoint (step {last_good}) is kept; lower optimizer.learning_rate")
      log.write(done, means, prefix="train/")
      progress.log(done, {k: means[k] for k in ("l_cr", "l_d", "l_st", "psnr_float") if k in means}
                   | {k: v for k, v in means.items() if k.startswith("bit_acc")})
    if done % config.checkpoint_every_steps == 0 or done == total:
      ckpt.save(done, state_tree(state))
      last_good = done
  ckpt.close()
  if total:
    reporting.plot_curves(os.path.join(workdir, "curves.png"), log,
                          [["train/l_cr"], ["train/l_d"], ["train/l_st", "train/l_adv"],
                           ["train/psnr_float"], [f"train/bit_acc_{i + 1}" for i in range(len(extractors))]],
                          f"{config.method} {config.payload_bpp} bpp on {config.data.name}")
  log.close()
  info = {"total_steps": total, "resumed_from_step": start,
          "train_steps_per_s": progress.rate(total) if start < total else None,
          "num_params": {"generator": _count(state.generator.params),
                         "extractors": [_count(x.params) for x in state.extractors],
                         "steganalyzer": _count(state.steganalyzer.params)}}
  return state, info


@functools.lru_cache(maxsize=8)
def _jitted_embed(message_bits: Tuple[int, ...]):
  return jax.jit(make_embed_fn(message_bits))


def embed_split(config, split_images, state: Optional[StegoState], key, bits_per_message) -> dict:
  """8-bit covers and stego images of a whole split, with the messages and decoded bits.

  LSB embeds into the 8-bit cover directly; the GANs embed into the float cover and the
  stego image is rounded to 8 bits before it is decoded (as a saved PNG would be).
  """
  from dlbook.data import pipeline
  from dlbook.metrics import image as im
  from dlbook.stego import lsb
  bs = int(config.eval_batch_size)
  split = pipeline.Split(split_images, np.zeros(len(split_images), np.int32))
  out = {"cover": [], "stego": [], "bits": [[] for _ in bits_per_message], "decoded": [[] for _ in bits_per_message],
         "cover_logits": [], "stego_logits": []}
  embed = None if state is None else _jitted_embed(tuple(int(b) for b in bits_per_message))
  for i, batch in enumerate(pipeline.eval_batches(split, bs)):
    keep = batch["mask"] > 0
    k = jax.random.fold_in(key, i)
    if state is None:
      cover8 = im.to_uint8(batch["image"])
      bits = jax.device_get(sample_messages(k, bs, bits_per_message))
      stego8 = cover8
      decoded = []
      for j, b in enumerate(bits):  # each receiver's message at its own key, bits after the previous ones
        stego8 = lsb.embed(stego8, np.asarray(b), seed=int(config.lsb_key) + j)
      for j, b in enumerate(bits):
        decoded.append(lsb.extract(stego8, len(b[0]), seed=int(config.lsb_key) + j))
      r = {"cover": cover8, "stego": stego8, "bits": bits, "decoded": decoded}
    else:
      r = jax.device_get(embed(state, batch["image"], k))
      r["cover"], r["stego"] = im.to_uint8(r["cover"]), im.to_uint8(r["stego"])
      out["cover_logits"].append(r["cover_logits"][keep])
      out["stego_logits"].append(r["stego_logits"][keep])
    out["cover"].append(r["cover"][keep])
    out["stego"].append(r["stego"][keep])
    for j in range(len(bits_per_message)):
      out["bits"][j].append(np.asarray(r["bits"][j])[keep])
      out["decoded"][j].append(np.asarray(r["decoded"][j])[keep])
  cat = lambda xs: np.concatenate(xs) if xs else None
  return {"cover": cat(out["cover"]), "stego": cat(out["stego"]),
          "bits": [cat(b) for b in out["bits"]], "decoded": [cat(d) for d in out["decoded"]],
          "cover_logits": cat(out["cover_logits"]), "stego_logits": cat(out["stego_logits"])}


def image_metrics(result: dict, bits_per_message) -> dict:
  """PSNR / SSIM on the 8-bit images (mean ± std over images), extraction accuracy per
  receiver, the in-training steganalyzer's error, and the book-style PSNR variants."""
  from dlbook.metrics import image as im
  cover, stego = result["cover"], result["stego"]
  psnr = np.asarray(im.psnr(cover, stego, data_range=255.0, per_image=True), np.float64)
  ssim = np.asarray(im.ssim(cover, stego, data_range=255.0, per_image=True), np.float64)
  finite = np.isfinite(psnr)
  m = {"num_test_images": int(len(cover)), "psnr": float(np.mean(psnr[finite])) if finite.any() else float("inf"),
       "psnr_std": float(np.std(psnr[finite])) if finite.any() else 0.0,
       "psnr_identical_images": int((~finite).sum()),
       "ssim": float(np.mean(ssim)), "ssim_std": float(np.std(ssim)),
       "bits_per_message": [int(b) for b in bits_per_message],
       "payload_bpp_measured": im.bits_per_pixel(int(sum(bits_per_message)), cover.shape[1], cover.shape[2])}
  accs = [im.extraction_accuracy(b, d) for b, d in zip(result["bits"], result["decoded"])]
  m["extraction_accuracy"] = float(np.mean(accs)) * 100.0
  for i, a in enumerate(accs):
    m[f"extraction_accuracy_{i + 1}"] = a * 100.0
  # Book-style figures (docs/stego.md): the same MSE with MAX = 255 but images scaled to
  # [0, 1] (adds 20·log10(255) = 48.13 dB), or to [-1, 1] (adds 42.11 dB).
  mse01 = np.mean(((cover.astype(np.float64) - stego.astype(np.float64)) / 255.0) ** 2, axis=(1, 2, 3))
  ok = mse01 > 0
  m["psnr_book_style_max255_unit_range"] = float(np.mean(10 * np.log10(255.0 ** 2 / mse01[ok]))) if ok.any() else None
  m["psnr_book_style_max255_symmetric_range"] = (float(np.mean(10 * np.log10(255.0 ** 2 / (4 * mse01[ok]))))
                                                 if ok.any() else None)
  if result.get("cover_logits") is not None:
    labels = np.concatenate([np.ones(len(cover)), np.zeros(len(cover))])
    preds = np.concatenate([result["cover_logits"] > 0, result["stego_logits"] > 0])
    m["steganalyzer_error"] = im.steganalysis_error_rate(labels, preds)
  return m


def train_xunet(config, pairs: dict, workdir: str) -> dict:
  """Trains XuNet from scratch on paired cover/stego uint8 images (resumable, best-on-val
  parameters kept) and returns its test error rate (book §6.2.2: (1 − accuracy)·100)."""
  from dlbook.metrics import image as im
  from dlbook.stego import xunet
  from dlbook.training import checkpoint, reporting
  x = config.xunet
  key = jax.random.key(int(config.seed) + 7919)
  model = xunet.XuNet(channels=tuple(x.channels))
  variables = model.init(key, jnp.zeros((2,) + pairs["train_cover"].shape[1:]), train=False)
  state = _train_state(model, variables, adam(float(x.learning_rate), 0.9))
  best = {"params": state.params, "batch_stats": state.batch_stats, "val_accuracy": jnp.float32(-1.0),
          "step": jnp.int32(0)}
  xdir = os.path.join(workdir, "xunet")
  os.makedirs(xdir, exist_ok=True)
  ckpt = checkpoint.Checkpointer(os.path.join(xdir, "checkpoints"), 2)
  tree = lambda s, b: {"params": s.params, "batch_stats": s.batch_stats, "opt_state": s.opt_state,
                       "step": s.step, "best": b}
  start = 0
  if ckpt.latest_step() is not None:
    restored = ckpt.restore(tree(state, best))
    best = restored.pop("best")
    state = state.replace(**restored)
    start = int(state.step)
    logging.info("resumed XuNet from step %d", start)
  log = reporting.MetricsLog(xdir, resume_step=start)
  total, bp = int(x.num_train_steps), int(x.batch_pairs)
  n_train = len(pairs["train_cover"])
  require(bp <= n_train, f"xunet.batch_pairs {bp} is larger than the {n_train} training pairs")
  step_fn = jax.jit(xunet.make_train_step())  # no donation: `best` keeps earlier parameters
  predict = jax.jit(xunet.predict_cover)

  chunk = 128

  def predict_all(s, images):  # fixed-size chunks, so one compilation serves every split
    out = []
    for i in range(0, len(images), chunk):
      part = images[i:i + chunk]
      padded = np.concatenate([part, np.zeros((chunk - len(part),) + part.shape[1:], part.dtype)])
      out.append(np.asarray(predict(s, padded))[:len(part)])
    return np.concatenate(out)

  def accuracy(s, covers, stegos):
    preds = np.concatenate([predict_all(s, covers), predict_all(s, stegos)])
    labels = np.concatenate([np.ones(len(covers), bool), np.zeros(len(stegos), bool)])
    return 1.0 - im.steganalysis_error_rate(labels, preds) / 100.0

  progress = reporting.Progress(total, start, name="xunet")
  steps_per_epoch = n_train // bp
  pending = []
  for step in range(start, total):
    epoch, i = divmod(step, steps_per_epoch)
    idx = np.random.default_rng([int(config.seed), 7919, epoch]).permutation(n_train)[i * bp:(i + 1) * bp]
    state, metrics = step_fn(state, {"cover": pairs["train_cover"][idx], "stego": pairs["train_stego"][idx]}, None)
    pending.append(jax.device_get(metrics))
    done = step + 1
    if done % x.eval_every_steps == 0 or done == total:
      means = _log_means(pending)
      pending = []
      val_acc = accuracy(state, pairs["val_cover"], pairs["val_stego"])
      if val_acc > float(best["val_accuracy"]):
        best = {"params": state.params, "batch_stats": state.batch_stats, "val_accuracy": jnp.float32(val_acc),
                "step": jnp.int32(done)}
      log.write(done, dict(means, val_accuracy=val_acc))
      progress.log(done, dict(means, val_accuracy=val_acc))
      ckpt.save(done, tree(state, best))
  ckpt.close()
  if total:
    reporting.plot_curves(os.path.join(xdir, "curves.png"), log, [["loss"], ["accuracy", "val_accuracy"]],
                          "XuNet steganalyzer")
  log.close()
  chosen = state.replace(params=best["params"], batch_stats=best["batch_stats"])
  test_acc = accuracy(chosen, pairs["test_cover"], pairs["test_stego"])
  return {"xunet_error": (1.0 - test_acc) * 100.0, "xunet_val_accuracy": float(best["val_accuracy"]) * 100.0,
          "xunet_best_step": int(best["step"]), "xunet_train_steps": total,
          "xunet_pairs": {k: int(len(pairs[f"{k}_cover"])) for k in ("train", "val", "test")}}


def xunet_pairs(config, dataset, state, bits_per_message) -> dict:
  """Cover/stego uint8 pairs for the §8.3.2 protocol scaled to the data (see `xunet.pair_split`).
  Stego images use fresh messages, independent of those used in training and evaluation."""
  from dlbook.stego import xunet
  n_train, n_val, n_test = xunet.pair_split(len(dataset.train), len(dataset.test), tuple(config.xunet.limits))
  order = np.random.default_rng([int(config.seed), 31]).permutation(len(dataset.train))
  key = jax.random.key(int(config.seed) + 104729)
  out = {}
  for name, images, k in (("train", dataset.train.images[order[:n_train]], 0),
                          ("val", dataset.train.images[order[n_train:n_train + n_val]], 1),
                          ("test", dataset.test.images[:n_test], 2)):
    r = embed_split(config, images, state, jax.random.fold_in(key, k), bits_per_message)
    out[f"{name}_cover"], out[f"{name}_stego"] = r["cover"], r["stego"]
  return out


def save_examples(path: str, result: dict, count: int = 4, title: str = "") -> None:
  """Cover / stego / |difference|×10 for the first `count` test images (PNG)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  count = min(count, len(result["cover"]))
  fig, axes = plt.subplots(3, count, figsize=(2.2 * count, 6.9), squeeze=False)
  for j in range(count):
    c, s = result["cover"][j], result["stego"][j]
    diff = np.clip(np.abs(c.astype(np.int32) - s.astype(np.int32)) * 10, 0, 255).astype(np.uint8)
    for row, (img, name) in enumerate(((c, "cover"), (s, "stego"), (diff, "|stego − cover| × 10"))):
      axes[row, j].imshow(img.squeeze(), cmap="gray" if img.shape[-1] == 1 else None, vmin=0, vmax=255)
      axes[row, j].set_xticks([])
      axes[row, j].set_yticks([])
      if j == 0:
        axes[row, j].set_ylabel(name)
  fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def train_and_evaluate(config, workdir: str) -> dict:
  """The whole experiment; returns the results.json payload. Rerunning resumes."""
  from dlbook import data as data_lib
  from dlbook.training import checkpoint, reporting
  t0 = time.time()
  validate_config(config)
  os.makedirs(workdir, exist_ok=True)
  checkpoint.guard_workdir(workdir, config.to_dict())
  dataset = data_lib.load(config.data, seed=int(config.seed))
  require(dataset.image_shape == (int(config.data.image_size),) * 2 + (3,),
          f"stego covers must be {config.data.image_size}x{config.data.image_size}x3, got {dataset.image_shape}; "
          f"set data.image_size and data.channels=3")
  bits = message_bits(config)
  info = {}
  state = None
  if config.method != "lsb":
    networks = build_networks(config)
    state, info = train_generator(config, dataset, workdir, networks)
  eval_key = jax.random.fold_in(jax.random.key(int(config.seed)), 1_000_003)
  result = embed_split(config, dataset.test.images, state, eval_key, bits)
  metrics = image_metrics(result, bits)
  metrics["payload_bpp"] = float(config.payload_bpp)
  logging.info("test: PSNR %.2f dB, SSIM %.4f, extraction %.2f%%, steganalyzer error %s", metrics["psnr"],
               metrics["ssim"], metrics["extraction_accuracy"], metrics.get("steganalyzer_error"))
  save_examples(os.path.join(workdir, "examples.png"), result,
                title=f"{config.method} {config.get('embedding', '') if config.method == 'multi_message' else ''} "
                      f"{config.payload_bpp} bpp, {config.data.name} test covers (seed {config.seed})")
  if config.xunet.enabled:
    pairs = xunet_pairs(config, dataset, state, bits)
    metrics.update(train_xunet(config, pairs, workdir))
    logging.info("XuNet steganalysis error %.2f%% (best val accuracy %.2f%%)", metrics["xunet_error"],
                 metrics["xunet_val_accuracy"])
  return reporting.write_results(workdir, config=config, seed=int(config.seed), dataset=dataset.info,
                                 metrics=metrics, wall_time_s=time.time() - t0, **info)
