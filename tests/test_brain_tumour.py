"""Brain-tumour pipeline (book ch. 13): patient-disjoint folds on the Figshare layout and the stand-in,
metrics against scikit-learn, the Grad-CAM/tumorMask overlap and the model cost on hand-built cases,
bad input as one line, and the launcher end to end with resume (slow)."""

import json
import os
import shutil
import statistics
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import precision_recall_fscore_support, roc_auc_score

from configs import brain_tumour as brain_config
from dlbook.errors import DlbookError
from dlbook.medical import brain_tumour, gradcam
from dlbook.models import weights
from dlbook.training import transfer
from tests.conftest import run_launcher
from tests.test_medical_images import PATIENTS, make_figshare


def smoke(data_dir, **overrides):
  config = brain_config.get_config("smoke")
  config.data.data_dir = str(data_dir)
  for k, v in overrides.items():
    config[k] = v
  return config


def assert_folds_patient_disjoint(data):
  tested = np.concatenate([te for _, te in data.folds])
  assert sorted(tested) == list(range(len(data.y)))  # every image is tested exactly once
  for tr, te in data.folds:
    assert not set(data.groups[tr]) & set(data.groups[te])
    assert len(tr) + len(te) == len(data.y)


def test_figshare_tree_cross_validates_over_the_cvind_folds(tmp_path):
  make_figshare(tmp_path / "fig", shape=(20, 20))
  data = brain_tumour.Data(smoke(tmp_path / "fig"))
  assert data.x.shape == (20, 24, 24, 3) and 0.0 <= data.x.min() and data.x.max() <= 1.0
  assert data.class_names == ("meningioma", "glioma", "pituitary") and data.stand_in == ""
  assert data.fold_source == "cvind.mat" and len(data.folds) == 5
  assert_folds_patient_disjoint(data)
  for k, (_, te) in enumerate(data.folds):  # cvind: patient i -> fold i % 5 + 1
    assert set(data.groups[te]) == {PATIENTS[k][0], PATIENTS[k + 5][0]}
  masks = data.masks(data.folds[0][1])
  assert masks.shape == (4, 24, 24) and masks.any()
  assert data.info["denoise"] == ["median", "wiener"]


def test_figshare_without_cvind_gets_grouped_folds_and_stand_in_is_labelled(tmp_path):
  make_figshare(tmp_path / "fig", shape=(20, 20), with_cvind=False)
  data = brain_tumour.Data(smoke(tmp_path / "fig"))
  assert data.fold_source == "grouped stratified 5 folds on PID (seed 0)" and len(data.folds) == 5
  assert_folds_patient_disjoint(data)
  cpu = brain_tumour.Data(brain_config.get_config("cpu"))
  assert cpu.stand_in == "stand-in data" and cpu.info["stand_in"] == "stand-in data"
  assert cpu.class_names == ("digit 3", "digit 5", "digit 8") and cpu.x.shape[1:] == (32, 32, 3)
  assert cpu.fold_source == "patient-grouped stratified folds (seed 0)"
  assert_folds_patient_disjoint(cpu)
  for _, te in cpu.folds:
    assert set(cpu.y[te]) == {0, 1, 2}


def test_fold_metrics_match_sklearn():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 3, 60)
  probs = rng.dirichlet([1, 1, 1], 60)
  probs[np.arange(60), labels] += rng.random(60)  # better than chance, not perfect
  probs /= probs.sum(axis=1, keepdims=True)
  m = brain_tumour._fold_metrics(probs, labels, ("a", "b", "c"))
  p, r, f, s = precision_recall_fscore_support(labels, probs.argmax(axis=1), labels=[0, 1, 2], zero_division=0)
  for k, row in enumerate(m["per_class"]):
    assert (row["precision"], row["recall"], row["f1"], row["support"]) == pytest.approx((p[k], r[k], f[k], s[k]))
    assert row["roc_auc"] == pytest.approx(roc_auc_score(labels == k, probs[:, k]))
  assert m["f1_macro"] == pytest.approx(f.mean()) and m["precision_macro"] == pytest.approx(p.mean())
  assert m["roc_auc_macro"] == pytest.approx(roc_auc_score(labels, probs, multi_class="ovr"))


