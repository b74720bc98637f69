"""Seconds per DARTS search step, dlbook (JAX) vs the reference PyTorch implementation, in one run.

  python -m benchmarks.darts_step --reference_cnn=PATH/TO/darts/cnn [--orders=1,2] [--conv_impls=shift]
      [--hessians=exact] [--steps=3] [--warmup=1] [--reference_steps=2] [--micro]

One search step = the architecture step (first order: grad_alpha L_val; second order: through the
unrolled weight step) + the weight step, batch 64, C=16, 8 cells, 32x32x3 inputs, 10 classes, random
inputs (the same shapes and work as the reference timing script given by --reference_tool, which times
the reference on its own random inputs of these shapes; `benchmarks/reference_darts.py` times the same
steps without it). The reference needs a copy of quark0/darts' `cnn/` folder
(`fetch github:quark0/darts`, then `git show HEAD:cnn/<file>` into a folder) and torch==2.13.0 (CPU).

Prints name=value lines: per order and formulation `dlbook_step_s`, the reference's `reference_step_s`,
and `dlbook_vs_reference_ratio` (< 1: dlbook is faster). `--reference_malloc=default,tuned` also times
the reference with the same glibc allocator settings dlbook's launchers use (dlbook/nas/darts/runtime.py).
`--micro` adds the kernel-formulation measurements behind the choices in dlbook/models/darts/operations.py.
"""

import functools
import os
import re
import statistics
import subprocess
import sys
import time

from absl import app, flags

from dlbook.nas.darts import runtime

FLAGS = flags.FLAGS
flags.DEFINE_string("reference_cnn", None, "Path of the reference's cnn/ folder (quark0/darts).")
flags.DEFINE_string("reference_tool", "", "The reference timing script (not part of dlbook; required unless "
                    "--skip_reference).")
flags.DEFINE_list("orders", ["1", "2"], "DARTS orders to time.")
flags.DEFINE_list("conv_impls", ["shift"], "dlbook depthwise-separable conv formulations to time "
                  "(shift = the CPU choice of dlbook.models.darts.operations, grouped = its accelerator choice, "
                  "dense, auto = per backend).")
flags.DEFINE_list("hessians", ["exact"], "Second-order hypergradients to time: exact, finite_difference.")
flags.DEFINE_list("reference_malloc", ["default"], "Allocator settings for the reference: default, tuned.")
flags.DEFINE_integer("steps", 3, "Timed dlbook steps (median reported).")
flags.DEFINE_integer("warmup", 1, "Untimed dlbook steps after compilation.")
flags.DEFINE_integer("reference_steps", 2, "Timed reference steps.")
flags.DEFINE_integer("reference_warmup", 1, "Untimed reference steps.")
flags.DEFINE_integer("batch", 64, "Batch size.")
flags.DEFINE_integer("C", 16, "Initial channels.")
flags.DEFINE_integer("layers", 8, "Cells.")
flags.DEFINE_enum("remat_edges", "order2", ["never", "order2", "always"],
                  "Rematerialise the supernet's edges (model remat_edges) never, for the second order only, or "
                  "always: the exact second-order step needs 51.6 GB of XLA temp buffers at batch 64 without it.")
flags.DEFINE_bool("micro", False, "Also time kernel formulations of single ops.")
flags.DEFINE_bool("skip_reference", False, "Time dlbook only (no ratio).")

REFERENCE_FILES = ("architect.py", "genotypes.py", "model_search.py", "operations.py")
TUNED_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(1 << 30), "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}


def emit(**kv):
  print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in kv.items()), flush=True)


def check_reference(cnn_dir):
  from dlbook.errors import DlbookError
  if not cnn_dir:
    raise DlbookError("--reference_cnn is required: the cnn/ folder of quark0/darts (or pass --skip_reference)")
  missing = [f for f in REFERENCE_FILES if not os.path.exists(os.path.join(cnn_dir, f))]
  if missing:
    raise DlbookError(f"--reference_cnn={cnn_dir} lacks {', '.join(missing)}; it must be quark0/darts' cnn/ folder")
  if not FLAGS.reference_tool or not os.path.exists(FLAGS.reference_tool):
    raise DlbookError(f"--reference_tool={FLAGS.reference_tool!r}: the reference timing script does not exist "
                      "(or pass --skip_reference)")
  try:
    import torch  # noqa: F401
  except ImportError:
    raise DlbookError("the reference needs torch: pip install torch==2.13.0 (CPU wheel)") from None


