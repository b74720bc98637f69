"""Gen-Soup population training: one vmapped group vs a loop over individuals (thesis seed 001 ch. 5).

  python -m benchmarks.gen_soup_population [--config=configs/gen_soup.py:cpu] [--individuals=4]
      [--architecture=small_cnn_m] [--repeats=2]

`--individuals` individuals of one architecture with different learning rates, weight decays, losses,
optimizers (the config's `traced_optimizer`; otherwise one optimizer) and astrocyte factors train ONE
epoch (a Gen-Soup generation) from their weights at the config's largest image size and predict the
validation split, in this one process, with the same keys:
  - vmap: the group as one compiled, vmapped program (Gen-Soup's path, `group_size` = the group);
  - loop: the same per-individual function, compiled once, called once per individual (the reference).
Compile time is measured separately; with --repeats > 1 the paths alternate and the fastest run counts.
Prints name=value lines; `vmap_vs_loop_speedup` is loop seconds / vmap seconds.
"""

import time

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from dlbook import runtime
from dlbook.hpsearch import gen_soup, gen_soup_search
from dlbook.nas.fitness import individual_keys
from dlbook.training.astrocytes import AstrocyteConfig

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "configs/gen_soup.py:cpu", "Gen-Soup config.")
flags.DEFINE_integer("individuals", 4, "Individuals in the group.")
flags.DEFINE_string("architecture", "small_cnn_m", "Architecture of the group.")
flags.DEFINE_integer("repeats", 2, "Timed runs of each path (alternating); the fastest counts.")


def main(argv):
  del argv
  runtime.enable_compilation_cache()
  c = FLAGS.config
  t = c.train
  ds, fit = gen_soup_search._Data(c, c.seed)(int(t.image_size_end))
  n = FLAGS.individuals
  u = np.linspace(0.05, 0.95, n)
  optimizer = (lambda i: u[i]) if t.traced_optimizer else (lambda i: 0.1)
  decoded = [gen_soup.decode({"architecture": 0.0, "loss": u[i], "optimizer": optimizer(i),
                              "weight_decay": u[::-1][i], "learning_rate": 0.3 + 0.5 * u[i], "strong": u[i],
                              "weak": u[::-1][i]}, (FLAGS.architecture,)) for i in range(n)]
  keys = individual_keys(jax.random.key(0), 0, n)
  weights = {i: gen_soup.init_variables(FLAGS.architecture, ds.num_classes, ds.image_shape, keys[i]) for i in range(n)}
  batch = gen_soup_search.epoch_batches(len(ds.train), int(t.batch_size), 0, 0)
  a = c.astrocytes
  trainer = gen_soup.PopulationTrainer(ds.num_classes, int(t.eval_batch_size), cosine=bool(t.cosine),
                                       adam_weight_decay=bool(c.adam_weight_decay),
                                       astrocytes=AstrocyteConfig(int(a.ng), float(a.sensitivity), mode=str(a.mode)),
                                       traced_optimizer=bool(t.traced_optimizer), group_size=n)
  args = (decoded, weights, keys, {i: batch for i in range(n)}, (0, 10 * len(batch)), fit)
  paths = {"vmap": trainer, "loop": trainer.loop}
  compile_s, best = {}, {}
  for name, fn in paths.items():  # first call: compile (or the persistent cache) + one run
    t0 = time.time()
    fn(*args)
    compile_s[name] = time.time() - t0
  for _ in range(FLAGS.repeats):
    for name, fn in paths.items():
      t0 = time.time()
      fn(*args)
      best[name] = min(best.get(name, np.inf), time.time() - t0)
  print(f"group={FLAGS.architecture} traced_optimizer={bool(t.traced_optimizer)} individuals={n} "
        f"steps={len(batch)} batch={int(t.batch_size)} image={ds.image_shape} backend={jax.default_backend()}")
  print(f"first_call_seconds: vmap={compile_s['vmap']:.2f} loop={compile_s['loop']:.2f}")
  print(f"run_seconds:        vmap={best['vmap']:.3f} loop={best['loop']:.3f}")
  print(f"vmap_vs_loop_speedup={best['loop'] / best['vmap']:.2f}")


if __name__ == "__main__":
  app.run(main)
