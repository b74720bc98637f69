"""GA population evaluation: one jax.vmap over the population vs a loop over individuals.

  python -m benchmarks.ga_population [--config=configs/evolve_chain.py:cpu] [--population=16]
      [--train_steps=N] [--formulations=patches[,taps,per_individual,xla]] [--microbatches=2[,0,4]]
      [--vmap_devices=1[,2]] [--host_devices=N] [--repeats=1] [--conv_only]

P individuals of the chain supernet at the cpu preset's size (Fashion-MNIST subset at 14x14,
batch 32, the preset's training steps and 2,000 validation images) are each trained and evaluated
(the GA's fitness), in this one process, on the same genomes and keys:
  - vmap: the whole population in one compiled, vmapped function (the evolutionary NAS path);
  - loop: the same per-individual function, compiled once, called P times (the reference path).
Compile time is measured separately; with --repeats > 1 the paths alternate and the fastest
run of each counts. Any conv formulation of dlbook.nas.kernels (CONV_IMPLS) can be measured; the
default is patches, the fastest on CPU (taps is ~25% slower; per_individual and xla several times).
The CPU is split into the config's `cpu_devices` XLA devices (--host_devices overrides; the cpu
preset uses 2, one per core) and the vmap path is timed at every combination of the config's and
the flags' microbatch sizes and device counts: sharded over N devices, each device evaluates its
share concurrently. The loop stays on one device, as a sequential loop over individuals must (it
still uses every core through XLA's intra-op threads; splitting the CPU does not slow it).
Prints name=value lines: `vmap_vs_loop_speedup` is loop time / vmap time for the config's path
(formulation, microbatch, devices); `vmap_1device_vs_loop_speedup` is the same on one device;
`vmap_vs_best_loop_speedup` divides the fastest loop of any formulation by the config's path.
--conv_only times one conv layer (forward and backward) per formulation instead.
"""

import os
import time

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from dlbook import data as data_lib
from dlbook import runtime
from dlbook.nas import evolutionary_nas, fitness
from dlbook.training import optim

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "configs/evolve_chain.py:cpu", "Evolutionary NAS config.")
flags.DEFINE_integer("population", 16, "Individuals evaluated.")
flags.DEFINE_integer("train_steps", 0, "Training steps per individual (0: the config's).")
flags.DEFINE_list("formulations", ["patches"],
                  "Conv formulations to measure (any of dlbook.nas.kernels.CONV_IMPLS).")
flags.DEFINE_list("microbatches", ["2"], "vmap microbatch sizes to time besides the config's (0: the whole "
                  "population in one vmap; m: groups of m vmapped inside one compiled scan, "
                  "fitness.vmap_microbatch; 1: one individual at a time per device).")
flags.DEFINE_list("vmap_devices", ["1"], "Device counts to shard the vmapped population over (each device runs "
                  "its share; the loop always runs on one device).")
flags.DEFINE_integer("host_devices", -1, "Split the CPU into this many XLA devices before JAX starts "
                     "(jax_num_cpu_devices); -1: the config's cpu_devices; 0 leaves it alone.")
flags.DEFINE_integer("repeats", 1, "Timed runs of each path (alternating); the fastest counts.")
flags.DEFINE_bool("conv_only", False, "Time one conv layer's forward+backward (P x 64x14x14x32 -> 32, 5x5) "
                  "per formulation instead of whole fitness evaluations.")


def conv_only(population, formulations, repeats):
  """vmap vs loop for one conv layer, forward and backward, per formulation."""
  from dlbook.nas.kernels import conv2d
  x = jax.random.normal(jax.random.key(0), (population, 64, 14, 14, 32))
  w = jax.random.normal(jax.random.key(1), (population, 5, 5, 32, 32)) * 0.05
  for impl in formulations:
    grad = jax.grad(lambda x, w: jax.numpy.sum(conv2d(x, w, impl) ** 2), argnums=(0, 1))
    vmapped, single = jax.jit(jax.vmap(grad)), jax.jit(grad)
    paths = {"vmap": lambda: vmapped(x, w), "loop": lambda: [single(x[i], w[i]) for i in range(population)]}
    for run in paths.values():  # compile
      jax.block_until_ready(run())
    times = {}
    for _ in range(repeats):
      for path, run in paths.items():
        t0 = time.time()
        jax.block_until_ready(run())
        times[path] = min(times.get(path, np.inf), time.time() - t0)
    print(f"conv_{impl}_vmap_s={times['vmap']:.3f}")
    print(f"conv_{impl}_loop_s={times['loop']:.3f}")
    print(f"conv_{impl}_vmap_vs_loop_speedup={times['loop'] / times['vmap']:.2f}", flush=True)


def vmap_name(microbatch: int, devices: int) -> str:
  return f"vmap{microbatch}" + (f"_d{devices}" if devices != 1 else "")


