"""GA transfer learning (seed 004): one vmapped population step against a loop over individuals.

  python -m benchmarks.ga_transfer_population [--individuals=4] [--batch=16] [--image_size=32] [--steps=3]
      [--repeats=2] [--tiny]

`--individuals` DenseNet-121-SE individuals (`--tiny`: the 2+3-layer stand-in of the tests) with different
included/frozen layers, learning rates and dropout rates train `--steps` steps on the same random batches:
  - vmap: the population as one compiled, vmapped program (the search's path, `population_step`);
  - loop: the same per-individual step (`individual_step`), compiled once unbatched, called once per
    individual per step (the reference path).
Compile time is measured separately (the first call); the paths then alternate `--repeats` times and the
fastest run counts. Prints name=value lines; `vmap_vs_loop_speedup` is loop seconds / vmap seconds.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from dlbook import runtime
from dlbook.hpsearch import ga_transfer as gt

FLAGS = flags.FLAGS
flags.DEFINE_integer("individuals", 4, "Population size.")
flags.DEFINE_integer("batch", 16, "Training batch size.")
flags.DEFINE_integer("image_size", 32, "Image size (pixels).")
flags.DEFINE_integer("steps", 3, "Training steps per timed run.")
flags.DEFINE_integer("repeats", 2, "Timed runs of each path (alternating); the fastest counts.")
flags.DEFINE_bool("tiny", False, "A 2+3-layer DenseNet-SE instead of DenseNet-121-SE.")

TINY = dict(blocks=(2, 3), growth=4, init_features=8, se_reduction=4, stem_stride=1, stem_pool=False)


def main(argv):
  del argv
  runtime.enable_compilation_cache()
  name, kwargs = ("densenet_se", TINY) if FLAGS.tiny else ("densenet121_se", {})
  start = gt.load_start(name, num_classes=10, image_size=FLAGS.image_size, backbone_kwargs=kwargs)
  n, L = FLAGS.individuals, start.num_layers
  max_frozen = min(18, L // 2)
  u = np.linspace(0.1, 0.9, n)
  included = np.maximum(1, np.round(u * L)).astype(np.int32)
  genes = {"included": jnp.asarray(included), "frozen": jnp.asarray(np.minimum(included, np.round(u[::-1] * max_frozen)),
                                                                    jnp.int32),
           "learning_rate": jnp.asarray(10.0 ** (-5 + 3 * u), jnp.float32), "dropout": jnp.asarray(0.1 + 0.8 * u,
                                                                                                   jnp.float32)}
  keys = jax.random.split(jax.random.key(0), n)
  rng = np.random.default_rng(0)
  images = rng.uniform(size=(FLAGS.batch, FLAGS.image_size, FLAGS.image_size, 3)).astype(np.float32)
  labels = rng.integers(0, 10, FLAGS.batch).astype(np.int32)
  vstep = gt.population_step(start.model, start.blocks, max_frozen)
  one = jax.jit(gt.individual_step(start.model, start.blocks, max_frozen), donate_argnums=(0, 1, 2))
  take = lambda t, i: jax.tree.map(lambda x: x[i], t)  # noqa: E731

  def run_vmap():
    state = gt.init_population(start, keys)
    for s in range(FLAGS.steps):
      state, m = vstep(state, genes, images, labels, keys, jnp.int32(s))
    jax.block_until_ready(state)

  def run_loop():
    pop = gt.init_population(start, keys)
    for i in range(n):
      p, st, o, alive = take(pop.params, i), take(pop.batch_stats, i), take(pop.opt_state, i), pop.alive[i]
      g = take(genes, i)
      for s in range(FLAGS.steps):
        p, st, o, alive, m = one(p, st, o, alive, g, images, labels, jax.random.fold_in(keys[i], s))
      jax.block_until_ready(p)

  paths = {"vmap": run_vmap, "loop": run_loop}
  first, best = {}, {}
  for key, fn in paths.items():
    t0 = time.time()
    fn()
    first[key] = time.time() - t0
  for _ in range(FLAGS.repeats):
    for key, fn in paths.items():
      t0 = time.time()
      fn()
      best[key] = min(best.get(key, np.inf), time.time() - t0)
  steps = FLAGS.steps
  print(f"model={name} dense_layers={L} individuals={n} steps={steps} batch={FLAGS.batch} "
        f"image={FLAGS.image_size} backend={jax.default_backend()} devices={jax.device_count()}")
  print(f"first_call_seconds: vmap={first['vmap']:.1f} loop={first['loop']:.1f}")
  print(f"run_seconds:        vmap={best['vmap']:.3f} loop={best['loop']:.3f}")
  print(f"seconds_per_individual_step: vmap={best['vmap'] / (n * steps):.3f} loop={best['loop'] / (n * steps):.3f}")
  print(f"vmap_vs_loop_speedup={best['loop'] / best['vmap']:.2f}")


if __name__ == "__main__":
  app.run(main)
