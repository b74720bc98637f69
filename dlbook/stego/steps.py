"""Pure steps of the GAN steganography systems (book ch. 6-8).

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
from typing import Sequence, Tuple

import chex
import flax
import jax
import jax.numpy as jnp

from dlbook.data import augment
from dlbook.errors import require
from dlbook.stego import losses
from dlbook.stego.images import quantize as quantize_8bit  # clip, round to 256 levels, straight-through
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


def train_state(module, variables, tx) -> TrainState:
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
  g = train_state(generator, generator.init(kg, cover, signs, train=False), tx_fn())
  xs = tuple(train_state(x, x.init(k, cover, train=False), tx_fn()) for x, k in zip(extractors, kx))
  s = train_state(steganalyzer, steganalyzer.init(ks, cover, train=False), tx_fn())
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
