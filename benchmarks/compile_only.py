"""Compile time and optimised-program size of the main DARTS train steps, per kernel formulation.

  python -m benchmarks.compile_only [--steps=search1,search2,eval] [--kernels=cpu,accelerator]
      [--batch=64 --C=16 --layers=8] [--eval_batch=96 --eval_C=36 --eval_layers=20] [--small]

Each step is lowered and compiled with JAX's ahead-of-time API (`jax.jit(step).lower(*abstract).compile()`)
on abstract inputs (`jax.eval_shape`: no parameter init, nothing runs), so it measures compilation only.
Steps: `search1` / `search2` = `dlbook.nas.darts.bilevel.make_search_step` of the first / second order
(exact hypergradient, `remat_edges` for the second order as the `full` search preset) on `darts_search`;
`search1_shared` = the first order with `passes="shared"` (both passes as one differentiated program);
`eval` = `dlbook.training.steps.make_train_step` (auxiliary weight 0.4) on `darts_eval` with DARTS_V2,
the auxiliary head and drop-path 0.2, SGD momentum with clipping 5. Kernel sets (model arguments):
- `cpu`: conv_impl=shift, pool_impl=gather, edges=scan (what "auto" picks on the CPU);
- `accelerator`: conv_impl=grouped, pool_impl=xla, edges=wide (what "auto" picks on GPUs/TPUs);
- `accelerator_scan`, `accelerator_unrolled`: the native kernels with all edges scanned / unrolled.
On a CPU the `accelerator` set compiles the GPU program's formulation for the CPU backend: its compile
time and size are a proxy for what a GPU compiles, not its GPU speed.

Prints one name=value line per step and kernel set: `lower_s`, `compile_s` (wall) and `compile_cpu_s`
(this process's CPU seconds while compiling: steadier on a shared machine), `hlo_instructions` and
`fusions` (counted in the optimised HLO text), and `cost_analysis` `flops` and `bytes_accessed`.
`stablehlo_ops` counts the operations of the lowered program before XLA optimises it; `--lower_only`
stops there (seconds instead of minutes). `--small` uses a 3-cell C=8 network at batch 8 (both steps), for a quick check.
"""

import os
import re
import time

from absl import app, flags

from dlbook.nas.darts import runtime

FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_list("steps", ["search1", "search2", "eval"], "Steps to compile: search1, search2, eval.")
  flags.DEFINE_list("kernels", ["cpu", "accelerator"], "Kernel sets: cpu, accelerator, auto.")
  flags.DEFINE_integer("batch", 64, "Search batch size.")
  flags.DEFINE_integer("C", 16, "Search network initial channels.")
  flags.DEFINE_integer("layers", 8, "Search network cells.")
  flags.DEFINE_integer("eval_batch", 96, "Evaluation network batch size.")
  flags.DEFINE_integer("eval_C", 36, "Evaluation network initial channels.")
  flags.DEFINE_integer("eval_layers", 20, "Evaluation network cells.")
  flags.DEFINE_bool("lower_only", False, "Lower only (StableHLO operation count; no XLA compile).")
  flags.DEFINE_bool("small", False, "3 cells, C=8, batch 8 for both networks (a quick check).")


KERNELS = {"cpu": dict(conv_impl="shift", pool_impl="gather", edges="scan"),
           "accelerator": dict(conv_impl="grouped", pool_impl="xla", edges="wide"),
           "accelerator_scan": dict(conv_impl="grouped", pool_impl="xla", edges="scan"),
           "accelerator_unrolled": dict(conv_impl="grouped", pool_impl="xla", edges="unrolled"),
           "auto": dict(conv_impl="auto", pool_impl="auto", edges="auto")}
STEPS = ("search1", "search1_shared", "search2", "eval")


def emit(**kv):
  print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in kv.items()), flush=True)


def sizes():
  if FLAGS.small:
    return dict(batch=8, C=8, layers=3, eval_batch=8, eval_C=8, eval_layers=3)
  return dict(batch=FLAGS.batch, C=FLAGS.C, layers=FLAGS.layers, eval_batch=FLAGS.eval_batch, eval_C=FLAGS.eval_C,
              eval_layers=FLAGS.eval_layers)


def random_batch(key, batch: int) -> dict:
  import jax
  k1, k2 = jax.random.split(key)
  return {"image": jax.random.normal(k1, (batch, 32, 32, 3)), "label": jax.random.randint(k2, (batch,), 0, 10)}


def search_step(order: int, kernels: dict, batch: int, C: int, layers: int, hessian: str = "exact",
                passes: str = "separate"):
  """(step function, make_args) of one DARTS search step; `make_args()` builds its arguments (state and
  two random batches): trace it with `jax.eval_shape` for abstract ones, or `jax.jit` it for real ones."""
  import jax
  import jax.numpy as jnp
  import optax
  from dlbook import models
  from dlbook.nas.darts import bilevel
  model = models.build("darts_search", num_classes=10, init_channels=C, layers=layers, remat_edges=order == 2,
                       **kernels)
  schedule = optax.cosine_decay_schedule(0.025, 1000, 0.001 / 0.025)
  w_tx = optax.chain(optax.clip_by_global_norm(5.0), optax.add_decayed_weights(3e-4), optax.sgd(schedule, momentum=0.9))
  a_tx = optax.chain(optax.add_decayed_weights(1e-3), optax.adam(3e-4, b1=0.5, b2=0.999))

  def make_args():
    k_init, k_train, k_val = jax.random.split(jax.random.key(0), 3)
    variables = model.init({"params": k_init}, jnp.zeros((2, 32, 32, 3)), train=False)
    return (bilevel.SearchState.create(model.apply, variables, w_tx, a_tx), random_batch(k_train, batch),
            random_batch(k_val, batch))

  return bilevel.make_search_step(order, schedule, 0.9, 3e-4, hessian, passes=passes), make_args


