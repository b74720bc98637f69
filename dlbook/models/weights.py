"""Pretrained weights: torchvision and Keras files into dlbook's backbones, and dlbook's own files.

ImageNet weights cannot be downloaded at run time; users bring local files (seed 001 §2.5, seed 003,
book ch. 12-13 fine-tune ImageNet backbones).

Readers (nothing here executes code stored in a file):
- torchvision state dicts: `.safetensors`, `.npz`, and `.pth`/`.pt` pickles, both the zip format and the
  legacy (pre-1.6) format, through a restricted unpickler that accepts only OrderedDict and tensor-storage
  reconstruction; any other pickled global is refused before it is called.
- Keras: applications `.h5` files (`layer_names`/`weight_names` attributes) and Keras-3 `.weights.h5`
  files (`layers/<name>/vars/<i>`), read with h5py.

Layout rules (`convert`): conv kernels OIHW -> HWIO (torch; grouped and depthwise kernels too), Keras
depthwise kernels (H, W, C, 1) -> (H, W, 1, C), dense kernels transposed (torch) or reshaped from 1x1
convs, torchvision's VGG fc1 rows permuted from (C, H, W) to (H, W, C), BatchNorm weight/bias/running
statistics (torch) or gamma/beta/moving statistics (Keras, gamma absent when `scale=False`), legacy
DenseNet keys (`norm.1` -> `norm1`). The BN epsilon and the padding are part of the layout: loading a
torchvision file builds the model with torchvision's epsilon (1e-5; 1e-3 for MobileNetV3/EfficientNet)
and symmetric padding, a Keras file with Keras' epsilon (1e-3 or 1.001e-5) and TF 'same' padding.

Every source tensor is consumed exactly once and every Flax leaf is filled, or `DlbookError` names the
first unknown, missing or mis-shaped key and nothing is returned. Leaves the caller names in `exclude`
(e.g. the head when `num_classes` differs) keep their fresh initialisation and their source tensors are
dropped. The input normalisation the weights were trained with travels as `Pretrained.normalization`.
"""

import collections
import dataclasses
import fnmatch
import json
import os
import pickle
import re
import zipfile
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import traverse_util

from dlbook.errors import DlbookError, require
from dlbook.models import registry
from dlbook.models.backbones import (convnext, densenet, efficientnet, inception, mobilenet, regnet, resnet,
                                     shufflenet, squeezenet, vgg, xception)
from dlbook.registry import Registry

LAYOUTS = ("torchvision", "keras")
with open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "assets", "keras_layer_order.json")) as _f:
  KERAS_LAYER_ORDER: Dict[str, List[List[str]]] = json.load(_f)


def _one_line(e: BaseException) -> str:
  return " ".join(str(e).split()) or type(e).__name__


# ------------------------------------------------------------------------------------ normalisation

@dataclasses.dataclass(frozen=True)
class Normalization:
  """How images in [0, 1] (RGB, NHWC) are turned into the network's input: x * scale, optional RGB->BGR,
  then (x - mean) / std per channel."""
  name: str
  mean: Tuple[float, ...]
  std: Tuple[float, ...]
  scale: float = 1.0
  bgr: bool = False

  def __call__(self, images):
    x = images * self.scale
    if self.bgr:
      x = x[..., ::-1]
    return (x - jnp.asarray(self.mean, x.dtype)) / jnp.asarray(self.std, x.dtype)


NORMALIZATIONS = {
    "imagenet": Normalization("imagenet", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),   # torchvision, Keras 'torch'
    "tf": Normalization("tf", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),                            # Keras 'tf': [-1, 1]
    "caffe": Normalization("caffe", (103.939, 116.779, 123.68), (1.0, 1.0, 1.0), 255.0, True),  # Keras 'caffe'
    "unit": Normalization("unit", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),                        # [0, 1] as is
}


# ------------------------------------------------------------------------------------ architectures

