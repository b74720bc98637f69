"""GAN training (book §5.2.4): a pure jitted D step and G step, alternated with n_critic.

The GAN families of book ch. 5 are reached by name (`FAMILIES`): vanilla, dcgan,
wgan, wgan_gp and acgan. `make_steps(settings)` returns

    d_step(state, batch, key) -> (state, metrics)   # one discriminator/critic update
    g_step(state, batch, key) -> (state, metrics)   # one generator update

over a `GANState` holding both players (params, BatchNorm statistics, optimizer
states), the ADA controller and the number of generator steps. The caller jits each
once and runs n_critic D steps, then one G step (book §5.2.4; Arjovsky et al. use
n_critic = 5 for WGAN). `train_and_evaluate(config, workdir)` is the loop the
launcher runs: orbax checkpoints, resume after a kill (batches and keys are pure
functions of (seed, step)), TensorBoard losses, PNG sample grids and results.json.

Choices where the book is silent (docs/gan.md):
- fakes are generated with G in train mode (batch statistics) in both steps; G's
  BatchNorm running statistics are updated in the G step only, D's in the D step
  only; real and fake batches pass through D separately (as in the DCGAN reference);
- sample grids use G in inference mode (running statistics) and a fixed z;
- ACGAN fakes are conditioned on classes drawn uniformly;
- keys use JAX's 'rbg' PRNG (`PRNG_IMPL`): threefry programs take several times longer to
  compile on CPU, which dominated short runs. Streams are deterministic for a given
  backend and JAX version, so a resumed run repeats the uninterrupted one exactly.
"""

import dataclasses
import os
import time
from typing import Callable, Tuple

import chex
import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from dlbook import data as data_lib
from dlbook.errors import require
from dlbook.metrics.image import to_uint8
from dlbook.gan import ada as ada_lib
from dlbook.gan import losses
from dlbook.gan.models import (CONDITIONINGS, NORMS, DCGANDiscriminator, DCGANGenerator, MLPDiscriminator,
                               MLPGenerator, split_outputs)
from dlbook.registry import Registry
from dlbook.training import checkpoint, optim, reporting, runner
from dlbook.training.state import TrainState, count_params


PRNG_IMPL = "rbg"


def prng_key(seed: int):
  return jax.random.key(seed, impl=PRNG_IMPL)


@dataclasses.dataclass(frozen=True)
class Family:
  """What a GAN name means: its architecture and the defaults of book ch. 5."""
  architecture: str        # 'mlp' or 'dcgan'
  loss: str                # default adversarial loss
  d_norm: str              # default discriminator normalisation
  conditional: bool        # ACGAN: G(z, c) and a two-headed D
  weight_clipping: bool    # WGAN (book §5.4)
  gradient_penalty: bool   # WGAN-GP (survey Eq. 5)
  losses: Tuple[str, ...]  # adversarial losses it accepts


FAMILIES: Registry[Family] = Registry("gan")
_GAN_LOSSES = ("non_saturating", "minimax", "relativistic")
FAMILIES.register("vanilla")(lambda: Family("mlp", "non_saturating", "none", False, False, False, _GAN_LOSSES))
FAMILIES.register("dcgan")(lambda: Family("dcgan", "non_saturating", "batch", False, False, False, _GAN_LOSSES))
FAMILIES.register("wgan")(lambda: Family("dcgan", "wasserstein", "batch", False, True, False, ("wasserstein",)))
FAMILIES.register("wgan_gp")(lambda: Family("dcgan", "wasserstein", "layer", False, False, True, ("wasserstein",)))
FAMILIES.register("acgan")(lambda: Family("dcgan", "non_saturating", "batch", True, False, False, _GAN_LOSSES))


@dataclasses.dataclass(frozen=True)
class StepSettings:
  """The static settings the D and G steps are built from."""
  loss: str = "non_saturating"
  z_dim: int = 100
  num_classes: int = 0            # > 0: ACGAN (conditional G, two-headed D)
  clip_value: float = 0.0         # > 0: WGAN weight clipping after each critic update
  gp_weight: float = 0.0          # > 0: WGAN-GP gradient penalty (lambda = 10 in the survey)
  aux_fake: str = "book"          # ACGAN Eq. 5.7 as printed ('book') or Odena et al. ('odena')
  aux_weight: float = 1.0
  ada: bool = False
  ada_target: float = 0.6
  ada_interval: int = 4
  ada_speed_images: float = 500_000.0


@flax.struct.dataclass
class GANState:
  step: jnp.ndarray          # generator steps done
  g: TrainState
  d: TrainState
  ada: ada_lib.AdaState


