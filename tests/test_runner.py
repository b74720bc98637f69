"""The one training runner's policy: resume equals an uninterrupted run, nothing non-finite is saved,
a checkpoint that leads to divergence is set aside, a corrupt latest checkpoint falls back to the
previous intact one, wall time adds up over resumes; and the workdir record."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlbook.errors import DlbookError
from dlbook.training import checkpoint, runner


class Interrupt(Exception):
  pass


def initial():
  return {"w": jnp.zeros(3, jnp.float32), "m": jnp.ones(2, jnp.float32)}


def make_step(interrupt_at=None, poison=None):
  """A deterministic step: w moves by a function of the step, m decays. `poison(step, state)` may
  replace the new state and the loss to simulate divergence."""

  @jax.jit
  def pure(state, step):
    w = state["w"] + jnp.sin(step + jnp.arange(3, dtype=jnp.float32))
    m = state["m"] * 0.9
    return {"w": w, "m": m}, {"loss": jnp.sum(w ** 2), "norm": jnp.sum(m)}

  def step_fn(state, step):
    if step == interrupt_at:
      raise Interrupt(step)
    state, metrics = pure(state, jnp.float32(step))
    if poison is not None:
      state, metrics = poison(step, state, metrics)
    return state, metrics

  return step_fn


def train(tmp_path, total=10, step_fn=None, **kwargs):
  kwargs = {"log_every": 2, "checkpoint_every": 3, **kwargs}
  result = runner.train(initial(), step_fn or make_step(), total, str(tmp_path), **kwargs)
  result.log.close()
  return result


def history(tmp_path):
  with open(tmp_path / "history.jsonl") as f:
    return [json.loads(l) for l in f]


def test_resume_after_an_interruption_equals_an_uninterrupted_run(tmp_path):
  clean = train(tmp_path / "clean")
  with pytest.raises(Interrupt):
    train(tmp_path / "cut", step_fn=make_step(interrupt_at=7))
  resumed = train(tmp_path / "cut")
  assert clean.start_step == 0 and resumed.start_step == 6
  for k in ("w", "m"):
    np.testing.assert_array_equal(resumed.state[k], clean.state[k])
  # every log point once, with the same means (windows restart at checkpoints)
  assert history(tmp_path / "cut") == history(tmp_path / "clean")
  assert [r["step"] for r in history(tmp_path / "clean")] == [2, 3, 4, 6, 8, 9, 10]
  assert resumed.earlier_s > 0 and resumed.steps_per_s > 0


def test_wall_time_adds_up_over_resumes(tmp_path):
  import time
  slow = make_step()

  def step_fn(state, step):
    time.sleep(0.05)
    return slow(state, step)

  with pytest.raises(Interrupt):
    train(tmp_path, step_fn=make_step(interrupt_at=7), started=time.time() - 100.0)
  resumed = train(tmp_path, step_fn=step_fn)
  assert resumed.earlier_s >= 100.0  # the first segment's time up to its checkpoint of step 6
  assert resumed.wall_time_s(time.time() - 1.0) >= 101.0


def test_a_non_finite_state_is_never_saved(tmp_path):
  def poison(step, state, metrics):  # parameters blow up at step 5, the reported loss does not
    if step >= 4:
      state = dict(state, m=state["m"] * jnp.inf)
    return state, dict(metrics, norm=jnp.float32(1.0))

  with pytest.raises(DlbookError, match=r"model state .* non-finite by step 6; stopped, the last good checkpoint "
                                        r"\(step 3\) is kept"):
    train(tmp_path, step_fn=make_step(poison=poison))
  ckpt = checkpoint.Checkpointer(str(tmp_path / "checkpoints"))
  assert ckpt.all_steps() == [3]
  tree = ckpt.restore({"state": initial(), "runner": {"wall_time_s": np.float64(0)}})
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(tree))


def test_a_checkpoint_that_leads_to_divergence_is_set_aside(tmp_path):
  def poison(step, state, metrics):  # huge but finite weights at step 6; the next loss overflows
    if step == 5:
      state = dict(state, w=jnp.full(3, 3e38, jnp.float32))
    return state, metrics

  with pytest.raises(DlbookError, match=r"metrics of step 7, computed from the checkpoint of step 6, became "
                                        r"non-finite .*the last good checkpoint \(step 3\) is kept"):
    train(tmp_path, step_fn=make_step(poison=poison))
  assert checkpoint.Checkpointer(str(tmp_path / "checkpoints")).all_steps() == [3]
  assert [d.split("-")[0] for d in os.listdir(tmp_path / "diverged_checkpoints")] == ["6"]


def test_a_nan_before_the_first_checkpoint_says_none_was_saved(tmp_path):
  poison = lambda step, state, metrics: (state, dict(metrics, loss=jnp.float32(np.nan)))
  with pytest.raises(DlbookError, match="loss became non-finite by step 2; stopped, no good checkpoint had been saved"):
    train(tmp_path, step_fn=make_step(poison=poison))


def _largest_file(directory):
  files = [os.path.join(r, f) for r, _, fs in os.walk(directory) for f in fs if f != checkpoint.DIGEST_FILE]
  return max(files, key=os.path.getsize)


@pytest.mark.parametrize("damage", ["truncate", "flip_bytes", "no_digest", "empty_metadata", "no_manifest"])
def test_a_corrupt_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, damage, caplog):
  train(tmp_path / "clean", total=12)
  train(tmp_path / "run", total=9)
  step9 = tmp_path / "run" / "checkpoints" / "9"
  if damage == "truncate":
    path = _largest_file(step9)
    with open(path, "r+b") as f:
      f.truncate(os.path.getsize(path) // 2)
  elif damage == "flip_bytes":
    path = _largest_file(step9)
    raw = bytearray(open(path, "rb").read())
    mid = len(raw) // 2
    raw[mid:mid + 64] = bytes(b ^ 0xFF for b in raw[mid:mid + 64])
    open(path, "wb").write(bytes(raw))
  elif damage == "empty_metadata":
    open(step9 / checkpoint.TREE_DIR / "_METADATA", "w").close()
  elif damage == "no_manifest":
    os.remove(step9 / checkpoint.TREE_DIR / "manifest.ocdbt")
  else:
    os.remove(step9 / checkpoint.DIGEST_FILE)  # cannot happen by a kill (the digest is written before the rename)
  with caplog.at_level("WARNING"):
    resumed = train(tmp_path / "run", total=12)
  assert resumed.start_step == 6
  notice = [r.getMessage() for r in caplog.records if "falling back to step 6" in r.getMessage()]
  assert len(notice) == 1 and "checkpoints/9" in notice[0]
  assert [d.split("-")[0] for d in os.listdir(tmp_path / "run" / "corrupt_checkpoints")] == ["9"]  # kept
  clean = checkpoint.Checkpointer(str(tmp_path / "clean" / "checkpoints")).restore(
      {"state": initial(), "runner": {"wall_time_s": np.float64(0)}}, 12)
  for k in ("w", "m"):
    np.testing.assert_array_equal(resumed.state[k], clean["state"][k])


def test_no_intact_checkpoint_left_is_an_error_not_a_fresh_start(tmp_path):
  train(tmp_path, total=3)
  path = _largest_file(tmp_path / "checkpoints" / "3")
  with open(path, "r+b") as f:
    f.truncate(1)
  with pytest.raises(DlbookError, match="no intact checkpoint left"):
    train(tmp_path, total=6)


def test_a_checkpoint_of_another_model_is_named(tmp_path):
  train(tmp_path, total=3)
  other = lambda: {"w": jnp.zeros(5, jnp.float32), "m": jnp.ones(2, jnp.float32)}
  with pytest.raises(DlbookError, match="does not match this model"):
    runner.train(other(), make_step(), 6, str(tmp_path), log_every=2, checkpoint_every=3)


def test_bad_step_counts_are_refused(tmp_path):
  with pytest.raises(DlbookError, match="number of training steps must be positive, got -5"):
    train(tmp_path, total=-5)
  with pytest.raises(DlbookError, match="checkpoint_every_steps must be positive"):
    train(tmp_path, checkpoint_every=0)
  assert not os.path.exists(tmp_path / "checkpoints")


def test_workdir_records_its_config_only_when_the_run_starts(tmp_path):
  wd = checkpoint.Workdir(str(tmp_path / "w"), {"lr": 0.1})
  assert not os.path.exists(tmp_path / "w")  # checked, nothing written
  checkpoint.Workdir(str(tmp_path / "w"), {"lr": 0.2})  # no run yet: another config is fine
  wd.start()
  assert json.loads((tmp_path / "w" / "config.json").read_text()) == {"lr": 0.1}
  # a run that saved nothing may be restarted with another config; one with checkpoints may not
  checkpoint.Workdir(str(tmp_path / "w"), {"lr": 0.3}).start()
  assert json.loads((tmp_path / "w" / "config.json").read_text()) == {"lr": 0.3}
  train(tmp_path / "w", total=3)
  with pytest.raises(DlbookError, match=r"different config \(differs in: lr\)"):
    checkpoint.Workdir(str(tmp_path / "w"), {"lr": 0.4})


def test_workdir_problems_are_named(tmp_path, monkeypatch):
  (tmp_path / "file").write_text("x")
  with pytest.raises(DlbookError, match="is a file, not a directory"):
    checkpoint.Workdir(str(tmp_path / "file"), {})
  with pytest.raises(DlbookError, match="is a file, not a directory"):
    checkpoint.Workdir(str(tmp_path / "file" / "sub"), {})
  (tmp_path / "config.json").write_text("{not json")
  with pytest.raises(DlbookError, match="config.json is corrupt"):
    checkpoint.Workdir(str(tmp_path), {})
  os.remove(tmp_path / "config.json")
  real_access = os.access
  monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(tmp_path) else real_access(p, mode))
  with pytest.raises(DlbookError, match="is not writable"):  # root bypasses permissions, so simulated here
    checkpoint.Workdir(str(tmp_path / "new_run"), {})
  # a finished run is only read: a read-only finished workdir still reports its results
  (tmp_path / "results.json").write_text(json.dumps({"metrics": {"x": 1}}))
  assert checkpoint.Workdir(str(tmp_path), {}).results()["metrics"] == {"x": 1}


def test_all_finite_checks_every_floating_leaf_and_ignores_the_others():
  from dlbook.training.runner import all_finite
  tree = {"w": jnp.ones((3, 2)), "b": np.zeros(4, np.float32), "step": jnp.int32(7), "key": jax.random.key(0),
          "nested": [jnp.full((2,), 0.5, jnp.bfloat16)]}
  assert all_finite(tree)
  assert all_finite({})
  for bad in (np.inf, -np.inf, np.nan):
    assert not all_finite(dict(tree, nested=[jnp.asarray([0.5, bad], jnp.bfloat16)]))
    assert not all_finite(dict(tree, b=np.asarray([0.0, bad], np.float32)))
  assert all_finite(dict(tree, step=jnp.iinfo(jnp.int32).max))   # integers are never "non-finite"
