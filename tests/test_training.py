"""Training core: optimizers, the loop, resume after SIGKILL, data parallelism, bad input."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs import classify
from dlbook import tables
from dlbook.errors import DlbookError
from dlbook.training import checkpoint, loop, make_optimizer, make_schedule, reporting
from tests.conftest import ROOT, run_launcher


def opt_cfg(**kw):
  base = dict(name="sgd", learning_rate=0.1, schedule="constant", momentum=0.0, weight_decay=0.0, grad_clip_norm=0.0)
  base.update(kw)
  return ml_collections.ConfigDict(base)


def test_cosine_schedule_endpoints_and_warmup():
  s = make_schedule(opt_cfg(learning_rate=0.025, schedule="cosine", final_learning_rate=0.001), 100)
  assert float(s(0)) == pytest.approx(0.025) and float(s(100)) == pytest.approx(0.001)
  assert float(s(50)) == pytest.approx(0.001 + 0.5 * (0.025 - 0.001), rel=1e-5)
  w = make_schedule(opt_cfg(learning_rate=1.0, warmup_steps=10), 100)
  assert float(w(5)) == pytest.approx(0.5)


def test_weight_decay_and_clipping_are_applied():
  params = {"w": jnp.array([3.0, 4.0])}
  grads = {"w": jnp.array([30.0, 40.0])}  # norm 50
  tx = make_optimizer(opt_cfg(learning_rate=1.0, grad_clip_norm=5.0, weight_decay=0.1), 10)
  updates, _ = tx.update(grads, tx.init(params), params)
  # clip to norm 5 -> [3, 4]; coupled decay adds 0.1 * w; SGD negates
  np.testing.assert_allclose(updates["w"], -(np.array([3.0, 4.0]) + 0.1 * np.array([3.0, 4.0])), rtol=1e-6)
  adam = make_optimizer(opt_cfg(name="adam", learning_rate=1e-3), 10)
  assert isinstance(adam.init(params), tuple)


def test_bad_optimizer_values():
  with pytest.raises(DlbookError, match="unknown optimizer 'sgdd'.*adam"):
    make_optimizer(opt_cfg(name="sgdd"), 10)
  with pytest.raises(DlbookError, match="learning_rate must be positive"):
    make_optimizer(opt_cfg(learning_rate=-0.1), 10)
  with pytest.raises(DlbookError, match="schedule"):
    make_optimizer(opt_cfg(schedule="linear"), 10)


def test_smoke_run_writes_results_and_pictures(tmp_path):
  config = classify.get_config("smoke")
  results = loop.train_and_evaluate(config, str(tmp_path))
  for key in ("command", "config", "seed", "dataset", "num_params", "wall_time_s", "metrics", "versions"):
    assert key in results
  assert 0.3 < results["metrics"]["test_accuracy"] <= 1.0  # 2 epochs of a tiny CNN: well above chance (0.1)
  on_disk = json.load(open(tmp_path / "results.json"))
  assert on_disk["metrics"]["test_accuracy"] == results["metrics"]["test_accuracy"]
  assert on_disk["versions"]["jax"] == jax.__version__
  assert (tmp_path / "curves.png").stat().st_size > 1000
  assert (tmp_path / "confusion_matrix.png").stat().st_size > 1000
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path / "tensorboard"))
  # a rerun of a finished run reports it and changes nothing on disk
  before = {p: (tmp_path / p).read_bytes() for p in ("results.json", "history.jsonl", "config.json")}
  events = sorted(os.listdir(tmp_path / "tensorboard"))
  again = loop.train_and_evaluate(config, str(tmp_path))
  assert again["already_finished"] and again["metrics"]["test_accuracy"] == results["metrics"]["test_accuracy"]
  assert {p: (tmp_path / p).read_bytes() for p in before} == before
  assert sorted(os.listdir(tmp_path / "tensorboard")) == events


def test_workdir_with_other_config_is_refused(tmp_path):
  config = classify.get_config("smoke")
  config.num_train_steps = 5
  loop.train_and_evaluate(config, str(tmp_path))
  before = (tmp_path / "results.json").read_bytes()
  config.optimizer.learning_rate = 0.5
  with pytest.raises(DlbookError, match="different config.*learning_rate"):
    loop.train_and_evaluate(config, str(tmp_path))
  assert (tmp_path / "results.json").read_bytes() == before


def restore_raw(workdir, step=None):
  """(step, the train state's checkpoint tree) of the latest (or given) checkpoint in `workdir`."""
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"))
  step = ckpt.latest_step() if step is None else step
  return step, jax.tree.map(np.asarray, ckpt.restore(None, step))["state"]


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
  config = classify.get_config("smoke")
  # a "decay" factor of 1e3 every 10 steps: sane for 10 steps, then divergent
  config.optimizer.update(dict(name="sgd", learning_rate=0.01, schedule="step", decay_every_steps=10,
                               decay_factor=1e3, momentum=0.9))
  config.num_train_steps = 60
  config.checkpoint_every_steps = 5
  config.log_every_steps = 5
  with pytest.raises(DlbookError, match="non-finite"):
    loop.train_and_evaluate(config, str(tmp_path))
  step, tree = restore_raw(str(tmp_path))
  assert 0 < step < 60
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(tree["params"]))
  assert not (tmp_path / "results.json").exists()


