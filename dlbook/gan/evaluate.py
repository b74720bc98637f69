"""Sample-quality numbers from a classifier trained on the real data (no network, no Inception).

A chain CNN (book Table 2.1 family, `dlbook.models`) is trained on the real training
split the GAN saw, with the same [-1, 1] normalisation, and applied to generated images:

- `classifier_score`: exp(E_x KL(p(y|x) || p(y))), the Inception Score (Salimans et al.
  2016) computed with this classifier instead of Inception. It lies in [1, num_classes]:
  high when each sample is confidently one class and the classes are balanced.
- `class_coverage`: entropy of the predicted-class histogram / log(num_classes); 1 when
  every class is generated equally often, lower under mode collapse.
- `class_consistency` (ACGAN only): the fraction of samples G(z, c) the classifier assigns
  to their conditioning class c, overall and per class.
- `within_class_diversity`: the per-pixel standard deviation across the samples of one class
  (the conditioning class for ACGAN, the predicted class otherwise), averaged over pixels and
  classes, divided by the same number for real test images of a class. About 1 when samples of
  a class vary as much as real ones; near 0 when G makes one image per class. The scores above
  cannot see this (a collapsed ACGAN scores perfectly on them), hence this number.

The same numbers on as many real test images are reported next to them (`*_real`), and
the classifier's real test accuracy says how far its judgement can be trusted. With
`eval.cache_dir` set, the classifier is trained once per (data, seed, steps, widths) and
reused by later runs (an orbax checkpoint under that directory).
"""

import hashlib
import json
import os
from typing import Callable, Dict

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dlbook import data as data_lib
from dlbook import models
from dlbook.training import checkpoint, reporting
from dlbook.training.state import TrainState, init_variables
from dlbook.training.steps import make_train_step