def test_the_books_printed_f_scores_are_not_the_harmonic_means_of_its_precision_and_recall():
  for name, (p, r, printed) in brain_tumour.BOOK_PER_CLASS.items():
    f1 = brain_tumour.implied_f1(p, r)
    assert f1 == pytest.approx(statistics.harmonic_mean([p, r]))
    assert abs(printed - f1) > 0.5, name  # 95.42 vs 95.94, 90.56 vs 94.11, 92.80 vs 93.70
  assert brain_tumour.implied_f1(95.02, 96.87) == pytest.approx(95.936, abs=1e-3)


class Identity(nn.Module):
  @nn.compact
  def __call__(self, x):
    return x


class MaskNet(nn.Module):
  """features = the image itself -> GAP -> dense: Grad-CAM of class 0 is ReLU(w0 · x) / (H·W)."""

  @nn.compact
  def __call__(self, x, train=False):
    a = Identity(name="features")(x)
    return nn.Dense(2, name="head")(a.mean(axis=(1, 2)))


def test_gradcam_mask_overlap_on_a_hand_built_case():
  image = np.zeros((1, 8, 8, 1), np.float32)
  image[0, 2:6, 2:6] = 1.0  # a bright 4x4 square: the only place the map can be non-zero
  model = MaskNet()
  variables = {"params": {"head": {"kernel": jnp.array([[1.0, -1.0]]), "bias": jnp.zeros(2)}}}
  cams, cls = gradcam.gradcam(model, variables, jnp.asarray(image), "features", upsample=False)
  assert int(cls[0]) == 0
  np.testing.assert_allclose(cams[0], image[0, ..., 0], atol=1e-6)  # normalised: 1 on the square, 0 elsewhere
  half = np.zeros((1, 8, 8), bool)
  half[0, 2:6, 2:4] = True       # half of the square: half of the mass
  outside = np.zeros((1, 8, 8), bool)
  outside[0, 6:, :] = True       # off the square: none of it
  everything = np.ones((1, 8, 8), bool)
  o = gradcam.mask_overlap(cams, half)
  assert o["mass_in_mask"] == pytest.approx([0.5]) and o["mask_area_fraction"] == pytest.approx([8 / 64])
  assert o["ratio"] == pytest.approx([4.0])
  assert gradcam.mask_overlap(cams, outside)["mass_in_mask"] == pytest.approx([0.0])
  assert gradcam.mask_overlap(cams, everything)["ratio"] == pytest.approx([1.0])  # uniform share


class OneConv(nn.Module):
  @nn.compact
  def __call__(self, x, train=False):
    return nn.Conv(16, (3, 3), padding="SAME", use_bias=False)(x).mean()


def test_model_cost_counts_the_multiplications_of_a_known_convolution():
  model = OneConv()
  variables = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
  cost = transfer.model_cost(types.SimpleNamespace(model=model), variables, 8, repeats=3, warmup=1)
  assert cost["parameters"] == 3 * 3 * 3 * 16
  assert cost["size_mb"] == pytest.approx(3 * 3 * 3 * 16 * 4 / 1e6)
  # XLA counts the taps that fall inside the image (SAME padding's zeros are not multiplied): along each
  # axis 2 + 3 * 6 + 2 = 22 of the 8 x 3 taps, for 3 input x 16 output channels; then the mean's 1,024 additions
  assert cost["macs_xla"] == pytest.approx(22 * 22 * 3 * 16 + 8 * 8 * 16 / 2, abs=1)
  assert cost["latency_ms_median"] > 0 and cost["latency_repeats"] == 3


