"""Protein secondary structure prediction (book ch. 11): every model family of Tables 11.1-11.3.

  python -m experiments.pssp --config=configs/pssp.py[:smoke|cpu|full] --workdir=DIR \
      [--config.key=value ...] [--docs_dir=docs] [--report_only]

Trains the grid models x seeds (`dlbook.medical.pssp_experiment`), each run with early stopping on a
validation split of the training chains, then writes `table.md` (the layout of book Tables 11.1-11.3,
with the book's claims beside ours), the pictures and results.json into --workdir; with --docs_dir
also docs/pssp_results.md and docs/figures/pssp_*.png. Rerunning resumes: finished runs are skipped,
an interrupted one continues from its latest checkpoint.

Presets (the config argument):
- smoke: the real pdb_dssp chains, a 2-layer 1D-CNN at tiny widths, 2 epochs, 1 seed. Seconds plus
  compilation; for tests.
- cpu (default): the real pdb_dssp chains (one-hot residues; no PSSM profiles exist offline), all 14
  models of Tables 11.1-11.3 at reduced widths, 3 seeds: 42 runs. Adam 3e-3 (x 0.5 every 10 epochs),
  batch 8 (3 steps per epoch), at most 25 epochs, early stopping on the validation Q8 with patience 8
  epochs, BatchNorm momentum 0.9. Measured cost (docs/pssp.md): 2-4 min per 1D-CNN or recurrent run,
  ~12 min per cascaded run, longer for the two Inception-BGRUs, on 2 cores at a load average near 20;
  the 42 runs take several hours there. Models can be split over processes sharing one --workdir
  (--config.models=...), then --report_only writes the table.
- full: CB6133-filtered -> CB513 with the book's settings (one-hot + PSSM profiles, 42 features, 700
  residues; batch 64, dropout 0.4, Adam 1e-3 × 0.5 every 40 epochs, early stopping; the models' default
  widths). Needs the published files under --config.data.data_dir and an accelerator. Training on the
  unfiltered CB6133 to test on CB513 is refused (it contains CB513's proteins).
"""

import ml_collections
from ml_collections.config_dict import placeholder

from configs import common

PRESETS = ("smoke", "cpu", "full")
ALL_MODELS = ("cnn1d_2", "cnn1d_3", "cnn1d_3_357", "cnn1d_4", "cascaded_2", "cascaded_3",  # Table 11.1
              "rnn", "brnn", "lstm", "blstm", "gru", "bgru",  # Table 11.2
              "inception_bgru", "attention_inception_bgru")  # Table 11.3


def get_config(preset=None):
  preset = common.preset(preset, PRESETS, "pssp.py")
  c = ml_collections.ConfigDict()
  c.preset = preset
  c.models = ALL_MODELS
  c.seeds = (0, 1, 2)
  # data.train: a protein source by name (pdb_dssp, cb6133_filtered:PATH, ...); data.test: a separate test
  # set (cb513:PATH), empty for the training source's own test split. Relative paths are under data_dir.
  c.data = ml_collections.ConfigDict(dict(train="pdb_dssp", test="", data_dir=placeholder(str), features="onehot",
                                          max_length=600, val_fraction=0.1))
  # Widths where the book is silent (each model takes the ones it has; key_features 0 = the input width).
  c.widths = ml_collections.ConfigDict(dict(filters=42, filters_2d=4, units=32, inception_filters=16,
                                            conv_filters=32, dense_units=32, key_features=0, dropout=0.4,
                                            bn_momentum=0.9))
  c.rnn_impl = "flax"
  c.optimizer = common.optimizer("adam", 3e-3, schedule="step", decay_factor=0.5)
  c.lr_decay_every_epochs = 10  # book section 11.3 halves it every 40 epochs (the full preset); cpu: 10
  c.batch_size = 8
  c.eval_batch_size = 8
  c.max_epochs = 25
  c.eval_every_epochs = 1
  c.early_stopping = ml_collections.ConfigDict(dict(monitor="q8", patience_epochs=8, min_delta=0.0))
  c.label_smoothing = 0.0
  c.checkpoint_every_epochs = 10
  c.max_checkpoints = 2
  c.figure_model = "attention_inception_bgru"  # the model whose confusion matrices and strips the report shows
  c.strip_count = 4
  c.strip_max_length = 150

  if preset == "smoke":
    c.models = ("cnn1d_2",)
    c.seeds = (0,)
    c.widths.filters = 8
    c.widths.units = 8
    c.max_epochs = 2
    c.checkpoint_every_epochs = 1
    c.early_stopping.patience_epochs = 5
    c.figure_model = "cnn1d_2"
    c.strip_count = 2
  elif preset == "full":
    c.data.train = "cb6133_filtered:cullpdb+profile_6133_filtered.npy.gz"
    c.data.test = "cb513:cb513+profile_split1.npy.gz"
    c.data.features = "onehot+profile"
    c.data.max_length = 700
    c.data.val_fraction = 0.05  # ~277 proteins of the 5,534, at random (CB6133 is culled at 25% identity)
    c.widths = ml_collections.ConfigDict(dict(filters=42, filters_2d=4, units=128, inception_filters=64,
                                              conv_filters=128, dense_units=128, key_features=0, dropout=0.4,
                                              bn_momentum=0.99))
    c.optimizer.learning_rate = 1e-3
    c.batch_size = 64
    c.eval_batch_size = 64
    c.lr_decay_every_epochs = 40
    c.max_epochs = 200
    c.early_stopping.patience_epochs = 20
    c.checkpoint_every_epochs = 5
  return c