def measure(config, dataset, impl, population, steps, repeats, microbatches, device_counts):
  """Loop and vmap (one evaluator per microbatch size and device count) on the same genomes, keys and data."""
  config.space.conv_impl = impl
  space = evolutionary_nas.make_space(config.space)
  f = config.fitness
  tx = optim.make_optimizer(config.optimizer, steps)
  make = lambda m, d: fitness.PopulationEvaluator(space, dataset.num_classes, dataset.image_shape, tx,
                                                  chunk_size=population, eval_batch_size=int(f.eval_batch_size),
                                                  num_devices=d, microbatch=m)
  evaluators = {"loop": make(0, 1)}
  evaluators.update({vmap_name(m, d): make(m, d) for d in device_counts for m in microbatches})
  data = fitness.make_fitness_data(dataset.train.images, dataset.train.labels, dataset.val.images,
                                   dataset.val.labels, batch_size=int(f.batch_size), num_steps=steps,
                                   seed=config.seed, eval_batch_size=int(f.eval_batch_size))
  genomes = space.spec.sample(jax.random.key(config.seed), population)
  keys = fitness.individual_keys(jax.random.key(config.seed + 1), 0, population)
  paths = {path: (ev.sequential if path == "loop" else ev) for path, ev in evaluators.items()}
  out = {}
  for path, ev in evaluators.items():
    ev.compile(genomes, keys, data, "sequential" if path == "loop" else "vmap")
    out[f"{path}_compile_s"] = ev.compile_seconds
  for _ in range(repeats):
    for path, run in paths.items():
      t0 = time.time()
      out[f"{path}_fitness"] = run(genomes, keys, data).fitness
      out[f"{path}_s"] = min(out.get(f"{path}_s", np.inf), time.time() - t0)
  for name, ev in evaluators.items():
    out[f"{name}_traces"] = ev.num_traces
    out[f"{name}_compilations"] = ev.num_compilations
  out["eval_images"] = len(dataset.val)
  return out


def main(argv):
  del argv
  config = FLAGS.config
  runtime.split_cpu(FLAGS.host_devices if FLAGS.host_devices >= 0 else int(config.get("cpu_devices", 0)))
  if FLAGS.conv_only:
    print(f"population={FLAGS.population}")
    conv_only(FLAGS.population, FLAGS.formulations, FLAGS.repeats)
    return
  steps = FLAGS.train_steps or int(config.fitness.train_steps)
  chosen = config.space.conv_impl
  p = FLAGS.population
  dataset = data_lib.load(config.data, seed=config.seed)
  print(f"population={p}")
  print(f"train_steps={steps}")
  print(f"batch_size={config.fitness.batch_size}")
  print(f"image_shape={'x'.join(map(str, dataset.image_shape))}")
  print(f"eval_images={len(dataset.val)}")
  print(f"devices={jax.device_count()} backend={jax.default_backend()} cpu_count={os.cpu_count()}")
  chosen_microbatch = fitness.resolve_microbatch(config.fitness.get("vmap_microbatch", 0))
  chosen_devices = int(config.num_devices) or jax.device_count()
  microbatches = sorted({int(m) for m in FLAGS.microbatches} | {chosen_microbatch})
  device_counts = sorted({int(d) for d in FLAGS.vmap_devices} | {chosen_devices})
  if max(device_counts) > jax.device_count():
    raise app.UsageError(f"--vmap_devices asks for {max(device_counts)} devices but {jax.device_count()} exist; "
                         f"add --host_devices={max(device_counts)}")
  print(f"config_vmap_microbatch={chosen_microbatch}")
  print(f"config_devices={chosen_devices}")
  results = {}
  for impl in FLAGS.formulations:
    r = measure(config.copy_and_resolve_references(), dataset, impl, p, steps, FLAGS.repeats, microbatches,
                device_counts)
    results[impl] = r
    print(f"{impl}_loop_s={r['loop_s']:.2f}")
    print(f"{impl}_loop_compile_s={r['loop_compile_s']:.1f}")
    for d in device_counts:
      for m in microbatches:
        v = vmap_name(m, d)
        print(f"{impl}_microbatch={m} {impl}_devices={d} {impl}_vmap_s={r[v + '_s']:.2f} "
              f"{impl}_vmap_compile_s={r[v + '_compile_s']:.1f} {impl}_vmap_vs_loop_speedup={r['loop_s'] / r[v + '_s']:.2f} "
              f"compilations={r[v + '_compilations']} "
              f"max_abs_fitness_diff={np.abs(r[v + '_fitness'] - r['loop_fitness']).max():.2e}", flush=True)
  if chosen in results:
    r = results[chosen]
    v = vmap_name(chosen_microbatch, chosen_devices)
    best_impl = min(results, key=lambda k: results[k]["loop_s"])
    print(f"config_path=formulation {chosen}, {chosen_devices} device(s), microbatch {chosen_microbatch}")
    print(f"formulation={chosen}")
    print(f"microbatch={chosen_microbatch}")
    print(f"vmap_devices={chosen_devices}")
    print(f"vmap_vs_loop_speedup={r['loop_s'] / r[v + '_s']:.2f}")
    v1 = vmap_name(chosen_microbatch, 1)
    if chosen_devices != 1 and v1 + "_s" in r:
      print(f"vmap_1device_vs_loop_speedup={r['loop_s'] / r[v1 + '_s']:.2f}")
    print(f"fastest_loop_formulation={best_impl}")
    print(f"vmap_vs_best_loop_speedup={results[best_impl]['loop_s'] / r[v + '_s']:.2f}")
    print(f"compilations={r[v + '_compilations']}")
    print(f"traces={r[v + '_traces']}")


if __name__ == "__main__":
  app.run(main)