NameMap = Callable[[Tuple[str, ...], set, Any], Optional[Tuple[str, Any]]]


@dataclasses.dataclass(frozen=True)
class Arch:
  """Which layouts exist for a backbone, the model settings each implies, and its input normalisation."""
  torchvision: Optional[NameMap] = None
  keras: Optional[NameMap] = None
  torchvision_kwargs: Dict[str, Any] = dataclasses.field(default_factory=dict)
  keras_kwargs: Dict[str, Any] = dataclasses.field(default_factory=dict)
  keras_normalization: str = "tf"
  keras_auto_names: Tuple[str, ...] = ()   # Keras layers named by creation order (conv2d, conv2d_1, ...)

  def names(self, layout: str) -> NameMap:
    fn = getattr(self, layout)
    require(fn is not None, f"no {layout} layout is defined for this model")
    return fn

  def model_kwargs(self, layout: str) -> Dict[str, Any]:
    return dict(self.torchvision_kwargs if layout == "torchvision" else self.keras_kwargs)

  def normalization(self, layout: str) -> Normalization:
    return NORMALIZATIONS["imagenet" if layout == "torchvision" else self.keras_normalization]


TORCH_PAD, KERAS_PAD = {"padding": "torch"}, {"padding": "keras"}
ARCHS: Registry[Arch] = Registry("pretrained-weight layout")
_archs = {
    "mobilenet_v2": Arch(mobilenet.mobilenet_v2_torchvision_names, mobilenet.mobilenet_v2_keras_names,
                         {**TORCH_PAD, "bn_eps": 1e-5}, {**KERAS_PAD, "bn_eps": 1e-3}),
    "mobilenet_v3_large": Arch(mobilenet.mobilenet_v3_torchvision_names, mobilenet.mobilenet_v3_keras_names,
                               {**TORCH_PAD, "bn_eps": 1e-3}, {**KERAS_PAD, "bn_eps": 1e-3}),
    "mobilenet_v3_small": Arch(mobilenet.mobilenet_v3_torchvision_names, mobilenet.mobilenet_v3_keras_names,
                               {**TORCH_PAD, "bn_eps": 1e-3}, {**KERAS_PAD, "bn_eps": 1e-3}),
    "mnasnet1_0": Arch(mobilenet.mnasnet_torchvision_names, None, {**TORCH_PAD, "bn_eps": 1e-5}),
    "resnet50": Arch(resnet.resnet_torchvision_names, resnet.resnet_keras_names,
                     {"style": "torchvision", "bn_eps": 1e-5}, {"style": "keras", "bn_eps": 1.001e-5},
                     keras_normalization="caffe"),
    "resnet101v2": Arch(None, resnet.resnetv2_keras_names, {}, {"bn_eps": 1.001e-5}),
    "vgg19": Arch(vgg.vgg_torchvision_names, vgg.vgg_keras_names, keras_normalization="caffe"),
    "inception_v3": Arch(None, inception.inception_keras_names, {}, {"bn_eps": 1e-3},
                         keras_auto_names=("conv2d", "batch_normalization")),
    "xception": Arch(None, xception.xception_keras_names, {}, {"bn_eps": 1e-3},
                     keras_auto_names=("conv2d", "batch_normalization")),
    "regnet_x_400mf": Arch(regnet.regnet_torchvision_names, None, {"bn_eps": 1e-5}),
    "regnet_y_400mf": Arch(regnet.regnet_torchvision_names, None, {"bn_eps": 1e-5}),
    "squeezenet1_1": Arch(squeezenet.squeezenet_torchvision_names),
    "convnext_tiny": Arch(convnext.convnext_torchvision_names),
    "efficientnet_v2_s": Arch(efficientnet.efficientnet_torchvision_names, None, {"bn_eps": 1e-3}),
}
for _name in ("densenet121", "densenet201", "densenet121_se"):
  _archs[_name] = Arch(densenet.densenet_torchvision_names, densenet.densenet_keras_names, {"bn_eps": 1e-5},
                       {"bn_eps": 1.001e-5}, keras_normalization="imagenet")
