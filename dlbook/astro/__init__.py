"""Artificial astrocytes / CNGN experiments (thesis seed 001 ch. 4): the Str x Weak grid, the greedy
moving grid and the CNN-vs-CNN noise floor. The astrocyte wrapper itself is `dlbook.training.astrocytes`."""

from dlbook.astro.experiment import candidates, run_experiment, validate_config  # noqa: F401
from dlbook.astro.report import write_report  # noqa: F401
