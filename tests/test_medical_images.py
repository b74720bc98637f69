"""Figshare brain-tumour (.mat v7.3) and C-NMC 2019 loaders on generated files in the published layouts."""

import os

import h5py
import numpy as np
import pytest
from PIL import Image

from dlbook.data import load_raw
from dlbook.data.medical_images import figshare_masks, read_figshare_slice
from dlbook.data.transforms import denoise, min_max
from dlbook.errors import DlbookError


def write_mat73(path, variables):
  """A MATLAB v7.3 file: HDF5 with a 512-byte user block holding MATLAB's 128-byte header."""
  with h5py.File(path, "w", userblock_size=512) as f:
    for name, value in variables.items():
      if isinstance(value, dict):
        group = f.create_group(name)
        group.attrs["MATLAB_class"] = np.bytes_("struct")
        for key, (array, cls) in value.items():
          d = group.create_dataset(key, data=array)
          d.attrs["MATLAB_class"] = np.bytes_(cls)
      else:
        f.create_dataset(name, data=value).attrs["MATLAB_class"] = np.bytes_("double")
  text = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2018 HDF5 schema 1.00 ."
  with open(path, "r+b") as f:
    f.write(text.ljust(116, b" ") + b"\0" * 8 + b"\x00\x02" + b"IM")


def write_slice(path, image, label, pid, mask):
  """`image` and `mask` in MATLAB orientation; stored transposed, as MATLAB writes column-major arrays."""
  write_mat73(path, {"cjdata": {
      "label": (np.array([[float(label)]]), "double"),
      "PID": (np.array([[ord(c)] for c in pid], np.uint16), "char"),
      "image": (np.ascontiguousarray(image.T).astype(np.int16), "int16"),
      "tumorBorder": (np.array([[3.0, 4.0, 5.0, 6.0]]).T, "double"),
      "tumorMask": (np.ascontiguousarray(mask.T).astype(np.uint8), "logical")}})


PATIENTS = [("100360", 1), ("100361", 1), ("MR040", 2), ("MR041", 2), ("112649", 3), ("112650", 3),
            ("99001", 2), ("99002", 3), ("99003", 1), ("99004", 2)]


def make_figshare(root, shape=(12, 20), leak=False, with_cvind=True):
  """Ten patients with 2 slices each in two part-folders; cvind: patient i -> fold i % 5 + 1."""
  rng = np.random.default_rng(0)
  images, n = {}, 0
  cvind = []
  for i, (pid, label) in enumerate(PATIENTS):
    for _ in range(2):
      n += 1
      image = rng.integers(0, 900, shape).astype(np.int16)
      image[0, :] = 2000  # a bright first row tells the orientation
      mask = np.zeros(shape, bool)
      mask[2:6, 3 + i % 4:9] = True
      part = os.path.join(root, "brainTumorDataPublic_1-10" if n <= 10 else "brainTumorDataPublic_11-20")
      os.makedirs(part, exist_ok=True)
      write_slice(os.path.join(part, f"{n}.mat"), image, label, pid, mask)
      images[n] = (image, mask)
      cvind.append(i % 5 + 1)
  if leak:
    cvind[1] = 3 if cvind[1] != 3 else 4  # patient 100360's second slice in another fold
  if with_cvind:
    write_mat73(os.path.join(root, "cvind.mat"), {"cvind": np.array([cvind], np.float64)})
  return images


