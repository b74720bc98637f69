"""Per-backend kernel choices of the DARTS ops (`conv_impl`, `pool_impl`, `edges` = "auto")."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlbook import models
from dlbook.errors import DlbookError
from dlbook.models.darts import operations as ops
from dlbook.models.darts.search_network import SearchCell, num_edges, resolve_edges


def test_auto_is_the_cpu_choice_on_cpu_and_native_kernels_elsewhere():
  assert ops.resolve("conv_impl", "auto", "cpu") == "shift"
  assert ops.resolve("pool_impl", "auto", "cpu") == "gather"
  assert resolve_edges("auto", "cpu") == "scan"
  for backend in ("gpu", "cuda", "rocm", "tpu"):
    assert ops.resolve("conv_impl", "auto", backend) == "grouped"
    assert ops.resolve("pool_impl", "auto", backend) == "xla"
    assert resolve_edges("auto", backend) == "wide"
  assert ops.resolve("conv_impl", "dense", "gpu") == "dense"  # an explicit choice is kept everywhere
  for kw, name in (({"pool_impl": "cudnn"}, "pool_impl"), ({"edges": "loop"}, "edges"),
                   ({"conv_impl": "winograd"}, "conv_impl")):
    with pytest.raises(DlbookError, match=name):
      models.build("darts_search", num_classes=10, **kw)


def test_auto_lowers_to_the_same_program_as_the_cpu_choice_on_cpu():
  # CPU behaviour unchanged: "auto" is the formulation chosen before, not a new one (lowering only, no compile).
  x = jnp.zeros((2, 8, 8, 4))
  lowered = lambda **kw: jax.jit(lambda x: ops.OPS[kw.pop("op")](4, 2, True, **kw).init_with_output(
      jax.random.key(0), x, True)[0]).lower(x).as_text()
  if jax.default_backend() == "cpu":
    assert lowered(op="sep_conv_3x3", conv_impl="auto") == lowered(op="sep_conv_3x3", conv_impl="shift")
    assert lowered(op="max_pool_3x3", pool_impl="auto") == lowered(op="max_pool_3x3", pool_impl="gather")
  assert lowered(op="sep_conv_3x3", conv_impl="grouped") != lowered(op="sep_conv_3x3", conv_impl="shift")


@pytest.mark.parametrize("stride,size", [pytest.param(1, 8, marks=pytest.mark.slow), (2, 7)])
def test_xla_pools_match_flax_pools_the_gather_pools_and_their_gradients(stride, size):
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.standard_normal((2, size, size, 3)), jnp.float32)  # continuous: no ties
  pad = ((1, 1), (1, 1))
  trusted = {"max": lambda x: nn.max_pool(x, (3, 3), (stride, stride), pad),
             "avg": lambda x: nn.avg_pool(x, (3, 3), (stride, stride), pad, count_include_pad=False)}
  ours = {"max": ops.max_pool_3x3, "avg": ops.avg_pool_3x3}
  for kind in ("max", "avg"):
    target = jnp.asarray(rng.standard_normal(trusted[kind](x).shape), jnp.float32)
    grad = lambda f: jax.jit(jax.grad(lambda x: jnp.sum(f(x) * target)))(x)
    xla, gather = (lambda x, impl=impl: ours[kind](x, stride, impl) for impl in ("xla", "gather"))
    np.testing.assert_allclose(xla(x), trusted[kind](x), atol=1e-6)
    np.testing.assert_allclose(xla(x), gather(x), atol=1e-6)
    np.testing.assert_allclose(grad(xla), grad(trusted[kind]), atol=1e-6)
    np.testing.assert_allclose(grad(xla), grad(gather), atol=1e-6)


def test_max_pool_ties_send_the_gradient_to_the_first_maximum_like_pytorch():
  # All tied: each window's whole gradient goes to its first real pixel in row-major order, as
  # torch.nn.functional.max_pool2d(x, 3, stride, padding=1) does; hand-counted windows per pixel.
  x = jnp.zeros((1, 3, 3, 1))
  g = lambda stride, impl: jax.jit(jax.grad(lambda x: jnp.sum(ops.max_pool_3x3(x, stride, impl))))(x)[0, :, :, 0]
  np.testing.assert_array_equal(g(2, "xla"), [[1, 1, 0], [1, 1, 0], [0, 0, 0]])
  np.testing.assert_array_equal(g(1, "xla"), [[4, 2, 0], [2, 1, 0], [0, 0, 0]])
  np.testing.assert_array_equal(g(1, "gather"), g(1, "xla"))


def test_grouped_conv_op_equals_lax_conv_and_the_shift_op_with_gradients():
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.standard_normal((2, 7, 7, 3)), jnp.float32)
  dw = jnp.asarray(rng.standard_normal((3, 3, 1, 3)), jnp.float32)
  pw = jnp.asarray(rng.standard_normal((1, 1, 3, 5)), jnp.float32)
  # Trusted: lax.conv_general_dilated on the hand-built dense kernel K[y, x, i, o] = dw[y, x, i] * pw[i, o].
  dense = dw[:, :, 0, :, None] * pw[0, 0][None, None]
  trusted = lambda x: jax.lax.conv_general_dilated(x, dense, (2, 2), ((2, 2), (2, 2)), rhs_dilation=(2, 2),
                                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
  variables = {"params": {"depthwise": dw, "pointwise": pw}}
  op = lambda impl: (lambda x: ops.DepthwisePointwise(5, 3, 2, 2, 2, conv_impl=impl).apply(variables, x))
  target = jnp.asarray(rng.standard_normal(trusted(x).shape), jnp.float32)
  grad = lambda f: jax.jit(jax.grad(lambda x: jnp.sum(f(x) * target)))(x)
  for impl in ("grouped", "shift", "auto"):
    np.testing.assert_allclose(op(impl)(x), trusted(x), atol=1e-5)
    np.testing.assert_allclose(grad(op(impl)), grad(trusted), atol=1e-5)


@pytest.mark.slow  # compiles two search cells; DLBOOK_SLOW=1
def test_unrolled_search_cell_equals_the_scanned_cell_with_gradients():
  steps, c = 2, 2
  rng = np.random.default_rng(5)
  s0, s1 = (jnp.asarray(rng.standard_normal((2, 6, 6, 3)), jnp.float32) for _ in range(2))
  w = jax.nn.softmax(jnp.asarray(rng.standard_normal((num_edges(steps), 8)), jnp.float32), -1)
  cells = {e: SearchCell(c, reduction=True, reduction_prev=False, steps=steps, multiplier=2, edges=e)
           for e in ("scan", "unrolled")}
  variables = cells["scan"].init(jax.random.key(0), s0, s1, w, False)
  assert jax.tree.map(jnp.shape, cells["unrolled"].init(jax.random.key(0), s0, s1, w, False)) == jax.tree.map(
      jnp.shape, variables)  # the same stacked parameters

  def loss(cell):
    return jax.jit(jax.value_and_grad(lambda p, w: jnp.sum(jnp.tanh(cell.apply(
        {**variables, "params": p}, s0, s1, w, True, mutable=["batch_stats"])[0])), (0, 1)))

  (a, (ga_p, ga_w)), (b, (gb_p, gb_w)) = loss(cells["scan"])(variables["params"], w), loss(cells["unrolled"])(
      variables["params"], w)
  np.testing.assert_allclose(a, b, rtol=1e-5)
  np.testing.assert_allclose(ga_w, gb_w, atol=1e-4)
  jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, atol=1e-4), ga_p, gb_p)


def _plain_standardize(x, eps):
  mean = jnp.mean(x, (0, 1, 2))
  var = jnp.mean(jnp.square(x - mean), (0, 1, 2))
  return (x - mean) * jax.lax.rsqrt(var + eps), mean, var


def test_standardize_closed_form_derivatives_equal_autodiff_of_the_formula_to_second_order():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((3, 4, 5, 6)) * 2 + 1, jnp.float32)
  cot = [jnp.asarray(rng.standard_normal(s), jnp.float32) for s in (x.shape, (6,), (6,))]

  def scalar(fn):  # every output gets a cotangent, the statistics included (running averages read them)
    return lambda x: sum(jnp.sum(o * c) for o, c in zip(fn(x, 1e-5), cot))

  closed, plain = scalar(ops.standardize), scalar(_plain_standardize)
  np.testing.assert_allclose(jax.grad(closed)(x), jax.grad(plain)(x), atol=2e-5)
  tangent = jnp.asarray(rng.standard_normal(x.shape), jnp.float32)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-5),
               jax.jvp(lambda x: ops.standardize(x, 1e-5), (x,), (tangent,)),
               jax.jvp(lambda x: _plain_standardize(x, 1e-5), (x,), (tangent,)))
  # second order (the exact second-order DARTS hypergradient differentiates a gradient again)
  hvp = lambda f: jax.jvp(jax.grad(f), (x,), (tangent,))[1]  # noqa: E731
  np.testing.assert_allclose(hvp(closed), hvp(plain), atol=1e-4)
  gg = lambda f: jax.grad(lambda x: jnp.sum(jnp.sin(jax.grad(f)(x))))(x)  # noqa: E731
  np.testing.assert_allclose(gg(closed), gg(plain), atol=1e-4)


@pytest.mark.parametrize("affine", [False, True])
def test_batch_norm_matches_flax_batch_norm_outputs_statistics_and_gradients(affine):
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.standard_normal((4, 5, 5, 3)) * 3 + 2, jnp.float32)
  ours = ops.BatchNorm(train=True, affine=affine)
  theirs = nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5, use_scale=affine, use_bias=affine)
  v_ours, v_theirs = ours.init(jax.random.key(0), x), theirs.init(jax.random.key(0), x)
  jax.tree.map(np.testing.assert_array_equal, v_ours, v_theirs)  # the same variables, init not updating them
  if affine:
    v_ours = v_theirs = {**v_ours, "params": {"scale": jnp.asarray([0.5, 2.0, -1.0]),
                                              "bias": jnp.asarray([0.1, 0.0, 3.0])}}
  (y1, s1), (y2, s2) = (m.apply(v, x, mutable=["batch_stats"]) for m, v in ((ours, v_ours), (theirs, v_theirs)))
  np.testing.assert_allclose(y1, y2, atol=2e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5), s1, s2)
  evaluated = [m.clone(train=False) if m is ours else m.clone(use_running_average=True) for m in (ours, theirs)]
  np.testing.assert_allclose(evaluated[0].apply({**v_ours, **s1}, x), evaluated[1].apply({**v_theirs, **s2}, x),
                             atol=2e-5)
  grad = lambda m, v: jax.grad(lambda x: jnp.sum(jnp.sin(m.apply(v, x, mutable=["batch_stats"])[0])))(x)  # noqa
  np.testing.assert_allclose(grad(ours, v_ours), grad(theirs, v_theirs), atol=2e-5)


@pytest.mark.parametrize("reduction,reduction_prev,conv_impl,remat", [
    (True, False, "grouped", False),  # strided edges, the factorized-reduce skip op
    pytest.param(False, True, "grouped", False, marks=pytest.mark.slow),  # ~30 s each to compile; DLBOOK_SLOW=1
    pytest.param(True, False, "shift", True, marks=pytest.mark.slow)])
def test_wide_input_edges_equal_the_scanned_cell_with_gradients_and_statistics(reduction, reduction_prev, conv_impl,
                                                                               remat):
  steps, c = 2, 4
  rng = np.random.default_rng(6)
  s0 = jnp.asarray(rng.standard_normal((2, 16, 16, 3) if reduction_prev else (2, 8, 8, 3)), jnp.float32)
  s1 = jnp.asarray(rng.standard_normal((2, 8, 8, 3)), jnp.float32)
  w = jax.nn.softmax(jnp.asarray(rng.standard_normal((num_edges(steps), 8)), jnp.float32), -1)
  cells = {e: SearchCell(c, reduction=reduction, reduction_prev=reduction_prev, steps=steps, multiplier=2,
                         conv_impl=conv_impl, pool_impl="xla", remat_edges=remat, edges=e) for e in ("scan", "wide")}
  variables = cells["scan"].init(jax.random.key(0), s0, s1, w, False)
  # the same variables, tree and values (the wide cell initialises through the scan)
  jax.tree.map(np.testing.assert_array_equal, cells["wide"].init(jax.random.key(0), s0, s1, w, False), variables)

  def run(cell):
    def loss(p, w):
      out, stats = cell.apply({**variables, "params": p}, s0, s1, w, True, mutable=["batch_stats"])
      return jnp.sum(jnp.tanh(out) * jnp.cos(jnp.arange(out.size).reshape(out.shape))), (out, stats)
    return jax.jit(jax.value_and_grad(loss, (0, 1), has_aux=True))(variables["params"], w)

  ((_, (out_a, stats_a)), grads_a), ((_, (out_b, stats_b)), grads_b) = run(cells["scan"]), run(cells["wide"])
  np.testing.assert_allclose(out_a, out_b, atol=2e-5)
  jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, atol=2e-5), stats_a, stats_b)
  jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, atol=1e-4), grads_a, grads_b)
  evaluated = [cells[e].apply({**variables, **stats_a}, s0, s1, w, False) for e in ("scan", "wide")]
  np.testing.assert_allclose(*evaluated, atol=2e-5)
