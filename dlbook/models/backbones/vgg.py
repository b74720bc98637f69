"""VGG19 (Simonyan & Zisserman 2015, configuration E), a leukaemia baseline (seed 003).

16 3x3 convolutions with bias and ReLU in five stages separated by 2x2 max-pools, then a 7x7 adaptive
average pool (torchvision; the identity at 224 px), flatten, two 4096-unit layers with dropout and the
classifier: 143,667,240 parameters in torchvision and Keras alike. torchvision flattens in (C, H, W)
order and Keras in (H, W, C); dlbook flattens NHWC, so the converter permutes fc1's input rows.
"""

import flax.linen as nn

from dlbook.models.backbones.common import adaptive_avg_pool, check_input, classify, conv_init, max_pool
from dlbook.models.registry import register

VGG19_STAGES = ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512), (512, 512, 512, 512))


class VGG(nn.Module):
  """VGG without BatchNorm (torchvision `vgg19`, Keras `VGG19`)."""
  stages: tuple = VGG19_STAGES
  num_classes: int = 1000
  width: float = 1.0
  in_channels: int = 3
  dropout: float = 0.5
  features: bool = False
  hidden: int = 4096
  pool_size: int = 7    # torchvision's adaptive pool; small-input presets use 1 (a 512-wide fc1)
  stem_pool: bool = True

  @nn.compact
  def __call__(self, x, train: bool = False):
    check_input(x, self.in_channels, "vgg19")
    for s, stage in enumerate(self.stages):
      for c, ch in enumerate(stage):
        x = nn.relu(nn.Conv(int(round(ch * self.width)), (3, 3), padding=((1, 1), (1, 1)), kernel_init=conv_init,
                            name=f"conv{s + 1}_{c + 1}")(x))
      if s > 0 or self.stem_pool:
        x = max_pool(x, 2, 2)
    x = adaptive_avg_pool(x, (self.pool_size, self.pool_size))
    x = x.reshape((x.shape[0], -1))
    for i in (1, 2):
      x = nn.relu(nn.Dense(self.hidden, kernel_init=nn.initializers.normal(0.01), name=f"fc{i}")(x))
      if self.dropout > 0:
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
    if self.features:
      return x
    return classify(self, x, train, self.num_classes, 0.0)


@register("vgg19")
def vgg19(num_classes: int = 1000, **kwargs) -> VGG:
  return VGG(num_classes=num_classes, **kwargs)


# Index of each conv in torchvision's `features` Sequential (conv, relu, ..., pool).
def _torch_conv_index(stages, s: int, c: int) -> int:
  i = 0
  for si, stage in enumerate(stages):
    for ci in range(len(stage)):
      if (si, ci) == (s, c):
        return i
      i += 2
    i += 1
  raise ValueError((s, c))


def vgg_torchvision_names(path, modules, model):
  """torchvision: features.{i} convs, classifier.0 (fc1, input rows in C,H,W order), classifier.3, classifier.6."""
  top = path[0]
  if top == "fc1":
    return "classifier.0", ("dense_chw", model.pool_size)
  if top in ("fc2", "classifier"):
    return {"fc2": "classifier.3", "classifier": "classifier.6"}[top], "dense"
  s, c = (int(v) - 1 for v in top[len("conv"):].split("_"))
  return f"features.{_torch_conv_index(model.stages, s, c)}", "conv"


def vgg_keras_names(path, modules, model):
  """Keras: block{s}_conv{c}, fc1, fc2, predictions."""
  top = path[0]
  if top in ("fc1", "fc2", "classifier"):
    return {"classifier": "predictions"}.get(top, top), "dense"
  s, c = top[len("conv"):].split("_")
  return f"block{s}_conv{c}", "conv"