def test_figshare_layout_orientation_folds_and_masks(tmp_path):
  images = make_figshare(tmp_path)
  raw = load_raw(f"figshare_brain:{tmp_path}", image_size=None)
  assert raw.x_train.shape == (16, 12, 20, 1) and raw.x_test.shape == (4, 12, 20, 1)
  assert raw.class_names == ("meningioma", "glioma", "pituitary")
  assert set(raw.folds_train) == {1, 2, 3, 4} and raw.info["folds"] == "cvind.mat"
  assert set(raw.groups_test) == {"112649", "99004"}  # patients 5 and 10 -> fold 5
  assert not set(raw.groups_train) & set(raw.groups_test)
  first = list(raw.samples_train).index(os.path.join("brainTumorDataPublic_1-10", "1.mat"))
  np.testing.assert_allclose(raw.x_train[first, ..., 0], min_max(images[1][0]), atol=1e-6)  # not transposed
  assert raw.y_train[first] == 0 and raw.groups_train[first] == "100360"
  s = read_figshare_slice(os.path.join(tmp_path, raw.samples_test[0]), with_mask=True)
  assert s["image"].shape == (12, 20) and s["mask"].shape == (12, 20)
  masks = figshare_masks(str(tmp_path), raw.samples_test, image_size=None)
  number = int(os.path.basename(raw.samples_test[0])[:-4])
  np.testing.assert_array_equal(masks[0], images[number][1])


def test_figshare_denoise_and_resize(tmp_path):
  images = make_figshare(tmp_path)
  raw = load_raw(f"figshare_brain:{tmp_path}", image_size=8, denoise_steps=("median", "wiener"), test_fold=1)
  assert raw.x_train.shape[1:] == (8, 8, 1) and raw.x_train.dtype == np.float32
  assert 0.0 <= raw.x_train.min() and raw.x_train.max() <= 1.0
  from skimage.transform import resize
  first = list(raw.samples_test).index(os.path.join("brainTumorDataPublic_1-10", "1.mat"))
  ref = resize(denoise(images[1][0], ("median", "wiener")), (8, 8), order=1, anti_aliasing=True, preserve_range=True)
  np.testing.assert_allclose(raw.x_test[first, ..., 0], ref, atol=1e-6)


def test_figshare_grouped_folds_without_cvind(tmp_path):
  make_figshare(tmp_path, with_cvind=False)
  raw = load_raw(f"figshare_brain:{tmp_path}", image_size=8)
  assert raw.info["folds"].startswith("grouped")
  folds = np.concatenate([raw.folds_train, np.full(len(raw.y_test), 5)])
  pids = np.concatenate([raw.groups_train, raw.groups_test])
  for pid in set(pids):
    assert len(set(folds[pids == pid])) == 1


def test_figshare_rejects_leaks_and_malformed_files(tmp_path):
  make_figshare(tmp_path / "leak", leak=True)
  with pytest.raises(DlbookError, match="group '100360' is in both"):
    load_raw(f"figshare_brain:{tmp_path / 'leak'}", image_size=8)
  make_figshare(tmp_path / "bad")
  part = tmp_path / "bad" / "brainTumorDataPublic_1-10"
  with h5py.File(part / "3.mat", "w") as f:
    f.create_dataset("image", data=np.zeros((4, 4)))
  with pytest.raises(DlbookError, match=r"3\.mat has no 'cjdata' struct"):
    load_raw(f"figshare_brain:{tmp_path / 'bad'}", image_size=8)
  (part / "3.mat").write_bytes(b"MATLAB 5.0 MAT-file" + b"\0" * 200)
  with pytest.raises(DlbookError, match=r"3\.mat is not a MATLAB v7\.3 \(HDF5\) \.mat file"):
    load_raw(f"figshare_brain:{tmp_path / 'bad'}", image_size=8)
  write_slice(part / "3.mat", np.zeros((12, 20)), 4, "MR040", np.zeros((12, 20), bool))
  with pytest.raises(DlbookError, match="cjdata.label must be 1, 2 or 3"):
    load_raw(f"figshare_brain:{tmp_path / 'bad'}", image_size=8)


def _bmp(path, value):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(np.full((10, 10, 3), value, np.uint8)).save(path)


