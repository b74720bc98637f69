"""ImageNet backbones (book ch. 9-13, seeds 001, 003, 004): importing this package registers them."""
import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
  importlib.import_module(f"{__name__}.{_module.name}")
