"""GA population evaluation: one jax.vmap over the population vs a loop over individuals.

  python -m benchmarks.ga_population [--config=configs/evolve_chain.py:cpu] [--population=16]
      [--train_steps=N] [--formulations=per_individual,patches,xla]

P individuals of the chain supernet at the cpu preset's size (Fashion-MNIST 14x14 subset, batch 32,
the preset's train steps and validation set) are each trained and evaluated (the GA's fitness):
  - vmap: the whole population in one compiled, vmapped function (the evolutionary NAS path);
  - loop: the same per-individual function, compiled once, called P times (the reference path).
Both run in this process on the same genomes and keys; compile time is measured separately.
Each conv formulation of dlbook.nas.supernet is measured:
  - per_individual (the default): every conv stays a plain XLA conv under vmap (custom batching rule);
  - patches: image patches + einsum (a batched matmul under vmap);
  - xla: lax.conv, which vmap turns into a grouped conv.
Prints name=value lines; `vmap_vs_loop_speedup` is loop time / vmap time for the config's
formulation, `vmap_vs_best_loop_speedup` divides by the fastest loop of any formulation.
"""

import time

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from dlbook import data as data_lib
from dlbook.nas import evolutionary_nas as enas
from dlbook.training import optim

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "configs/evolve_chain.py:cpu", "Evolutionary NAS config (chain space).")
flags.DEFINE_integer("population", 16, "Individuals evaluated.")
flags.DEFINE_integer("train_steps", 0, "Training steps per individual (0: the config's).")
flags.DEFINE_list("formulations", ["per_individual", "patches", "xla"], "Conv formulations to measure.")


def measure(config, dataset, impl, population, steps):
  config.space.conv_impl = impl
  space = enas.make_space(config.space)
  tx = optim.make_optimizer(config.optimizer, steps)
  f = config.fitness
  evaluator = enas.PopulationEvaluator(space, dataset.num_classes, dataset.image_shape, tx, chunk_size=population,
                                       eval_batch_size=int(f.eval_batch_size), num_devices=1)
  data = enas.make_fitness_data(dataset.train.images, dataset.train.labels, dataset.val.images,
                                dataset.val.labels, batch_size=int(f.batch_size), num_steps=steps,
                                seed=config.seed, eval_batch_size=int(f.eval_batch_size))
  genomes = space.spec.sample(jax.random.key(config.seed), population)
  keys = enas.individual_keys(jax.random.key(config.seed + 1), 0, population)
  out = {}
  for path, run in (("vmap", evaluator), ("loop", evaluator.sequential)):
    before = evaluator.compile_seconds
    evaluator.compile(*_compile_args(evaluator, genomes, keys, data, path), path)
    out[f"{path}_compile_s"] = evaluator.compile_seconds - before
    t0 = time.time()
    result = run(genomes, keys, data)
    out[f"{path}_s"] = time.time() - t0
    out[f"{path}_fitness"] = result.fitness
  out["traces"] = evaluator.num_traces
  out["compilations"] = evaluator.num_compilations
  return out


def _compile_args(evaluator, genomes, keys, data, path):
  keys = enas._key_data(keys)
  if path == "vmap":
    placed = evaluator._placed(data)
    g, k = jax.device_put((genomes, keys), evaluator._population)
    return g, k, placed
  return genomes, keys, data


def main(argv):
  del argv
  config = FLAGS.config
  steps = FLAGS.train_steps or int(config.fitness.train_steps)
  chosen = config.space.conv_impl
  p = FLAGS.population
  print(f"population={p}")
  print(f"train_steps={steps}")
  print(f"batch_size={config.fitness.batch_size}")
  print(f"image_size={config.data.image_size or 'native'}")
  print(f"devices={jax.device_count()} backend={jax.default_backend()}")
  dataset = data_lib.load(config.data, seed=config.seed)
  results = {}
  for impl in FLAGS.formulations:
    r = measure(config.copy_and_resolve_references(), dataset, impl, p, steps)
    results[impl] = r
    print(f"{impl}_vmap_s={r['vmap_s']:.2f}")
    print(f"{impl}_loop_s={r['loop_s']:.2f}")
    print(f"{impl}_vmap_compile_s={r['vmap_compile_s']:.1f}")
    print(f"{impl}_loop_compile_s={r['loop_compile_s']:.1f}")
    print(f"{impl}_vmap_vs_loop_speedup={r['loop_s'] / r['vmap_s']:.2f}")
    print(f"{impl}_max_abs_fitness_diff={np.abs(r['vmap_fitness'] - r['loop_fitness']).max():.2e}", flush=True)
  if chosen in results:
    r = results[chosen]
    best_loop = min(v["loop_s"] for v in results.values())
    print(f"formulation={chosen}")
    print(f"vmap_vs_loop_speedup={r['loop_s'] / r['vmap_s']:.2f}")
    print(f"vmap_vs_best_loop_speedup={best_loop / r['vmap_s']:.2f}")
    print(f"compilations={r['compilations']}")
    print(f"traces={r['traces']}")


if __name__ == "__main__":
  app.run(main)