def time_reference(order: int, malloc: str) -> float:
  cmd = [sys.executable, FLAGS.reference_tool, FLAGS.reference_cnn, "--batch", str(FLAGS.batch), "--C", str(FLAGS.C),
         "--layers", str(FLAGS.layers), "--steps", str(FLAGS.reference_steps), "--warmup", str(FLAGS.reference_warmup)]
  if order == 2:
    cmd.append("--unrolled")
  env = dict(os.environ, **(TUNED_MALLOC_ENV if malloc == "tuned" else {}))
  out = subprocess.run(cmd, capture_output=True, text=True, env=env)
  match = re.search(r"median=([0-9.]+)", out.stdout)
  if out.returncode != 0 or not match:
    raise RuntimeError(f"reference timing failed ({out.returncode}): {out.stderr[-2000:]}")
  print(out.stdout.strip(), flush=True)
  return float(match.group(1))


def time_dlbook(order: int, conv_impl: str, hessian: str):
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax
  from dlbook import models
  from dlbook.nas.darts import bilevel
  remat = FLAGS.remat_edges == "always" or (FLAGS.remat_edges == "order2" and order == 2)
  model = models.build("darts_search", num_classes=10, init_channels=FLAGS.C, layers=FLAGS.layers, conv_impl=conv_impl,
                       remat_edges=remat)
  variables = jax.jit(lambda k: model.init({"params": k}, jnp.zeros((2, 32, 32, 3)), train=False))(jax.random.key(0))
  schedule = optax.cosine_decay_schedule(0.025, 1000, 0.001 / 0.025)
  w_tx = optax.chain(optax.clip_by_global_norm(5.0), optax.add_decayed_weights(3e-4), optax.sgd(schedule, momentum=0.9))
  a_tx = optax.chain(optax.add_decayed_weights(1e-3), optax.adam(3e-4, b1=0.5, b2=0.999))
  state = bilevel.SearchState.create(model.apply, variables, w_tx, a_tx)
  rng = np.random.default_rng(0)
  batch = lambda: {"image": rng.standard_normal((FLAGS.batch, 32, 32, 3)).astype(np.float32),
                   "label": rng.integers(0, 10, FLAGS.batch).astype(np.int32)}
  tb, vb = batch(), batch()
  step = jax.jit(bilevel.make_search_step(order, schedule, 0.9, 3e-4, hessian), donate_argnums=0)
  t0 = time.perf_counter()
  compiled = step.lower(state, tb, vb).compile()
  compile_s = time.perf_counter() - t0
  memory = compiled.memory_analysis()
  temp_gb = memory.temp_size_in_bytes / 1e9 if memory is not None else float("nan")
  times, cpu_times = [], []
  for i in range(FLAGS.warmup + FLAGS.steps):
    t0, c0 = time.perf_counter(), time.process_time()
    state, metrics = compiled(state, tb, vb)
    jax.block_until_ready(metrics)
    if i >= FLAGS.warmup:
      times.append(time.perf_counter() - t0)
      cpu_times.append(time.process_time() - c0)
  return statistics.median(times), min(times), compile_s, statistics.median(cpu_times), remat, temp_gb


