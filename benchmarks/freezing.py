"""Step time of selective freezing (book ch. 4) against the full step, on one network and batch.

  python -m benchmarks.freezing [--model_name=darts_eval|chain_cnn] [--layers=20 --init_channels=8]
      [--batch_size=64] [--image_size=32] [--channels=3] [--freeze_fraction=0.25] [--steps=5 --repeats=3]
  python -m benchmarks.freezing --params_only --init_channels=36   # P1/P2 of the book's network

Prints `name=value` lines: the full step (everything trainable, as in coarse training), the SSF
step (first N/2 blocks frozen) and the PSF middle-window step (window K = N * freeze_fraction in
the middle of Algorithm 2's windows), and `ssf_step_ratio=` / `psf_step_ratio=` (step time over the
full step's). The three steps are timed interleaved, `repeats` rounds of `steps` steps each, and
the fastest round counts, so load from other processes disturbs the ratios as little as it can;
`*_cpu_ratio=` gives the same ratios in process CPU time, steadier on a shared machine.

Ideal ratios if a backward pass costs twice a forward pass and every block costs the same: SSF
skips the backward pass of its frozen prefix, (1 + 2 * 1/2) / 3 = 0.67; a PSF middle window keeps
its activation gradients and drops only its weight gradients, about 1 - K/(3N).

Default network: the 20-cell DARTS_V2 evaluation network (C=8, auxiliary head, drop-path 0.2) on
CIFAR-shaped random input when `darts_eval` is registered, else the chain CNN of the cpu preset.
"""

import resource
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from dlbook import models
from dlbook.training import create_train_state, freezing, make_optimizer
from configs import coarse_to_fine as c2f_config

flags.DEFINE_string("model_name", None, "darts_eval or chain_cnn (default: darts_eval when registered).")
flags.DEFINE_integer("layers", 20, "darts_eval cells.")
flags.DEFINE_integer("init_channels", 8, "darts_eval C.")
flags.DEFINE_integer("batch_size", 64, "Batch size.")
flags.DEFINE_integer("image_size", 32, "Input height and width.")
flags.DEFINE_integer("channels", 3, "Input channels.")
flags.DEFINE_float("freeze_fraction", 0.25, "PSF window as a fraction of the blocks.")
flags.DEFINE_integer("steps", 5, "Steps per timed round.")
flags.DEFINE_integer("repeats", 3, "Timed rounds per variant.")
flags.DEFINE_bool("params_only", False, "Only print the book's cost accounting (P1, P2, (P1+P2)/2) for SSF and "
                  "PSF 1/4, 1/5, 1/10 of the network; no compilation.")
FLAGS = flags.FLAGS


def process_cpu_s() -> float:
  r = resource.getrusage(resource.RUSAGE_SELF)
  return r.ru_utime + r.ru_stime


def build():
  name = FLAGS.model_name or ("darts_eval" if "darts_eval" in models.MODELS else "chain_cnn")
  if name == "darts_eval":
    kwargs = dict(genotype="DARTS_V2", init_channels=FLAGS.init_channels, layers=FLAGS.layers, auxiliary=True,
                  drop_path_prob=0.2)
    aux_weight = 0.4
  else:
    kwargs = c2f_config.get_config("cpu").model.to_dict()
    aux_weight = 0.0
  return name, kwargs, models.build(name, num_classes=10, **kwargs), aux_weight


def print_costs(name, model, shape):
  """Book Tables 4.1-4.6 cost columns, counted exactly on the parameter tree (auxiliary head included)."""
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1,) + shape[1:]), train=False))["params"]
  blocks = freezing.model_blocks(name, params)
  for mode, ff in (("ssf", 0.0), ("psf", 0.25), ("psf", 0.2), ("psf", 0.1)):
    costs = freezing.parameter_costs(params, blocks, freezing.phase_plan(mode, len(blocks), 1, 100, ff))
    label = mode if mode == "ssf" else f"psf_{ff:g}"
    print(f"{label}_P1={costs['P1']}")
    print(f"{label}_P2={','.join(map(str, costs['P2']))}")
    print(f"{label}_average={','.join(f'{a:.1f}' for a in costs['average'])}")
  without_aux = sum(x.size for k, v in params.items() if k != "aux_head" for x in jax.tree.leaves(v))
  print(f"params_without_aux_head={without_aux}")


