"""Gen-Soup (thesis seed 001 ch. 5): weight inheritance (Eq. 5.1) and BatchNorm re-estimation against hand
computations, genes and GA settings by name, the image-size schedule, the traced optimizer, the full
preset's image-folder loader on a generated tree, bad input, and (slow) the smoke preset end to end, a
resume after a kill inside a generation, and the vmapped population against the per-individual loop."""

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import run_launcher
from dlbook.errors import DlbookError
from dlbook.hpsearch import gen_cnn, gen_soup, gen_soup_search, soup


def _tree(rng, scale=1.0):
  return {"params": {"Conv_0": {"kernel": rng.normal(size=(3, 3, 1, 4)).astype(np.float32) * scale},
                     "Dense_0": {"kernel": rng.normal(size=(4, 10)).astype(np.float32),
                                 "bias": rng.normal(size=10).astype(np.float32)}},
          "batch_stats": {"BatchNorm_0": {"mean": rng.normal(size=4).astype(np.float32),
                                          "var": rng.uniform(0.5, 2, size=4).astype(np.float32)}}}


def test_fitness_weighted_average_of_two_parents_leaf_by_leaf():
  rng = np.random.default_rng(0)
  a, b = _tree(rng), _tree(rng, 3.0)
  child, how = soup.inherit(a, b, 0.75, 0.25, same_architecture=True)
  assert how == "average"
  flat_a, flat_b = jax.tree.leaves(a), jax.tree.leaves(b)
  flat_c = jax.tree.leaves(child)
  assert len(flat_c) == 5  # params and BatchNorm statistics alike
  for x, y, z in zip(flat_a, flat_b, flat_c):
    np.testing.assert_allclose(z, (0.75 * x + 0.25 * y) / (0.75 + 0.25), rtol=1e-6, atol=1e-7)
  # weights are normalised: (2, 6) is (0.25, 0.75); zero or non-finite sums give equal shares
  for x, y, z in zip(flat_a, flat_b, jax.tree.leaves(soup.average([a, b], [2.0, 6.0]))):
    np.testing.assert_allclose(z, 0.25 * x + 0.75 * y, rtol=1e-6, atol=1e-7)
  assert soup.parent_weights(0.0, 0.0) == (0.5, 0.5) and soup.parent_weights(np.inf, 1.0) == (0.5, 0.5)
  assert soup.parent_weights(0.2, 0.6) == pytest.approx((0.25, 0.75))
  for x, y, z in zip(flat_a, flat_b, jax.tree.leaves(soup.uniform([a, b]))):
    np.testing.assert_allclose(z, (x + y) / 2, rtol=1e-6)
  with pytest.raises(DlbookError):
    soup.average([a, b], [0.0, 0.0])


def test_other_architecture_copies_the_better_parent_and_the_elite_passes_bit_identical():
  rng = np.random.default_rng(1)
  a, b = _tree(rng), _tree(rng)
  child, how = soup.inherit(a, b, 0.1, 0.9, same_architecture=False)
  assert how == "better_parent" and child is b
  assert soup.inherit(a, b, 0.5, 0.5, same_architecture=False)[0] is a  # tie: parent 1
  elite, how = soup.inherit(a, a, 1.0, 1.0, same_architecture=True, same_individual=True)
  assert how == "copy"
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(elite)):
    np.testing.assert_array_equal(x, y)
  # the offspring's architecture gene comes from its better parent (parent 1 on a tie)
  fitness = np.asarray([0.2, 0.9, 0.5])
  np.testing.assert_array_equal(gen_soup_search.better_parent(np.array([0, 1, 2, 2]), np.array([1, 0, 0, 2]), fitness),
                                [1, 1, 2, 2])


class _TwoBN(nn.Module):
  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.BatchNorm(use_running_average=not train, momentum=0.8)(nn.Dense(3)(x))
    return nn.BatchNorm(use_running_average=not train, momentum=0.95)(nn.Dense(2)(nn.relu(x)))


