"""Keras parity: `keras.applications` models (Keras 3, JAX backend, weights=None, every BatchNorm statistic,
gamma, beta and bias randomised) saved as Keras-3 `.weights.h5` or applications-style `.h5`, converted into
dlbook's backbones, give the same logits (<= 1e-4 max-abs, inference mode) on random inputs.

The two smallest run in CI; the rest are slow tests (DLBOOK_SLOW=1). Importing Keras must not change any
JAX setting for the other tests: checked here.
"""

import contextlib
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlbook.models import weights as W

os.environ["KERAS_BACKEND"] = "jax"


def jax_settings():
  out = {}
  for k in dir(jax.config):
    if k.startswith("jax_"):
      try:
        out[k] = repr(getattr(jax.config, k))
      except Exception:   # some options cannot be read back
        pass
  return out


@pytest.fixture(scope="module")
def keras():
  before = jax_settings()
  keras = pytest.importorskip("keras")
  assert keras.backend.backend() == "jax"
  assert jax_settings() == before
  yield keras
  assert jax_settings() == before   # building and running Keras models changed nothing either


@contextlib.contextmanager
def fast_keras_init(keras):
  """Keras draws initial weights eagerly with threefry, one XLA program per shape, which XLA:CPU compiles
  slowly. The test only needs some weights, so Keras' variance-scaling initialisers draw from numpy
  while the model is built (restored afterwards)."""
  from keras.src.initializers import random_initializers as ri
  rng = np.random.default_rng(123)
  original = ri.VarianceScaling.__call__

  def numpy_init(self, shape, dtype=None):
    fan_in = max(1, int(np.prod(shape[:-1])) if len(shape) > 1 else int(shape[0]))
    return rng.normal(0.0, np.sqrt(1.0 / fan_in), shape).astype(np.float32)

  ri.VarianceScaling.__call__ = numpy_init
  try:
    keras.backend.clear_session()
    yield
  finally:
    ri.VarianceScaling.__call__ = original
    keras.backend.clear_session()


# name -> (keras constructor, input size, dlbook model kwargs)
CASES = {
    "mobilenet_v3_small": ("MobileNetV3Small", 64, {}),
    "mobilenet_v2": ("MobileNetV2", 64, {}),
    "mobilenet_v3_large": ("MobileNetV3Large", 64, {}),
    "densenet121": ("DenseNet121", 64, {}),
    "densenet201": ("DenseNet201", 64, {}),
    "resnet50": ("ResNet50", 64, {}),
    "resnet101v2": ("ResNet101V2", 64, {}),
    "vgg19": ("VGG19", 32, {"pool_size": 1}),
    "inception_v3": ("InceptionV3", 75, {}),
    "xception": ("Xception", 71, {}),
}


def keras_parity(keras, tmp_path, name, legacy: bool):
  ctor, size, kwargs = CASES[name]
  extra = {"include_preprocessing": False} if "MobileNetV3" in ctor else {}
  with fast_keras_init(keras):
    km = getattr(keras.applications, ctor)(weights=None, input_shape=(size, size, 3), classifier_activation=None,
                                           **extra)
  rng = np.random.default_rng(0)
  for layer in km.layers:
    for v in layer.weights:
      leaf = v.path.split("/")[-1]
      if leaf in ("gamma", "moving_variance"):
        v.assign(rng.uniform(0.5, 1.5, v.shape).astype(np.float32))
      elif leaf in ("beta", "moving_mean", "bias"):
        v.assign(rng.normal(0.0, 0.1, v.shape).astype(np.float32))
  path = str(tmp_path / (f"{name}.h5" if legacy else f"{name}.weights.h5"))
  if legacy:   # the layout of the applications' published .h5 files
    import h5py
    from keras.src.legacy.saving import legacy_h5_format
    with h5py.File(path, "w") as f:
      legacy_h5_format.save_weights_to_hdf5_group(f, km)
  else:
    km.save_weights(path)
  x = rng.uniform(-1.0, 1.0, (2, size, size, 3)).astype(np.float32)
  ref = np.asarray(km.predict(x, batch_size=len(x), verbose=0))   # one compiled program, inference mode
  p = W.load_pretrained(name, path, image_size=size, **kwargs)
  assert p.layout == "keras"
  out = np.asarray(jax.jit(lambda v, x: p.model.apply(v, x, train=False))(p.variables, jnp.asarray(x)))
  err = float(np.abs(out - ref).max())
  print(f"keras_parity {name} {'h5' if legacy else 'weights.h5'} max_abs={err:.2e} scale={np.abs(ref).max():.2f}")
  assert err <= 1e-4, err


def test_keras_mobilenet_v3_small_parity(keras, tmp_path):
  keras_parity(keras, tmp_path, "mobilenet_v3_small", legacy=False)


@pytest.mark.slow  # long: runs with DLBOOK_SLOW=1 (keeps the CI suite in its time budget)
def test_keras_mobilenet_v2_parity_from_applications_h5(keras, tmp_path):
  keras_parity(keras, tmp_path, "mobilenet_v2", legacy=True)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in CASES if n not in ("mobilenet_v3_small", "mobilenet_v2")])
@pytest.mark.parametrize("legacy", [False, True])
def test_keras_parity_slow(keras, tmp_path, name, legacy):
  keras_parity(keras, tmp_path, name, legacy)


def test_keras_preprocessing_modes_match_the_normalizations(keras):
  x = np.random.default_rng(1).uniform(0, 1, (1, 4, 4, 3)).astype(np.float32)
  for mode, norm in (("caffe", "caffe"), ("tf", "tf"), ("torch", "imagenet")):
    ref = keras.applications.imagenet_utils.preprocess_input(x * 255.0, mode=mode, data_format="channels_last")
    np.testing.assert_allclose(W.NORMALIZATIONS[norm](jnp.asarray(x)), ref, rtol=1e-5, atol=1e-4)