for _size in shufflenet.SHUFFLENET_CHANNELS:
  _archs[f"shufflenet_v2_{_size}"] = Arch(shufflenet.shufflenet_torchvision_names, None, {"bn_eps": 1e-5})
for _name, _arch in _archs.items():
  ARCHS.register(_name)(_arch)


# ------------------------------------------------------------------------------------ torch pickles

_STORAGE_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
                   "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
                   "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
                   "BoolStorage": np.bool_, "UntypedStorage": np.uint8}
_LEGACY_MAGIC, _LEGACY_PROTOCOL = 0x1950a86a20f9469cfc6c, 1001


@dataclasses.dataclass
class _StorageType:
  dtype: Any


@dataclasses.dataclass
class _Storage:
  dtype: Any
  numel: int
  data: Optional[np.ndarray] = None


@dataclasses.dataclass
class _LazyTensor:
  storage: _Storage
  offset: int
  size: Tuple[int, ...]
  stride: Tuple[int, ...]

  def materialize(self, name: str) -> np.ndarray:
    s = self.storage
    require(s.data is not None, f"tensor {name!r} refers to storage that the file does not contain")
    size, stride = tuple(int(v) for v in self.size), tuple(int(v) for v in self.stride)
    require(len(size) == len(stride) and all(v >= 0 for v in size + stride) and self.offset >= 0,
            f"tensor {name!r} has an invalid size {size} / stride {stride}")
    last = self.offset + sum((n - 1) * st for n, st in zip(size, stride)) if all(size) else self.offset - 1
    require(last < s.numel, f"tensor {name!r} reads past the end of its storage ({last} >= {s.numel})")
    item = s.data.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(s.data[self.offset:], size, tuple(st * item for st in stride))
    return np.array(view)


def _rebuild_tensor(storage, offset, size, stride, *unused):
  require(isinstance(storage, _Storage), "a pickled tensor refers to something that is not a tensor storage")
  return _LazyTensor(storage, int(offset), tuple(size), tuple(stride))


def _rebuild_parameter(data, *unused):
  return data


_SAFE_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _TensorUnpickler(pickle.Unpickler):
  """Unpickles a torch state dict: only OrderedDict and tensor/storage reconstruction are allowed;
  storages come from `persistent_load`. Every other global is refused before anything is called."""

  def __init__(self, f, path: str, storage_loader: Optional[Callable] = None):
    super().__init__(f)
    self.path, self.storage_loader = path, storage_loader
    self.storages: Dict[str, _Storage] = {}

  def find_class(self, module, name):
    if (module, name) in _SAFE_GLOBALS:
      return _SAFE_GLOBALS[(module, name)]
    if module == "torch" and name in _STORAGE_DTYPES:
      return _StorageType(np.dtype(_STORAGE_DTYPES[name]))
    raise DlbookError(f"{self.path}: refused to unpickle {module}.{name}: a weight file may only hold tensors "
                      "(nothing was executed)")

  def persistent_load(self, pid):
    require(isinstance(pid, tuple) and len(pid) >= 5 and pid[0] in ("storage", b"storage")
            and isinstance(pid[1], _StorageType), f"{self.path}: unexpected persistent id {pid!r:.80}")
    stype, key, numel = pid[1], str(pid[2]), pid[4]
    if key not in self.storages:
      self.storages[key] = _Storage(stype.dtype, int(numel))
      if self.storage_loader is not None:
        self.storages[key].data = self.storage_loader(key, stype.dtype, int(numel))
    require(len(pid) < 6 or pid[5] is None, f"{self.path}: storage views are not supported")
    return self.storages[key]


