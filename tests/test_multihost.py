"""Multi-process training on JAX's own runtime: two local CPU processes (one device each, gloo
collectives) train the classify smoke preset data-parallel, match one process, and resume after
both are killed."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from dlbook.training import checkpoint
from tests.conftest import ROOT, run_launcher

ARGS = ["--config=configs/classify.py:smoke", "--config.num_train_steps=40", "--config.checkpoint_every_steps=10",
        "--config.log_every_steps=10", "--config.batch_size=32", "--config.eval_batch_size=128",
        "--config.model.conv_filters=(4, 8)", "--config.model.dense_units=(16,)", "--config.model.dropout=0.0"]
ENV = dict(os.environ, PYTHONPATH=ROOT, DLBOOK_COMPILATION_CACHE="off", JAX_PLATFORMS="cpu")


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def start_pair(workdir, extra=()):
  port = free_port()
  return [subprocess.Popen([sys.executable, "-m", "experiments.train", *ARGS, *extra, f"--workdir={workdir}",
                            f"--coordinator_address=localhost:{port}", "--num_processes=2", f"--process_id={i}"],
                           cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
          for i in range(2)]


def finish(procs, timeout=600):
  outs = [p.communicate(timeout=timeout) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  return outs


def params(workdir, step=40):
  tree = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints")).restore(None, step)["state"]["params"]
  return [np.asarray(x) for x in __import__("jax").tree.leaves(tree)]


def test_two_processes_train_like_one(tmp_path):
  one, two = str(tmp_path / "one"), str(tmp_path / "two")
  finish(start_pair(two))
  proc = run_launcher("experiments.train", *ARGS, f"--workdir={one}", env={"DLBOOK_COMPILATION_CACHE": "off"})
  assert proc.returncode == 0, proc.stderr[-3000:]
  r1, r2 = (json.load(open(os.path.join(d, "results.json"))) for d in (one, two))
  assert len(r2["devices"]) == 2 and len(r1["devices"]) == 1
  for a, b in zip(params(one), params(two)):  # the same global batches; only summation order differs
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  assert abs(r1["metrics"]["test_accuracy"] - r2["metrics"]["test_accuracy"]) <= 0.01
  # only process 0 wrote: one TensorBoard event file, one history line per log point
  assert len(os.listdir(os.path.join(two, "tensorboard"))) == 1
  assert [json.loads(l)["step"] for l in open(os.path.join(two, "history.jsonl")) if "train/loss" in l] == \
      [10, 20, 30, 40]


@pytest.mark.slow  # long: four two-process runs (runs with DLBOOK_SLOW=1)
def test_a_killed_two_process_run_resumes_to_the_uninterrupted_result(tmp_path):
  two, killed = str(tmp_path / "two"), str(tmp_path / "killed")
  finish(start_pair(two))
  procs = start_pair(killed)
  ckpts = os.path.join(killed, "checkpoints")
  deadline = time.time() + 300
  while time.time() < deadline and not (os.path.isdir(ckpts) and any(d.isdigit() for d in os.listdir(ckpts))):
    time.sleep(0.05)
  for p in procs:
    p.send_signal(signal.SIGKILL)
    p.wait()
  first = checkpoint.Checkpointer(ckpts).latest_step()
  assert first is not None and first < 40 and not os.path.exists(os.path.join(killed, "results.json"))
  outs = finish(start_pair(killed))
  assert f"resumed from checkpoint step {first}" in outs[0][1]
  assert json.load(open(os.path.join(killed, "results.json")))["resumed_from_step"] == first
  for a, b in zip(params(two), params(killed)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
