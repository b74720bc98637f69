"""Gen-CNN population fitness: one vmapped group vs a loop over individuals (thesis seed 001 ch. 3).

  python -m benchmarks.gen_cnn_population [--config=configs/gen_cnn.py:cpu] [--individuals=4]
      [--architecture=0.1] [--optimizer=0.1] [--repeats=2]

`--individuals` individuals that share an architecture and optimizer (raw genes given by the flags) with
different learning rates, weight decays and losses train at the config's low fidelity (its data, batch
size and epochs) and predict the validation split, in this one process, with the same keys:
  - vmap: the group as one compiled, vmapped program (Gen-CNN's path, `group_size` = the group);
  - loop: the same per-individual function, compiled once, called once per individual (the reference).
Compile time is measured separately; with --repeats > 1 the paths alternate and the fastest run counts.
Prints name=value lines; `vmap_vs_loop_speedup` is loop seconds / vmap seconds.
"""

import time

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from dlbook import data as data_lib
from dlbook import runtime
from dlbook.hpsearch import gen_cnn
from dlbook.nas.fitness import individual_keys, make_fitness_data

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "configs/gen_cnn.py:cpu", "Gen-CNN config.")
flags.DEFINE_integer("individuals", 4, "Individuals in the group.")
flags.DEFINE_float("architecture", 0.1, "Raw architecture gene of the group.")
flags.DEFINE_float("optimizer", 0.1, "Raw optimizer gene of the group.")
flags.DEFINE_integer("repeats", 2, "Timed runs of each path (alternating); the fastest counts.")


def main(argv):
  del argv
  runtime.enable_compilation_cache()
  c = FLAGS.config
  ds = data_lib.load(c.data, seed=c.seed)
  f = c.fitness
  steps = int(f.epochs) * (len(ds.train) // int(f.batch_size))
  data = make_fitness_data(ds.train.images, ds.train.labels, ds.val.images, ds.val.labels,
                           batch_size=int(f.batch_size), num_steps=steps, seed=c.seed,
                           eval_batch_size=int(f.eval_batch_size))
  n = FLAGS.individuals
  u = np.linspace(0.05, 0.95, n)
  decoded = [gen_cnn.decode({"architecture": FLAGS.architecture, "optimizer": FLAGS.optimizer, "loss": u[i],
                             "weight_decay": u[::-1][i], "learning_rate": 0.3 + 0.5 * u[i]}, tuple(c.pool))
             for i in range(n)]
  ev = gen_cnn.GroupEvaluator(ds.num_classes, ds.image_shape, steps, int(f.eval_batch_size), group_size=n)
  keys = individual_keys(jax.random.key(0), 0, n)
  paths = {"vmap": ev, "loop": ev.loop}
  compile_s, best = {}, {}
  for name, fn in paths.items():  # first call: compile (or the persistent cache) + one run
    t0 = time.time()
    fn(decoded, keys, data)
    compile_s[name] = time.time() - t0
  for _ in range(FLAGS.repeats):
    for name, fn in paths.items():
      t0 = time.time()
      fn(decoded, keys, data)
      best[name] = min(best.get(name, np.inf), time.time() - t0)
  print(f"group={decoded[0]['architecture']}+{decoded[0]['optimizer']} individuals={n} steps={steps} "
        f"batch={int(f.batch_size)} image={ds.image_shape} backend={jax.default_backend()}")
  print(f"first_call_seconds: vmap={compile_s['vmap']:.2f} loop={compile_s['loop']:.2f}")
  print(f"run_seconds:        vmap={best['vmap']:.3f} loop={best['loop']:.3f}")
  print(f"vmap_vs_loop_speedup={best['loop'] / best['vmap']:.2f}")


if __name__ == "__main__":
  app.run(main)
