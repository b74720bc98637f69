"""Multiple secret messages for two receivers (book ch. 8, Tables 8.1-8.3).

  python -m experiments.stego --config=configs/stego_multi.py[:PRESET] --workdir=DIR \
      [--config.embedding=conventional|early|mid|late] [--config.payload_bpp=2] [--config.seed=1]

The payload is split equally between the two messages (2 bpp = two 4096-bit messages, §8.2.2).
Presets are those of configs/stego_two_stage.py (smoke / cpu on photos64 / full on CelebA with the
book's sizes and batch 32); every other key is shared with it, except that the cpu preset gives each
of the two extractors the narrower widths (32, 64, 64, 64) and the same 2000 steps (run time not yet measured;
the two narrow extractors together cost less than the single wide one of the two-stage cpu preset).
"""

from configs import common
from configs.stego_two_stage import PRESETS, base_config


def get_config(preset=None):
  c = base_config(common.preset(preset, PRESETS, "stego_multi.py"))
  c.method = "multi_message"
  c.num_messages = 2
  c.payload_bpp = 2.0
  c.embedding = "late"
  if c.preset == "cpu":  # two extractors: each narrower than the single one of ch. 7, to keep the run time
    c.extractor.channels = (32, 64, 64, 64)
  return c
