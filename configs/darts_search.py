"""DARTS architecture search (book ch. 3) with the paper's bilevel hyperparameters.

  python -m experiments.darts_search --config=configs/darts_search.py[:PRESET] --workdir=DIR [--config.key=value]

Writes genotype.json, normal.png / reduce.png (the derived cells), alphas.png, curves.png, TensorBoard
events and results.json into DIR; rerunning the same command resumes from the latest checkpoint.

Presets (the config argument):
- smoke: sklearn digits (8x8), a 3-cell supernet with 2 nodes per cell and 4 channels, 4 steps, first
  order (tests/test_darts_bilevel.py covers the second order on a network as small). For tests.
- cpu (default): Fashion-MNIST (28x28) from the Debian package, 6,000 training images split 3,000 /
  3,000 between w and alpha, a 5-cell supernet with C=8 (4 nodes, all 8 ops), batch 64, 10 epochs
  (460 steps), first order; measured 57 min on the 2 cores (docs/darts.md).
- full: the paper's search: CIFAR-10 through TFDS (prepared under data.data_dir), 25,000 / 25,000,
  the 8-cell C=16 supernet, batch 64, 50 epochs, second order (DARTS V2), for accelerators.

Hyperparameters from the paper (all presets): w by SGD momentum 0.9, lr 0.025 cosine to 0.001, weight
decay 3e-4, gradient clipping 5; alpha by Adam lr 3e-4, betas (0.5, 0.999), weight decay 1e-3.
`hessian` = exact (jax.grad through the unrolled step) | finite_difference (the reference's).
For a second-order search on CPU add `--config.order=2 --config.model.remat_edges=True`.
"""

import ml_collections

from configs import common

PRESETS = ("smoke", "cpu", "full")


def get_config(preset=None):
  preset = common.preset(preset, PRESETS, "darts_search.py")
  c = ml_collections.ConfigDict()
  c.preset = preset
  c.seed = 2  # the reference's default search seed
  c.data = common.data("fashion_mnist", val_fraction=0.5, limit_train=6000,
                       augment=dict(crop_pad=2, flip=False, rotation=0.0, cutout=0))
  c.model = ml_collections.ConfigDict(dict(init_channels=8, layers=5, steps=4, multiplier=4, stem_multiplier=3,
                                           conv_impl="auto", remat_edges=False))
  # conv_impl "auto": shifted slices on CPU (the same program as "shift"), grouped XLA convs on GPU/TPU
  # (docs/accelerators.md).
  # remat_edges: recompute each edge's mixed op in the backward pass (memory for compute). Second-order
  # DARTS needs it at batch 64 on a 24 GB host: XLA's temp buffers for the exact step of the 8-cell C=16
  # supernet measured 51.6 GB without it and 14.7 GB with it (docs/darts.md).
  c.optimizer = common.optimizer("sgd", 0.025, schedule="cosine", final_learning_rate=0.001, weight_decay=3e-4,
                                 grad_clip_norm=5.0)
  c.arch_optimizer = common.optimizer("adam", 3e-4, b1=0.5, weight_decay=1e-3)
  c.order = 1  # 1: first-order DARTS; 2: second order (Eq. 3.6)
  c.hessian = "exact"
  # passes (first order): "separate" = the alpha and weight passes as two differentiated programs;
  # "shared" = one program scanned over both batches (half the compile, plus the validation pass's weight
  # gradient at run time); "auto" = shared on GPUs/TPUs, separate on the CPU (docs/accelerators.md).
  c.passes = "auto"
  c.batch_size = 64
  c.eval_batch_size = 500
  c.eval_examples = 2000  # supernet evaluation on the first examples of the alpha half (0: all)
  c.num_epochs = 10
  c.num_train_steps = 0  # 0: derived from num_epochs
  c.log_every_steps = 10
  c.checkpoint_every_steps = 50
  c.eval_every_epochs = 2
  c.max_checkpoints = 3

  if preset == "smoke":
    c.data.name = "digits"
    c.data.limit_train = 0
    c.data.augment.crop_pad = 1
    c.model.update(init_channels=4, layers=3, steps=2, multiplier=2)
    c.batch_size = 32
    c.eval_batch_size = 128
    c.eval_examples = 0
    c.num_train_steps = 4
    c.log_every_steps = 2
    c.checkpoint_every_steps = 2
    c.eval_every_epochs = 1
  elif preset == "full":
    c.data.name = "tfds:cifar10"
    c.data.limit_train = 0
    c.data.augment = ml_collections.ConfigDict(dict(crop_pad=4, flip=True, rotation=0.0, cutout=0))
    c.model.update(init_channels=16, layers=8, remat_edges=True)
    c.order = 2
    c.num_epochs = 50
    c.eval_examples = 0
    c.log_every_steps = 50
    c.checkpoint_every_steps = 500
    c.eval_every_epochs = 5
  return c
