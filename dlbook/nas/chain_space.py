"""Fixed-shape supernet for the chain-structured search space (book ch. 2, Table 2.1).

Every genome ``{n_conv, conv_filters[i], conv_kernel[i], n_dense, dense_units[j], activation}`` is
expressed as masks over max-size weights, so all individuals share parameter shapes and a whole
population trains as one `jax.vmap`:

- conv layer i has a ``max_kernel`` x ``max_kernel`` kernel with ``max_filters`` outputs; a k x k
  kernel is its centred k x k window (the rest is masked to zero), and `conv_filters[i]` active
  channels are the first ones (the others are zeroed after the activation);
- layers i >= n_conv are computed but unused: the classifier head reads the features after layer
  n_conv - 1 through a first dense layer owned by that depth (the flattened size depends on depth);
- dense layer j >= n_dense is the identity; units beyond `dense_units[j]` are zeroed;
- the activation is selected by index.

Correspondence with `dlbook.models.build("chain_cnn", ...)` (tested in tests/test_evolutionary_nas.py):
with the supernet's weights sliced to the decoded genome (`slice_to_chain_cnn`), the masked forward
pass equals chain_cnn's forward pass exactly (train and eval mode), because zeroed channels and
kernel taps contribute exact zeros, 'same' padding of the centred window equals 'same' padding of
the small kernel (odd kernels only), and BatchNorm acts per channel. `init` rescales every kernel by
sqrt(max fan-in / active fan-in), so an individual's initial weights have the same distribution
as chain_cnn's lecun-normal initialisation of the decoded network. The conv formulation
(`conv_impl`) is one of `dlbook.nas.kernels.CONV_IMPLS`.
"""

from typing import Tuple

import chex
import flax.linen as nn
import jax.numpy as jnp

from dlbook import evolution
from dlbook.errors import require
from dlbook.models.chain_cnn import ACTIVATIONS
from dlbook.nas.kernels import CONV_IMPLS, centred_kernel_mask, conv2d, max_pool_2x2, select_activation

def pooled_size(size: int, depth: int) -> int:
  """Spatial size after `depth` conv layers of chain_cnn (2x2 pool while the map is >= 2x2)."""
  for _ in range(depth):
    if size >= 2:
      size //= 2
  return size


class MaskedConv(nn.Module):
  """Max-size bias-free conv whose kernel is multiplied by a spatial mask."""
  features: int
  kernel_size: int
  impl: str = "taps"

  @nn.compact
  def __call__(self, x, kernel_mask):
    k = self.kernel_size
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (k, k, x.shape[-1], self.features))
    return conv2d(x, kernel * kernel_mask[:, :, None, None], self.impl)


class ChainSupernet(nn.Module):
  """`__call__(x, arch, train)` -> logits, where `arch` holds the genome's VALUES (see `ChainSpace.arch`):
  n_conv (), conv_filters [max_conv], conv_kernel [max_conv], n_dense (), dense_units [max_dense],
  activation () (index into `activations`)."""
  num_classes: int
  max_conv: int = 3
  max_filters: int = 64
  max_kernel: int = 5
  max_dense: int = 2
  max_units: int = 128
  activations: Tuple[str, ...] = ("relu", "elu", "tanh", "sigmoid")
  conv_impl: str = "taps"

  @nn.compact
  def __call__(self, x, arch, train: bool = False):
    chex.assert_rank(x, 4)
    features = []
    for i in range(self.max_conv):
      x = MaskedConv(self.max_filters, self.max_kernel, self.conv_impl, name=f"conv_{i}")(
          x, centred_kernel_mask(self.max_kernel, arch["conv_kernel"][i]))
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9, name=f"bn_{i}")(x)
      x = select_activation(arch["activation"], x, self.activations)
      x = x * (jnp.arange(self.max_filters) < arch["conv_filters"][i])
      if x.shape[1] >= 2 and x.shape[2] >= 2:
        x = max_pool_2x2(x)
      features.append(x.reshape((x.shape[0], -1)))
    unit_ids = jnp.arange(self.max_units)
    # First dense layer: one weight matrix per conv depth; the genome's depth picks one.
    h = sum((arch["n_conv"] == d + 1) * nn.Dense(self.max_units, name=f"dense_0_depth{d + 1}")(f)
            for d, f in enumerate(features))
    for j in range(self.max_dense):
      if j > 0:
        z = nn.Dense(self.max_units, name=f"dense_{j}")(h)
      else:
        z = h
      z = select_activation(arch["activation"], z, self.activations) * (unit_ids < arch["dense_units"][j])
      h = jnp.where(j < arch["n_dense"], z, h)
    logits = nn.Dense(self.num_classes, name="classifier")(h)
    chex.assert_shape(logits, (x.shape[0], self.num_classes))
    return logits