def create_gan_state(generator, discriminator, key, image_shape, g_tx, d_tx, settings: StepSettings,
                     ada_p: float = 0.0) -> GANState:
  """Initialises both players on zeros of the right shapes."""
  g_key, d_key = jax.random.split(key)
  z = jnp.zeros((2, settings.z_dim), jnp.float32)
  labels = jnp.zeros((2,), jnp.int32) if settings.num_classes else None
  # Jitted: eager init dispatches (and compiles) every op on its own, which takes seconds.
  g_vars = jax.jit(lambda k: generator.init({"params": k}, z, labels, train=False))(g_key)
  x = jnp.zeros((2,) + tuple(image_shape))
  d_vars = jax.jit(lambda k: discriminator.init({"params": k}, x, train=False))(d_key)
  g = TrainState.create(apply_fn=generator.apply, params=g_vars["params"], tx=g_tx,
                        batch_stats=g_vars.get("batch_stats", {}))
  d = TrainState.create(apply_fn=discriminator.apply, params=d_vars["params"], tx=d_tx,
                        batch_stats=d_vars.get("batch_stats", {}))
  return GANState(step=jnp.zeros((), jnp.int32), g=g, d=d, ada=ada_lib.init_ada(ada_p))


def sample_latents(key, n: int, settings: StepSettings):
  """z ~ N(0, I) and, for ACGAN, classes uniform over num_classes."""
  z_key, c_key = jax.random.split(key)
  z = jax.random.normal(z_key, (n, settings.z_dim))
  labels = jax.random.randint(c_key, (n,), 0, settings.num_classes) if settings.num_classes else None
  return z, labels


def generate(g: TrainState, params, z, labels, train: bool):
  """G(z[, c]); returns (images, updated batch_stats)."""
  variables = {"params": params, "batch_stats": g.batch_stats}
  if train:
    images, updates = g.apply_fn(variables, z, labels, train=True, mutable=["batch_stats"])
    return images, updates.get("batch_stats", g.batch_stats)
  return g.apply_fn(variables, z, labels, train=False), g.batch_stats


def discriminate(d: TrainState, params, batch_stats, images):
  """D in train mode; returns (logit [N], class_logits or None, updated batch_stats)."""
  outputs, updates = d.apply_fn({"params": params, "batch_stats": batch_stats}, images, train=True,
                                mutable=["batch_stats"])
  logit, class_logits = split_outputs(outputs)
  return logit, class_logits, updates.get("batch_stats", batch_stats)