def main(argv):
  del argv
  name, kwargs, model, aux_weight = build()
  shape = (FLAGS.batch_size, FLAGS.image_size, FLAGS.image_size, FLAGS.channels)
  if FLAGS.params_only:
    print(f"network={name}({', '.join(f'{k}={v}' for k, v in kwargs.items())})")
    print_costs(name, model, shape)
    return
  base = make_optimizer(c2f_config.get_config("full").optimizer, 1000)
  state = create_train_state(model, jax.random.key(0), (1,) + shape[1:], base)
  blocks = freezing.model_blocks(name, state.params)
  n = len(blocks)
  windows = freezing.fine_iterations("psf", n, FLAGS.freeze_fraction)
  variants = {"full": (), "ssf": freezing.ssf_frozen_blocks(n), "psf": windows[len(windows) // 2]}
  rng = np.random.default_rng(0)
  batch = {"image": jnp.asarray(rng.normal(size=shape), jnp.float32),
           "label": jnp.asarray(rng.integers(0, 10, shape[0]), jnp.int32)}
  print(f"network={name}({', '.join(f'{k}={v}' for k, v in kwargs.items())})")
  print(f"blocks={n}")
  print(f"batch={'x'.join(map(str, shape))}")
  print(f"backend={jax.default_backend()}")
  steps, states, total = {}, {}, sum(x.size for x in jax.tree.leaves(state.params))
  for v, frozen in variants.items():
    prefixes = freezing.frozen_prefixes(blocks, frozen)
    mask = freezing.trainable_mask(state.params, prefixes)
    states[v] = freezing.with_frozen_blocks(state, base, mask)
    t = time.perf_counter()
    steps[v] = jax.jit(freezing.make_freeze_train_step(mask, prefixes, aux_weight=aux_weight)).lower(
        states[v], batch, jax.random.key(0)).compile()
    states[v], _ = steps[v](states[v], batch, jax.random.key(0))  # warm up
    jax.block_until_ready(states[v])
    print(f"{v}_frozen_blocks={list(frozen)}")
    print(f"{v}_trainable_params={freezing.count_trainable(state.params, mask)}/{total}")
    print(f"{v}_compile_s={time.perf_counter() - t:.1f}")
  best = {v: float("inf") for v in variants}
  best_cpu = dict(best)
  for r in range(FLAGS.repeats):
    for v in variants:
      s = states[v]
      t, c = time.perf_counter(), process_cpu_s()
      for i in range(FLAGS.steps):
        s, _ = steps[v](s, batch, jax.random.key(i))
      jax.block_until_ready(s)
      states[v] = s
      best[v] = min(best[v], (time.perf_counter() - t) / FLAGS.steps)
      best_cpu[v] = min(best_cpu[v], (process_cpu_s() - c) / FLAGS.steps)
  for v in variants:
    print(f"{v}_step_ms={1000 * best[v]:.1f}")
    print(f"{v}_step_cpu_ms={1000 * best_cpu[v]:.1f}")
  print(f"ssf_step_ratio={best['ssf'] / best['full']:.3f}")
  print(f"psf_step_ratio={best['psf'] / best['full']:.3f}")
  # CPU time of this process (all XLA threads): steadier than wall time on a shared machine.
  print(f"ssf_cpu_ratio={best_cpu['ssf'] / best_cpu['full']:.3f}")
  print(f"psf_cpu_ratio={best_cpu['psf'] / best_cpu['full']:.3f}")
  print("ideal_ssf_step_ratio=0.667")
  k = len(variants["psf"])
  print(f"ideal_psf_step_ratio={1 - k / (3 * n):.3f}")


if __name__ == "__main__":
  app.run(main)
