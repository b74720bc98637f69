"""Gen-Soup: hyperparameter search and weight averaging in one (thesis seed 001 ch. 5), against a uniform
soup, Gen-CNN and random search at the same epoch budget.

  python -m experiments.gen_soup --config=configs/gen_soup.py[:smoke|cpu|full] --workdir=DIR [--docs_dir=docs]

Runs every GA seed of `seeds` (one unit directory each); rerunning with the same --workdir resumes
(after the last finished generation, or inside a generation after its last trained chunk).

Presets:
- smoke: digits (embedded), one small CNN, population 4 shrinking to 3, 3 generations at image sizes
  7 -> 8, one seed, tiny baselines; seconds once compiled.
- cpu (default): digits (scikit-learn's 8x8 handwritten digits: 1,150 train / 287 validation / 360 test),
  the pool small_cnn_s/m (stand-ins for the thesis's mobile backbones), population 24 shrinking by 3 to 6
  over 15 generations with cosine decay, image sizes 6 -> 8 (7 generations at 8), seeds 0, 1, 2: 153
  epochs per method. Measured cost in docs/gen_soup.md.
- full: the thesis's settings (Tables 5.1, 5.2, Exp1): the six mobile backbones, population 50 shrinking
  by 5 to 10, 20 generations with cosine decay, image sizes 224 -> 302 with 10 epochs at 302, on a local
  image folder (data.name=image_folder:/path/to/KVASIR-v2, one sub-folder per class); Exp2 is
  --config.ga.generations=34 --config.train.cosine=False. For accelerators.
"""

import ml_collections

from configs import common

PRESETS = ("smoke", "cpu", "full")


def get_config(preset=None):
  preset = common.preset(preset, PRESETS, "gen_soup.py")
  from dlbook.hpsearch.gen_soup import CROSSOVER_PROB, MUTATION_PROB, THESIS_POOL
  c = ml_collections.ConfigDict()
  c.preset = preset
  c.seed = 0  # set per unit from `seeds`
  c.seeds = (0, 1, 2)
  c.data = common.data("digits", val_fraction=0.2)
  c.pool = ("small_cnn_s", "small_cnn_m")
  # tournament_size 2: a binary tournament (one opponent); 3: the author's code (two opponents).
  c.ga = ml_collections.ConfigDict(dict(population_size=24, shrink_by=3, min_population=6, generations=14,
                                        tournament_size=2, gene_crossover_prob=dict(CROSSOVER_PROB),
                                        gene_mutation_prob=dict(MUTATION_PROB)))
  # One epoch per generation; image size linear from start to end, then epochs_at_max generations at the
  # end size; cosine: one decay to 0.1 x lr over the whole search (Exp1), else constant (Exp2);
  # traced_optimizer: one program per architecture (the optimizer a traced choice) instead of per
  # (architecture, optimizer); bn_reestimate_batches > 0: an averaged model's BatchNorm statistics are
  # re-estimated on that many training batches.
  c.train = ml_collections.ConfigDict(dict(batch_size=32, eval_batch_size=96, group_size=4, cosine=True,
                                           traced_optimizer=True, image_size_start=6, image_size_end=8,
                                           epochs_at_max=7, bn_reestimate_batches=0))
  c.astrocytes = ml_collections.ConfigDict(dict(mode="as_described", ng=4, sensitivity=2.0))
  c.adam_weight_decay = False  # the author's code passes no weight decay to Adam
  c.evaluation = "vmap"  # or "loop": one individual at a time (the reference)
  # Baseline 1: one configuration (Gen-CNN's decoding) trained as `ingredients` copies from one shared
  # initialisation, budget / ingredients epochs each, uniformly averaged.
  c.uniform_soup = ml_collections.ConfigDict(dict(enabled=True, ingredients=9, architecture="small_cnn_m",
                                                  optimizer="adam", loss="cross_entropy", learning_rate_scale=1.0,
                                                  weight_decay=0.0))
  # Baseline 2: Gen-CNN and random search (dlbook.hpsearch.search) at the same budget; the generations
  # and the final epochs follow from it.
  c.gen_cnn = ml_collections.ConfigDict(dict(enabled=True, population_size=8, epochs=3, group_size=4,
                                             final_min_epochs=20))

  if preset == "smoke":
    c.seeds = (0,)
    c.pool = ("small_cnn_s",)
    c.ga.update(population_size=4, shrink_by=1, min_population=3, generations=2)
    c.train.update(batch_size=128, group_size=4, image_size_start=7, image_size_end=8, epochs_at_max=2)
    c.uniform_soup.update(ingredients=2, architecture="small_cnn_s")
    c.gen_cnn.update(population_size=2, epochs=1, group_size=2, final_min_epochs=2)
  elif preset == "full":
    c.seeds = (0,)
    c.data = common.data("image_folder:KVASIR-v2", val_fraction=0.1, channels=3)
    c.pool = THESIS_POOL
    c.ga.update(population_size=50, shrink_by=5, min_population=10, generations=19)
    c.train.update(batch_size=32, eval_batch_size=50, group_size=5, traced_optimizer=False, image_size_start=224,
                   image_size_end=302, epochs_at_max=10)
    c.uniform_soup.update(ingredients=10, architecture="shufflenet_v2_x2_0")
    c.gen_cnn.update(population_size=10, epochs=3, group_size=5, final_min_epochs=50)
  return c