def micro():
  """Single-op formulations, forward + backward, batch 64, 32x32, C=16."""
  import ctypes
  import jax
  import jax.numpy as jnp
  import numpy as np
  from dlbook.models.darts import operations as ops

  def bench(fn, *args, rounds=5):
    compiled = jax.jit(fn).lower(*args).compile()
    jax.block_until_ready(compiled(*args))
    ts = []
    for _ in range(rounds):
      t0 = time.perf_counter()
      jax.block_until_ready(compiled(*args))
      ts.append(time.perf_counter() - t0)
    return min(ts)

  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((FLAGS.batch, 32, 32, FLAGS.C)), jnp.float32)
  dw = jnp.asarray(rng.standard_normal((3, 3, 1, FLAGS.C)), jnp.float32)
  pw = jnp.asarray(rng.standard_normal((FLAGS.C, FLAGS.C)), jnp.float32)
  grad = lambda f: jax.grad(lambda x, dw, pw: jnp.sum(f(x, dw, pw) ** 2), (0, 1, 2))
  shift_autodiff = lambda x, dw: sum(w * dw.reshape(9, -1)[t] for t, w in enumerate(ops.windows(x, 3, 1, 1)))
  forms = {
      "shift_custom_grad": lambda x, dw, pw: ops.pointwise(ops.depthwise_conv(x, dw, 1, 1, 1), pw),
      "shift_autodiff": lambda x, dw, pw: ops.pointwise(shift_autodiff(x, dw), pw),
      "grouped_conv": lambda x, dw, pw: ops.pointwise(ops.conv2d(x, dw, 1, 1, groups=x.shape[-1]), pw),
      "dense_fused_conv": lambda x, dw, pw: ops.conv2d(x, dw[:, :, 0, :, None] * pw, 1, 1),
  }
  for name, f in forms.items():
    emit(micro="sep_block_3x3_fwd_bwd", form=name, seconds=bench(grad(f), x, dw, pw))
  for pool in ("max", "avg"):  # pool_impl: gather (the CPU choice) vs xla (reduce_window, the accelerator choice)
    for impl in ("gather", "xla"):
      f = functools.partial(ops.max_pool_3x3 if pool == "max" else ops.avg_pool_3x3, stride=1, pool_impl=impl)
      emit(micro=f"{pool}_pool_3x3_fwd_bwd", pool_impl=impl, seconds=bench(jax.grad(lambda x: jnp.sum(f(x) ** 2)), x))
  libc = ctypes.CDLL("libc.so.6")
  big = lambda x: x[..., None, :] * jnp.arange(9.0)[:, None]  # writes a fresh 38 MB array
  for name, threshold in (("glibc_default_128KiB", 128 * 1024), ("kept_1GiB", 1 << 30)):
    libc.mallopt(runtime.M_MMAP_THRESHOLD, threshold)
    libc.mallopt(runtime.M_TRIM_THRESHOLD, threshold)
    emit(micro="write_38MB_array", malloc=name, seconds=bench(big, x, rounds=8))


def main(argv):
  del argv
  runtime.configure_cpu()
  if not FLAGS.skip_reference:
    check_reference(FLAGS.reference_cnn)
  import jax
  emit(benchmark="darts_search_step", batch=FLAGS.batch, C=FLAGS.C, layers=FLAGS.layers, backend=jax.default_backend(),
       devices=len(jax.devices()), cpu_count=os.cpu_count(), load_avg_1min=os.getloadavg()[0])
  if FLAGS.micro:
    micro()
  for order in (int(o) for o in FLAGS.orders if o):  # --orders= times the --micro forms only
    reference = {}
    if not FLAGS.skip_reference:
      for malloc in FLAGS.reference_malloc:
        reference[malloc] = time_reference(order, malloc)
        emit(order=order, reference_malloc=malloc, reference_step_s=reference[malloc])
    for conv_impl in FLAGS.conv_impls:
      for hessian in (FLAGS.hessians if order == 2 else ["-"]):
        median, best, compile_s, cpu_s, remat, temp_gb = time_dlbook(order, conv_impl,
                                                                     hessian if order == 2 else "exact")
        emit(order=order, conv_impl=conv_impl, hessian=hessian, remat_edges=remat, dlbook_step_s=median,
             dlbook_step_min_s=best, dlbook_step_cpu_s=cpu_s, compile_s=compile_s, xla_temp_GB=temp_gb,
             load_avg_1min=os.getloadavg()[0])
        for malloc, ref in reference.items():
          emit(order=order, conv_impl=conv_impl, hessian=hessian, reference_malloc=malloc,
               dlbook_vs_reference_ratio=median / ref)


if __name__ == "__main__":
  from dlbook import launch
  launch.run(main)