def make_cnmc(root, leak_fold=False, leak_test=False):
  """Three folds of one ALL and one healthy subject each; a preliminary test set of two subjects."""
  for k in range(3):
    fold = os.path.join(root, "training_data", f"fold_{k}")
    for cell in range(2):
      _bmp(os.path.join(fold, "all", f"UID_{k + 1}_{cell + 1}_1_all.bmp"), 200)
      _bmp(os.path.join(fold, "hem", f"UID_H{k + 1}_{cell + 1}_1_hem.bmp"), 50)
  if leak_fold:
    _bmp(os.path.join(root, "training_data", "fold_2", "all", "UID_1_9_1_all.bmp"), 200)
  prelim = os.path.join(root, "validation_data", "C-NMC_test_prelim_phase_data")
  rows = [("UID_54_31_3_all.bmp", 1), ("UID_H49_35_1_hem.bmp", 0), ("UID_54_2_1_all.bmp", 1)]
  if leak_test:
    rows.append(("UID_H2_7_1_hem.bmp", 0))
  os.makedirs(prelim)
  with open(os.path.join(root, "validation_data", "C-NMC_test_prelim_phase_data_labels.csv"), "w") as f:
    f.write("Patient_ID,new_names,labels\n")
    for i, (name, label) in enumerate(rows, start=1):
      f.write(f"{name},{i}.bmp,{label}\n")
      _bmp(os.path.join(prelim, f"{i}.bmp"), 200 if label else 50)


def test_cnmc_layout(tmp_path):
  make_cnmc(tmp_path)
  raw = load_raw(f"cnmc:{tmp_path}", image_size=8)
  assert raw.x_train.shape == (12, 8, 8, 3) and raw.x_test.shape == (3, 8, 8, 3)
  assert raw.class_names == ("hem", "all") and raw.max_value == 255.0
  assert sorted(set(raw.groups_train)) == ["1", "2", "3", "H1", "H2", "H3"]
  assert raw.groups_test.tolist() == ["54", "H49", "54"] and raw.y_test.tolist() == [1, 0, 1]
  for k in range(3):
    assert set(raw.groups_train[raw.folds_train == k]) == {str(k + 1), f"H{k + 1}"}
  np.testing.assert_array_equal(raw.y_train, [s[0] != "H" for s in raw.groups_train])
  assert (raw.x_train[raw.y_train == 1] == 200).all()  # ALL cells are the bright ones


@pytest.mark.parametrize("leak,match", [("fold", "group '1' is in both the 'fold 0' and the 'fold 2' split"),
                                        ("test", "group 'H2' is in both the 'training folds' and the "
                                                 "'preliminary test' split")])
def test_cnmc_rejects_subject_leaks(tmp_path, leak, match):
  make_cnmc(tmp_path, leak_fold=leak == "fold", leak_test=leak == "test")
  with pytest.raises(DlbookError, match=match):
    load_raw(f"cnmc:{tmp_path}", image_size=8)


def test_cnmc_rejects_malformed_layouts(tmp_path):
  make_cnmc(tmp_path)
  bad = tmp_path / "training_data" / "fold_1" / "hem" / "H2_cell.bmp"
  _bmp(str(bad), 50)
  with pytest.raises(DlbookError, match="H2_cell.bmp: C-NMC file names are UID_"):
    load_raw(f"cnmc:{tmp_path}", image_size=8)
  os.remove(bad)
  _bmp(str(tmp_path / "training_data" / "fold_1" / "hem" / "UID_5_1_1_all.bmp"), 50)
  with pytest.raises(DlbookError, match="an 'all' file in the 'hem' folder"):
    load_raw(f"cnmc:{tmp_path}", image_size=8)
  with pytest.raises(DlbookError, match="no training_data/fold_0"):
    load_raw(f"cnmc:{tmp_path / 'validation_data'}", image_size=8)


def test_load_gives_a_patient_grouped_validation_split(tmp_path):
  from ml_collections import ConfigDict

  from dlbook.data import load
  make_figshare(tmp_path)
  ds = load(ConfigDict({"name": f"figshare_brain:{tmp_path}", "image_size": 8, "val_fraction": 0.25}))
  assert len(ds.val) > 0 and ds.train.groups is not None and ds.test.groups is not None
  assert not set(ds.train.groups) & set(ds.val.groups)
  assert not (set(ds.train.groups) | set(ds.val.groups)) & set(ds.test.groups)
  assert len(ds.train) + len(ds.val) == 16 and ds.train.images.shape[1:] == (8, 8, 1)