def make_steps(settings: StepSettings) -> Tuple[Callable, Callable]:
  """Returns the pure (d_step, g_step) for these settings; jit each once."""
  s = settings
  conditional = s.num_classes > 0

  def maybe_augment(key, images, p):
    return ada_lib.augment(key, images, p) if s.ada else images

  def d_step(state: GANState, batch, key):
    real = batch["image"]
    chex.assert_rank(real, 4)
    n = real.shape[0]
    latent_key, g_aug_key, r_aug_key, gp_key = jax.random.split(key, 4)
    z, fake_labels = sample_latents(latent_key, n, s)
    fake, _ = generate(state.g, state.g.params, z, fake_labels, train=True)  # G's statistics unchanged
    fake = jax.lax.stop_gradient(fake)
    real_in = maybe_augment(r_aug_key, real, state.ada.p)
    fake_in = maybe_augment(g_aug_key, fake, state.ada.p)

    def loss_fn(params):
      real_logit, real_cls, stats = discriminate(state.d, params, state.d.batch_stats, real_in)
      fake_logit, fake_cls, stats = discriminate(state.d, params, stats, fake_in)
      parts = {}
      if conditional:
        loss, parts = losses.acgan_d_loss(real_logit, fake_logit, real_cls, batch["label"], fake_cls, fake_labels,
                                          s.loss, s.aux_fake, s.aux_weight)
        parts["d_class_accuracy_real"] = jnp.mean(jnp.argmax(real_cls, -1) == batch["label"])
      else:
        loss = losses.d_adversarial_loss(s.loss, real_logit, fake_logit)
      if s.gp_weight > 0:
        # Survey Eq. 5; the critic is applied per example (inference mode for BatchNorm).
        critic = lambda x: split_outputs(state.d.apply_fn({"params": params, "batch_stats": stats}, x,
                                                          train=False))[0]
        gp = losses.gradient_penalty(critic, real_in, fake_in, gp_key, s.gp_weight)
        parts["gradient_penalty"] = gp
        loss = loss + gp
      return loss, (real_logit, fake_logit, stats, parts)

    (loss, (real_logit, fake_logit, stats, parts)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.d.params)
    d = state.d.apply_gradients(grads=grads, batch_stats=stats)
    if s.clip_value > 0:
      d = d.replace(params=losses.clip_weights(d.params, s.clip_value))
    ada = state.ada
    if s.ada:
      ada = ada_lib.ada_update(ada, real_logit, target=s.ada_target, interval=s.ada_interval,
                               speed_images=s.ada_speed_images)
    metrics = {"d_loss": loss, "d_real": real_logit.mean(), "d_fake": fake_logit.mean(),
               "d_grad_norm": optax.tree.norm(grads), "r_t": jnp.mean(jnp.sign(real_logit)), "ada_p": ada.p,
               **parts}
    if s.loss == "wasserstein":
      metrics["wasserstein_estimate"] = real_logit.mean() - fake_logit.mean()
    return state.replace(d=d, ada=ada), metrics

  def g_step(state: GANState, batch, key):
    n = batch["image"].shape[0]
    latent_key, g_aug_key, r_aug_key = jax.random.split(key, 3)
    z, fake_labels = sample_latents(latent_key, n, s)
    real_logit = None
    if s.loss == "relativistic":  # RaGAN's generator loss also looks at D(x_real)
      real_in = maybe_augment(r_aug_key, batch["image"], state.ada.p)
      real_logit, _, _ = discriminate(state.d, state.d.params, state.d.batch_stats, real_in)

    def loss_fn(params):
      fake, g_stats = generate(state.g, params, z, fake_labels, train=True)
      fake_logit, fake_cls, _ = discriminate(state.d, state.d.params, state.d.batch_stats,
                                             maybe_augment(g_aug_key, fake, state.ada.p))
      parts = {}
      if conditional:
        loss, parts = losses.acgan_g_loss(fake_logit, fake_cls, fake_labels, s.loss, real_logit, s.aux_weight)
        parts["g_class_accuracy_fake"] = jnp.mean(jnp.argmax(fake_cls, -1) == fake_labels)
      else:
        loss = losses.g_adversarial_loss(s.loss, fake_logit, real_logit)
      return loss, (g_stats, parts)

    (loss, (g_stats, parts)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.g.params)
    g = state.g.apply_gradients(grads=grads, batch_stats=g_stats)
    metrics = {"g_loss": loss, "g_grad_norm": optax.tree.norm(grads), **parts}
    return state.replace(g=g, step=state.step + 1), metrics

  return d_step, g_step


# ------------------------------------------------------------------ building from a config
def validate_config(config) -> Family:
  """Rejects nonsense with a message naming the key and what is valid; returns the family."""
  family = FAMILIES.get(config.gan)()
  loss = config.loss or family.loss
  require(loss in family.losses, f"loss {loss!r} does not fit gan {config.gan!r}; valid: {', '.join(family.losses)}")
  d_norm = config.model.d_norm or family.d_norm
  require(d_norm in NORMS, f"unknown model.d_norm {d_norm!r}; valid: {', '.join(NORMS)}")
  for key in ("batch_size", "num_train_steps", "n_critic", "log_every_steps", "checkpoint_every_steps",
              "sample_every_steps", "num_samples"):
    require(int(config[key]) > 0, f"{key} must be a positive integer, got {config[key]}")
  require(int(config.model.z_dim) > 0, f"model.z_dim must be positive, got {config.model.z_dim}")
  require(config.model.conditioning in CONDITIONINGS,
          f"unknown model.conditioning {config.model.conditioning!r}; valid: {', '.join(CONDITIONINGS)}")
  if family.weight_clipping:
    require(float(config.clip_value) > 0, f"gan 'wgan' needs clip_value > 0, got {config.clip_value}")
  require(float(config.gp_weight) >= 0, f"gp_weight must be >= 0, got {config.gp_weight}")
  require(config.acgan.aux_fake in losses.ACGAN_AUX_FAKE,
          f"unknown acgan.aux_fake {config.acgan.aux_fake!r}; valid: {', '.join(losses.ACGAN_AUX_FAKE)}")
  require(float(config.acgan.aux_weight) >= 0, f"acgan.aux_weight must be >= 0, got {config.acgan.aux_weight}")
  a = config.ada
  require(0.0 < float(a.target) < 1.0, f"ada.target must be in (0, 1), got {a.target}")
  require(int(a.interval) > 0, f"ada.interval must be positive, got {a.interval}")
  require(float(a.speed_kimg) > 0, f"ada.speed_kimg must be positive, got {a.speed_kimg}")
  require(0.0 <= float(a.p_init) <= 1.0, f"ada.p_init must be in [0, 1], got {a.p_init}")
  require(config.data.get("normalization") == "symmetric",
          f"GAN data must use data.normalization='symmetric' (images in [-1, 1], matching the generator's tanh), "
          f"got {config.data.get('normalization')!r}")
  return family


