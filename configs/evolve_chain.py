"""Evolutionary NAS over the chain-structured space of book ch. 2 (Table 2.1 genome).

  python -m experiments.evolve --config=configs/evolve_chain.py[:smoke|cpu|full] --workdir=DIR \
      [--config.key=value ...]

Rerunning with the same --workdir resumes at the last finished generation.

Presets (the config argument):
- smoke: digits (embedded), population 4, 2 generations of 2 offspring, 4 training steps each, a
  tiny space; seconds after compilation. For tests.
- cpu (default): Fashion-MNIST (Debian package), a fixed stratified subset (10,000 train / 2,000
  validation, images resized to 14x14; 2,000 test images for the final check), population 16,
  8 generations of 8 offspring (80 trainings of 150 Adam steps at batch 32), book operators
  (roulette, uniform crossover, point mutation p=0.4, replace-worst). The population is sharded over
  the 2 CPU cores (cpu_devices=2). About 2 minutes on 2 idle cores (113 s measured,
  docs/nas_evolution.md).
- full: CIFAR-10 through TFDS (prepared under data.data_dir), the full 32x32 images, a wider space,
  population 32 for 20 generations with 2 epochs of training per individual; for accelerators.
"""

import ml_collections
from ml_collections.config_dict import placeholder

PRESETS = ("smoke", "cpu", "full")


def data_config(name, val_fraction, image_size=0, limit_train=0, limit_test=0):
  return ml_collections.ConfigDict(dict(
      name=name, data_dir=placeholder(str), train_fraction=1.0, val_fraction=val_fraction, split_seed=0,
      image_size=image_size, channels=0, normalization="standardize", limit_train=limit_train,
      limit_test=limit_test))


def base_config(preset, config_file: str):
  """Everything but the search space; shared by configs/evolve_cell.py."""
  preset = preset or "cpu"
  if preset not in PRESETS:
    from dlbook.errors import DlbookError
    raise DlbookError(f"unknown preset {preset!r} for {config_file}; valid: {', '.join(PRESETS)}")
  c = ml_collections.ConfigDict()
  c.preset = preset
  c.seed = 0
  c.data = data_config("fashion_mnist", 1 / 6, image_size=14, limit_train=12000, limit_test=2000)
  # Book §2.2.2 D-G defaults: roulette, uniform crossover, point mutation p=0.4, replace-worst.
  c.ga = ml_collections.ConfigDict(dict(
      population_size=16, num_offspring=8, max_generations=8, selection="roulette", crossover="uniform",
      mutation="point", replacement="replace_worst", num_elites=1, tournament_size=2, crossover_rate=1.0,
      gene_crossover_prob=0.5, mutation_prob=0.4, gene_mutation_prob=0.0, target_fitness=float("inf"),
      patience=0, min_delta=0.0))
  # Fitness (book §2.2.2 C): validation accuracy after a short training run.
  # vmap_microbatch: 0 vmaps the whole offspring chunk at once; m > 0 vmaps groups of m individuals inside
  # one compiled scan over the groups (jax.lax.map batch_size): still one compilation, but each group's
  # activations stay in the CPU's caches (benchmarks/ga_population.py, docs/nas_evolution.md). "auto": 1 on
  # a CPU split into several devices (cpu_devices), 0 on one CPU device and on GPUs/TPUs.
  c.fitness = ml_collections.ConfigDict(dict(train_steps=150, batch_size=32, eval_batch_size=50,
                                             evaluation="vmap", vmap_microbatch="auto"))
  c.optimizer = ml_collections.ConfigDict(dict(
      name="adam", learning_rate=2e-3, schedule="constant", final_learning_rate=0.0, warmup_steps=0,
      momentum=0.9, nesterov=False, b1=0.9, b2=0.999, weight_decay=0.0, grad_clip_norm=0.0))
  c.final_seeds = 4  # best genome and book baseline, each retrained with this many seeds on the test split
  c.num_devices = 0  # 0: every local device; the population axis is sharded over them
  # cpu_devices > 0 splits a CPU backend into that many XLA devices before JAX starts, so the population
  # shards over the host's cores (the launcher calls dlbook.runtime.split_cpu); 0 leaves the CPU as one device.
  c.cpu_devices = 0

  if preset == "smoke":
    c.data = data_config("digits", 0.2)
    c.ga.population_size = 4
    c.ga.num_offspring = 2
    c.ga.max_generations = 2
    c.fitness.train_steps = 4
    c.fitness.batch_size = 16
    c.fitness.eval_batch_size = 360
    c.final_seeds = 1
  elif preset == "full":
    c.data = data_config("tfds:cifar10", 0.1, limit_test=5000)
    c.ga.population_size = 32
    c.ga.num_offspring = 16
    c.ga.max_generations = 20
    c.fitness.train_steps = 1400  # 2 epochs of 45,000 images at batch 64
    c.fitness.batch_size = 64
    c.fitness.eval_batch_size = 500
    c.final_seeds = 8
  return c


def get_config(preset=None):
  c = base_config(preset, "configs/evolve_chain.py")
  c.space = ml_collections.ConfigDict(dict(
      name="chain", max_conv=3, filter_choices=(8, 16, 32), kernel_choices=(3, 5), max_dense=2,
      unit_choices=(32, 64, 128), activations=("relu", "elu", "tanh", "sigmoid"), conv_impl="taps"))
  if c.preset == "smoke":
    c.space.max_conv = 2
    c.space.filter_choices = (4, 8)
    c.space.max_dense = 1
    c.space.unit_choices = (8, 16)
    c.space.activations = ("relu", "tanh")
  elif c.preset == "cpu":
    # Measured on the 2 CPU cores (benchmarks/ga_population.py, docs/nas_evolution.md):
    # patches (im2col + one matmul) is the fastest conv, vmapped or looped; the population sharded over
    # the 2 cores as 2 CPU devices, each device taking its individuals one at a time (groups of 1), ran
    # 1.3x faster than the loop; vmapped groups of 2 on one device stay at parity with it.
    c.space.conv_impl = "patches"
    c.cpu_devices = 2  # vmap_microbatch "auto" is then 1; on a GPU/TPU the split is ignored and "auto" is 0
  elif c.preset == "full":
    c.space.conv_impl = "auto"  # xla on GPUs/TPUs (under vmap one grouped native conv), patches on the CPU
    c.space.filter_choices = (16, 32, 64, 128)
    c.space.unit_choices = (64, 128, 256)
  return c