def _materialize(obj, path: str) -> Dict[str, np.ndarray]:
  if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
    obj = obj["state_dict"]
  require(isinstance(obj, dict), f"{path}: the pickle holds a {type(obj).__name__}, not a state dict")
  out = {}
  for k, v in obj.items():
    require(isinstance(v, _LazyTensor), f"{path}: entry {k!r} is not a tensor")
    out[str(k)] = v.materialize(k)
  return out


def _read_torch_zip(path: str) -> Dict[str, np.ndarray]:
  with zipfile.ZipFile(path) as z:
    names = z.namelist()
    pkl = [n for n in names if n.endswith("data.pkl")]
    require(len(pkl) == 1, f"{path}: a torch zip file needs exactly one data.pkl, found {len(pkl)}")
    prefix = pkl[0][:-len("data.pkl")]

    def load(key, dtype, numel):
      entry = f"{prefix}data/{key}"
      require(entry in names, f"{path}: storage {entry!r} is missing")
      raw = z.read(entry)
      require(len(raw) >= numel * dtype.itemsize, f"{path}: storage {entry!r} is truncated")
      return np.frombuffer(raw, dtype=dtype, count=numel)

    with z.open(pkl[0]) as f:
      return _materialize(_TensorUnpickler(f, path, load).load(), path)


def _read_torch_legacy(path: str) -> Dict[str, np.ndarray]:
  with open(path, "rb") as f:
    require(_TensorUnpickler(f, path).load() == _LEGACY_MAGIC, f"{path}: not a torch file (bad magic number)")
    require(_TensorUnpickler(f, path).load() == _LEGACY_PROTOCOL, f"{path}: unsupported torch protocol version")
    _TensorUnpickler(f, path).load()   # sys info
    unpickler = _TensorUnpickler(f, path)
    result = unpickler.load()
    keys = _TensorUnpickler(f, path).load()
    require(isinstance(keys, list), f"{path}: malformed storage key list")
    for key in keys:
      s = unpickler.storages.get(str(key))
      require(s is not None, f"{path}: storage {key!r} is listed but never used")
      head = f.read(8)
      require(len(head) == 8, f"{path}: truncated before storage {key!r}")
      numel = int(np.frombuffer(head, "<i8")[0])
      require(numel == s.numel, f"{path}: storage {key!r} holds {numel} elements, expected {s.numel}")
      raw = f.read(numel * s.dtype.itemsize)
      require(len(raw) == numel * s.dtype.itemsize, f"{path}: storage {key!r} is truncated")
      s.data = np.frombuffer(raw, dtype=s.dtype.newbyteorder("<"), count=numel)
    return _materialize(result, path)


# ------------------------------------------------------------------------------------ readers

def read_state_dict(path: str) -> Dict[str, np.ndarray]:
  """A torchvision-layout state dict {key: array} from .safetensors, .npz or a .pth/.pt pickle."""
  require(os.path.isfile(path), f"weight file {path!r} does not exist")
  try:
    if path.endswith(".safetensors"):
      from safetensors.numpy import load_file
      return dict(load_file(path))
    if path.endswith(".npz"):
      with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}
    if zipfile.is_zipfile(path):
      return _read_torch_zip(path)
    return _read_torch_legacy(path)
  except DlbookError:
    raise
  except Exception as e:   # truncated or foreign files: one line naming the file
    raise DlbookError(f"{path}: not a readable weight file ({_one_line(e)})") from None