class ChainSpace:
  """The chain-structured search space: genome spec, supernet, decoding and init (book Table 2.1).

  Genes: n_conv in [1, max_conv]; conv_filters[max_conv] and conv_kernel[max_conv] categorical over
  `filter_choices` / `kernel_choices`; n_dense in [1, max_dense]; dense_units[max_dense] over
  `unit_choices`; activation over `activations`. Entries beyond n_conv / n_dense are carried but
  unused (they matter again if a later mutation deepens the network).
  """
  name = "chain"

  def __init__(self, max_conv=3, filter_choices=(8, 16, 32, 64), kernel_choices=(3, 5), max_dense=2,
               unit_choices=(32, 64, 128), activations=("relu", "elu", "tanh", "sigmoid"), conv_impl="taps"):
    require(int(max_conv) >= 1 and int(max_dense) >= 1, "chain space needs max_conv >= 1 and max_dense >= 1")
    require(len(filter_choices) > 0 and all(int(f) > 0 for f in filter_choices),
            f"filter_choices must be positive integers, got {tuple(filter_choices)}")
    require(len(kernel_choices) > 0 and all(int(k) > 0 and int(k) % 2 == 1 for k in kernel_choices),
            f"kernel_choices must be odd positive sizes ('same' padding of a centred window), got "
            f"{tuple(kernel_choices)}")
    require(len(unit_choices) > 0 and all(int(u) > 0 for u in unit_choices),
            f"unit_choices must be positive integers, got {tuple(unit_choices)}")
    bad = [a for a in activations if a not in ACTIVATIONS]
    require(len(activations) > 0 and not bad,
            f"unknown activations {bad}; valid: {', '.join(sorted(ACTIVATIONS))}")
    require(conv_impl in CONV_IMPLS, f"unknown conv_impl {conv_impl!r}; valid: {', '.join(CONV_IMPLS)}")
    self.max_conv, self.max_dense = int(max_conv), int(max_dense)
    self.filter_choices = tuple(int(f) for f in filter_choices)
    self.kernel_choices = tuple(int(k) for k in kernel_choices)
    self.unit_choices = tuple(int(u) for u in unit_choices)
    self.activations = tuple(activations)
    self.conv_impl = conv_impl
    self.spec = evolution.GenomeSpec([
        evolution.integer("n_conv", 1, self.max_conv),
        evolution.categorical("conv_filters", self.filter_choices, (self.max_conv,)),
        evolution.categorical("conv_kernel", self.kernel_choices, (self.max_conv,)),
        evolution.integer("n_dense", 1, self.max_dense),
        evolution.categorical("dense_units", self.unit_choices, (self.max_dense,)),
        evolution.categorical("activation", self.activations),
    ])

  def model(self, num_classes: int) -> ChainSupernet:
    return ChainSupernet(num_classes, self.max_conv, max(self.filter_choices), max(self.kernel_choices),
                         self.max_dense, max(self.unit_choices), self.activations, self.conv_impl)

  def arch(self, genome) -> dict:
    """Genome (indices) -> the supernet's arch arrays (values); traceable."""
    return {"n_conv": genome["n_conv"], "n_dense": genome["n_dense"], "activation": genome["activation"],
            "conv_filters": jnp.asarray(self.filter_choices)[genome["conv_filters"]],
            "conv_kernel": jnp.asarray(self.kernel_choices)[genome["conv_kernel"]],
            "dense_units": jnp.asarray(self.unit_choices)[genome["dense_units"]]}

  def decode(self, genome) -> dict:
    """The chain_cnn keyword arguments of one genome (unused trailing entries dropped)."""
    g = self.spec.decode(genome)
    return dict(n_conv=g["n_conv"], conv_filters=g["conv_filters"][:g["n_conv"]],
                conv_kernel=g["conv_kernel"][:g["n_conv"]], n_dense=g["n_dense"],
                dense_units=g["dense_units"][:g["n_dense"]], activation=g["activation"])

  def encode(self, architecture: dict):
    """A genome from chain_cnn keyword arguments (e.g. `TABLE_2_1_GENOME`); unused slots take the
    first choice. Values outside the space raise `DlbookError` naming the gene and valid values."""
    a = dict(architecture)
    n_conv, n_dense = int(a.get("n_conv", -1)), int(a.get("n_dense", -1))
    require(1 <= n_conv <= self.max_conv, f"n_conv={n_conv} outside the chain space [1, {self.max_conv}]")
    require(1 <= n_dense <= self.max_dense, f"n_dense={n_dense} outside the chain space [1, {self.max_dense}]")
    pad = lambda v, n, m, fill: tuple(v)[:n] + (fill,) * (m - n)
    require(len(a.get("conv_filters", ())) >= n_conv and len(a.get("conv_kernel", ())) >= n_conv
            and len(a.get("dense_units", ())) >= n_dense, f"architecture {a} lists fewer layers than n_conv/n_dense")
    return self.spec.encode(dict(
        n_conv=n_conv, n_dense=n_dense, activation=a.get("activation"),
        conv_filters=pad(a["conv_filters"], n_conv, self.max_conv, self.filter_choices[0]),
        conv_kernel=pad(a["conv_kernel"], n_conv, self.max_conv, self.kernel_choices[0]),
        dense_units=pad(a["dense_units"], n_dense, self.max_dense, self.unit_choices[0])))

  def baseline_architecture(self) -> dict:
    """Book Table 2.1 (2 convs 32@3x3, 64@5x5; dense 128; ReLU), clipped into this space."""
    nearest = lambda v, choices: min(choices, key=lambda c: abs(c - v))
    act = "relu" if "relu" in self.activations else self.activations[0]
    n_conv = min(2, self.max_conv)
    return dict(n_conv=n_conv, conv_filters=tuple(nearest(f, self.filter_choices) for f in (32, 64)[:n_conv]),
                conv_kernel=tuple(nearest(k, self.kernel_choices) for k in (3, 5)[:n_conv]), n_dense=1,
                dense_units=(nearest(128, self.unit_choices),), activation=act)

  def init(self, model, key, image_shape, genome) -> dict:
    """Variables of one individual; kernels rescaled to the decoded network's fan-in."""
    arch = self.arch(genome)
    x = jnp.zeros((1,) + tuple(image_shape), jnp.float32)
    variables = model.init(key, x, arch, train=False)
    return dict(variables, params=self._rescale(variables["params"], arch, image_shape))

  def _rescale(self, params, arch, image_shape):
    max_k, max_f, max_u = max(self.kernel_choices), max(self.filter_choices), max(self.unit_choices)
    cin0 = image_shape[-1]
    params = dict(params)
    for i in range(self.max_conv):
      cin_max, cin = (cin0, cin0) if i == 0 else (max_f, arch["conv_filters"][i - 1])
      fan = arch["conv_kernel"][i] ** 2 * cin
      params[f"conv_{i}"] = {"kernel": params[f"conv_{i}"]["kernel"] * jnp.sqrt(max_k ** 2 * cin_max / fan)}
    for d in range(1, self.max_conv + 1):
      s = pooled_size(image_shape[0], d) * pooled_size(image_shape[1], d)
      name = f"dense_0_depth{d}"
      fan = s * arch["conv_filters"][d - 1]
      params[name] = dict(params[name], kernel=params[name]["kernel"] * jnp.sqrt(s * max_f / fan))
    for j in range(1, self.max_dense):
      name = f"dense_{j}"
      params[name] = dict(params[name], kernel=params[name]["kernel"] * jnp.sqrt(max_u / arch["dense_units"][j - 1]))
    last = params["classifier"]["kernel"]
    fan = jnp.asarray([arch["dense_units"][j] for j in range(self.max_dense)])[arch["n_dense"] - 1]
    params["classifier"] = dict(params["classifier"], kernel=last * jnp.sqrt(max_u / fan))
    return params


