"""The hiding model shipped with `dlbook-stego` (dlbook/stego/hider.py, hider_train.py).

  python -m experiments.stego_tool_train --config=configs/stego_tool.py[:PRESET] --workdir=DIR

The trained model is exported to DIR/model (params.npz, config.json, results.json); the
shipped one in dlbook/assets/stego/default was made with the `cpu` preset (its command.txt
gives the exact command). Presets:
- smoke: 20 steps of 8 crops, 16 test tiles; seconds. For tests.
- cpu (default): photos64, basic encoder/decoder with 32 channels at 1 bpp, 2,400 steps of
  16 random 32×32 crops; 8-25 min on 2 shared CPU cores (depending on their load).
- full: 64×64 crops, 48 channels, batch 32, 40,000 steps; for accelerators.
`--config.model.payload_bpp=2` (or 3) and `--config.model.architecture=dense` train the
candidates compared in docs/stego_tool.md.
"""

import ml_collections

from configs import common

PRESETS = ("smoke", "cpu", "full")


def get_config(preset=None):
  preset = common.preset(preset, PRESETS, "stego_tool.py")
  c = ml_collections.ConfigDict()
  c.preset = preset
  c.seed = 0
  c.data = common.data("photos64", normalization="symmetric", val_fraction=0.0)
  c.model = ml_collections.ConfigDict(dict(architecture="basic", hidden=32, payload_bpp=1))
  c.optimizer = common.optimizer("adam", 1e-3, schedule="cosine", final_learning_rate=1e-5, warmup_steps=100,
                                 grad_clip_norm=1.0)
  c.batch_size = 16
  c.train_crop = 32  # random crops of the 64x64 covers; the model is fully convolutional
  c.num_train_steps = 2400
  c.mse_weight = 30.0  # on images in [-1, 1]
  c.rs_margin = 3.0  # Reed-Solomon parity: margin x expected byte errors (payload.choose_parity)
  c.limit_eval_tiles = 0  # 0: every test crop
  c.log_every_steps = 50
  c.checkpoint_every_steps = 200
  c.max_checkpoints = 2

  if preset == "smoke":
    c.model.hidden = 8
    c.batch_size = 8
    c.num_train_steps = 20
    c.optimizer.warmup_steps = 0
    c.limit_eval_tiles = 16
    c.log_every_steps = 5
    c.checkpoint_every_steps = 10
  elif preset == "full":
    c.model.hidden = 48
    c.batch_size = 32
    c.train_crop = 64
    c.num_train_steps = 40000
    c.optimizer.warmup_steps = 500
    c.log_every_steps = 200
    c.checkpoint_every_steps = 2000
  return c