def test_bad_input_is_one_line_before_anything_is_written(tmp_path):
  def fails(config, match, workdir=tmp_path / "run"):
    with pytest.raises(DlbookError, match=match) as e:
      brain_tumour.train_and_evaluate(config, str(workdir))
    assert "\n" not in str(e.value)
    assert not os.path.exists(os.path.join(workdir, "config.json"))

  make_figshare(tmp_path / "fig", shape=(20, 20))
  fails(smoke(tmp_path / "fig", model="mobilenet_v9"), "unknown backbone 'mobilenet_v9'")
  config = smoke(tmp_path / "fig")
  config.data.data_dir = None
  fails(config, "data.data_dir must name the Figshare folder")
  fails(smoke(tmp_path / "nowhere"), "does not exist")
  bad = tmp_path / "bad"
  shutil.copytree(tmp_path / "fig", bad)
  (bad / "brainTumorDataPublic_1-10" / "3.mat").write_bytes(b"MATLAB 5.0 MAT-file, not HDF5")
  fails(smoke(bad), r"3\.mat is not a MATLAB v7\.3")
  other = tmp_path / "other.safetensors"  # a dlbook file of another model
  weights.save_variables(str(other), {"params": {"stem": {"kernel": np.zeros((3, 3, 3, 16), np.float32)}}},
                         model_name="mobilenet_v2")
  fails(smoke(tmp_path / "fig", weights=str(other)), "holds 'mobilenet_v2' weights, not 'squeezenet1_1'")
  wrong = tmp_path / "wrong.safetensors"  # the right model, most of its tensors missing
  weights.save_variables(str(wrong), {"params": {"stem": {"kernel": np.zeros((3, 3, 3, 8), np.float32)}}},
                         model_name="squeezenet1_1")
  fails(smoke(tmp_path / "fig", weights=str(wrong)), "the backbone leaf params/fire0.* is missing from the file")
  config = smoke(tmp_path / "fig", weights=str(wrong))
  config.pretrain.steps = 5
  fails(config, "not both")


def test_launcher_bad_input_is_one_line_and_exit_2(tmp_path):
  out = run_launcher("experiments.brain_tumour", "--config=configs/brain_tumour.py:smoke",
                     f"--workdir={tmp_path / 'run'}")
  assert out.returncode == 2
  assert out.stderr.strip().splitlines()[-1].startswith("error: data.data_dir must name the Figshare folder")


@pytest.mark.slow
def test_launcher_smoke_on_a_figshare_tree_and_resume(tmp_path):
  make_figshare(tmp_path / "fig", shape=(32, 32))
  workdir, docs = tmp_path / "run", tmp_path / "docs"
  args = ["--config=configs/brain_tumour.py:smoke", f"--config.data.data_dir={tmp_path / 'fig'}",
          f"--workdir={workdir}", f"--docs_dir={docs}"]
  out = run_launcher("experiments.brain_tumour", *args)
  assert out.returncode == 0, out.stderr[-3000:]
  report = json.loads((workdir / "results.json").read_text())
  assert report["stand_in"] == "" and len(report["folds"]) == 5
  assert (docs / "brain_tumour_table.md").read_text() == report["table"] == (workdir / "table.md").read_text()
  for name in ("brain_tumour_smoke_confusion.png", "brain_tumour_smoke_gradcam.png"):
    assert (docs / "figures" / name).stat().st_size > 1000 and (workdir / name).is_file()
  assert "| glioma | 95.02 | 96.87 | 95.42 | 95.94 | -0.52 |" in report["table"]
  assert report["cost"]["parameters"] > 0 and report["cost"]["macs_xla"] > 0
  # the pooled confusion matrix is the sum of the folds' and counts every slice once
  folds = [json.loads((workdir / f"fold_{k}" / "results.json").read_text()) for k in range(5)]
  assert np.sum([f["test_confusion_matrix"] for f in folds], axis=0).tolist() == report["pooled"]["confusion_matrix"]
  assert np.sum(report["pooled"]["confusion_matrix"]) == 20
  for f in folds:  # Grad-CAM against tumorMask on every held-out slice of every fold
    assert 0.0 <= f["gradcam_overlap"]["mass_in_mask"] <= 1.0
    assert f["gradcam_overlap"]["mask_area_fraction"] == pytest.approx(0.02, abs=0.01)
  first = json.loads((workdir / "fold_4" / "results.json").read_text())

  # a kill during fold 4: its results and last checkpoint gone, the report not written
  os.remove(workdir / "fold_4" / "results.json")
  os.remove(workdir / "results.json")
  steps = sorted(int(p.name) for p in (workdir / "fold_4" / "checkpoints").iterdir() if p.name.isdigit())
  assert steps == [2, 3]
  shutil.rmtree(workdir / "fold_4" / "checkpoints" / "3")
  out = run_launcher("experiments.brain_tumour", *args)
  assert out.returncode == 0, out.stderr[-3000:]
  again = json.loads((workdir / "fold_4" / "results.json").read_text())
  assert again["resumed_from_step"] == 2 and first["resumed_from_step"] == 0
  assert again["test"] == first["test"] and again["test_confusion_matrix"] == first["test_confusion_matrix"]
  assert json.loads((workdir / "results.json").read_text())["mean"] == report["mean"]
