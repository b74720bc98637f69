"""Gen-CNN's genome, losses, optimizers and population fitness (thesis seed 001 ch. 3).

Genes (five reals in [0, 1], decoded linearly as the author's code does, keyed by gene name):
- ``architecture``: equal bins over the architecture pool;
- ``loss``: equal bins over `LOSSES` (cross-entropy, label smoothing 0.1, logit penalty, logit
  normalisation, sigmoid cross-entropy);
- ``optimizer``: equal bins over `OPTIMIZERS` (Adam 1e-3·a, SGD 1e-2·a with momentum 0.9, RMSprop
  1e-3·a with momentum 0.9, Adamax 2e-3·a);
- ``weight_decay``: λ = 1e-9 + g (0.1 - 1e-9);
- ``learning_rate``: the scale a = 1e-5 + g (1 - 1e-5) of the optimizer's base learning rate.

The author's code passes no weight decay to Adam; `adam_weight_decay=False` (the default) keeps that.
Weight decay is the coupled L2 term of the PyTorch optimizers the thesis uses (λ·w added to the
gradient before the optimizer).

`GroupEvaluator` trains every individual from its own key on the same batches (common random numbers)
and returns its validation predictions. Individuals with the same (architecture, optimizer) form a
group that runs as one `jax.vmap` in one compiled program, the learning rate, weight decay and loss
index being traced per-individual values; a group runs in chunks of `group_size` individuals (the last
padded with copies), so each (architecture, optimizer) pair compiles once per run. `loop` runs the same per-individual function one at a time (the
reference; a test shows both agree for the same keys).
"""

import functools
from typing import Dict, List, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dlbook import evolution
from dlbook import models
from dlbook.errors import require
from dlbook.metrics.classification import confusion_matrix, matthews_corrcoef
from dlbook.nas.fitness import as_key_data, per_individual_copy, train_scan

GENES = ("architecture", "loss", "optimizer", "weight_decay", "learning_rate")
LOSSES = ("cross_entropy", "label_smoothing", "logit_penalty", "logit_norm", "sigmoid_cross_entropy")
OPTIMIZERS = {"adam": 1e-3, "sgd": 1e-2, "rmsprop": 1e-3, "adamax": 2e-3}  # base learning rates
WEIGHT_DECAY = (1e-9, 0.1)
LR_SCALE = (1e-5, 1.0)
# Thesis Table 3.3 probabilities, by gene name (its text and code order the genes differently).
CROSSOVER_PROB = {"architecture": 0.0, "loss": 0.0, "optimizer": 0.0, "learning_rate": 0.9, "weight_decay": 0.9}
MUTATION_PROB = {"architecture": 0.4, "loss": 0.4, "optimizer": 0.4, "learning_rate": 0.2, "weight_decay": 0.2}
THESIS_POOL = ("convnext_tiny", "efficientnet_v2_s", "regnet_y_400mf", "regnet_x_400mf", "mobilenet_v3_small",
               "mobilenet_v3_large", "shufflenet_v2_x1_0", "shufflenet_v2_x1_5", "shufflenet_v2_x2_0")
LABEL_SMOOTHING = 0.1
LOGIT_PENALTY = 4e-4
LOGIT_NORM_TAU = 0.04


def genome_spec() -> evolution.GenomeSpec:
  return evolution.GenomeSpec([evolution.real(n, 0.0, 1.0) for n in GENES])


def _bin(g: float, n: int) -> int:
  return min(int(np.floor(float(g) * n)), n - 1)


def _linear(g: float, bounds) -> float:
  return float(bounds[0] + float(g) * (bounds[1] - bounds[0]))


def decode(genes: Dict[str, float], pool: Sequence[str]) -> dict:
  """Raw genes in [0, 1] -> the hyperparameters they stand for (linear decoding)."""
  opt = list(OPTIMIZERS)[_bin(genes["optimizer"], len(OPTIMIZERS))]
  scale = _linear(genes["learning_rate"], LR_SCALE)
  return {"architecture": pool[_bin(genes["architecture"], len(pool))],
          "architecture_index": _bin(genes["architecture"], len(pool)),
          "loss": LOSSES[_bin(genes["loss"], len(LOSSES))], "loss_index": _bin(genes["loss"], len(LOSSES)),
          "optimizer": opt, "weight_decay": _linear(genes["weight_decay"], WEIGHT_DECAY),
          "learning_rate_scale": scale, "learning_rate": OPTIMIZERS[opt] * scale}


