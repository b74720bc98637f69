"""Measured CPU latency next to the multiplication count of each convolution type (book Table 10.1).

  python -m benchmarks.conv_types [--batch=1] [--size=56] [--channels=64] [--filters=128] [--groups=4]

Input size x size x channels -> filters outputs ('SAME' padding, so D_m = size), 3x3 kernels, jitted
forward pass, median of `--repeats` calls after a warm-up, alternating the types `--rounds` times.
Prints one line per type: the analytic multiplications (Table 10.1's formulas), XLA's own count
(flops / 2), the median latency and the speed-up against the standard convolution in multiplications
and in time (depth-wise convolutions are memory-bound and rarely reach their theoretical speed-up).
"""

import os
import statistics
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch", 1, "Images per call.")
flags.DEFINE_integer("size", 56, "Input height and width (= D_m with SAME padding).")
flags.DEFINE_integer("channels", 64, "Input channels C.")
flags.DEFINE_integer("filters", 128, "Output channels N.")
flags.DEFINE_integer("groups", 4, "Groups G of the group convolution.")
flags.DEFINE_integer("repeats", 20, "Timed calls per round.")
flags.DEFINE_integer("rounds", 3, "Alternating rounds over the types.")


def emit(**kv):
  print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in kv.items()), flush=True)


def main(argv):
  del argv
  import jax
  import jax.numpy as jnp
  from dlbook.models import conv_types as ct
  c, n, g, d_m, d_k = FLAGS.channels, FLAGS.filters, FLAGS.groups, FLAGS.size, 3
  modules = {
      "standard": ct.StandardConv(n, d_k),
      "depthwise": ct.DepthwiseConv(d_k),
      "pointwise": ct.PointwiseConv(n),
      "group": ct.GroupConv(n, g, d_k),
      "depthwise_separable": ct.depthwise_separable(n, d_k),
  }
  counts = {k: ct.multiplications(k, d_k if k != "pointwise" else 1, d_m, c, n, g) * FLAGS.batch
            for k in ct.CONV_TYPES}
  counts["depthwise_separable"] = counts["depthwise"] + counts["pointwise"]
  x = jax.random.normal(jax.random.key(0), (FLAGS.batch, d_m, d_m, c))
  emit(benchmark="conv_types", batch=FLAGS.batch, input=f"{d_m}x{d_m}x{c}", filters=n, groups=g, kernel=d_k,
       backend=jax.default_backend(), cpu_count=os.cpu_count(), load_avg_1min=os.getloadavg()[0])
  compiled, xla_mults = {}, {}
  for name, module in modules.items():
    params = module.init(jax.random.key(1), x)
    fn = jax.jit(module.apply).lower(params, x).compile()
    analysis = fn.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
    xla_mults[name] = analysis.get("flops", float("nan")) / 2
    jax.block_until_ready(fn(params, x))
    compiled[name] = (fn, params)
  times = {name: [] for name in modules}
  for _ in range(FLAGS.rounds):
    for name, (fn, params) in compiled.items():
      for _ in range(FLAGS.repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(params, x))
        times[name].append(time.perf_counter() - t0)
  base_t = statistics.median(times["standard"])
  for name in modules:
    t = statistics.median(times[name])
    emit(type=name, multiplications=int(counts[name]), xla_multiplications=int(xla_mults[name]),
         median_ms=1e3 * t, fewer_multiplications_x=counts["standard"] / counts[name], faster_x=base_t / t)


if __name__ == "__main__":
  app.run(main)