def test_batchnorm_reestimation_is_the_average_of_the_batch_statistics():
  model = _TwoBN()
  rng = np.random.default_rng(2)
  variables = jax.device_get(jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 5))))
  batches = [rng.normal(size=(16, 5)).astype(np.float32) + i for i in range(3)]
  out = soup.reestimate_batch_stats(model, variables, batches)
  p = variables["params"]
  m1, v1, m2, v2 = [], [], [], []
  for x in batches:  # the forward pass in training mode, by hand (flax: biased variance, eps 1e-5)
    h = x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"]
    m1.append(h.mean(0))
    v1.append(h.var(0))
    h = (h - h.mean(0)) / np.sqrt(h.var(0) + 1e-5) * p["BatchNorm_0"]["scale"] + p["BatchNorm_0"]["bias"]
    h = np.maximum(h, 0) @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]
    m2.append(h.mean(0))
    v2.append(h.var(0))
  s = out["batch_stats"]
  np.testing.assert_allclose(s["BatchNorm_0"]["mean"], np.mean(m1, 0), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(s["BatchNorm_0"]["var"], np.mean(v1, 0), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(s["BatchNorm_1"]["mean"], np.mean(m2, 0), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(s["BatchNorm_1"]["var"], np.mean(v2, 0), rtol=1e-4, atol=1e-5)
  assert out["params"] is variables["params"]


def test_seven_genes_decode_linearly_and_the_ga_follows_table_5_1_by_name():
  from configs import gen_soup as cfg
  genes = {"architecture": 0.6, "loss": 0.0, "optimizer": 0.3, "weight_decay": 0.5, "learning_rate": 1.0,
           "strong": 0.0, "weak": 0.75}
  d = gen_soup.decode(genes, ("small_cnn_s", "small_cnn_m"))
  assert gen_soup.GENES[:5] == gen_cnn.GENES and len(gen_soup.GENES) == 7
  assert (d["architecture"], d["optimizer"], d["optimizer_index"]) == ("small_cnn_m", "sgd", 1)
  assert d == dict(gen_cnn.decode({k: genes[k] for k in gen_cnn.GENES}, ("small_cnn_s", "small_cnn_m")),
                   optimizer_index=1, strong=0.5, weak=1.25)
  ga, params = gen_soup_search.make_ga(cfg.get_config("cpu"))
  names = ga.spec.names
  assert dict(zip(names, np.asarray(params.gene_crossover_prob))) == pytest.approx(
      {"architecture": 0, "loss": 0, "optimizer": 0, "weight_decay": .9, "learning_rate": .9, "strong": .9, "weak": .9})
  assert dict(zip(names, np.asarray(params.gene_mutation_prob))) == pytest.approx(
      {"architecture": 0, "loss": .25, "optimizer": .25, "weight_decay": .25, "learning_rate": .25, "strong": .15,
       "weak": .15})
  full = cfg.get_config("full")
  ga_full, _ = gen_soup_search.make_ga(full)
  assert [ga_full.population_at(g) for g in range(20)] == [50, 45, 40, 35, 30, 25, 20, 15] + [10] * 12
  assert (ga_full.reevaluate_elites, ga_full.num_elites, ga_full.tournament_size) == (True, 1, 2)
  assert gen_soup_search.epoch_budget(full) == 380
  assert gen_soup_search.epoch_budget(cfg.get_config("cpu")) == 153


def test_image_size_grows_then_stays_at_the_largest_for_the_last_epochs():
  s = gen_soup.image_sizes(224, 302, 20, 10)
  assert len(s) == 20 and s[0] == 224 and s[10:] == [302] * 10 and s[9] < 302
  assert all(b >= a for a, b in zip(s, s[1:]))
  assert gen_soup.image_sizes(224, 302, 5, 10) == [302] * 5
  np.testing.assert_allclose([gen_soup.cosine_factor(0, 100), gen_soup.cosine_factor(50, 100),
                              gen_soup.cosine_factor(100, 100)], [1.0, 0.55, 0.1], rtol=1e-6)


def _two_updates(tx):
  params = {"w": jnp.asarray([1.0, -2.0, 0.5])}
  grads = {"w": jnp.asarray([0.3, 0.1, -0.2])}
  state = tx.init(params)
  u1, state = tx.update(grads, state, params)
  u2, _ = tx.update(jax.tree.map(lambda g: -2 * g, grads), state, params)
  return u1["w"], u2["w"]


def test_traced_optimizer_equals_each_named_optimizer():
  names = gen_soup.OPTIMIZER_NAMES
  traced = jax.jit(lambda i: _two_updates(gen_soup.traced_optimizer(i, 1e-2, 0.01, False)))
  ref = jax.jit(lambda: [_two_updates(gen_cnn.make_optimizer(n, 1e-2, 0.01, 1, False, False)) for n in names])()
  for i in range(len(names)):
    np.testing.assert_allclose(traced(jnp.int32(i)), ref[i], rtol=1e-5, atol=1e-9)


def test_full_preset_reads_an_image_folder_at_every_size(tmp_path):
  from PIL import Image
  from configs import gen_soup as cfg
  rng = np.random.default_rng(0)
  for c in ("polyps", "ulcer", "normal"):
    os.makedirs(tmp_path / c)
    for i in range(6):
      Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(tmp_path / c / f"{i}.png")
  config = cfg.get_config("full")
  config.data.name = f"image_folder:{tmp_path}"
  config.data.val_fraction = 0.25
  config.train.batch_size = 4
  gen_soup_search.validate_config(config)
  data = gen_soup_search._Data(config, 0)
  for size in (12, 16):
    ds, fit = data(size)
    assert ds.num_classes == 3 and ds.image_shape == (size, size, 3)
    assert fit["train_images"].shape[1:] == (size, size, 3) and fit["eval_images"].shape[0] % 50 == 0
  assert gen_soup_search.gen_cnn_config(config, 0).final.epochs >= 50


def _set(key, value):
  def apply(config):
    node = config
    *path, last = key.split(".")
    for p in path:
      node = node[p]
    node[last] = value
  return apply


@pytest.mark.parametrize("change, message", [
    (_set("pool", ("small_cnn_s", "no_such_net")), "unknown architecture 'no_such_net'"),
    (_set("ga.gene_mutation_prob.architecture", 0.4), "must be 0: an offspring inherits"),
    (_set("ga.gene_crossover_prob.weak", 1.5), r"must lie in \[0, 1\]"),
    (_set("uniform_soup.optimizer", "lbfgs"), "unknown optimizer 'lbfgs'"),
    (_set("astrocytes.mode", "wrong"), "unknown astrocyte mode 'wrong'"),
    (_set("train.image_size_start", 0), "train.image_size_start must be positive"),
    (_set("gen_cnn.population_size", 50), "too small for the Gen-CNN baseline"),
])
def test_bad_input_is_one_clear_error(change, message):
  from configs import gen_soup as cfg
  config = cfg.get_config("smoke")
  change(config)
  with pytest.raises(DlbookError, match=message):
    gen_soup_search.validate_config(config)


def test_launcher_bad_input_is_one_line_and_exit_2(tmp_path):
  r = run_launcher("experiments.gen_soup", "--config=configs/gen_soup.py:smoke", f"--workdir={tmp_path}/w",
                   "--config.ga.gene_mutation_prob.architecture=0.4")
  assert r.returncode == 2, r.stderr[-2000:]
  errors = [l for l in r.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and "gene_mutation_prob of 'architecture' must be 0" in errors[0]
  assert not os.path.exists(tmp_path / "w" / "config.json")


@pytest.mark.slow
def test_smoke_end_to_end_through_the_launcher(tmp_path):
  out = tmp_path / "run"
  r = run_launcher("experiments.gen_soup", "--config=configs/gen_soup.py:smoke", f"--workdir={out}",
                   f"--docs_dir={tmp_path}/docs", timeout=2400)
  assert r.returncode == 0, r.stderr[-3000:]
  unit = out / "seed0"
  for name in ("generations.json", "final.json", "fitness.png", "genes.png", "results.json", "tensorboard",
               "history.jsonl", "gen_cnn/results.json"):
    assert os.path.exists(unit / name), name
  assert os.path.exists(tmp_path / "docs" / "gen_soup_smoke_table.md") and os.path.exists(out / "table.md")
  rows = json.loads((unit / "generations.json").read_text())
  assert [r["population"] for r in rows] == [4, 3, 3] and [r["image_size"] for r in rows] == [7, 8, 8]
  for prev, row in zip(rows, rows[1:]):
    elite = max(prev["individuals"], key=lambda p: p["fitness"] if p["fitness"] is not None else -1)
    first = row["individuals"][0]
    assert first["weights_from"] == "elite" and first["parents"] == [elite["row"]] * 2
    assert first["genes"] == elite["genes"]
    for p in row["individuals"]:
      assert set(p["genes"]) == set(gen_soup.GENES) and p["mcc"] is not None
  results = json.loads((unit / "results.json").read_text())
  final = results["final"]
  assert set(final) == {"gen_soup", "uniform_soup", "best_ingredient", "gen_cnn", "random_search"}
  assert results["metrics"]["epoch_budget"] == 10
  assert final["uniform_soup"]["epochs"] == 10 and final["gen_cnn"]["epochs"] == 10
  b = results["gen_cnn_budget"]
  assert b["population"] * (b["generations"] + 1) * b["low_fidelity_epochs"] + b["final_epochs"] == 10


def _small(config, **train):
  config.gen_cnn.enabled = False
  config.train.update(**train)
  return config


@pytest.mark.slow
def test_a_search_killed_mid_generation_resumes_with_the_same_history(tmp_path):
  from configs import gen_soup as cfg
  config = _small(cfg.get_config("smoke"), group_size=2)
  config.seed = 0
  whole = gen_soup_search.search(config, str(tmp_path / "whole"))

  class Killed(Exception):
    pass

  trained = []

  def kill(generation, rows):
    trained.append((generation, rows))
    if generation == 1 and len([t for t in trained if t[0] == 1]) == 1:
      raise Killed  # after the first of generation 1's two chunks was saved
  with pytest.raises(Killed):
    gen_soup_search.search(config, str(tmp_path / "killed"), on_chunk=kill)
  trained.clear()
  resumed = gen_soup_search.search(config, str(tmp_path / "killed"), on_chunk=lambda g, rows: trained.append((g, rows)))
  assert trained[0] == (1, [2])  # only generation 1's second chunk was trained again
  assert resumed["resumed_after_generation"] == 0
  assert json.loads((tmp_path / "killed" / "generations.json").read_text()) == \
      json.loads((tmp_path / "whole" / "generations.json").read_text())
  assert resumed["final"] == whole["final"]


@pytest.mark.slow  # two compilations (the vmapped group and the single individual)
def test_vmapped_population_equals_the_per_individual_loop():
  import ml_collections
  from dlbook import data as data_lib
  from dlbook.nas.fitness import individual_keys, make_fitness_data
  from dlbook.training.astrocytes import AstrocyteConfig
  ds = data_lib.load(ml_collections.ConfigDict(dict(name="digits", val_fraction=0.2, split_seed=0, image_size=0,
                                                    normalization="standardize")), seed=0)
  fit = make_fitness_data(ds.train.images, ds.train.labels, ds.val.images[:96], ds.val.labels[:96], batch_size=32,
                          num_steps=6, seed=0, eval_batch_size=96)
  batch = fit.pop("batch_index")
  genes = [{"architecture": 0.1, "loss": l, "optimizer": o, "weight_decay": w, "learning_rate": r, "strong": s,
            "weak": 1 - s} for l, o, w, r, s in ((0.1, 0.1, 0.5, 0.5, 0.9), (0.5, 0.3, 0.01, 0.3, 0.2),
                                                 (0.9, 0.8, 0.9, 0.6, 0.5))]
  decoded = [gen_soup.decode(g, ("small_cnn_s",)) for g in genes]
  keys = individual_keys(jax.random.key(3), 0, 3)
  weights = {i: gen_soup.init_variables("small_cnn_s", 10, ds.image_shape, keys[i]) for i in range(3)}
  trainer = gen_soup.PopulationTrainer(10, 96, cosine=True, adam_weight_decay=False, astrocytes=AstrocyteConfig(),
                                       traced_optimizer=True, group_size=2)
  args = (decoded, weights, keys, {i: batch for i in range(3)}, (4, 40), fit)
  vm, lp = trainer(*args), trainer.loop(*args)
  assert trainer.num_traces == 1  # three individuals of three optimizers in one program, two chunks
  for i in range(3):
    np.testing.assert_allclose(vm[i]["train_loss"], lp[i]["train_loss"], rtol=1e-4)
    for x, y in zip(jax.tree.leaves(vm[i]["variables"]), jax.tree.leaves(lp[i]["variables"])):
      np.testing.assert_allclose(x, y, rtol=1e-3, atol=1e-5)
    assert (vm[i]["predictions"] != lp[i]["predictions"]).sum() <= 1
  assert len({round(float(vm[i]["train_loss"]), 4) for i in range(3)}) == 3
