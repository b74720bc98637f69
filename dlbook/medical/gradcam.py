"""Grad-CAM (Selvaraju et al. 2017) for any flax.linen model, at a named sub-module's output.

For the feature map A (N, H, W, C) returned by the sub-module at `layer` (its path, e.g.
``"features"`` or ``"backbone/stage4"``) and the pre-softmax score y_c of the target class:

  α_c,k = mean_{h,w} ∂y_c / ∂A_{h,w,k}        (channel weights: global-average-pooled gradients)
  CAM_c = ReLU(Σ_k α_c,k · A_k)               (N, H, W)

The gradient with respect to A is taken without changing the model: a method interceptor adds a
zero tensor δ to the sub-module's output and the gradient with respect to δ is ∂y_c/∂A. For a
network that ends in global average pooling and one dense layer this is the class activation map
of Zhou et al. (2016) divided by H·W, which the tests check by hand. The book names Grad-CAM
nowhere; it is here because a reader of ch. 13 wants to see where the model looks, and how much
of that falls inside the tumour mask (`energy_in_mask`).
"""

from typing import Optional, Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dlbook.errors import DlbookError


def _path(module) -> str:
  return "/".join(str(p) for p in module.path)


def _apply_with_offset(model, variables, images, layer: str, delta, apply_kwargs):
  """model.apply with `delta` added to the output of the sub-module at `layer`; returns (logits, A, paths)."""
  seen, captured = [], {}

  def interceptor(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if context.method_name == "__call__":
      path = _path(context.module)
      seen.append(path)
      if path == layer and "A" not in captured:
        out = out + delta if delta is not None else out
        captured["A"] = out
    return out

  with nn.intercept_methods(interceptor):
    logits = model.apply(variables, images, **apply_kwargs)
  if isinstance(logits, (tuple, list)):  # (logits, aux_logits) models
    logits = logits[0]
  return logits, captured.get("A"), seen


def feature_shape(model, variables, images, layer: str, **apply_kwargs):
  """Shape of the output of the sub-module at `layer` (no compile: `jax.eval_shape`)."""
  holder = {}

  def probe(x):
    _, a, seen = _apply_with_offset(model, variables, x, layer, None, apply_kwargs)
    holder["seen"] = seen
    if a is None:
      return jnp.zeros(())
    return a

  out = jax.eval_shape(probe, images)
  if layer not in holder["seen"]:
    names = sorted(set(p for p in holder["seen"] if p))
    raise DlbookError(f"Grad-CAM layer {layer!r} is not a sub-module of {type(model).__name__}; "
                      f"valid: {', '.join(names[:40])}")
  return out.shape


def gradcam(model, variables, images, layer: str, target: Optional[Sequence[int]] = None,
            upsample: bool = True, normalize: bool = True, **apply_kwargs):
  """Grad-CAM maps [N, H, W] (or at the input size with `upsample`) for `target` classes (default argmax).

  `apply_kwargs` go to ``model.apply`` (e.g. ``train=False``). With `normalize` every map is divided
  by its maximum (an all-zero map stays zero).
  """
  chex.assert_rank(images, 4)
  shape = feature_shape(model, variables, images, layer, **apply_kwargs)
  chex.assert_equal(len(shape), 4)

  def score(delta):
    logits, a, _ = _apply_with_offset(model, variables, images, layer, delta, apply_kwargs)
    cls = jnp.argmax(logits, -1) if target is None else jnp.asarray(target)
    return jnp.take_along_axis(logits, cls[:, None], axis=1).sum(), (a, cls)

  grads, (a, cls) = jax.grad(score, has_aux=True)(jnp.zeros(shape, jnp.float32))
  alpha = grads.mean(axis=(1, 2))  # [N, C]
  cam = jax.nn.relu(jnp.einsum("nhwc,nc->nhw", a, alpha))
  if upsample:
    cam = jax.image.resize(cam, (cam.shape[0],) + tuple(images.shape[1:3]), "linear")
  if normalize:
    peak = cam.max(axis=(1, 2), keepdims=True)
    cam = jnp.where(peak > 0, cam / jnp.where(peak > 0, peak, 1.0), 0.0)
  return cam, cls


def energy_in_mask(cam, mask) -> jnp.ndarray:
  """Fraction of each map's total activation inside the (tumour) mask: Σ cam·mask / Σ cam, per image."""
  cam = jnp.asarray(cam, jnp.float32)
  mask = jnp.asarray(mask, jnp.float32)
  chex.assert_equal_shape((cam, mask))
  total = cam.sum(axis=(-2, -1))
  return jnp.where(total > 0, (cam * mask).sum(axis=(-2, -1)) / jnp.where(total > 0, total, 1.0), 0.0)


def mask_overlap(cam, mask) -> dict:
  """Per image: the fraction of Grad-CAM mass inside the mask (`energy_in_mask`) and the mask's share of
  the image (what a uniform map would score), and their ratio (> 1: the map concentrates on the mask)."""
  mass = np.asarray(energy_in_mask(cam, mask), np.float64)
  area = np.asarray(mask, np.float64).mean(axis=(-2, -1))
  ratio = np.divide(mass, area, out=np.full_like(mass, np.nan), where=area > 0)
  return {"mass_in_mask": mass.tolist(), "mask_area_fraction": area.tolist(), "ratio": ratio.tolist()}


def plot_gradcam(path: str, images, cams, titles: Sequence[str], masks=None, suptitle: str = "") -> None:
  """One column per image: the image (grey; the mask's outline in cyan when given) and the map over it."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  images, cams = np.asarray(images), np.asarray(cams)
  n = len(images)
  fig, axes = plt.subplots(2, n, figsize=(1.9 * n, 4.1), squeeze=False)
  for i in range(n):
    grey = images[i].mean(axis=-1) if images[i].ndim == 3 else images[i]
    for row in range(2):
      ax = axes[row, i]
      ax.imshow(grey, cmap="gray")
      if row == 1:
        ax.imshow(cams[i], cmap="jet", alpha=0.45, vmin=0.0, vmax=1.0)
      if masks is not None:
        ax.contour(np.asarray(masks[i], np.float32), levels=[0.5], colors="cyan", linewidths=0.8)
      ax.set_xticks([])
      ax.set_yticks([])
    axes[0, i].set_title(titles[i], fontsize=7)
  if suptitle:
    fig.suptitle(suptitle, fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
