"""Evolutionary NAS over the cell-based space of book ch. 2 (one-hot operation per edge, Fig. 2.2).

  python -m experiments.evolve --config=configs/evolve_cell.py[:smoke|cpu|full] --workdir=DIR \
      [--config.key=value ...]

Rerunning with the same --workdir resumes at the last finished generation. The data, GA and
fitness settings of each preset are those of configs/evolve_chain.py; the space is a 4-node cell
(6 edges, ops none / skip / max-pool / avg-pool / conv 3x3 / conv 5x5) reused by every cell.

Presets (the config argument):
- smoke: digits, population 4, 2 generations; 3-node cell, 8 channels. For tests.
- cpu (default): Fashion-MNIST subset at 14x14, population 16, 8 generations of 8 offspring,
  2 stages of 1 cell at 16 channels, the population sharded over the 2 CPU cores. A few minutes on
  2 idle cores (docs/nas_evolution.md has the measured run).
- full: CIFAR-10 through TFDS, 3 stages of 2 cells at 36 channels, each cell its own genes; for accelerators.
"""

from configs.evolve_chain import PRESETS, base_config  # noqa: F401

import ml_collections


def get_config(preset=None):
  c = base_config(preset, "configs/evolve_cell.py")
  c.space = ml_collections.ConfigDict(dict(
      name="cell", ops=("none", "skip_connect", "max_pool_3x3", "avg_pool_3x3", "conv_3x3", "conv_5x5"),
      num_nodes=4, channels=16, num_stages=2, cells_per_stage=1, distinct_cells=False, conv_impl="taps"))
  if c.preset == "cpu":
    # Measured on the 2 CPU cores (benchmarks/ga_population.py --config=configs/evolve_cell.py:cpu, P=8,
    # docs/nas_evolution.md): patches, the population sharded over the 2 cores, one individual
    # at a time per core: 19.5 s against 28.1 s for the fastest loop (patches) and 34.6 s for the taps loop.
    c.space.conv_impl = "patches"
    c.cpu_devices = 2  # vmap_microbatch "auto" is then 1 (on a GPU/TPU 0: the split only applies to CPUs)
  elif c.preset == "smoke":
    c.space.num_nodes = 3
    c.space.channels = 8
    c.space.num_stages = 1
  elif c.preset == "full":
    c.space.conv_impl = "auto"  # xla on GPUs/TPUs (under vmap one grouped native conv), patches on the CPU
    c.space.channels = 36
    c.space.num_stages = 3
    c.space.cells_per_stage = 2
    c.space.distinct_cells = True
  return c
