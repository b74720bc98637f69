"""Gen-CNN: evolutionary hyperparameter search (thesis seed 001 ch. 3) against random search.

  python -m experiments.gen_cnn --config=configs/gen_cnn.py[:smoke|cpu|full] --workdir=DIR [--config.seed=1]

Rerunning with the same --workdir resumes after the last finished generation (then random search
after its last batch, then the final retraining).

Presets:
- smoke: digits (embedded), one small CNN, population 4, 2 generations, 1 low-fidelity epoch; seconds.
- cpu (default): digits (scikit-learn's 8x8 handwritten digits: 1,150 train / 287 validation / 360 test),
  a pool of two small CNNs (small_cnn_s/m) standing in for the thesis's ImageNet backbones,
  population 8 for 4 more generations (40 low-fidelity trainings of 3 epochs at batch 32), random search
  with the same 40 trainings, the best of each retrained for 20 epochs with cosine decay. Measured cost
  in docs/gen_cnn.md (mostly compilation: one program per architecture and optimizer pair).
- full: the thesis's settings (Table 3.4): the nine-backbone pool, 25 generations of 50, 3 epochs at
  112x112 for the fitness, 50 epochs at 448x448 with cosine decay for the final model; a local image
  folder (set data.name to image_folder:/path/to/KVASIR-v2, one sub-folder per class); for accelerators.
"""

import ml_collections
from ml_collections.config_dict import placeholder

PRESETS = ("smoke", "cpu", "full")


def get_config(preset=None):
  preset = preset or "cpu"
  if preset not in PRESETS:
    from dlbook.errors import DlbookError
    raise DlbookError(f"unknown preset {preset!r} for configs/gen_cnn.py; valid: {', '.join(PRESETS)}")
  from dlbook.hpsearch.gen_cnn import CROSSOVER_PROB, MUTATION_PROB, THESIS_POOL
  c = ml_collections.ConfigDict()
  c.preset = preset
  c.seed = 0
  c.data = ml_collections.ConfigDict(dict(
      name="digits", data_dir=placeholder(str), train_fraction=1.0, val_fraction=0.2, split_seed=0,
      image_size=0, channels=0, normalization="standardize", limit_train=0, limit_test=0))
  c.pool = ("small_cnn_s", "small_cnn_m")
  # tournament_size 2: a binary tournament (one opponent); 3: the author's code (two opponents).
  c.ga = ml_collections.ConfigDict(dict(population_size=8, generations=4, tournament_size=2,
                                        gene_crossover_prob=dict(CROSSOVER_PROB),
                                        gene_mutation_prob=dict(MUTATION_PROB)))
  # Low fidelity (the fitness): constant learning rate; image_size 0 keeps the dataset's size; the
  # individuals sharing an (architecture, optimizer) train vmapped in chunks of group_size.
  c.fitness = ml_collections.ConfigDict(dict(epochs=3, batch_size=32, eval_batch_size=96, image_size=0,
                                             group_size=4))
  # High fidelity (the best individual of each search): cosine decay to 0.1 lr.
  c.final = ml_collections.ConfigDict(dict(epochs=20, batch_size=32, eval_batch_size=120, image_size=0))
  c.adam_weight_decay = False  # the author's code passes no weight decay to Adam
  c.evaluation = "vmap"  # or "loop": one individual at a time (the reference)
  c.random_search = True

  if preset == "smoke":
    c.pool = ("small_cnn_s",)
    c.ga.population_size = 4
    c.ga.generations = 2
    c.fitness.epochs = 1
    c.fitness.batch_size = 128
    c.fitness.group_size = 2
    c.final.epochs = 1
    c.final.batch_size = 128
  elif preset == "full":
    c.data.name = "image_folder:KVASIR-v2"
    c.data.val_fraction = 0.1
    c.data.channels = 3
    c.pool = THESIS_POOL
    c.ga.population_size = 50
    c.ga.generations = 24  # generation 0 + 24: the thesis's 25 generations
    c.fitness = ml_collections.ConfigDict(dict(epochs=3, batch_size=32, eval_batch_size=50, image_size=112,
                                               group_size=8))
    c.final = ml_collections.ConfigDict(dict(epochs=50, batch_size=32, eval_batch_size=50, image_size=448))
  return c
