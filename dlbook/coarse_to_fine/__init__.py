"""Coarse-to-fine training with simple and progression-based selective freezing (book ch. 4)."""

from dlbook.coarse_to_fine.grid import GRID_KEYS, Run, grid_runs, run_grid, validate_config
from dlbook.coarse_to_fine.report import write_report
