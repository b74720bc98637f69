"""Pan-cancer classification from gene expression with an ensemble of CNNs (book ch. 12).

  python -m experiments.pancancer --config=configs/pancancer.py[:PRESET] --workdir=DIR \
      [--config.key=value ...] [--docs_dir=docs] [--report_only]

Every (repeat, fold) split trains each base model (DenseNet-201, ResNet50, Inception-V3, Xception from
the backbone registry, 1-channel expression images, head GAP → dropout 0.5 → dense with L2) and the
logistic-regression and linear-SVM baselines; the report aggregates the base models with hard,
average, "soft" and weighted-average voting (weights: validation macro-F1).

Presets (the config argument):
- smoke: the whole pipeline at toy scale (compute in seconds, but the four base models' XLA:CPU
  compiles take minutes; the CI test swaps in --config.base_models="('chain_cnn',)"); 2 folds, tiny widths, a 16x16 image (the 256 most
  variable genes), 2 epochs. Default data: the real Chiaretti ALL set (tests point it at a generated
  TCGA-layout folder with --config.data.name=tcga_pancancer:DIR).
- cpu (default): the real Chiaretti et al. adult ALL arrays (Debian r-bioc-all; 128 patients,
  12,625 probe sets), molecular subtype (`mol_biol`) with the two one-patient classes (NUP-98,
  p15/p16) dropped: ALL1/AF4 10, BCR/ABL 37, E2A/PBX1 5, NEG 74. 5 grouped stratified folds x 1
  repeat, 25 % of each training part validates. Image: the 4,096 most variable probe sets of the
  training part (64x64). Base models at reduced widths (DenseNet-201 growth 8, the others width
  1/8); Adam 1e-3 halved every 10 epochs, batch 16, at most 25 epochs, patience 7. Measured cost:
  did not finish on 2 heavily shared cores (DenseNet-201's XLA:CPU compiles alone exceeded 45 min);
  with --config.base_models="('chain_cnn',)" about 11 min per CNN unit there (docs/pancancer.md).
- full: the book's setting on a user's TCGA Pan-Cancer folder (set --config.data.name=tcga_pancancer:DIR):
  log2(x+1), the 10,381 most variable genes (102x102, the book's shape), full-width base models,
  Adam 1e-4 halved every 40 epochs, batch 128, at most 300 epochs, early stopping patience 7 (book §12.3),
  5 folds, 10 % validation. For an accelerator.
"""

import ml_collections
from ml_collections.config_dict import placeholder

from configs import common

PRESETS = ("smoke", "cpu", "full")


def get_config(preset=None):
  preset = common.preset(preset, PRESETS, "pancancer.py")
  c = ml_collections.ConfigDict()
  c.preset = preset
  # The source's keyword options travel as they are (label for chiaretti_all; expression_file,
  # types_file, annotation_file for tcga_pancancer); None ones are not passed.
  c.data = ml_collections.ConfigDict(dict(name="chiaretti_all", data_dir=placeholder(str), label=placeholder(str),
                                          min_class_size=5, expression_file=placeholder(str)))
  c.data.label = "mol_biol"
  c.transform = ml_collections.ConfigDict(dict(log_transform="auto", variance_threshold=placeholder(float),
                                               top_k=placeholder(int), scale="none"))
  c.transform.top_k = 4096
  c.splits = ml_collections.ConfigDict(dict(n_folds=5, repeats=(0,), val_fraction=0.25))
  c.base_models = ("densenet201", "resnet50", "inception_v3", "xception")
  # Small widths for the CPU preset; 64x64 inputs keep the standard strided stems (Inception-V3's
  # valid-padded stem needs stride 1 below 75 px).
  c.model_kwargs = ml_collections.ConfigDict(dict(
      densenet201=dict(growth=8, init_features=16), resnet50=dict(width=0.125),
      inception_v3=dict(width=0.125, stem_stride=1), xception=dict(width=0.125)))
  c.head = ml_collections.ConfigDict(dict(dropout=0.5, l2=0.01))  # book §12.3; 0.01 is Keras' L2 default
  c.train = ml_collections.ConfigDict(dict(batch_size=16, eval_batch_size=64, learning_rate=1e-3, decay_factor=0.5,
                                           decay_every_epochs=10, max_epochs=25, patience=7, class_weights=True,
                                           checkpoint_every_epochs=5))
  c.aggregators = ("hard", "average", "soft", "weighted_average")
  c.baselines = ("logistic_regression", "linear_svm")
  c.baseline_c_grid = (0.001, 0.01, 0.1, 1.0)
  c.log_every_steps = 20
  c.docs_name = "pancancer_results"

  if preset == "smoke":
    c.data.min_class_size = 5
    c.transform.top_k = 256  # 16x16
    c.splits = ml_collections.ConfigDict(dict(n_folds=2, repeats=(0,), val_fraction=0.25))
    c.model_kwargs = ml_collections.ConfigDict(dict(
        densenet201=dict(growth=2, init_features=4, stem_stride=1, stem_pool=False),
        resnet50=dict(width=0.03125, stem_stride=1, stem_pool=False),
        inception_v3=dict(width=0.03125, stem_stride=1, stem_pool=False),
        xception=dict(width=0.03125, stem_stride=1),
        # A cheap registry CNN the CI test swaps in (--config.base_models="('chain_cnn',)").
        chain_cnn=dict(conv_filters=(4, 8), dense_units=(16,))))
    c.train.update(dict(batch_size=4, eval_batch_size=16, max_epochs=2, patience=1, checkpoint_every_epochs=1,
                        decay_every_epochs=1))
    c.baseline_c_grid = (0.1, 1.0)
    c.log_every_steps = 2
    c.docs_name = "pancancer_smoke"
  elif preset == "full":
    c.data = ml_collections.ConfigDict(dict(name="tcga_pancancer:tcga_pancancer", data_dir=placeholder(str),
                                            label=placeholder(str), min_class_size=10,
                                            expression_file=placeholder(str)))
    c.transform.top_k = 10381  # the book's 10,381 genes -> 102x102
    c.splits = ml_collections.ConfigDict(dict(n_folds=5, repeats=(0,), val_fraction=0.1))
    c.model_kwargs = ml_collections.ConfigDict(dict(densenet201={}, resnet50={}, inception_v3={}, xception={}))
    c.train.update(dict(batch_size=128, eval_batch_size=256, learning_rate=1e-4, decay_every_epochs=40,
                        max_epochs=300, checkpoint_every_epochs=5))
    c.baseline_c_grid = (0.0001, 0.001, 0.01, 0.1, 1.0)
    c.log_every_steps = 50
    c.docs_name = "pancancer_full"
  return c