def decode_population(population, pool) -> List[dict]:
  host = {k: np.asarray(jax.device_get(v), np.float64) for k, v in population.items()}
  n = len(host[GENES[0]])
  return [decode({k: host[k][i] for k in GENES}, pool) for i in range(n)]


def gen_cnn_loss(index, logits, labels, num_classes: int):
  """Loss `LOSSES[index]` (index may be traced: one `lax.switch`, a select under vmap), batch mean."""
  onehot = jax.nn.one_hot(labels, num_classes)
  ce = lambda z: optax.softmax_cross_entropy(z, onehot).mean()
  branches = [
      ce,
      lambda z: optax.softmax_cross_entropy(z, optax.smooth_labels(onehot, LABEL_SMOOTHING)).mean(),
      # Logit penalty (Kornblith et al. 2021): CE + β ||z||² per sample.
      lambda z: ce(z) + LOGIT_PENALTY * jnp.mean(jnp.sum(z * z, axis=-1)),
      # Logit normalisation (Wei et al. 2022): CE of z / (τ ||z||).
      lambda z: ce(z / (LOGIT_NORM_TAU * (jnp.linalg.norm(z, axis=-1, keepdims=True) + 1e-7))),
      lambda z: optax.sigmoid_binary_cross_entropy(z, onehot).sum(-1).mean()]
  return jax.lax.switch(index, branches, logits)


def make_optimizer(name: str, learning_rate, weight_decay, num_steps: int, cosine: bool,
                   adam_weight_decay: bool) -> optax.GradientTransformation:
  """The optimizer `name` with (possibly traced) learning rate and weight decay; `cosine`: the rate
  decays to 0.1·lr over `num_steps` (the high-fidelity run), else it is constant."""
  lr = optax.cosine_decay_schedule(learning_rate, num_steps, alpha=0.1) if cosine else learning_rate
  base = {"adam": lambda: optax.adam(lr),
          "sgd": lambda: optax.sgd(lr, momentum=0.9),
          # PyTorch's RMSprop: smoothing 0.99, eps outside the square root
          "rmsprop": lambda: optax.rmsprop(lr, decay=0.99, eps=1e-8, momentum=0.9, eps_in_sqrt=False),
          "adamax": lambda: optax.adamax(lr)}[name]()
  if name == "adam" and not adam_weight_decay:
    return base
  return optax.chain(optax.add_decayed_weights(weight_decay), base)


def make_train_fn(arch: str, optimizer: str, num_classes: int, image_shape, num_steps: int, eval_batch_size: int,
                  cosine: bool = False, adam_weight_decay: bool = False):
  """`(learning_rate, weight_decay, loss_index, key_data, data) -> {predictions, train_loss}` for one
  individual of architecture `arch` trained with `optimizer` (data: `dlbook.nas.fitness.make_fitness_data`)."""
  model = models.build(arch, num_classes=num_classes)

  def train_and_predict(learning_rate, weight_decay, loss_index, key_data, data):
    key = jax.random.wrap_key_data(key_data)
    variables = model.init(key, jnp.zeros((1,) + tuple(image_shape), jnp.float32), train=False)
    params, stats = variables["params"], variables.get("batch_stats", {})
    tx = make_optimizer(optimizer, learning_rate, weight_decay, num_steps, cosine, adam_weight_decay)

    def loss_fn(params, stats, images, labels):
      logits, updates = model.apply({"params": params, "batch_stats": stats}, images, train=True,
                                    mutable=["batch_stats"])
      return gen_cnn_loss(loss_index, logits, labels, num_classes), updates.get("batch_stats", stats)

    params, stats, losses = train_scan(loss_fn, tx, params, stats, data, key_data)

    def predict(images):
      logits = model.apply({"params": params, "batch_stats": stats}, per_individual_copy(images, key_data),
                           train=False)
      return jnp.argmax(logits, -1).astype(jnp.int32)

    images = data["eval_images"].reshape((-1, eval_batch_size) + data["eval_images"].shape[1:])
    tail = min(10, losses.shape[0])
    return {"predictions": jax.lax.map(predict, images).reshape(-1), "train_loss": losses[-tail:].mean()}

  return train_and_predict