RESUME_ARGS = ["--config=configs/classify.py:smoke", "--config.num_train_steps=1500", "--config.num_epochs=1",
               "--config.checkpoint_every_steps=100", "--config.log_every_steps=100",
               "--config.model.conv_filters=(4, 4)", "--config.model.dense_units=(8,)", "--config.batch_size=16"]


def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path):
  killed, clean = str(tmp_path / "killed"), str(tmp_path / "clean")
  env = dict(os.environ, PYTHONPATH=ROOT)
  proc = subprocess.Popen([sys.executable, "-m", "experiments.train", *RESUME_ARGS, f"--workdir={killed}"],
                          cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  ckpt_dir = os.path.join(killed, "checkpoints")
  deadline = time.time() + 120
  while time.time() < deadline and proc.poll() is None:
    if os.path.isdir(ckpt_dir) and any(d.isdigit() for d in os.listdir(ckpt_dir)):
      break
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  first_step, _ = restore_raw(killed)
  assert 0 < first_step < 1500, "the kill must land after the first checkpoint and before the end"
  assert not os.path.exists(os.path.join(killed, "results.json"))

  rerun = run_launcher("experiments.train", *RESUME_ARGS, f"--workdir={killed}")
  assert rerun.returncode == 0, rerun.stderr[-2000:]
  assert f"resumed from checkpoint step {first_step}" in rerun.stderr
  assert json.load(open(os.path.join(killed, "results.json")))["resumed_from_step"] == first_step
  full = run_launcher("experiments.train", *RESUME_ARGS, f"--workdir={clean}")
  assert full.returncode == 0, full.stderr[-2000:]

  _, a = restore_raw(killed, 1500)
  _, b = restore_raw(clean, 1500)
  for x, y in zip(jax.tree.leaves(a["params"]), jax.tree.leaves(b["params"])):
    np.testing.assert_array_equal(x, y)
  for x, y in zip(jax.tree.leaves(a["batch_stats"]), jax.tree.leaves(b["batch_stats"])):
    np.testing.assert_array_equal(x, y)


DATA_PARALLEL_SCRIPT = r"""
import os, sys, jax, numpy as np
sys.path.insert(0, os.getcwd())
from configs import classify
from dlbook.training import loop
from tests.test_training import restore_raw
assert len(jax.devices()) == 8, jax.devices()
out = {}
for n in (1, 8):
  c = classify.get_config("smoke")
  c.num_devices = n
  c.num_train_steps = 40
  c.batch_size = 64
  c.eval_batch_size = 64
  wd = os.path.join(sys.argv[1], f"dev{n}")
  r = loop.train_and_evaluate(c, wd)
  out[n] = (restore_raw(wd)[1], r["metrics"]["test_accuracy"])
diffs = [float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(out[1][0]["params"]), jax.tree.leaves(out[8][0]["params"]))]
scale = max(float(np.max(np.abs(a))) for a in jax.tree.leaves(out[1][0]["params"]))
print("MAXDIFF", max(diffs), "SCALE", scale, "ACC", out[1][1], out[8][1])
"""


@pytest.mark.slow  # long: runs with DLBOOK_SLOW=1 (keeps the CI suite in its time budget)
def test_eight_device_data_parallel_equals_single_device(tmp_path):
  env = dict(os.environ, PYTHONPATH=ROOT, XLA_FLAGS="--xla_force_host_platform_device_count=8")
  proc = subprocess.run([sys.executable, "-c", DATA_PARALLEL_SCRIPT, str(tmp_path)], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  line = [l for l in proc.stdout.splitlines() if l.startswith("MAXDIFF")][0].split()
  max_diff, scale, acc1, acc8 = float(line[1]), float(line[3]), float(line[5]), float(line[6])
  assert max_diff < 1e-4 * max(scale, 1.0), line  # summation order differs across shards, nothing else
  assert abs(acc1 - acc8) <= 0.01


@pytest.mark.parametrize("args,message", [
    (["--config.data.name=cifar11"], "unknown dataset 'cifar11'"),
    (["--config.model_name=resnet9000"], "unknown model 'resnet9000'"),
    (["--config.optimizer.name=sgdd"], "unknown optimizer 'sgdd'"),
    (["--config.optimizer.learning_rate=-0.1"], "learning_rate must be positive"),
    (["--config.batch_size=100000"], "larger than the"),
    (["--config.data.name=npz:/no/such/file.npz"], "missing data file /no/such/file.npz"),
    (["--config.model.activation=relu7"], "unknown activation 'relu7'"),
    (["--config.num_train_steps=-5"], "num_train_steps must be >= 0"),
    (["--config.data.limit_train=3"], "keeps no training example"),
])
def test_bad_input_gives_one_error_line(tmp_path, args, message):
  proc = run_launcher("experiments.train", "--config=configs/classify.py:smoke", f"--workdir={tmp_path}", *args)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and message in last, last
  assert not (tmp_path / "config.json").exists()  # nothing recorded: the corrected command may use this workdir


def test_workdir_that_is_a_file_is_named(tmp_path):
  (tmp_path / "f").write_text("not a directory")
  proc = run_launcher("experiments.train", "--config=configs/classify.py:smoke", f"--workdir={tmp_path / 'f'}")
  assert proc.returncode == 2 and "is a file, not a directory" in proc.stderr.strip().splitlines()[-1]
  assert (tmp_path / "f").read_text() == "not a directory"


def test_corrupt_latest_checkpoint_falls_back_with_one_notice(tmp_path):
  config = classify.get_config("smoke")
  config.num_train_steps, config.checkpoint_every_steps = 6, 2
  loop.train_and_evaluate(config, str(tmp_path / "clean"))
  run = tmp_path / "run"
  loop.train_and_evaluate(config, str(run))
  os.remove(run / "results.json")  # as if killed after its last checkpoint
  step6 = run / "checkpoints" / "6"
  files = [os.path.join(r, f) for r, _, fs in os.walk(step6) for f in fs if not f.startswith("dlbook_")]
  with open(max(files, key=os.path.getsize), "r+b") as f:
    f.seek(100)
    f.write(b"\0" * 64)  # 64 bytes overwritten: the digest no longer matches
  again = loop.train_and_evaluate(config, str(run))
  assert again["resumed_from_step"] == 4
  _, a = restore_raw(str(tmp_path / "clean"), 6)
  _, b = restore_raw(str(run), 6)
  for x, y in zip(jax.tree.leaves(a["params"]), jax.tree.leaves(b["params"])):
    np.testing.assert_array_equal(x, y)


def test_unknown_preset_and_corrupt_image(tmp_path):
  proc = run_launcher("experiments.train", "--config=configs/classify.py:huge", f"--workdir={tmp_path}/a")
  assert proc.returncode != 0 and "Traceback" not in proc.stderr
  assert "unknown preset 'huge'" in proc.stderr.strip().splitlines()[-1]
  proc = run_launcher("experiments.train", "--config=configs/classify.py:smoke", "--config.nokey=1",
                      f"--workdir={tmp_path}/a")
  assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error: unknown config key 'nokey'")
  proc = run_launcher("experiments.train", "--config=configs/nofile.py", f"--workdir={tmp_path}/a")
  assert proc.returncode == 2 and "configs/nofile.py" in proc.stderr.strip().splitlines()[-1]
  from tests.test_data import make_image_folder
  make_image_folder(tmp_path / "imgs")
  (tmp_path / "imgs" / "cat" / "x.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
  proc = run_launcher("experiments.train", "--config=configs/classify.py:smoke", f"--workdir={tmp_path}/b",
                      f"--config.data.name=image_folder:{tmp_path / 'imgs'}", "--config.data.image_size=8")
  assert proc.returncode == 2 and "Traceback" not in proc.stderr
  assert "corrupt or unreadable image" in proc.stderr.strip().splitlines()[-1] and "x.jpg" in proc.stderr


def test_summary_markdown_groups_seeds_and_normalises_commands():
  def payload(seed, acc, name="digits", lr=0.1):
    return {"config": {"seed": seed, "optimizer": {"learning_rate": lr}}, "seed": seed, "dataset": {"name": name},
            "metrics": {"test_accuracy": acc}, "wall_time_s": 10.0 * (seed + 1),
            "command": f"python /somewhere/experiments/train.py --config.seed={seed}"}
  text = tables.summary_markdown([payload(0, 0.90), payload(1, 0.94), payload(0, 0.5, lr=0.2)],
                                    ["test_accuracy"])
  rows = [line for line in text.splitlines() if line.startswith("| `")]
  assert len(rows) == 2  # the two seeds of lr=0.1 form one row; lr=0.2 is another
  assert "| 0,1 | 0.9200 ± 0.0283 | 15.0 |" in rows[0]  # sample std (ddof=1) of 0.90, 0.94
  assert "0.5000 (1 seed)" in rows[1]
  assert rows[0].startswith("| `python -m experiments.train --config.seed=0`")


def test_command_line_is_shell_quoted_so_it_can_be_pasted_back(monkeypatch):
  import shlex
  argv = ["experiments/train.py", "--config=configs/train.py:smoke", "--config.model.channels=(16, 32)"]
  monkeypatch.setattr(sys, "argv", argv)
  line = reporting.command_line()
  assert shlex.split(line)[-2:] == argv[1:]  # the argument with spaces survives as one word
  assert "'--config.model.channels=(16, 32)'" in line
