"""SqueezeNet 1.1 (Iandola et al. 2016; torchvision `squeezenet1_1`, 1,235,496 parameters).

Fire module: 1x1 squeeze -> ReLU -> (1x1 expand || 3x3 expand) -> ReLU. No BatchNorm. The classifier is
dropout -> 1x1 conv -> ReLU -> global average, so torchvision's logits are non-negative; dlbook keeps that.
Max-pools use ceil mode, as torchvision.
"""

import flax.linen as nn
import jax.numpy as jnp

from dlbook.models.backbones.common import check_input, max_pool
from dlbook.models.backbones.common import conv as conv2d
from dlbook.models.registry import register

# (squeeze, expand) per fire module, max-pools before modules 0, 2 and 4.
SQUEEZENET_FIRES = ((16, 64), (16, 64), (32, 128), (32, 128), (48, 192), (48, 192), (64, 256), (64, 256))
SQUEEZENET_POOL_BEFORE = (0, 2, 4)
_uniform = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")   # torch's default conv init


class Fire(nn.Module):
  squeeze: int
  expand: int

  @nn.compact
  def __call__(self, x):
    s = nn.relu(conv2d(self.squeeze, 1, kernel_init=_uniform, name="squeeze")(x))
    e1 = nn.relu(conv2d(self.expand, 1, kernel_init=_uniform, name="expand1x1")(s))
    e3 = nn.relu(nn.Conv(self.expand, (3, 3), padding=((1, 1), (1, 1)), kernel_init=_uniform, name="expand3x3")(s))
    return jnp.concatenate([e1, e3], axis=-1)


class SqueezeNet(nn.Module):
  num_classes: int = 1000
  in_channels: int = 3
  dropout: float = 0.5
  features: bool = False
  stem_stride: int = 2
  stem_pool: bool = True

  @nn.compact
  def __call__(self, x, train: bool = False):
    check_input(x, self.in_channels, "squeezenet1_1")
    x = nn.relu(nn.Conv(64, (3, 3), (self.stem_stride,) * 2, padding="VALID", kernel_init=_uniform, name="stem")(x))
    for i, (s, e) in enumerate(SQUEEZENET_FIRES):
      if i in SQUEEZENET_POOL_BEFORE and (i > 0 or self.stem_pool):
        x = max_pool(x, 3, 2, ceil_mode=True)
      x = Fire(s, e, name=f"fire{i}")(x)
    if self.features:
      return jnp.mean(x, axis=(1, 2))
    if self.dropout > 0:
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
    x = nn.relu(conv2d(self.num_classes, 1, kernel_init=nn.initializers.normal(0.01), name="classifier")(x))
    return jnp.mean(x, axis=(1, 2))


@register("squeezenet1_1")
def squeezenet1_1(num_classes: int = 1000, **kwargs) -> SqueezeNet:
  return SqueezeNet(num_classes=num_classes, **kwargs)


_TORCH_FIRE_INDEX = (3, 4, 6, 7, 9, 10, 11, 12)


def squeezenet_torchvision_names(path, modules, model):
  """torchvision: features.0 (stem), features.{3,4,6,7,9,10,11,12}.{squeeze,expand1x1,expand3x3}, classifier.1."""
  top = path[0]
  if top == "stem":
    return "features.0", "conv"
  if top == "classifier":
    return "classifier.1", "conv"
  return f"features.{_TORCH_FIRE_INDEX[int(top[len('fire'):])]}.{path[1]}", "conv"
