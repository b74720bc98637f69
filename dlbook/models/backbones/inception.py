"""Inception-V3 (Szegedy et al. 2016) as Keras `InceptionV3` defines it (pan-cancer ensemble, book ch. 12;
leukaemia baseline, seed 003): every conv is conv (no bias) -> BN without scale (eps 1e-3) -> ReLU, no
auxiliary head; 23,817,352 parameters and 23,851,784 variables in all (with BN statistics) at 1000
classes.

Keras names these layers automatically (`conv2d`, `conv2d_1`, ...) in creation order, so the Flax
modules are numbered `conv_{i}` in the same order and the converter matches them by that order.
"""

import flax.linen as nn
import jax.numpy as jnp

from dlbook.models.backbones.common import ConvBN, check_input, classify
from dlbook.models.registry import register


class InceptionV3(nn.Module):
  num_classes: int = 1000
  width: float = 1.0
  in_channels: int = 3
  dropout: float = 0.0
  features: bool = False
  stem_stride: int = 2
  stem_pool: bool = True
  bn_eps: float = 1e-3

  @nn.compact
  def __call__(self, x, train: bool = False):
    check_input(x, self.in_channels, "inception_v3")
    count = [0]

    def cbn(h, f, kh, kw, stride=1, padding="SAME"):
      name = f"conv_{count[0]}"
      count[0] += 1
      return ConvBN(max(1, int(round(f * self.width))), (kh, kw), stride, padding=padding, bn_eps=self.bn_eps,
                    bn_scale=False, name=name)(h, train)

    avg = lambda h: nn.avg_pool(h, (3, 3), (1, 1), padding="SAME", count_include_pad=False)  # noqa: E731
    pool = lambda h: nn.max_pool(h, (3, 3), (2, 2))  # noqa: E731
    x = cbn(x, 32, 3, 3, self.stem_stride, "VALID")
    x = cbn(x, 32, 3, 3, padding="VALID")
    x = cbn(x, 64, 3, 3)
    x = pool(x) if self.stem_pool else x
    x = cbn(x, 80, 1, 1, padding="VALID")
    x = cbn(x, 192, 3, 3, padding="VALID")
    x = pool(x) if self.stem_pool else x
    for pool_features in (32, 64, 64):   # mixed 0-2
      b1 = cbn(x, 64, 1, 1)
      b5 = cbn(cbn(x, 48, 1, 1), 64, 5, 5)
      b3 = cbn(cbn(cbn(x, 64, 1, 1), 96, 3, 3), 96, 3, 3)
      bp = cbn(avg(x), pool_features, 1, 1)
      x = jnp.concatenate([b1, b5, b3, bp], -1)
    b3 = cbn(x, 384, 3, 3, 2, "VALID")     # mixed 3
    bd = cbn(cbn(cbn(x, 64, 1, 1), 96, 3, 3), 96, 3, 3, 2, "VALID")
    x = jnp.concatenate([b3, bd, pool(x)], -1)
    for c in (128, 160, 160, 192):         # mixed 4-7
      b1 = cbn(x, 192, 1, 1)
      b7 = cbn(cbn(cbn(x, c, 1, 1), c, 1, 7), 192, 7, 1)
      bd = cbn(x, c, 1, 1)
      for f, kh, kw in ((c, 7, 1), (c, 1, 7), (c, 7, 1), (192, 1, 7)):
        bd = cbn(bd, f, kh, kw)
      bp = cbn(avg(x), 192, 1, 1)
      x = jnp.concatenate([b1, b7, bd, bp], -1)
    b3 = cbn(cbn(x, 192, 1, 1), 320, 3, 3, 2, "VALID")   # mixed 8
    b7 = cbn(cbn(cbn(cbn(x, 192, 1, 1), 192, 1, 7), 192, 7, 1), 192, 3, 3, 2, "VALID")
    x = jnp.concatenate([b3, b7, pool(x)], -1)
    for _ in range(2):                     # mixed 9-10
      b1 = cbn(x, 320, 1, 1)
      b3 = cbn(x, 384, 1, 1)
      b3 = jnp.concatenate([cbn(b3, 384, 1, 3), cbn(b3, 384, 3, 1)], -1)
      bd = cbn(cbn(x, 448, 1, 1), 384, 3, 3)
      bd = jnp.concatenate([cbn(bd, 384, 1, 3), cbn(bd, 384, 3, 1)], -1)
      bp = cbn(avg(x), 192, 1, 1)
      x = jnp.concatenate([b1, b3, bd, bp], -1)
    feats = jnp.mean(x, axis=(1, 2))
    if self.features:
      return feats
    return classify(self, feats, train, self.num_classes, self.dropout, kernel_init=nn.initializers.lecun_normal())


@register("inception_v3")
def inception_v3(num_classes: int = 1000, **kwargs) -> InceptionV3:
  return InceptionV3(num_classes=num_classes, **kwargs)


def inception_keras_names(path, modules, model):
  """Keras auto names, renumbered from 0 in creation order by the converter: conv2d_{i},
  batch_normalization_{i}, predictions."""
  if path[0] == "classifier":
    return "predictions", "dense"
  i = int(path[0].split("_")[1])
  return (f"conv2d_{i}", "conv") if path[1] == "conv" else (f"batch_normalization_{i}", "bn")
