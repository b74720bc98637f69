"""`build(name, **kwargs) -> flax.linen.Module`: every model is reached by name."""

import flax.linen as nn

from dlbook.errors import DlbookError
from dlbook.registry import Registry

MODELS: Registry[nn.Module] = Registry("model")
register = MODELS.register


def build(name: str, **kwargs) -> nn.Module:
  """Builds the model registered as `name` with constructor arguments `kwargs`."""
  constructor = MODELS.get(name)
  try:
    return constructor(**kwargs)
  except TypeError as e:  # a wrong keyword is the user's error, not a bug
    raise DlbookError(f"model {name!r}: {e}") from None


def names():
  return MODELS.names()
