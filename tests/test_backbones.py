"""Backbone architectures: exact parameter counts against the reference implementations, small-input
and features modes, and DenseNet-121-SE's include/freeze masks (seed 004).

Reference counts (1000 classes), as (parameters, BatchNorm running statistics):
- torchvision 0.28 `sum(p.numel() for p in model.parameters())` with weights=None (also in torchvision's
  model documentation); torchvision keeps BN statistics as buffers, so the second number is ours.
- Keras 3.15 `keras.applications.*(weights=None)`: trainable weights = parameters, non-trainable
  = BN statistics; their sum is Keras' `count_params()`: ResNet101V2 44,675,560, InceptionV3 23,851,784,
  Xception 22,910,480.
- DenseNet-121-SE has no published implementation: DenseNet-121 plus four SE blocks (reduction 16, with
  biases) after blocks of 256, 512, 1024 and 1024 channels: sum over C of 2*C*C/16 + C/16 + C = 306,096.

Random keys here use the 'rbg' implementation where they are compiled: threefry initialisers take
XLA:CPU seconds to compile, and these tests need values, not a particular stream.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dlbook.models as models
from dlbook.errors import DlbookError
from dlbook.models.backbones import densenet

PARAMETER_COUNTS = {
    # torchvision
    "mobilenet_v2": (3_504_872, 34_112),
    "mobilenet_v3_large": (5_483_032, 24_400),
    "mobilenet_v3_small": (2_542_856, 12_112),
    "mnasnet1_0": (4_383_312, 37_920),
    "densenet121": (7_978_856, 83_648),
    "densenet201": (20_013_928, 229_056),
    "resnet50": (25_557_032, 53_120),
    "vgg19": (143_667_240, 0),
    "regnet_x_400mf": (5_495_976, 37_856),
    "regnet_y_400mf": (4_344_144, 27_152),
    "shufflenet_v2_x1_0": (2_278_604, 16_180),
    "shufflenet_v2_x1_5": (3_503_624, 23_440),
    "shufflenet_v2_x2_0": (7_393_996, 33_716),
    "squeezenet1_1": (1_235_496, 0),
    "convnext_tiny": (28_589_128, 0),
    "efficientnet_v2_s": (21_458_488, 153_872),
    # Keras
    "resnet101v2": (44_577_896, 97_664),
    "inception_v3": (23_817_352, 34_432),
    "xception": (22_855_952, 54_528),
    # analytic (see the module docstring)
    "densenet121_se": (7_978_856 + 306_096, 83_648),
}
# Keras' own counts for the families both frameworks publish (trainable, BN statistics).
KERAS_COUNTS = {("resnet50", (("style", "keras"),)): (25_583_592, 53_120)}


@functools.lru_cache(maxsize=None)
def shapes(name, size=96, kwargs=()):
  model = models.build(name, **dict(kwargs))
  x = jnp.zeros((1, size, size, model.in_channels))
  return jax.eval_shape(lambda: model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, x))


def count(tree):
  return sum(int(np.prod(v.shape)) for v in jax.tree.leaves(tree))


# The largest traces run with the slow tests (DLBOOK_SLOW=1) to keep CI short; the rest run in CI.
HEAVY = ("densenet201", "efficientnet_v2_s", "convnext_tiny", "inception_v3", "resnet101v2", "xception")


@pytest.mark.parametrize("name", [n if n not in HEAVY else pytest.param(n, marks=pytest.mark.slow)
                                  for n in sorted(PARAMETER_COUNTS)])
def test_parameter_counts_equal_the_references(name):
  v = shapes(name)
  assert (count(v["params"]), count(v.get("batch_stats", {}))) == PARAMETER_COUNTS[name]


def test_keras_style_resnet50_count_and_every_backbone_is_registered():
  for (name, kwargs), want in KERAS_COUNTS.items():
    v = shapes(name, kwargs=kwargs)
    assert (count(v["params"]), count(v["batch_stats"])) == want
  assert set(PARAMETER_COUNTS) <= set(models.names())


@pytest.mark.parametrize("name,kwargs,size", [
    ("mobilenet_v2", dict(stem_stride=1), 28), ("mobilenet_v3_small", dict(stem_stride=1), 32),
    pytest.param("densenet121_se", dict(stem_stride=1, stem_pool=False), 32, marks=pytest.mark.slow),
    ("resnet50", dict(stem_stride=1, stem_pool=False), 32),
    ("shufflenet_v2_x1_0", dict(stem_stride=1, stem_pool=False), 32), ("vgg19", dict(pool_size=1), 32),
    pytest.param("inception_v3", dict(stem_stride=1, stem_pool=False), 32, marks=pytest.mark.slow),
    ("convnext_tiny", dict(stem_stride=1), 32),
])
def test_small_input_variants_and_features_mode(name, kwargs, size):
  model = models.build(name, num_classes=7, in_channels=1, features=True, **kwargs)
  x = jnp.zeros((2, size, size, 1))
  out = jax.eval_shape(lambda: model.init_with_output({"params": jax.random.key(0)}, x)[0])
  assert out.shape[0] == 2 and out.ndim == 2 and out.shape[1] >= 64
  with pytest.raises(DlbookError, match="input channel"):
    jax.eval_shape(lambda: model.init({"params": jax.random.key(0)}, jnp.zeros((2, size, size, 3))))


def test_width_multiplier_and_head():
  # torchvision mobilenet_v2(width_mult=0.5)
  assert count(shapes("mobilenet_v2", kwargs=(("width", 0.5),))["params"]) == 1_968_680
  v = shapes("mobilenet_v2", kwargs=(("num_classes", 10),))
  assert v["params"]["classifier"]["kernel"].shape == (1280, 10)


# --------------------------------------------------------------------------- DenseNet-121-SE masks (seed 004)

TINY = dict(blocks=(2, 3, 2), growth=4, init_features=8, num_classes=5, stem_stride=1, stem_pool=False)


@pytest.fixture(scope="module")
def tiny_densenet():
  model = densenet.DenseNet(se_reduction=4, **TINY)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 16, 16, 3)), jnp.float32)
  # an 'rbg' key: XLA:CPU compiles threefry initialisers very slowly, and the values do not matter here
  return model, jax.jit(model.init)({"params": jax.random.key(1, impl="rbg")}, x), x


def test_densenet121_se_exposes_58_dense_layers():
  v = shapes("densenet121_se")
  layers = sorted(int(k.split("_")[1]) for k in v["params"] if k.startswith("layer_"))
  assert layers == list(range(1, 59)) and models.build("densenet121_se").num_dense_layers == 58
  assert {"se_1", "se_2", "se_3", "se_4"} <= set(v["params"])


def test_include_gates_layers_of_one_fixed_network(tiny_densenet):
  model, v, x = tiny_densenet
  run = jax.jit(lambda v, n: model.apply(v, x, include=n))
  full = jax.jit(lambda v: model.apply(v, x))(v)
  np.testing.assert_allclose(run(v, 7), full, rtol=1e-6, atol=1e-6)    # include all = the plain network
  for n in (1, 3):
    out = run(v, n)
    # layers after n are gated off: changing their weights does not change the output
    later = jax.tree_util.tree_map_with_path(
        lambda p, a: a + 1.0 if p[1].key.startswith("layer_") and int(p[1].key.split("_")[1]) > n else a, v)
    np.testing.assert_allclose(run(later, n), out, rtol=1e-6, atol=1e-6)
    # ... while layer n itself matters
    mine = jax.tree_util.tree_map_with_path(lambda p, a: a + 1.0 if p[1].key == f"layer_{n}" else a, v)
    assert not np.allclose(run(mine, n), out)
  # one compile serves every n: vmap over individuals of a GA population
  outs = jax.jit(jax.vmap(lambda n: model.apply(v, x, include=n)))(jnp.array([1, 3, 7]))
  np.testing.assert_allclose(outs[2], full, rtol=1e-5, atol=1e-5)


def test_include_is_the_truncated_network(tiny_densenet):
  """include=3 (one layer into block 2) equals stem -> block 1 -> SE 1 -> transition 1 -> layer 3 -> SE 2 -> GAP
  -> head computed by hand from the same weights."""
  model, v, x = tiny_densenet
  p, s = v["params"], v["batch_stats"]

  def bn(name, h, prefix=()):
    pp, ss = p, s
    for k in prefix + (name,):
      pp, ss = pp[k], ss[k]
    return (h - ss["mean"]) / jnp.sqrt(ss["var"] + 1e-5) * pp["scale"] + pp["bias"]

  conv = lambda h, k, pad: jax.lax.conv_general_dilated(h, k, (1, 1), pad, dimension_numbers=("NHWC", "HWIO", "NHWC"))  # noqa: E731

  def layer(h, i):
    name = f"layer_{i}"
    a = conv(jax.nn.relu(bn("norm1", h, (name,))), p[name]["conv1"]["kernel"], "VALID")
    return conv(jax.nn.relu(bn("norm2", a, (name,))), p[name]["conv2"]["kernel"], ((1, 1), (1, 1)))

  def se(h, name):
    z = jax.nn.relu(h.mean((1, 2)) @ p[name]["fc1"]["kernel"] + p[name]["fc1"]["bias"])
    return h * jax.nn.sigmoid(z @ p[name]["fc2"]["kernel"] + p[name]["fc2"]["bias"])[:, None, None]

  h = jax.nn.relu(bn("stem_bn", conv(x, p["stem_conv"]["kernel"], ((3, 3), (3, 3)))))
  for i in (1, 2):
    h = jnp.concatenate([h, layer(h, i)], -1)
  h = se(h, "se_1")
  h = conv(jax.nn.relu(bn("transition_1_norm", h)), p["transition_1_conv"]["kernel"], "VALID")
  h = h.reshape(4, 8, 2, 8, 2, -1).mean((2, 4))
  h = se(jnp.concatenate([h, layer(h, 3), jnp.zeros_like(layer(h, 3)), jnp.zeros_like(layer(h, 3))], -1), "se_2")
  f = h.mean((1, 2))
  width = p["classifier"]["kernel"].shape[0]
  f = jnp.pad(f, ((0, 0), (0, width - f.shape[1])))
  want = f @ p["classifier"]["kernel"] + p["classifier"]["bias"]
  np.testing.assert_allclose(jax.jit(lambda v: model.apply(v, x, include=3))(v), want, rtol=1e-4, atol=1e-5)


@pytest.mark.slow  # long: runs with DLBOOK_SLOW=1 (keeps the CI suite in its time budget)
def test_excluded_layers_keep_their_batchnorm_statistics(tiny_densenet):
  model, v, x = tiny_densenet
  _, upd = jax.jit(lambda v: model.apply(v, x, train=True, include=3, mutable=["batch_stats"]))(v)
  old, new = v["batch_stats"], upd["batch_stats"]
  for k in ("layer_4", "layer_7"):
    np.testing.assert_array_equal(new[k]["norm1"]["mean"], old[k]["norm1"]["mean"])
  assert not np.allclose(new["layer_3"]["norm1"]["mean"], old["layer_3"]["norm1"]["mean"])


def test_freeze_mask_first_f_layers(tiny_densenet):
  model, v, _ = tiny_densenet
  blocks = TINY["blocks"]
  mask = densenet.freeze_mask(v["params"], 2, blocks)
  assert not mask["stem_conv"]["kernel"] and not mask["layer_2"]["conv2"]["kernel"]
  assert not mask["transition_1_conv"]["kernel"]        # block 1 (layers 1-2) is wholly frozen
  assert mask["layer_3"]["conv1"]["kernel"] and mask["se_1"]["fc1"]["kernel"] and mask["classifier"]["kernel"]
  assert densenet.freeze_mask(v["params"], 1, blocks)["transition_1_conv"]["kernel"]
  assert all(jax.tree.leaves(densenet.freeze_mask(v["params"], 0, blocks)))
  traced = jax.jit(lambda f: densenet.freeze_mask(v["params"], f, blocks))(2)
  assert jax.tree.map(bool, traced) == mask
  prefixes = densenet.frozen_prefixes(2, blocks)
  assert ("layer_2",) in prefixes and ("transition_1_conv",) in prefixes and ("layer_3",) not in prefixes
  with pytest.raises(DlbookError, match="n_frozen"):
    densenet.freeze_mask(v["params"], 8, blocks)


@pytest.mark.parametrize("padding", ["torch", "keras"])
def test_depthwise_taps_equal_the_grouped_conv(padding):
  from dlbook.models.backbones.common import ConvBN
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 9, 10, 6)), jnp.float32)
  for stride, kernel in ((1, 3), (2, 3), (2, 5)):  # MobileNetV3 has 5x5 depthwise kernels too
    conv = ConvBN(6, kernel, stride, groups=-1, padding=padding, depthwise="conv")
    v = jax.jit(conv.init)(jax.random.key(0, impl="rbg"), x)
    taps = ConvBN(6, kernel, stride, groups=-1, padding=padding, depthwise="taps")
    np.testing.assert_allclose(taps.apply(v, x), conv.apply(v, x), rtol=1e-5, atol=1e-5)
    # and their training-mode gradients (the taps' backward is the native kernel on the CPU)
    grads = [jax.grad(lambda p, m=m: jnp.sum(jnp.sin(m.apply({**v, "params": p}, x, train=True,
                                                             mutable=["batch_stats"])[0])))(v["params"])
             for m in (taps, conv)]
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4), *grads)


def test_depthwise_auto_is_taps_on_the_cpu_and_1x1_convs_are_matmuls():
  from dlbook.models.backbones.common import ConvBN, resolve_depthwise
  assert resolve_depthwise("auto") == ("taps" if jax.default_backend() == "cpu" else "conv")
  with pytest.raises(DlbookError, match="unknown depthwise 'grouped'"):
    resolve_depthwise("grouped")
  x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 7, 7, 5)), jnp.float32)
  for stride, padding in ((1, "torch"), (2, "torch"), (2, "keras")):  # ResNet's strided 1x1 shortcut included
    pointwise = ConvBN(8, 1, stride, padding=padding, use_bias=True, act="none")
    v = jax.jit(pointwise.init)(jax.random.key(0, impl="rbg"), x)
    assert jax.tree.map(jnp.shape, v["params"]["conv"]) == {"kernel": (1, 1, 5, 8), "bias": (8,)}
    want = jax.lax.conv_general_dilated(x, v["params"]["conv"]["kernel"], (stride, stride), "VALID",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC")) + v["params"]["conv"]["bias"]
    got = pointwise.apply(v, x)   # eval-mode BN with fresh statistics: (y - 0) / sqrt(1 + eps)
    np.testing.assert_allclose(got, (want - 0.0) / np.sqrt(1 + 1e-5), rtol=1e-5, atol=1e-5)
