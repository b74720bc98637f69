"""Model registry. Models are pure `flax.linen` modules called as
`model.apply(variables, x, train=..., rngs={'dropout': key}, mutable=['batch_stats'])`.
Importing this package registers every model."""

from dlbook.models import chain_cnn as _chain_cnn  # noqa: F401  (registers)
from dlbook.models.chain_cnn import TABLE_2_1_GENOME, ChainCNN
from dlbook.models.registry import MODELS, build, names, register