def read_keras_weights(path: str, model_name: Optional[str] = None) -> Dict[str, np.ndarray]:
  """Keras weights as {"layer/i": array}, i the position in the layer's weight list, from an applications
  `.h5` (legacy) or a Keras-3 `.weights.h5` file. In legacy layer names '/' becomes '_' (Keras 2 DenseNet)
  and a '_BatchNorm' suffix '_bn' (Keras 2 MobileNetV3), as Keras 3 names them.

  Keras-3 files key layers by class (`conv2d_7`) in `model.layers` order, not by name: for the
  `keras.applications` models in `keras_layer_order.json` the real names are restored from that order."""
  import h5py
  require(os.path.isfile(path), f"weight file {path!r} does not exist")
  out: Dict[str, np.ndarray] = {}
  try:
    with h5py.File(path, "r") as f:
      root = f["model_weights"] if "model_weights" in f else f
      if "layer_names" in root.attrs:
        for raw in root.attrs["layer_names"]:
          name = raw.decode() if isinstance(raw, bytes) else str(raw)
          for i, wn in enumerate(root[name].attrs.get("weight_names", [])):
            wn = wn.decode() if isinstance(wn, bytes) else str(wn)
            out[f"{re.sub('_BatchNorm$', '_bn', name.replace('/', '_'))}/{i}"] = np.asarray(root[name][wn])
      elif "layers" in f:
        real = {key: name for name, key in KERAS_LAYER_ORDER.get(model_name, [])}
        for key, group in f["layers"].items():
          variables = group.get("vars")
          n = len(variables) if variables is not None else 0
          if n and real:
            require(key in real, f"{path}: layer {key!r} is not in Keras' {model_name} (wrong architecture?)")
          for i in range(n):
            out[f"{real.get(key, key)}/{i}"] = np.asarray(variables[str(i)])
      else:
        raise DlbookError(f"{path}: neither a Keras applications .h5 nor a Keras-3 .weights.h5 file")
  except DlbookError:
    raise
  except Exception as e:
    raise DlbookError(f"{path}: not a readable Keras weight file ({_one_line(e)})") from None
  return out


def _renumber_auto_names(source: Dict[str, np.ndarray], prefixes: Sequence[str]) -> Dict[str, np.ndarray]:
  """Keras auto-names layers `conv2d`, `conv2d_1`, ... in creation order (offset by earlier models in the
  same session): rename them `conv2d_0`, `conv2d_1`, ... by that order."""
  out = dict(source)
  for prefix in prefixes:
    pat = re.compile(rf"^{prefix}(?:_(\d+))?/(\d+)$")
    layers = sorted({int(m.group(1) or 0) for k in source if (m := pat.match(k))})
    for k in source:
      m = pat.match(k)
      if m:
        out.pop(k)
        out[f"{prefix}_{layers.index(int(m.group(1) or 0))}/{m.group(2)}"] = source[k]
  return out


