"""The two convolution lowerings behind dlbook's CPU backbone speed, each against its alternative.

  python -m benchmarks.conv_gradients [--repeats=5] [--batch_size=32]

- depthwise 3x3 (MobileNetV2's layers at 224 px): the gradient (dx and dw) from the native C++ kernel
  (`dlbook.models.kernels.depthwise`), from JAX's differentiation of the shifted-slice form, and from
  XLA's gradient of the grouped convolution (`feature_group_count=C`);
- 1x1 convolution: forward + gradient as one matmul (`common.PointwiseConv`) and as `lax.conv`.

Each row prints the fastest of `repeats` calls per lowering and `speedup=` (alternative / dlbook's
choice). glibc's allocator is tuned as in every launcher (`dlbook.runtime.tune_malloc`), so no lowering
pays page faults for fresh buffers.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from dlbook import runtime
from dlbook.models.kernels import depthwise, native

flags.DEFINE_integer("repeats", 5, "Timed calls per lowering (the fastest counts).")
flags.DEFINE_integer("batch_size", 32, "Batch size.")
FLAGS = flags.FLAGS

# (H, C, stride): MobileNetV2's depthwise layers at 224 px (one of each distinct shape)
DEPTHWISE = [(112, 32, 1), (112, 96, 2), (56, 144, 1), (56, 144, 2), (28, 192, 1), (28, 192, 2), (14, 384, 1),
             (14, 576, 1), (14, 576, 2), (7, 960, 1)]
# (H, C_in, C_out): MobileNetV2's 1x1 expansions and projections at 224 px
POINTWISE = [(112, 16, 96), (112, 32, 16), (56, 24, 144), (56, 144, 24), (28, 192, 32), (14, 384, 64),
             (14, 576, 96), (7, 960, 160), (7, 320, 1280)]


def best_ms(f, *args):
  jax.block_until_ready(f(*args))
  best = float("inf")
  for _ in range(FLAGS.repeats):
    t = time.perf_counter()
    jax.block_until_ready(f(*args))
    best = min(best, time.perf_counter() - t)
  return best * 1e3


def grouped_conv(x, w, stride, pads):
  return jax.lax.conv_general_dilated(x, w[:, :, None, :], (stride, stride), pads,
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=x.shape[-1])


def conv1x1(x, w):
  return jax.lax.conv_general_dilated(x, w[None, None], (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def matmul1x1(x, w):
  return (x.reshape(-1, x.shape[-1]) @ w).reshape(*x.shape[:-1], w.shape[-1])


def main(argv):
  del argv
  runtime.tune_malloc()
  require_native = native.available("depthwise")
  print(f"native_kernel={'built' if require_native else 'unavailable'} flags={' '.join(native.compile_flags())} "
        f"batch={FLAGS.batch_size} devices={jax.devices()}")
  rng = np.random.default_rng(0)
  n = FLAGS.batch_size
  pads = ((1, 1), (1, 1))
  for h, c, s in DEPTHWISE:
    x = jnp.asarray(rng.normal(size=(n, h, h, c)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, c)), jnp.float32)
    dy = jnp.asarray(rng.normal(size=(n, -(-h // s), -(-h // s), c)), jnp.float32)
    times = {}
    if require_native:
      times["native"] = best_ms(jax.jit(lambda x, w, dy: depthwise.native_grads(x, w, dy, s, pads)), x, w, dy)
    times["slices"] = best_ms(jax.jit(lambda x, w, dy: depthwise.reference_grads(x, w, dy, s, pads)), x, w, dy)
    times["grouped"] = best_ms(jax.jit(lambda x, w, dy: jax.vjp(lambda x, w: grouped_conv(x, w, s, pads), x, w)[1](dy)),
                               x, w, dy)
    base = times.get("native", times["slices"])
    print(f"op=depthwise_grad shape={n}x{h}x{h}x{c} stride={s} "
          + " ".join(f"{k}_ms={v:.1f}" for k, v in times.items())
          + f" speedup_vs_slices={times['slices'] / base:.2f} speedup_vs_grouped={times['grouped'] / base:.2f}")
  for h, ci, co in POINTWISE:
    x = jnp.asarray(rng.normal(size=(n, h, h, ci)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(ci, co)), jnp.float32)
    dy = jnp.asarray(rng.normal(size=(n, h, h, co)), jnp.float32)
    times = {name: best_ms(jax.jit(lambda x, w, dy, f=f: jax.vjp(f, x, w)[1](dy)), x, w, dy)
             for name, f in (("matmul", matmul1x1), ("conv", conv1x1))}
    print(f"op=pointwise_fwd_grad shape={n}x{h}x{h}x{ci}->{co} matmul_ms={times['matmul']:.1f} "
          f"conv_ms={times['conv']:.1f} speedup={times['conv'] / times['matmul']:.2f}")


if __name__ == "__main__":
  app.run(main)
