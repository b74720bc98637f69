"""Model registry. Models are pure `flax.linen` modules called as
`model.apply(variables, x, train=..., rngs={'dropout': key}, mutable=['batch_stats'])`.

Importing this package imports every module in it, so each registers its models
with `@register(name)`; `build(name, **kwargs)` then constructs one.
"""

import importlib
import pkgutil

from dlbook.models.registry import MODELS, build, names, register

for _module in pkgutil.iter_modules(__path__):
  importlib.import_module(f"{__name__}.{_module.name}")

from dlbook.models.chain_cnn import TABLE_2_1_GENOME, ChainCNN  # noqa: E402