def eval_step(kernels: dict, batch: int, C: int, layers: int):
  """(step function, make_args) of one training step of the DARTS_V2 evaluation network."""
  import jax
  import optax
  from dlbook import models
  from dlbook.training import state as train_state
  from dlbook.training.steps import make_train_step
  kernels = {k: v for k, v in kernels.items() if k != "edges"}  # no mixed ops in the evaluation network
  model = models.build("darts_eval", num_classes=10, genotype="DARTS_V2", init_channels=C, layers=layers,
                       auxiliary=True, drop_path_prob=0.2, **kernels)
  tx = optax.chain(optax.clip_by_global_norm(5.0), optax.add_decayed_weights(3e-4), optax.sgd(0.025, momentum=0.9))

  def make_args():
    k_init, k_batch, k_step = jax.random.split(jax.random.key(0), 3)
    return (train_state.create_train_state(model, k_init, (2, 32, 32, 3), tx), random_batch(k_batch, batch), k_step)

  return make_train_step(aux_weight=0.4), make_args


def build(step_name: str, kernels: dict, s: dict, hessian: str = "exact"):
  """(step function, make_args, shape) of a step of STEPS at sizes `s` (see `sizes`)."""
  if step_name == "eval":
    fn, make_args = eval_step(kernels, s["eval_batch"], s["eval_C"], s["eval_layers"])
    return fn, make_args, dict(batch=s["eval_batch"], C=s["eval_C"], layers=s["eval_layers"])
  order, passes = (1, "shared") if step_name == "search1_shared" else (int(step_name[-1]), "separate")
  fn, make_args = search_step(order, kernels, s["batch"], s["C"], s["layers"], hessian, passes)
  return fn, make_args, dict(batch=s["batch"], C=s["C"], layers=s["layers"])


def program_size(compiled) -> dict:
  """HLO instruction and fusion counts of the optimised program, and XLA's cost analysis."""
  text = compiled.as_text()
  instructions = len(re.findall(r"^\s*(?:ROOT\s+)?%?[\w.\-]+ = ", text, re.M))
  fusions = len(re.findall(r" = [^=]*? fusion\(", text))
  cost = compiled.cost_analysis()
  cost = (cost[0] if cost else {}) if isinstance(cost, (list, tuple)) else (cost or {})
  return dict(hlo_instructions=instructions, fusions=fusions, flops=float(cost.get("flops", float("nan"))),
              bytes_accessed=float(cost.get("bytes accessed", float("nan"))))


def measure(step_name: str, kernel_name: str) -> dict:
  import jax
  fn, make_args, shape = build(step_name, KERNELS[kernel_name], sizes())
  args = jax.eval_shape(make_args)  # abstract: nothing is initialised or run
  t0 = time.perf_counter()
  lowered = jax.jit(fn).lower(*args)
  t1, c1 = time.perf_counter(), time.process_time()
  # The program before XLA's optimisation passes: StableHLO operations (lines "%x = op ..." of its text).
  size = dict(stablehlo_ops=len(re.findall(r"^\s*(?:%[\w#:, ]+= )?\"?[a-z_]+\.[a-z_.]+", lowered.as_text(), re.M)))
  if FLAGS.lower_only:
    return dict(step=step_name, kernels=kernel_name, **shape, lower_s=t1 - t0, **size)
  compiled = lowered.compile()
  t2, c2 = time.perf_counter(), time.process_time()
  # compile_cpu_s: this process's CPU seconds while compiling, a steadier figure on a shared machine.
  return dict(step=step_name, kernels=kernel_name, **shape, lower_s=t1 - t0, **size, compile_s=t2 - t1,
              compile_cpu_s=c2 - c1, **program_size(compiled))


def main(argv):
  del argv
  runtime.configure_cpu()
  import jax
  from dlbook.errors import require
  require(set(FLAGS.steps) <= set(STEPS), f"unknown --steps {FLAGS.steps}; valid: {', '.join(STEPS)}")
  require(set(FLAGS.kernels) <= set(KERNELS), f"unknown --kernels {FLAGS.kernels}; valid: {', '.join(KERNELS)}")
  emit(benchmark="compile_only", backend=jax.default_backend(), jax=jax.__version__, cpu_count=os.cpu_count(),
       load_avg_1min=os.getloadavg()[0])
  for step_name in FLAGS.steps:
    for kernel_name in FLAGS.kernels:
      emit(**measure(step_name, kernel_name), load_avg_1min=os.getloadavg()[0])


if __name__ == "__main__":
  define_flags()  # here, not at import: benchmarks/gpu_check.py imports the step builders
  app.run(main)  # not launch.run: its persistent compilation cache would turn compiles into cache reads