def slice_to_chain_cnn(space: ChainSpace, variables: dict, genome, image_shape) -> dict:
  """The decoded chain_cnn's variables cut out of a supernet individual's variables."""
  a = space.decode(genome)
  max_k = max(space.kernel_choices)
  params, stats = variables["params"], variables.get("batch_stats", {})
  out_p, out_s = {}, {}
  cin = image_shape[-1]
  for i in range(a["n_conv"]):
    k, f = a["conv_kernel"][i], a["conv_filters"][i]
    lo = max_k // 2 - k // 2
    out_p[f"conv_{i}"] = {"kernel": params[f"conv_{i}"]["kernel"][lo:lo + k, lo:lo + k, :cin, :f]}
    out_p[f"bn_{i}"] = {n: v[:f] for n, v in params[f"bn_{i}"].items()}
    out_s[f"bn_{i}"] = {n: v[:f] for n, v in stats[f"bn_{i}"].items()}
    cin = f
  d = a["n_conv"]
  h, w = pooled_size(image_shape[0], d), pooled_size(image_shape[1], d)
  first = params[f"dense_0_depth{d}"]
  kernel = first["kernel"].reshape(h, w, -1, first["kernel"].shape[-1])[:, :, :cin, :a["dense_units"][0]]
  out_p["dense_0"] = {"kernel": kernel.reshape(h * w * cin, -1), "bias": first["bias"][:a["dense_units"][0]]}
  for j in range(1, a["n_dense"]):
    p = params[f"dense_{j}"]
    out_p[f"dense_{j}"] = {"kernel": p["kernel"][:a["dense_units"][j - 1], :a["dense_units"][j]],
                           "bias": p["bias"][:a["dense_units"][j]]}
  out_p["classifier"] = {"kernel": params["classifier"]["kernel"][:a["dense_units"][-1]],
                         "bias": params["classifier"]["bias"]}
  return {"params": out_p, "batch_stats": out_s}


def parameter_count(space: ChainSpace, genome, image_shape, num_classes: int) -> int:
  """Trainable parameters of the decoded chain_cnn (what the individual really uses)."""
  a = space.decode(genome)
  n, cin = 0, image_shape[-1]
  for k, f in zip(a["conv_kernel"], a["conv_filters"]):
    n += k * k * cin * f + 2 * f
    cin = f
  d = a["n_conv"]
  fan = pooled_size(image_shape[0], d) * pooled_size(image_shape[1], d) * cin
  for u in a["dense_units"]:
    n += fan * u + u
    fan = u
  return int(n + fan * num_classes + num_classes)
