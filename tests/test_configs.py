"""Every config field can be set from the command line, including optional ones (default None)."""

import glob
import importlib
import os
import shutil

import pytest
from ml_collections.config_dict import FieldReference

from dlbook.training.sharding import data_mesh  # noqa: F401  (imports JAX as the launchers do)
from tests.conftest import ROOT, run_launcher

FASHION = "/usr/share/datasets/fashion-mnist"


def config_modules():
  return sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
                if not os.path.basename(p).startswith(("_", "common")))


def presets(module):
  if module == "gan":
    return [f"{g},{p}" for g in module_obj(module).GANS for p in module_obj(module).PRESETS]
  return list(getattr(module_obj(module), "PRESETS", [None]))


def module_obj(name):
  return importlib.import_module(f"configs.{name}")


def plain_none_fields(config, prefix=""):
  """Dotted keys whose default is a plain None (which ml_collections cannot override from flags)."""
  out = []
  for key in config.keys():
    field = config._fields[key]  # a FieldReference for placeholders, else the raw value
    if hasattr(field, "keys"):
      out += plain_none_fields(field, f"{prefix}{key}.")
    elif field is None:
      out.append(prefix + key)
    elif isinstance(field, FieldReference) and field.get() is None:
      assert field.get_type() is not None, prefix + key
  return out


@pytest.mark.parametrize("module", config_modules())
def test_no_config_field_is_a_plain_none(module):
  for preset in presets(module):
    config = module_obj(module).get_config(preset)
    assert plain_none_fields(config) == [], f"configs/{module}.py:{preset}"


@pytest.mark.skipif(not os.path.exists(os.path.join(FASHION, "train-labels-idx1-ubyte.gz")),
                    reason="the Debian package dataset-fashion-mnist is not installed")
def test_data_dir_is_set_from_the_command_line(tmp_path):
  copy = tmp_path / "fmnist"
  shutil.copytree(FASHION, copy)
  args = ["--config=configs/classify.py:fashion_mnist", f"--config.data.data_dir={copy}",
          "--config.num_train_steps=3", "--config.data.limit_train=600", "--config.data.limit_test=500",
          "--config.eval_batch_size=500", "--config.checkpoint_every_steps=3"]
  proc = run_launcher("experiments.train", *args, f"--workdir={tmp_path / 'run'}")
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert str(copy) in (tmp_path / "run" / "results.json").read_text()  # the data came from the copy
  os.remove(copy / "t10k-labels-idx1-ubyte.gz")
  proc = run_launcher("experiments.train", *args, f"--workdir={tmp_path / 'other'}")
  assert proc.returncode == 2 and "t10k-labels-idx1-ubyte.gz" in proc.stderr.strip().splitlines()[-1]


@pytest.mark.slow  # long: runs with DLBOOK_SLOW=1 (keeps the CI suite in its time budget)
def test_step_schedule_is_configurable_from_the_command_line(tmp_path):
  proc = run_launcher("experiments.train", "--config=configs/classify.py:smoke", "--config.num_train_steps=4",
                      "--config.optimizer.schedule=step", "--config.optimizer.decay_every_steps=2",
                      "--config.optimizer.decay_factor=0.5", f"--workdir={tmp_path}")
  assert proc.returncode == 0, proc.stderr[-2000:]