def step_settings(config, family: Family, num_classes: int) -> StepSettings:
  return StepSettings(
      loss=config.loss or family.loss, z_dim=int(config.model.z_dim),
      num_classes=num_classes if family.conditional else 0,
      clip_value=float(config.clip_value) if family.weight_clipping else 0.0,
      gp_weight=float(config.gp_weight) if family.gradient_penalty else 0.0,
      aux_fake=config.acgan.aux_fake, aux_weight=float(config.acgan.aux_weight), ada=bool(config.ada.enabled),
      ada_target=float(config.ada.target), ada_interval=int(config.ada.interval),
      ada_speed_images=float(config.ada.speed_kimg) * 1000.0)


def build_models(config, family: Family, image_shape, num_classes: int):
  """(generator, discriminator) for the family; output size and channels follow the data."""
  m = config.model
  h, w, channels = image_shape
  d_norm = m.d_norm or family.d_norm
  if family.architecture == "mlp":
    return (MLPGenerator(tuple(image_shape), tuple(m.mlp_g_hidden)), MLPDiscriminator(tuple(m.mlp_d_hidden)))
  require(h == w, f"the DCGAN generator makes square images; the data are {h}x{w} (set data.image_size)")
  n_cls = num_classes if family.conditional else 0
  generator = DCGANGenerator(z_dim=int(m.z_dim), output_size=h, channels=channels, base_width=int(m.g_base_width),
                             start_size=int(m.start_size), num_classes=n_cls, embed_dim=int(m.embed_dim),
                             conditioning=m.conditioning)
  discriminator = DCGANDiscriminator(base_width=int(m.d_base_width), norm=d_norm, num_classes=n_cls)
  return generator, discriminator


