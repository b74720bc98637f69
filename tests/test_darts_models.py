"""DARTS operations, genotypes, search and evaluation networks (dlbook.models.darts)."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlbook import models
from dlbook.errors import DlbookError
from dlbook.models.darts import operations as ops
from dlbook.models.darts.genotypes import (DARTS_V1, DARTS_V2, PRIMITIVES, Genotype, derive_genotype, load_genotype,
                                           resolve_genotype, save_genotype, validate_genotype)
from dlbook.models.darts.operations import ReLUConvBN
from dlbook.models.darts.search_network import MixedOp, SearchCell, edge_index, num_edges
from dlbook.training import count_params


def param_shapes(model, shape, **kwargs):
  return jax.eval_shape(lambda: model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)},
                                           jnp.zeros(shape), train=False, **kwargs))["params"]


def without_aux(params):
  return {k: v for k, v in params.items() if "aux" not in k}


# Reference counts, obtained with torch 2.13.0 from quark0/darts cnn/model.py and cnn/model_search.py:
# sum(v.numel() for name, v in NetworkCIFAR(36, 10, 20, True, genotypes.DARTS_V2).named_parameters()
# if "auxiliary" not in name) -> 3,349,342 (3,825,768 with the auxiliary head; DARTS_V1: 3,169,414 /
# 3,645,840), and sum of model_search.Network(16, 10, 8, criterion).parameters() -> 1,930,618.
@pytest.mark.parametrize("name,no_aux,total", [("DARTS_V2", 3_349_342, 3_825_768), ("DARTS_V1", 3_169_414, 3_645_840)])
def test_eval_network_parameter_count_equals_reference(name, no_aux, total):
  model = models.build("darts_eval", num_classes=10, genotype=name, init_channels=36, layers=20, auxiliary=True)
  params = param_shapes(model, (1, 32, 32, 3))
  assert count_params(without_aux(params)) == no_aux
  assert count_params(params) == total
  assert {"stem", "classifier", "aux_head", "cell_0", "cell_19"} <= set(params)
  assert [k for k in params if "aux" in k] == ["aux_head"]


def test_search_network_parameter_count_and_alphas():
  model = models.build("darts_search", num_classes=10, init_channels=16, layers=8)
  params = param_shapes(model, (1, 32, 32, 3))
  assert params["alphas_normal"].shape == params["alphas_reduce"].shape == (14, 8)
  weights = {k: v for k, v in params.items() if not k.startswith("alphas")}
  assert count_params(weights) == 1_930_618


@pytest.mark.parametrize("k,s,p,d,size", [pytest.param(3, 1, 1, 1, 8, marks=pytest.mark.slow), (3, 2, 1, 1, 8),
                                          pytest.param(5, 1, 2, 1, 7, marks=pytest.mark.slow), (3, 1, 2, 2, 8),
                                          (5, 2, 4, 2, 7)])
def test_depthwise_conv_matches_lax_grouped_conv_to_second_order(k, s, p, d, size):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((2, size, size, 3)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((k, k, 1, 3)), jnp.float32)
  ours = lambda x, w: ops.depthwise_conv(x, w, s, p, d)
  trusted = lambda x, w: ops.conv2d(x, w, s, p, d, groups=3)
  np.testing.assert_allclose(ours(x, w), trusted(x, w), atol=1e-5)
  target = jnp.asarray(rng.standard_normal(trusted(x, w).shape), jnp.float32)
  loss = lambda f: (lambda x, w: jnp.sum(jnp.tanh(f(x, w)) * target))
  for a, b in zip(jax.grad(loss(ours), (0, 1))(x, w), jax.grad(loss(trusted), (0, 1))(x, w)):
    np.testing.assert_allclose(a, b, atol=1e-4)
  # Second order (the exact DARTS hypergradient differentiates the backward pass again).
  gnorm = lambda f: (lambda x, w: jnp.sum(jax.grad(loss(f), 0)(x, w) ** 2))
  np.testing.assert_allclose(jax.grad(gnorm(ours), 1)(x, w), jax.grad(gnorm(trusted), 1)(x, w), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("stride,size", [(1, 8), (2, 8), (2, 7)])
def test_pools_match_flax_pools_and_their_gradients(stride, size):
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.standard_normal((2, size, size, 3)), jnp.float32)  # continuous: no ties
  pad = ((1, 1), (1, 1))
  trusted_max = lambda x: nn.max_pool(x, (3, 3), (stride, stride), pad)
  trusted_avg = lambda x: nn.avg_pool(x, (3, 3), (stride, stride), pad, count_include_pad=False)
  for ours, trusted in ((lambda x: ops.max_pool_3x3(x, stride), trusted_max),
                        (lambda x: ops.avg_pool_3x3(x, stride), trusted_avg)):
    np.testing.assert_allclose(ours(x), trusted(x), atol=1e-6)
    target = jnp.asarray(rng.standard_normal(trusted(x).shape), jnp.float32)
    g = lambda f: jax.grad(lambda x: jnp.sum(f(x) * target))(x)
    np.testing.assert_allclose(g(ours), g(trusted), atol=1e-6)


def test_max_pool_gradient_goes_to_the_first_maximum_like_pytorch():
  x = jnp.zeros((1, 3, 3, 1))  # all tied: the whole gradient goes to the first tap of each window
  g = jax.grad(lambda x: jnp.sum(ops.max_pool_3x3(x, 2)))(x)
  np.testing.assert_array_equal(g[0, :, :, 0], [[1, 1, 0], [1, 1, 0], [0, 0, 0]])  # as torch max_pool2d


def test_conv_formulations_agree():
  x = jnp.asarray(np.random.default_rng(2).standard_normal((2, 8, 8, 4)), jnp.float32)
  outs = []
  for impl in ops.CONV_IMPLS:
    op = ops.OPS["sep_conv_5x5"](4, 2, True, conv_impl=impl)
    variables = op.init(jax.random.key(0), x, False)
    outs.append(op.apply(variables, x, True, mutable=["batch_stats"])[0])
  for out in outs[1:]:
    np.testing.assert_allclose(out, outs[0], atol=1e-4)
  with pytest.raises(DlbookError, match="conv_impl"):
    models.build("darts_search", num_classes=10, conv_impl="winograd")


@pytest.mark.slow  # tens of seconds of compilation on 2 shared cores; DLBOOK_SLOW=1
def test_eval_network_outputs_aux_in_training_and_drop_path_uses_dropout_rng():
  model = models.build("darts_eval", num_classes=5, genotype="DARTS_V1", init_channels=4, layers=3, auxiliary=True,
                       drop_path_prob=0.5)
  x = jnp.asarray(np.random.default_rng(3).standard_normal((4, 32, 32, 3)), jnp.float32)
  variables = model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, x, train=False)
  assert model.apply(variables, x, train=False).shape == (4, 5)
  run = lambda key: model.apply(variables, x, train=True, rngs={"dropout": key}, mutable=["batch_stats"])[0]
  (logits, aux), (logits_b, _) = run(jax.random.key(5)), run(jax.random.key(6))
  assert logits.shape == aux.shape == (4, 5)
  assert not np.allclose(logits, logits_b)  # different drop-path masks
  np.testing.assert_allclose(run(jax.random.key(5))[0], logits)
  with pytest.raises(DlbookError, match="auxiliary head"):
    model.init({"params": jax.random.key(0)}, jnp.zeros((1, 28, 28, 3)), train=False)


@pytest.mark.slow  # minutes on 2 shared cores (compiles a supernet); DLBOOK_SLOW=1
@pytest.mark.parametrize("reduction", [False, True])
def test_scanned_search_cell_equals_separate_mixed_ops(reduction):
  steps, c = 3, 4
  cell = SearchCell(c, reduction=reduction, reduction_prev=False, steps=steps, multiplier=2)
  rng = np.random.default_rng(5)
  s0, s1 = (jnp.asarray(rng.standard_normal((2, 8, 8, 3)), jnp.float32) for _ in range(2))
  w = jax.nn.softmax(jnp.asarray(rng.standard_normal((num_edges(steps), 8)), jnp.float32), -1)
  variables = cell.init(jax.random.key(0), s0, s1, w, False)
  out, _ = cell.apply(variables, s0, s1, w, True, mutable=["batch_stats"])
  params, stats = variables["params"], variables["batch_stats"]
  apply = lambda module, name, x, *a: module.apply({"params": params[name], "batch_stats": stats[name]}, x, *a, True,
                                                    mutable=["batch_stats"])[0]
  states = [apply(ReLUConvBN(c, affine=False), "preprocess0", s0), apply(ReLUConvBN(c, affine=False), "preprocess1", s1)]
  input_pairs = [(j, i) for i in range(steps) for j in (0, 1)]
  inner_pairs = [(j, i) for i in range(steps) for j in range(2, i + 2)]
  for i in range(steps):
    node = 0.0
    for j, h in enumerate(states):
      name, pos = ("input_edges", input_pairs.index((j, i))) if j < 2 else ("inner_edges", inner_pairs.index((j, i)))
      edge = {k: jax.tree.map(lambda a: a[pos], v[name]["mixed_op"]) for k, v in (("params", params), ("batch_stats", stats))}
      op = MixedOp(c, 2 if reduction and j < 2 else 1)
      node = node + op.apply(edge, h, w[edge_index(i, j)], True, mutable=["batch_stats"])[0]
    states.append(node)
  np.testing.assert_allclose(out, jnp.concatenate(states[-2:], -1), atol=1e-4)


@pytest.mark.slow  # minutes on 2 shared cores (compiles a supernet); DLBOOK_SLOW=1
def test_search_network_external_weights_override_softmax_alpha():
  model = models.build("darts_search", num_classes=3, init_channels=2, layers=3, steps=2, multiplier=2)
  x = jnp.asarray(np.random.default_rng(4).standard_normal((2, 8, 8, 1)), jnp.float32)
  variables = model.init({"params": jax.random.key(0)}, x, train=False)
  params = variables["params"]
  apply = lambda p, **kw: model.apply({**variables, "params": p}, x, train=False, **kw)
  explicit = apply(params, weights_normal=jax.nn.softmax(params["alphas_normal"], -1),
                   weights_reduce=jax.nn.softmax(params["alphas_reduce"], -1))
  np.testing.assert_allclose(apply(params), explicit, atol=1e-6)
  skip_only = jnp.zeros((5, 8)).at[:, PRIMITIVES.index("max_pool_3x3")].set(1.0)
  shifted = dict(params, alphas_normal=params["alphas_normal"] + 3.0 * jnp.eye(5, 8))
  out_a = apply(params, weights_normal=skip_only, weights_reduce=skip_only)
  out_b = apply(shifted, weights_normal=skip_only, weights_reduce=skip_only)
  np.testing.assert_allclose(out_a, out_b)  # alphas ignored when weights are given
  assert not np.allclose(apply(shifted), apply(params))


def test_genotype_validation_json_and_names(tmp_path):
  assert resolve_genotype("DARTS_V2") == validate_genotype(DARTS_V2)
  path = str(tmp_path / "g.json")
  save_genotype(path, DARTS_V1)
  assert load_genotype(path) == validate_genotype(DARTS_V1)
  assert resolve_genotype(path).normal[0] == ("sep_conv_3x3", 1)
  bad = [dict(DARTS_V2._asdict(), normal=[("conv_9x9", 0), ("skip_connect", 1)] * 4),
         dict(DARTS_V2._asdict(), normal=[("skip_connect", 2), ("skip_connect", 1)] + list(DARTS_V2.normal[2:])),
         dict(DARTS_V2._asdict(), normal=list(DARTS_V2.normal[:3])),
         dict(DARTS_V2._asdict(), reduce_concat=[2, 9])]
  for g, match in zip(bad, ["unknown op 'conv_9x9'", "input index 2 of node 0", "two per node", "index 9"]):
    with pytest.raises(DlbookError, match=match):
      validate_genotype(g)
  with open(path, "w") as f:
    json.dump({"normal": []}, f)
  with pytest.raises(DlbookError, match="lacks fields"):
    load_genotype(path)
  with open(path, "w") as f:
    f.write("{not json")
  with pytest.raises(DlbookError, match="cannot read genotype"):
    resolve_genotype(path)
  with pytest.raises(DlbookError, match="unknown genotype 'DARTS_V9'"):
    models.build("darts_eval", num_classes=10, genotype="DARTS_V9")


def test_derive_genotype_keeps_two_strongest_non_none_edges_per_node():
  none, skip, sep3, maxp = (PRIMITIVES.index(n) for n in ("none", "skip_connect", "sep_conv_3x3", "max_pool_3x3"))
  w = np.full((14, 8), 0.1)
  w[:, none] = 0.9  # `none` is strongest everywhere but never chosen
  w[0, sep3], w[1, skip] = 0.5, 0.6  # node 0: both of its inputs
  w[2, maxp], w[3, sep3], w[4, skip] = 0.3, 0.2, 0.4  # node 1: inputs 2 (skip) and 0 (max pool)
  g = derive_genotype(w, w)
  assert g.normal[:4] == (("skip_connect", 1), ("sep_conv_3x3", 0), ("skip_connect", 2), ("max_pool_3x3", 0))
  assert g.normal_concat == (2, 3, 4, 5)
  assert all(op != "none" for op, _ in g.normal + g.reduce)
  assert isinstance(g, Genotype) and len(g.reduce) == 8