class GroupEvaluator:
  """Trains decoded individuals and returns their predictions on `data`'s evaluation images.

  `__call__`: individuals grouped by (architecture, optimizer), each group vmapped in chunks of
  `group_size` (the last padded with copies of its last member), one compiled program per pair. `loop`: one individual at a time through
  the same function, jitted unbatched."""

  def __init__(self, num_classes: int, image_shape, num_steps: int, eval_batch_size: int, cosine: bool = False,
               adam_weight_decay: bool = False, group_size: int = 4):
    require(group_size > 0, f"group_size must be positive, got {group_size}")
    self.group_size = int(group_size)
    require(num_steps > 0, f"the number of training steps must be positive, got {num_steps}")
    self.settings = (int(num_classes), tuple(image_shape), int(num_steps), int(eval_batch_size), bool(cosine),
                     bool(adam_weight_decay))
    self.num_traces = 0

  @functools.lru_cache(maxsize=None)
  def _fn(self, arch: str, optimizer: str, vmapped: bool):
    one = make_train_fn(arch, optimizer, *self.settings)
    if not vmapped:
      return jax.jit(one)

    def batched(lr, wd, loss, keys, data):
      self.num_traces += 1  # runs once per trace, never per call
      return jax.vmap(one, in_axes=(0, 0, 0, 0, None))(lr, wd, loss, keys, data)
    return jax.jit(batched)

  @staticmethod
  def _args(decoded: Sequence[dict], idx):
    return (jnp.asarray([decoded[i]["learning_rate"] for i in idx], jnp.float32),
            jnp.asarray([decoded[i]["weight_decay"] for i in idx], jnp.float32),
            jnp.asarray([decoded[i]["loss_index"] for i in idx], jnp.int32))

  @staticmethod
  def groups(decoded: Sequence[dict]) -> Dict[tuple, List[int]]:
    out = {}
    for i, d in enumerate(decoded):
      out.setdefault((d["architecture"], d["optimizer"]), []).append(i)
    return out

  def __call__(self, decoded: Sequence[dict], keys, data: dict):
    """(predictions [n, V_padded] int32, final training loss [n])."""
    keys = as_key_data(keys)
    n = len(decoded)
    preds = [None] * n
    losses = np.zeros(n, np.float32)
    for (arch, opt), group in self.groups(decoded).items():
      for start in range(0, len(group), self.group_size):
        members = group[start:start + self.group_size]
        idx = members + [members[-1]] * (self.group_size - len(members))
        out = jax.device_get(self._fn(arch, opt, True)(*self._args(decoded, idx), keys[np.asarray(idx)], data))
        for j, i in enumerate(members):
          preds[i], losses[i] = out["predictions"][j], out["train_loss"][j]
    return np.stack(preds), losses

  def loop(self, decoded: Sequence[dict], keys, data: dict):
    keys = as_key_data(keys)
    preds, losses = [], []
    for i, d in enumerate(decoded):
      lr, wd, loss = (a[0] for a in self._args(decoded, [i]))
      out = jax.device_get(self._fn(d["architecture"], d["optimizer"], False)(lr, wd, loss, keys[i], data))
      preds.append(out["predictions"])
      losses.append(out["train_loss"])
    return np.stack(preds), np.asarray(losses, np.float32)


def mcc_scores(predictions, data: dict, num_classes: int, losses=None) -> np.ndarray:
  """Gorodkin's multiclass MCC of each row of predictions on the (unpadded) evaluation labels; NaN for
  an individual whose training loss went non-finite."""
  valid = np.asarray(data["eval_mask"]) > 0
  labels = np.asarray(data["eval_labels"])[valid]
  out = np.asarray([matthews_corrcoef(confusion_matrix(labels, p[valid], num_classes)) for p in predictions])
  if losses is not None:
    out = np.where(np.isfinite(losses), out, np.nan)
  return out.astype(np.float64)


def min_max(values) -> np.ndarray:
  """Min-max normalisation within a generation (all equal -> all 1); NaN stays NaN (never selected)."""
  v = np.asarray(values, np.float64)
  finite = v[np.isfinite(v)]
  if finite.size == 0:
    return v.astype(np.float32)
  lo, hi = finite.min(), finite.max()
  out = np.ones_like(v) if hi == lo else (v - lo) / (hi - lo)
  return np.where(np.isfinite(v), out, np.nan).astype(np.float32)