def _legacy_densenet_keys(source: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
  """Old torchvision DenseNet checkpoints name `denselayer1.norm.1.weight` what is now `norm1.weight`."""
  pat = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$")
  return {(pat.sub(r"\1\2", k)): v for k, v in source.items()}


# ------------------------------------------------------------------------------------ conversion

def _torch_conv(w):
  return w.transpose(2, 3, 1, 0)


def _torch_dense(w):
  return (w.reshape(w.shape[0], -1) if w.ndim == 4 else w).T


def _keras_dense(w):
  return w.reshape(-1, w.shape[-1]) if w.ndim == 4 else w


def _chw_dense(pool: int):
  def f(w):   # (O, C*p*p) in (C, H, W) order -> (H*W*C, O)
    o = w.shape[0]
    return w.reshape(o, -1, pool, pool).transpose(2, 3, 1, 0).reshape(-1, o)
  return f


def _identity(w):
  return w


def _leaf_sources(layout: str, src: str, kind, leaves: Sequence[Tuple[str, str]]):
  """[(collection, leaf, source key, transform)] for one Flax module, plus optional extra keys to drop."""
  have = {leaf for _, leaf in leaves}
  tag = kind[0] if isinstance(kind, tuple) else kind
  if layout == "torchvision":
    if tag == "bn":
      rows = [("params", "scale", ".weight"), ("params", "bias", ".bias"), ("batch_stats", "mean", ".running_mean"),
              ("batch_stats", "var", ".running_var")]
      return [(c, l, src + s, _identity) for c, l, s in rows if l in have], [src + ".num_batches_tracked"]
    if tag == "ln":
      return [("params", "scale", src + ".weight", _identity), ("params", "bias", src + ".bias", _identity)], []
    if tag == "layer_scale":
      return [("params", "layer_scale", src + ".layer_scale", lambda w: w.reshape(-1))], []
    kernel = {"conv": _torch_conv, "dense": _torch_dense}.get(tag) or _chw_dense(kind[1])
    rows = [("params", "kernel", src + ".weight", kernel)]
    return rows + ([("params", "bias", src + ".bias", _identity)] if "bias" in have else []), []
  if tag == "bn":
    names = ["scale", "bias", "mean", "var"] if "scale" in have else ["bias", "mean", "var"]
    return [("batch_stats" if n in ("mean", "var") else "params", n, f"{src}/{i}", _identity)
            for i, n in enumerate(names)], []
  dw = lambda w: w.transpose(0, 1, 3, 2)  # noqa: E731  (H, W, C, 1) -> (H, W, 1, C)
  if tag in ("sep_dw", "sep_pw"):
    return [("params", "kernel", f"{src}/{0 if tag == 'sep_dw' else 1}", dw if tag == "sep_dw" else _identity)], []
  kernel = {"conv": _identity, "dwconv": dw, "dense": _keras_dense}[tag]
  rows = [("params", "kernel", f"{src}/0", kernel)]
  return rows + ([("params", "bias", f"{src}/1", _identity)] if "bias" in have else []), []


def _excluded(path: Tuple[str, ...], exclude: Sequence[str]) -> bool:
  joined = "/".join(path)
  return any(fnmatch.fnmatch(joined, p) or joined.startswith(p.rstrip("/") + "/") or joined == p for p in exclude)


def _target_shapes(model, image_size: int):
  def init():
    x = jnp.zeros((1, image_size, image_size, model.in_channels))
    return model.init({"params": jax.random.key(0), "dropout": jax.random.key(0)}, x, train=False)
  return jax.eval_shape(init)


def convert(model_name: str, model, source: Dict[str, np.ndarray], layout: str, *, exclude: Sequence[str] = (),
            init_variables=None, image_size: int = 224, what: str = "source", target=None) -> Dict[str, Any]:
  """Flax variables {'params', 'batch_stats'} of `model` (built as `model_name`) from `source` in `layout`.

  `exclude`: Flax module paths ('classifier', 'se_*', 'layer1_0/conv1', fnmatch patterns) to leave out;
  their leaves are taken from `init_variables` (required when anything is excluded). `target`: the model's
  variable shapes (`jax.eval_shape` of its init) when the caller has them already."""
  require(layout in LAYOUTS, f"unknown weight layout {layout!r}; valid: {', '.join(LAYOUTS)}")
  arch = ARCHS.get(model_name)
  names = arch.names(layout)
  if layout == "keras" and arch.keras_auto_names:
    source = _renumber_auto_names(source, arch.keras_auto_names)
  if layout == "torchvision" and model_name.startswith("densenet"):
    source = _legacy_densenet_keys(source)
  target = traverse_util.flatten_dict(target if target is not None else _target_shapes(model, image_size))
  by_module: Dict[Tuple[str, ...], List[Tuple[str, str]]] = collections.defaultdict(list)
  for (collection, *path) in target:
    by_module[tuple(path[:-1])].append((collection, path[-1]))
  modules = set(by_module)
  consumed, filled = set(), {}
  init_flat = traverse_util.flatten_dict(init_variables) if init_variables is not None else None
  for mpath in sorted(modules):
    skip = _excluded(mpath, exclude)
    mapped = names(mpath, modules, model)
    if mapped is None:
      require(skip, f"{what}: module {'/'.join(mpath)!r} of {model_name} has no {layout} weights; "
              f"name it in exclude to keep its initialisation")
    else:
      rows, extra = _leaf_sources(layout, mapped[0], mapped[1], by_module[mpath])
      for key in [r[2] for r in rows] + extra:
        require(key not in consumed, f"{what}: {key!r} would be used twice (internal name map error)")
        if key in source:
          consumed.add(key)
      if not skip:
        for collection, leaf, key, transform in rows:
          require(key in source, f"{what}: missing {key!r} for {model_name} {'/'.join(mpath + (leaf,))}")
          value = transform(np.asarray(source[key]))
          want = target[(collection,) + mpath + (leaf,)].shape
          require(value.shape == want, f"{what}: {key!r} has shape {source[key].shape}, which gives {value.shape} "
                  f"but {model_name} {'/'.join(mpath + (leaf,))} needs {want}")
          filled[(collection,) + mpath + (leaf,)] = value.astype(np.float32)
    if skip:
      require(init_flat is not None, "excluded modules need init_variables")
      for collection, leaf in by_module[mpath]:
        filled[(collection,) + mpath + (leaf,)] = init_flat[(collection,) + mpath + (leaf,)]
  unknown = sorted(set(source) - consumed)
  if unknown:
    raise DlbookError(f"{what}: {len(unknown)} tensor(s) that {model_name} ({layout} layout) does not use, "
                      f"first {unknown[0]!r}; wrong architecture or layout?")
  missing = [k for k in target if k not in filled]
  if missing:
    raise DlbookError(f"{what}: Flax leaf {'/'.join(missing[0])} was not filled")
  return traverse_util.unflatten_dict({k: jnp.asarray(v) for k, v in filled.items()})


@dataclasses.dataclass(frozen=True)
class Pretrained:
  """A backbone with loaded weights: `model.apply(variables, normalization(images01), train=False)`."""
  model: Any
  variables: Dict[str, Any]
  normalization: Normalization
  layout: str


def layout_of(path: str) -> str:
  """'keras' for .h5 files, 'dlbook' for dlbook's own files, else 'torchvision'."""
  if path.endswith(".h5"):
    return "keras"
  if path.endswith((".safetensors", ".npz")) and _own_metadata(path) is not None:
    return "dlbook"
  return "torchvision"


def load_pretrained(model_name: str, path: str, *, layout: Optional[str] = None, num_classes: int = 1000,
                    exclude: Sequence[str] = (), key=None, image_size: int = 224, excluded_init: str = "random",
                    **model_kwargs) -> Pretrained:
  """Builds `model_name` with the settings the file's layout implies and loads the file into it.

  Example: `load_pretrained("mobilenet_v2", "mobilenet_v2-b0353104.pth", num_classes=10,
  exclude=("classifier",))` keeps ImageNet features and a fresh 10-class head. `excluded_init="zeros"`
  fills the excluded leaves with zeros instead (no compiled initialisation; for callers that replace them)."""
  require(excluded_init in ("random", "zeros"), f"excluded_init must be 'random' or 'zeros', got {excluded_init!r}")
  layout = layout or layout_of(path)
  if layout == "dlbook":
    meta = _own_metadata(path)
    require(meta.get("model") == model_name, f"{path} holds {meta.get('model')!r} weights, not {model_name!r}")
    model = registry.build(model_name, num_classes=num_classes, **{**meta.get("model_kwargs", {}), **model_kwargs})
    variables = load_variables(path, model, image_size=image_size)
    return Pretrained(model, variables, NORMALIZATIONS[meta.get("normalization", "unit")], layout)
  require(layout in LAYOUTS, f"unknown weight layout {layout!r}; valid: {', '.join(LAYOUTS)}, dlbook")
  arch = ARCHS.get(model_name)
  require(getattr(arch, layout) is not None, f"no {layout} layout is defined for {model_name}; "
          f"valid: {', '.join(l for l in LAYOUTS if getattr(arch, l) is not None)}")
  fixed = arch.model_kwargs(layout)
  for k, v in model_kwargs.items():
    require(k not in fixed or fixed[k] == v, f"{layout} weights fix {k}={fixed.get(k)!r} for {model_name}; got {v!r}")
  model = registry.build(model_name, num_classes=num_classes, **{**model_kwargs, **fixed})
  source = read_keras_weights(path, model_name) if layout == "keras" else read_state_dict(path)
  init = None
  if exclude and excluded_init == "zeros":
    init = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), _target_shapes(model, image_size))
  elif exclude:
    x = jnp.zeros((1, image_size, image_size, model.in_channels))
    init = jax.jit(lambda k: model.init({"params": k}, x, train=False))(key if key is not None else jax.random.key(0))
  variables = convert(model_name, model, source, layout, exclude=exclude, init_variables=init,
                      image_size=image_size, what=path)
  return Pretrained(model, variables, arch.normalization(layout), layout)


