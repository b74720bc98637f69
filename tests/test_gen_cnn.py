"""Gen-CNN (thesis seed 001 ch. 3): gene decoding, losses, GA settings by gene name, the grouped vmapped
fitness against the per-individual loop, the launcher (smoke end to end, resume, bad input)."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import run_launcher
from dlbook import data as data_lib
from dlbook.hpsearch import gen_cnn, search
from dlbook.nas.fitness import individual_keys, make_fitness_data

POOL = ("small_cnn_s", "small_cnn_m", "small_cnn_l")


def test_genes_decode_linearly_by_name():
  d = gen_cnn.decode({"architecture": 0.34, "loss": 0.99, "optimizer": 0.25, "weight_decay": 0.5,
                      "learning_rate": 1.0}, POOL)
  assert d["architecture"] == "small_cnn_m"  # bins [0, 1/3), [1/3, 2/3), [2/3, 1]
  assert d["loss"] == "sigmoid_cross_entropy" and d["optimizer"] == "sgd"  # 0.25 opens SGD's bin [1/4, 1/2)
  np.testing.assert_allclose(d["weight_decay"], 1e-9 + 0.5 * (0.1 - 1e-9))
  np.testing.assert_allclose(d["learning_rate"], 1e-2)  # SGD's base rate at scale a = 1
  low = gen_cnn.decode({k: 0.0 for k in gen_cnn.GENES}, POOL)
  assert (low["architecture"], low["loss"], low["optimizer"]) == ("small_cnn_s", "cross_entropy", "adam")
  np.testing.assert_allclose([low["weight_decay"], low["learning_rate"]], [1e-9, 1e-3 * 1e-5])
  assert gen_cnn.decode({k: 1.0 for k in gen_cnn.GENES}, POOL)["optimizer"] == "adamax"


def test_ga_probabilities_follow_gene_names_and_the_operators_of_the_thesis():
  from configs import gen_cnn as cfg
  ga, params = search.make_ga(cfg.get_config("smoke"))
  names = ga.spec.names
  cx = dict(zip(names, np.asarray(params.gene_crossover_prob)))
  mut = dict(zip(names, np.asarray(params.gene_mutation_prob)))
  assert cx == pytest.approx({"architecture": 0, "loss": 0, "optimizer": 0, "weight_decay": 0.9, "learning_rate": 0.9})
  assert mut == pytest.approx({"architecture": .4, "loss": .4, "optimizer": .4, "weight_decay": .2,
                               "learning_rate": .2})
  assert (ga.selection, ga.crossover, ga.mutation, ga.replacement, ga.tournament_size, ga.num_elites,
          ga.reevaluate_elites) == ("tournament", "arithmetic", "uniform_reset", "elitism", 2, 1, True)


def _log_softmax(z):
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_losses_equal_their_definitions():
  rng = np.random.default_rng(0)
  z = rng.normal(size=(6, 4)).astype(np.float32) * 3
  y = rng.integers(0, 4, 6)
  t = np.eye(4)[y]
  ce = -(t * _log_softmax(z)).sum(-1)
  smooth = 0.9 * t + 0.1 / 4
  zn = z / (0.04 * np.linalg.norm(z, axis=-1, keepdims=True))
  sig = -(t * np.log(1 / (1 + np.exp(-z))) + (1 - t) * np.log(1 - 1 / (1 + np.exp(-z)))).sum(-1)
  expected = [ce.mean(), -(smooth * _log_softmax(z)).sum(-1).mean(), ce.mean() + 4e-4 * (z ** 2).sum(-1).mean(),
              -(t * _log_softmax(zn)).sum(-1).mean(), sig.mean()]
  loss = jax.jit(gen_cnn.gen_cnn_loss, static_argnums=3)  # the index traced: one program for all five
  got = [float(loss(i, jnp.asarray(z), jnp.asarray(y), 4)) for i in range(5)]
  np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_min_max_normalisation():
  np.testing.assert_allclose(gen_cnn.min_max([0.2, 0.6, 0.4]), [0, 1, 0.5])
  np.testing.assert_array_equal(gen_cnn.min_max([0.3, 0.3]), [1, 1])  # all equal: all 1
  out = gen_cnn.min_max([np.nan, 0.1, 0.5])
  assert np.isnan(out[0]) and out[1:].tolist() == [0, 1]


def test_adam_ignores_weight_decay_unless_switched_on():
  params = {"w": jnp.ones(3)}
  grads = {"w": jnp.zeros(3)}
  for switch, moves in ((False, False), (True, True)):
    tx = gen_cnn.make_optimizer("adam", 1e-3, 0.1, 10, cosine=False, adam_weight_decay=switch)
    updates, _ = tx.update(grads, tx.init(params), params)
    assert bool(jnp.any(updates["w"] != 0)) == moves
  tx = gen_cnn.make_optimizer("sgd", 1e-2, 0.1, 10, cosine=False, adam_weight_decay=False)
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(updates["w"], -1e-2 * 0.1 * np.ones(3), rtol=1e-6)  # coupled L2 as in PyTorch


@pytest.mark.slow  # two compilations (the vmapped group and the single individual)
def test_grouped_vmapped_fitness_equals_the_per_individual_loop():
  """Three individuals of one (architecture, optimizer) pair with different learning rates, weight decays
  and losses: a vmapped chunk of 2 and a padded one, against one-at-a-time training with the same keys."""
  ds = data_lib.load(_digits_config(), seed=0)
  data = make_fitness_data(ds.train.images, ds.train.labels, ds.val.images[:96], ds.val.labels[:96],
                           batch_size=32, num_steps=4, seed=0, eval_batch_size=96)
  genes = [{"architecture": 0.1, "loss": l, "optimizer": 0.1, "weight_decay": w, "learning_rate": r}
           for l, w, r in ((0.1, 0.5, 0.9), (0.5, 0.01, 0.3), (0.9, 0.9, 0.6))]
  decoded = [gen_cnn.decode(g, POOL) for g in genes]
  ev = gen_cnn.GroupEvaluator(ds.num_classes, ds.image_shape, 4, 96, group_size=2)
  keys = individual_keys(jax.random.key(3), 0, 3)
  preds, losses = ev(decoded, keys, data)
  ref_preds, ref_losses = ev.loop(decoded, keys, data)
  np.testing.assert_allclose(losses, ref_losses, rtol=1e-4)
  # float summation order may differ between the batched and unbatched programs: one image may flip
  assert (preds != ref_preds).sum(axis=1).max() <= 1
  assert ev.num_traces == 1 and len(set(np.round(losses, 4))) == 3  # one program; different individuals
  mcc = gen_cnn.mcc_scores(preds, data, ds.num_classes, losses)
  np.testing.assert_allclose(mcc, gen_cnn.mcc_scores(ref_preds, data, ds.num_classes, ref_losses), atol=0.02)


def _digits_config():
  import ml_collections
  return ml_collections.ConfigDict(dict(name="digits", val_fraction=0.2, split_seed=0, image_size=0,
                                        normalization="standardize"))


def test_bad_pool_is_one_line_and_exit_2(tmp_path):
  r = run_launcher("experiments.gen_cnn", "--config=configs/gen_cnn.py:smoke", f"--workdir={tmp_path}/w",
                   "--config.pool=('no_such_net',)")
  assert r.returncode == 2, r.stderr[-2000:]
  assert "unknown architecture 'no_such_net'" in r.stderr and not os.path.exists(tmp_path / "w" / "config.json")


@pytest.mark.slow
def test_smoke_end_to_end_and_resume_after_a_kill_gives_the_same_history(tmp_path):
  out = tmp_path / "run"
  r = run_launcher("experiments.gen_cnn", "--config=configs/gen_cnn.py:smoke", f"--workdir={out}", timeout=2400)
  assert r.returncode == 0, r.stderr[-3000:]
  for name in ("generations.json", "random_search.json", "final.json", "fitness.png", "genes.png",
               "results.json", "tensorboard"):
    assert os.path.exists(out / name), name
  rows = json.loads((out / "generations.json").read_text())
  assert len(rows) == 3 and all(len(r["individuals"]) == 4 for r in rows)
  first = rows[1]["individuals"][0]
  assert set(first["genes"]) == set(gen_cnn.GENES) and "decoded" in first and first["mcc"] is not None
  # elite re-evaluated: generation g's first individual has the genes of generation g-1's best
  prev = max(rows[0]["individuals"], key=lambda p: p["fitness"] if p["fitness"] is not None else -1)
  assert first["genes"] == prev["genes"]
  results = json.loads((out / "results.json").read_text())
  rs = json.loads((out / "random_search.json").read_text())
  assert len(rs["mcc"]) == results["metrics"]["budget_low_fidelity_trainings"] == 12
  # A kill during generation 2: its checkpoint and everything after it never existed.
  killed = tmp_path / "killed"
  shutil.copytree(out, killed)
  ckpts = sorted(int(d) for d in os.listdir(killed / "checkpoints") if d.isdigit())
  shutil.rmtree(killed / "checkpoints" / str(ckpts[-1]))
  for name in ("results.json", "random_search.json", "final.json"):
    os.remove(killed / name)
  r = run_launcher("experiments.gen_cnn", "--config=configs/gen_cnn.py:smoke", f"--workdir={killed}", timeout=2400)
  assert r.returncode == 0, r.stderr[-3000:]
  resumed = json.loads((killed / "results.json").read_text())
  assert resumed["resumed_after_generation"] == ckpts[-2]
  assert json.loads((killed / "generations.json").read_text()) == rows
  assert json.loads((killed / "random_search.json").read_text()) == rs
  assert resumed["final"] == results["final"]
