"""8-bit images, shared by the book's stego systems and the hide/reveal tool: rounding with a
straight-through gradient, and the cover / stego / difference picture."""

import jax
import jax.numpy as jnp
import numpy as np


def quantize(x):
  """Clip to [-1, 1] and round to the 256 levels of an 8-bit image; the gradient passes straight through."""
  x = jnp.clip(x, -1.0, 1.0)
  q = jnp.round((x + 1.0) * 127.5) / 127.5 - 1.0
  return x + jax.lax.stop_gradient(q - x)


def save_examples(path: str, result: dict, count: int = 4, title: str = "") -> None:
  """Cover / stego / |difference|×10 for the first `count` test images (PNG)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415
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