# ------------------------------------------------------------------------------------ own files

def _flat_keys(variables) -> Dict[str, np.ndarray]:
  out = {}
  for path, leaf in traverse_util.flatten_dict(variables).items():
    require(all("/" not in p for p in path), f"variable path {path} contains '/'")
    out["/".join(path)] = np.asarray(leaf)
  return out


def save_variables(path: str, variables, *, model_name: str = "", model_kwargs: Optional[dict] = None,
                   normalization: str = "unit") -> None:
  """Writes dlbook variables to `.safetensors` (or `.npz`) bit for bit, with the model name, its
  constructor arguments and the input normalisation as metadata."""
  require(normalization in NORMALIZATIONS, f"unknown normalization {normalization!r}; valid: {sorted(NORMALIZATIONS)}")
  meta = {"format": "dlbook", "model": model_name, "model_kwargs": model_kwargs or {}, "normalization": normalization}
  flat = _flat_keys(variables)
  if path.endswith(".safetensors"):
    from safetensors.numpy import save_file
    save_file(flat, path, metadata={"dlbook": json.dumps(meta)})
  else:
    require(path.endswith(".npz"), f"{path}: dlbook variables are saved as .safetensors or .npz")
    np.savez(path, __dlbook__=np.frombuffer(json.dumps(meta).encode(), np.uint8), **flat)