def train_classifier(dataset, steps: int, batch_size: int, key, seed: int, filters=(32, 64),
                     learning_rate: float = 1e-3):
  """A small chain CNN trained for `steps` Adam steps on `dataset.train` (batches from `seed`)."""
  model = models.build("chain_cnn", num_classes=dataset.num_classes, n_conv=2, conv_filters=tuple(filters),
                       conv_kernel=(3, 3), n_dense=1, dense_units=(128,), activation="relu")
  init_key, train_key = jax.random.split(key)
  # jitted: an eager init compiles every op on its own, which is slow
  variables = jax.jit(lambda k: init_variables(model, k, (1,) + dataset.image_shape))(init_key)
  state = TrainState.create(apply_fn=model.apply, params=variables["params"], tx=optax.adam(learning_rate),
                            batch_stats=variables.get("batch_stats", {}))
  step_fn = jax.jit(make_train_step(), donate_argnums=0)
  progress = reporting.Progress(steps, name="reference classifier")
  for step, batch in data_lib.train_batches(dataset.train, batch_size, seed, 0, steps):
    state, metrics = step_fn(state, batch, jax.random.fold_in(train_key, step))
    if (step + 1) % max(1, steps // 5) == 0:
      progress.log(step + 1, {"accuracy": metrics["accuracy"]})
  return state


def predict_probs(state, images: np.ndarray, batch_size: int = 500) -> np.ndarray:
  apply = jax.jit(lambda s, x: jax.nn.softmax(
      s.apply_fn({"params": s.params, "batch_stats": s.batch_stats}, x, train=False), -1))
  return np.concatenate([np.asarray(apply(state, images[i:i + batch_size]))
                         for i in range(0, len(images), batch_size)])


def classifier_score(probs: np.ndarray) -> float:
  """exp(E_x KL(p(y|x) || p(y))) with p(y) the mean of p(y|x) over the samples."""
  probs = np.clip(np.asarray(probs, np.float64), 1e-12, 1.0)
  marginal = probs.mean(axis=0, keepdims=True)
  return float(np.exp(np.mean(np.sum(probs * (np.log(probs) - np.log(marginal)), axis=1))))


def within_class_std(images: np.ndarray, groups: np.ndarray, num_classes: int) -> float:
  """Per-pixel std across the images of each group, averaged over pixels and groups of >= 2 images."""
  flat = np.asarray(images, np.float64).reshape(len(images), -1)
  stds = [flat[groups == c].std(axis=0).mean() for c in range(num_classes) if np.sum(groups == c) >= 2]
  return float(np.mean(stds)) if stds else 0.0


def cached_classifier(eval_config, dataset, key, seed: int):
  """`train_classifier`, or its checkpoint from `eval_config.cache_dir` when trained before."""
  args = (int(eval_config.classifier_steps), int(eval_config.classifier_batch_size), key, seed,
          tuple(eval_config.classifier_filters))
  cache = eval_config.get("cache_dir") or ""
  if not cache:
    return train_classifier(dataset, *args)
  ident = json.dumps({"data": {k: v for k, v in dataset.info.items() if k != "source"}, "seed": seed,
                      "steps": args[0], "batch": args[1], "filters": list(args[4]),
                      "key": np.asarray(jax.random.key_data(key)).tolist()}, sort_keys=True, default=str)
  directory = os.path.join(os.path.abspath(cache), hashlib.sha256(ident.encode()).hexdigest()[:16])
  ckpt = checkpoint.Checkpointer(directory, max_to_keep=1)
  if ckpt.latest_step() is None:
    state = train_classifier(dataset, *args)
    ckpt.save(args[0], {"params": state.params, "batch_stats": state.batch_stats})
  else:
    state = train_classifier(dataset, 0, *args[1:])  # the untrained structure to restore into
    state = state.replace(**ckpt.restore({"params": state.params, "batch_stats": state.batch_stats}))
  ckpt.close()
  return state


def class_coverage(predictions: np.ndarray, num_classes: int) -> float:
  """Entropy of the predicted-class histogram divided by log(num_classes)."""
  counts = np.bincount(predictions, minlength=num_classes).astype(np.float64)
  p = counts / counts.sum()
  nz = p[p > 0]
  return float(-(nz * np.log(nz)).sum() / np.log(num_classes))


def sample_quality(eval_config, dataset, key, seed: int, settings, generate_fn: Callable) -> Dict:
  """Trains the reference classifier and scores `eval_config.num_samples` generated images.

  `generate_fn(z, labels)` returns images; ACGAN samples are class-balanced."""
  classifier_key, latent_key = jax.random.split(key)
  n = int(eval_config.num_samples)
  classifier = cached_classifier(eval_config, dataset, classifier_key, seed)
  test = dataset.test
  test_probs = predict_probs(classifier, test.images)
  out = {"classifier_test_accuracy": float(np.mean(test_probs.argmax(-1) == test.labels)),
         "classifier_steps": int(eval_config.classifier_steps), "eval_samples": n}
  z = jax.random.normal(latent_key, (n, settings.z_dim))
  labels = jnp.arange(n) % settings.num_classes if settings.num_classes else None
  samples = generate_fn(z, labels)
  probs = predict_probs(classifier, samples)
  real_idx = np.random.default_rng(seed).permutation(len(test_probs))[:n]
  real_probs = test_probs[real_idx]
  out["classifier_score"] = classifier_score(probs)
  out["classifier_score_real"] = classifier_score(real_probs)
  out["class_coverage"] = class_coverage(probs.argmax(-1), dataset.num_classes)
  out["class_coverage_real"] = class_coverage(real_probs.argmax(-1), dataset.num_classes)
  groups = probs.argmax(-1) if labels is None else np.asarray(labels)
  real_std = within_class_std(test.images[real_idx], test.labels[real_idx], dataset.num_classes)
  out["within_class_diversity"] = within_class_std(samples, groups, dataset.num_classes) / max(real_std, 1e-12)
  if labels is not None:
    labels = np.asarray(labels)
    hits = probs.argmax(-1) == labels
    out["class_consistency"] = float(hits.mean())
    out["class_consistency_per_class"] = {
        str(dataset.class_names[c] if c < len(dataset.class_names) else c): float(hits[labels == c].mean())
        for c in range(settings.num_classes)}
  return out
