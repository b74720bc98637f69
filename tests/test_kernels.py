"""The native CPU depthwise-convolution gradient (dlbook/models/kernels) against XLA's own gradient of
the grouped convolution (`lax.conv_general_dilated`, feature_group_count=C) and of the shifted-slice form."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlbook.models.kernels import depthwise, native

needs_compiler = pytest.mark.skipif(native.compiler() is None or not native.enabled(),
                                    reason="no C++ compiler (or DLBOOK_NATIVE_KERNELS=0): the native kernel cannot be built")


def grouped_conv(x, w, stride, pads):
  return jax.lax.conv_general_dilated(x, w[:, :, None, :], (stride, stride), pads,
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=x.shape[-1],
                                      precision=jax.lax.Precision.HIGHEST)


CASES = [  # (N, H, W, C, k, stride, pads): odd sizes, channels that are not a multiple of 8 or 32,
           # asymmetric and zero pads, batch 1 (split into row blocks), 5x5 kernels
    (2, 9, 7, 5, 3, 1, ((1, 1), (1, 1))),
    (3, 10, 10, 37, 3, 2, ((0, 1), (0, 1))),
    (2, 11, 12, 40, 3, 2, ((1, 1), (1, 1))),
    (1, 7, 9, 64, 5, 1, ((2, 2), (2, 2))),
    (4, 8, 8, 33, 5, 2, ((1, 2), (2, 1))),
    (1, 20, 6, 96, 3, 1, ((0, 0), (0, 0))),
]


@needs_compiler
@pytest.mark.parametrize("case", CASES, ids=[str(c[:6]) for c in CASES])
def test_native_gradients_equal_xla_grouped_conv_gradients(case):
  n, h, wd, c, k, stride, pads = case
  rng = np.random.default_rng(sum(case[:6]))
  x = jnp.asarray(rng.normal(size=(n, h, wd, c)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(k, k, c)), jnp.float32)
  y, vjp = jax.vjp(lambda x, w: grouped_conv(x, w, stride, pads), x, w)
  dy = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
  want_dx, want_dw = vjp(dy)
  assert native.available("depthwise")
  dx, dw = jax.jit(depthwise.native_grads, static_argnums=(3, 4))(x, w, dy, stride, pads)
  np.testing.assert_allclose(dx, want_dx, rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(dw, want_dw, rtol=1e-5, atol=1e-4 * np.sqrt(n * h * wd))
  # the forward pass and jax.grad through the custom VJP agree with the grouped conv too
  np.testing.assert_allclose(depthwise.depthwise_conv(x, w, stride, pads), y, rtol=1e-5, atol=1e-4)
  loss = lambda f: lambda x, w: jnp.sum(f(x, w, stride, pads) * dy)
  gx, gw = jax.jit(jax.grad(loss(depthwise.depthwise_conv), argnums=(0, 1)))(x, w)
  np.testing.assert_array_equal(gx, dx)
  np.testing.assert_array_equal(gw, dw)


@needs_compiler
def test_native_gradient_is_deterministic_and_vmaps():
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(3, 2, 12, 12, 16)), jnp.float32)   # a population of 3
  w = jnp.asarray(rng.normal(size=(3, 3, 3, 16)), jnp.float32)
  loss = lambda x, w: jnp.sum(jnp.sin(depthwise.depthwise_conv(x, w, 2, ((1, 1), (1, 1)))))
  ref = lambda x, w: jnp.sum(jnp.sin(depthwise.depthwise_conv_reference(x, w, 2, ((1, 1), (1, 1)))))
  g = jax.jit(jax.vmap(jax.grad(loss, argnums=(0, 1))))
  a, b = g(x, w), g(x, w)
  for u, v in zip(a, b):
    np.testing.assert_array_equal(u, v)
  for u, v in zip(a, jax.vmap(jax.grad(ref, argnums=(0, 1)))(x, w)):
    np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-5)


@needs_compiler
def test_other_platforms_and_dtypes_use_jax_differentiation():
  x = jnp.ones((2, 8, 8, 16), jnp.float32)
  w = jnp.ones((3, 3, 16), jnp.float32)
  grad = jax.grad(lambda x, w: jnp.sum(depthwise.depthwise_conv(x, w)), argnums=(0, 1))
  cpu = jax.jit(grad).trace(x, w).lower(lowering_platforms=("cpu",)).as_text()
  assert "dlbook_depthwise_grad" in cpu
  gpu = jax.jit(grad).trace(x, w).lower(lowering_platforms=("cuda",)).as_text()
  assert "dlbook_depthwise_grad" not in gpu and "custom_call" not in gpu
  bf16 = jax.jit(grad).trace(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16)).lower().as_text()
  assert "dlbook_depthwise_grad" not in bf16
  big = jnp.ones((9, 9, 16), jnp.float32)   # more taps than the C++ kernel takes
  pads = ((4, 4), (4, 4))
  grad_big = jax.jit(jax.grad(lambda x, w: jnp.sum(depthwise.depthwise_conv(x, w, 1, pads)), argnums=(0, 1)))
  assert "dlbook_depthwise_grad" not in grad_big.trace(x, big).lower().as_text()
  np.testing.assert_allclose(grad_big(x, big)[1], depthwise.reference_grads(x, big, jnp.ones_like(x), 1, pads)[1])


def test_a_failed_build_falls_back_with_one_warning(tmp_path):
  code = ("import jax.numpy as jnp, numpy as np\n"
          "from dlbook.models.kernels import depthwise, native\n"
          "x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 5, 5, 3)), jnp.float32)\n"
          "w = jnp.ones((3, 3, 3), jnp.float32)\n"
          "assert not native.available('depthwise')\n"
          "np.testing.assert_allclose(depthwise.depthwise_conv(x, w), depthwise.depthwise_conv_reference(x, w, 1, ((1, 1), (1, 1))))\n"
          "print('fell back')\n")
  env = dict(os.environ, CXX=str(tmp_path / "broken-c++"), DLBOOK_KERNEL_CACHE=str(tmp_path / "cache"),
             PATH=str(tmp_path))   # no g++ on the PATH, and $CXX names a compiler that fails
  (tmp_path / "broken-c++").write_text("#!/bin/sh\necho 'broken-c++: error: simulated' >&2\nexit 1\n")
  (tmp_path / "broken-c++").chmod(0o755)
  proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr
  assert "fell back" in proc.stdout
  warnings = [l for l in proc.stderr.splitlines() if "native kernel 'depthwise' unavailable" in l]
  assert len(warnings) == 1 and "simulated" in warnings[0], proc.stderr
  assert not list((tmp_path / "cache").glob("*.so"))   # no half-written library left behind
  env = dict(env, DLBOOK_NATIVE_KERNELS="0")
  proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0 and "unavailable" not in proc.stderr, proc.stderr