def _own_metadata(path: str) -> Optional[dict]:
  try:
    if path.endswith(".safetensors"):
      from safetensors import safe_open
      with safe_open(path, "np") as f:
        raw = (f.metadata() or {}).get("dlbook")
    else:
      with np.load(path, allow_pickle=False) as z:
        raw = z["__dlbook__"].tobytes().decode() if "__dlbook__" in z.files else None
    return json.loads(raw) if raw else None
  except Exception as e:
    raise DlbookError(f"{path}: not a readable weight file ({_one_line(e)})") from None


def load_variables(path: str, model, *, image_size: int = 224) -> Dict[str, Any]:
  """Reads variables written by `save_variables` into the leaves of `model` (exactly; else DlbookError)."""
  require(_own_metadata(path) is not None, f"{path}: not a dlbook variables file (no dlbook metadata)")
  source = read_state_dict(path)
  source.pop("__dlbook__", None)
  target = traverse_util.flatten_dict(_target_shapes(model, image_size))
  filled = {}
  for k, spec in target.items():
    key = "/".join(k)
    require(key in source, f"{path}: missing {key!r}")
    require(source[key].shape == spec.shape, f"{path}: {key!r} has shape {source[key].shape}, needs {spec.shape}")
    filled[k] = jnp.asarray(source.pop(key))
  if source:
    raise DlbookError(f"{path}: {len(source)} tensor(s) the model does not have, first {sorted(source)[0]!r}")
  return traverse_util.unflatten_dict(filled)


def head_modules(model_name: str) -> Tuple[str, ...]:
  """The Flax modules to exclude when `num_classes` differs from the file's."""
  registry.MODELS.get(model_name)
  return ("classifier",)


__all__ = ["ARCHS", "NORMALIZATIONS", "Normalization", "Pretrained", "convert", "head_modules", "layout_of",
           "load_pretrained", "load_variables", "read_keras_weights", "read_state_dict", "save_variables"]
