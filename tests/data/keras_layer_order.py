"""Writes dlbook/assets/keras_layer_order.json (run once, with Keras 3 installed).

Keras-3 `.weights.h5` files do not store layer names: each layer's variables sit under
`layers/<class in snake case>[_<n>]`, numbered per class in `model.layers` order. To map such a file
onto real layer names (which dlbook's name maps use), dlbook needs that order for every
`keras.applications` model it converts; this script records it as [layer name, storage key] pairs.

  KERAS_BACKEND=jax python tests/data/keras_layer_order.py
"""

import collections
import json
import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras  # noqa: E402
from keras.src.utils import naming  # noqa: E402

MODELS = {
    "mobilenet_v2": lambda: keras.applications.MobileNetV2(weights=None),
    "mobilenet_v3_large": lambda: keras.applications.MobileNetV3Large(weights=None, include_preprocessing=False),
    "mobilenet_v3_small": lambda: keras.applications.MobileNetV3Small(weights=None, include_preprocessing=False),
    "densenet121": lambda: keras.applications.DenseNet121(weights=None),
    "densenet201": lambda: keras.applications.DenseNet201(weights=None),
    "resnet50": lambda: keras.applications.ResNet50(weights=None),
    "resnet101v2": lambda: keras.applications.ResNet101V2(weights=None),
    "vgg19": lambda: keras.applications.VGG19(weights=None),
    "inception_v3": lambda: keras.applications.InceptionV3(weights=None),
    "xception": lambda: keras.applications.Xception(weights=None),
}


def order(model):
  seen = collections.Counter()
  out = []
  for layer in model.layers:
    base = naming.to_snake_case(layer.__class__.__name__)
    key = base if seen[base] == 0 else f"{base}_{seen[base]}"
    seen[base] += 1
    if layer.weights:
      out.append([layer.name, key])
  return out


if __name__ == "__main__":
  result = {}
  for name, build in MODELS.items():
    keras.backend.clear_session()
    result[name] = order(build())
  target = os.path.join(os.path.dirname(__file__), "..", "..", "dlbook", "assets", "keras_layer_order.json")
  with open(target, "w") as f:
    json.dump(result, f, separators=(",", ":"))
  print({k: len(v) for k, v in result.items()})