# ------------------------------------------------------------------ pictures
def save_grid(path: str, images, rows: int, min_tile: int = 56) -> None:
  """Writes [N, H, W, C] images in [-1, 1] as one PNG grid (`rows` rows), enlarged
  (nearest neighbour) so that small tiles stay visible."""
  from PIL import Image
  from skimage.util import montage
  images = to_uint8(images, (-1.0, 1.0))
  n, h, w, c = images.shape
  cols = -(-n // rows)
  if c == 1:
    grid = montage(images[..., 0], grid_shape=(rows, cols), padding_width=1, fill=255)
  else:
    grid = montage(images, grid_shape=(rows, cols), padding_width=1, fill=(255, 255, 255), channel_axis=-1)
  image = Image.fromarray(np.asarray(grid, np.uint8))
  scale = max(1, -(-min_tile // h))
  if scale > 1:
    image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
  tmp = path + ".tmp.png"
  image.save(tmp)
  os.replace(tmp, path)


def fixed_latents(seed: int, settings: StepSettings, num_samples: int):
  """The z (and classes) of every sample grid: a pure function of the seed.

  ACGAN: one row per class, the same z in each column, so a column shows one style in every class."""
  key = jax.random.fold_in(prng_key(seed), 7919)
  if settings.num_classes:
    per_class = max(1, num_samples // settings.num_classes)
    z = jax.random.normal(key, (per_class, settings.z_dim))
    z = jnp.tile(z, (settings.num_classes, 1))
    labels = jnp.repeat(jnp.arange(settings.num_classes), per_class)
    return z, labels, settings.num_classes
  z = jax.random.normal(key, (num_samples, settings.z_dim))
  return z, None, max(1, int(np.floor(np.sqrt(num_samples))))


def generate_in_batches(sample_fn, g_state, z, labels, batch_size: int = 500):
  out = []
  for i in range(0, z.shape[0], batch_size):
    c = None if labels is None else labels[i:i + batch_size]
    out.append(np.asarray(sample_fn(g_state, z[i:i + batch_size], c)))
  return np.concatenate(out)


# ------------------------------------------------------------------ the loop
def train_and_evaluate(config, workdir: str) -> dict:
  """Trains the GAN named `config.gan`, writing checkpoints, TensorBoard, sample grids,
  history.jsonl and results.json into `workdir`; returns the results.json payload (that of the
  finished run, unchanged, when `workdir` holds one)."""
  from dlbook.gan import evaluate as evaluate_lib
  t0 = time.time()
  family = validate_config(config)
  run_dir = checkpoint.Workdir(workdir, config.to_dict())
  if run_dir.finished:
    return run_dir.results()
  dataset = data_lib.load(config.data, seed=config.seed)
  batch_size, n_critic, total_steps = int(config.batch_size), int(config.n_critic), int(config.num_train_steps)
  require(batch_size <= len(dataset.train),
          f"batch_size {batch_size} is larger than the {len(dataset.train)} training images")
  settings = step_settings(config, family, dataset.num_classes)
  generator, discriminator = build_models(config, family, dataset.image_shape, dataset.num_classes)
  g_tx = optim.make_optimizer(config.g_optimizer, total_steps)
  d_tx = optim.make_optimizer(config.d_optimizer, total_steps * n_critic)
  init_key, train_key = jax.random.split(prng_key(config.seed))
  state = create_gan_state(generator, discriminator, init_key, dataset.image_shape, g_tx, d_tx, settings,
                           float(config.ada.p_init))
  num_params = {"generator": count_params(state.g.params), "discriminator": count_params(state.d.params)}
  samples_dir = os.path.join(workdir, "samples")

  d_step, g_step = (jax.jit(f, donate_argnums=0) for f in make_steps(settings))
  sample_fn = jax.jit(lambda g, z, c: generate(g, g.params, z, c, train=False)[0])
  grid_z, grid_labels, grid_rows = fixed_latents(config.seed, settings, int(config.num_samples))
  logging.info("gan %s (loss %s): G %d and D %d parameters; %d generator steps, %d critic steps each, batch %d",
               config.gan, settings.loss, num_params["generator"], num_params["discriminator"], total_steps, n_critic,
               batch_size)

  def write_grid(state, path: str):
    save_grid(path, generate_in_batches(sample_fn, state.g, grid_z, grid_labels), grid_rows)

  def step_fn(state, step):
    step_key = jax.random.fold_in(train_key, step)
    metrics = {}
    for i in range(n_critic):  # book §5.2.4: train D, then G
      batch = data_lib.train_batch(dataset.train, batch_size, config.seed, step * n_critic + i)
      state, metrics_d = d_step(state, batch, jax.random.fold_in(step_key, i))
      metrics.update(metrics_d)
    state, metrics_g = g_step(state, batch, jax.random.fold_in(step_key, n_critic))
    return state, dict(metrics, **metrics_g)

  sample_hook = runner.Hook(runner.every(int(config.sample_every_steps), also_at=total_steps),
                            lambda state, step, log: write_grid(state, os.path.join(samples_dir, f"step_{step:07d}.png")))
  run_dir.start()
  os.makedirs(samples_dir, exist_ok=True)
  result = runner.train(state, step_fn, total_steps, run_dir.path, log_every=config.log_every_steps,
                        checkpoint_every=config.checkpoint_every_steps, hooks=[sample_hook],
                        max_checkpoints=config.get("max_checkpoints", 3), started=t0,
                        progress_keys=("d_loss", "g_loss", "ada_p"))
  state, log = result.state, result.log

  write_grid(state, os.path.join(workdir, "samples.png"))
  last = next((r for r in reversed(log.records) if "train/d_loss" in r), {})
  metrics = {f"final_{k[len('train/'):]}": v for k, v in last.items() if k.startswith("train/")}
  if int(config.eval.classifier_steps) > 0:
    quality = evaluate_lib.sample_quality(config.eval, dataset, jax.random.fold_in(prng_key(config.seed), 104729),
                                          config.seed, settings,
                                          lambda z, c: generate_in_batches(sample_fn, state.g, z, c))
    metrics.update(quality)
    log.write(total_steps, {k: v for k, v in quality.items() if isinstance(v, float)}, prefix="eval/")
  log.close()
  reporting.plot_curves(os.path.join(workdir, "curves.png"), log,
                        [["train/d_loss", "train/g_loss"], ["train/d_real", "train/d_fake"],
                         ["train/r_t", "train/ada_p"]],
                        f"{config.gan} on {config.data.name}")
  return reporting.write_results(
      workdir, config=config, seed=config.seed, dataset=dataset.info, metrics=metrics,
      wall_time_s=result.wall_time_s(t0), num_params=num_params, total_steps=total_steps,
      resumed_from_step=result.start_step, train_steps_per_s=result.steps_per_s, samples="samples.png",
      loss=settings.loss)
