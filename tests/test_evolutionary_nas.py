"""Evolutionary NAS: supernets, vmapped vs sequential fitness, device sharding, the launcher."""

import functools
import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from tests.conftest import ROOT, run_launcher
from dlbook import data as data_lib
from dlbook import models
from dlbook.errors import DlbookError
from dlbook import evolution
from dlbook.nas import cell_space, chain_space, evolutionary_nas, fitness, kernels


@pytest.mark.slow  # long: runs with DLBOOK_SLOW=1 (keeps the CI suite in its time budget)
def test_conv_formulations_agree_with_lax_conv_under_vmap_and_grad():
  x = jax.random.normal(jax.random.key(0), (3, 2, 7, 7, 4))
  w = jax.random.normal(jax.random.key(1), (3, 5, 5, 4, 6))
  for stride in (1, 2):
    loss = lambda impl: (lambda x, w: jnp.sum(jnp.sin(kernels.conv2d(x, w, impl, stride))))
    ref = jax.vmap(jax.value_and_grad(loss("xla"), argnums=(0, 1)))(x, w)
    for impl in ("taps", "patches", "per_individual"):
      out = jax.jit(jax.vmap(jax.value_and_grad(loss(impl), argnums=(0, 1))))(x, w)
      for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(out)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    # Shared input (the first layer sees the same images for every individual).
    for impl in ("per_individual", "patches"):
      shared = jax.vmap(kernels.conv2d, in_axes=(None, 0, None, None))(x[0], w, impl, stride)
      np.testing.assert_allclose(shared, jax.vmap(kernels.conv2d, in_axes=(None, 0, None, None))(
          x[0], w, "xla", stride), rtol=1e-4, atol=1e-4)
      # ... and its gradients with respect to the shared input and the per-individual kernels
      g = lambda impl: jax.grad(lambda x, w: jnp.sum(jnp.sin(jax.vmap(kernels.conv2d, in_axes=(None, 0, None, None))(
          x, w, impl, stride))), argnums=(0, 1))(x[0], w)
      for a, b in zip(g("xla"), g(impl)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
  # Nested vmap (population of populations) folds both axes correctly.
  xx, ww = x[:, None].repeat(2, 1), w[:, None].repeat(2, 1)
  nested = jax.vmap(jax.vmap(lambda a, b: kernels.conv2d(a, b, "patches")))(xx, ww)
  np.testing.assert_allclose(nested[:, 1], jax.vmap(lambda a, b: kernels.conv2d(a, b, "xla"))(x, w),
                             rtol=1e-4, atol=1e-4)


def test_auto_conv_is_patches_on_the_cpu_and_native_on_accelerators():
  assert [kernels.resolve_conv_impl("auto", b) for b in ("cpu", "gpu", "tpu")] == ["patches", "xla", "xla"]
  assert kernels.resolve_conv_impl("taps", "gpu") == "taps"
  x = jax.random.normal(jax.random.key(0), (2, 1, 6, 6, 3))
  w = jax.random.normal(jax.random.key(1), (2, 3, 3, 3, 4))
  program = lambda impl: jax.jit(jax.vmap(lambda a, b: kernels.conv2d(a, b, impl))).lower(x, w).as_text()
  assert jax.default_backend() == "cpu" and program("auto") == program("patches") != program("xla")
  with pytest.raises(DlbookError, match="unknown conv_impl 'fast'"):
    chain_space.ChainSpace(conv_impl="fast")


def test_per_individual_copy_gives_each_individual_the_shared_images():
  images = jnp.arange(12.0).reshape(2, 3, 2)
  individual = jnp.arange(4)
  np.testing.assert_array_equal(fitness.per_individual_copy(images, individual[0]), images)  # identity outside vmap
  # Shared images become population-major copies (the layout the rest of the network uses).
  f = jax.jit(jax.vmap(lambda i: fitness.per_individual_copy(images, i) * (i + 1)))
  np.testing.assert_array_equal(f(individual), np.stack([images * (i + 1) for i in range(4)]))
  # Images already batched are passed through unchanged.
  batched = jnp.stack([images + i for i in range(4)])
  np.testing.assert_array_equal(jax.vmap(fitness.per_individual_copy)(batched, individual), batched)
  jaxpr = str(jax.make_jaxpr(jax.vmap(lambda i: fitness.per_individual_copy(images, i)))(individual))
  assert "f32[4,2,3,2]" in jaxpr


@pytest.mark.parametrize("seed", [pytest.param(0, marks=pytest.mark.slow), pytest.param(1, marks=pytest.mark.slow), 2, 3])
def test_chain_supernet_individual_equals_decoded_chain_cnn(seed):
  space = chain_space.ChainSpace(max_conv=3, filter_choices=(4, 8), kernel_choices=(1, 3, 5), max_dense=2,
                                 unit_choices=(8, 16))
  shape = (12, 12, 2)
  if seed == 0:  # the book's Table 2.1 genome (filters clipped to this small space)
    genome = space.encode(space.baseline_architecture())
  else:
    genome = evolution.take(space.spec.sample(jax.random.key(seed), 1), 0)
  model = space.model(10)
  variables = space.init(model, jax.random.key(seed + 10), shape, genome)
  chain = models.build("chain_cnn", num_classes=10, **space.decode(genome))
  cut = chain_space.slice_to_chain_cnn(space, variables, genome, shape)
  reference = chain.init(jax.random.key(0), jnp.zeros((1,) + shape))
  assert jax.tree.map(jnp.shape, reference) == jax.tree.map(jnp.shape, cut)
  assert chain_space.parameter_count(space, genome, shape, 10) == sum(x.size for x in jax.tree.leaves(reference["params"]))
  x = jax.random.normal(jax.random.key(seed + 20), (5,) + shape)
  for train in (False, True):
    kw = dict(mutable=["batch_stats"]) if train else {}
    a = model.apply(variables, x, space.arch(genome), train=train, **kw)
    b = chain.apply(cut, x, train=train, **kw)
    if train:  # the updated BatchNorm statistics agree too
      (a, sa), (b, sb) = a, b
      np.testing.assert_allclose(chain_space.slice_to_chain_cnn(space, dict(variables, **sa), genome, shape)
                                 ["batch_stats"]["bn_0"]["mean"], sb["batch_stats"]["bn_0"]["mean"], atol=1e-6)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_search_space_inputs_are_checked():
  space = chain_space.ChainSpace(filter_choices=(8, 16), kernel_choices=(3, 5))
  with pytest.raises(DlbookError, match="conv_kernel.*7.*valid: \\[3, 5\\]"):
    space.encode(dict(n_conv=1, conv_filters=(8,), conv_kernel=(7,), n_dense=1, dense_units=(32,),
                      activation="relu"))
  with pytest.raises(DlbookError, match="odd"):
    chain_space.ChainSpace(kernel_choices=(2, 4))
  with pytest.raises(DlbookError, match="unknown activations \\['swishy'\\]"):
    chain_space.ChainSpace(activations=("relu", "swishy"))
  with pytest.raises(DlbookError, match="cell ops"):
    cell_space.CellSpace(ops=("none", "conv_7x7"))
  with pytest.raises(DlbookError, match="unknown search space 'graph'"):
    evolutionary_nas.make_space(ml_collections.ConfigDict({"name": "graph"}))
  with pytest.raises(DlbookError, match="search space 'chain'.*max_layers"):
    evolutionary_nas.make_space(ml_collections.ConfigDict({"name": "chain", "max_layers": 3}))


def test_cell_edge_computes_the_selected_operation():
  x = jax.random.normal(jax.random.key(0), (2, 6, 6, 4))
  edge = cell_space.Edge(cell_space.OPS, 4)
  onehot = jax.nn.one_hot(cell_space.OPS.index("conv_5x5"), len(cell_space.OPS))
  variables = edge.init(jax.random.key(1), x, onehot, False)
  kernel = variables["params"]["kernel"]
  bn = variables["params"]["bn"]
  conv = lambda k: jax.lax.conv_general_dilated(jax.nn.relu(x), k, (1, 1), "SAME",
                                                dimension_numbers=("NHWC", "HWIO", "NHWC"))
  bn_eval = lambda y: y / jnp.sqrt(1 + 1e-5) * bn["scale"] + bn["bias"]  # running stats start at 0 / 1
  expected = {
      "none": jnp.zeros_like(x), "skip_connect": x,
      "max_pool_3x3": jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 1, 1, 1), "SAME"),
      "avg_pool_3x3": (jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 3, 3, 1), (1, 1, 1, 1), "SAME")
                       / jax.lax.reduce_window(jnp.ones_like(x), 0.0, jax.lax.add, (1, 3, 3, 1), (1, 1, 1, 1),
                                               "SAME")),
      "conv_3x3": bn_eval(conv(kernel[1:4, 1:4])), "conv_5x5": bn_eval(conv(kernel))}
  for i, op in enumerate(cell_space.OPS):
    out = edge.apply(variables, x, jax.nn.one_hot(i, len(cell_space.OPS)), False)
    np.testing.assert_allclose(out, expected[op], rtol=1e-5, atol=1e-5, err_msg=op)
  space = cell_space.CellSpace(num_nodes=4)
  assert space.spec.num_genes == 6  # 4 nodes: 6 edges, one op gene each (Fig. 2.2)
  arch = space.decode(space.encode(space.baseline_architecture()))
  assert arch["cells"][0][-1] == ("conv_3x3", 2, 3)
  np.testing.assert_array_equal(space.arch(space.encode(arch))["onehot"][0, 0],
                                jax.nn.one_hot(cell_space.OPS.index("conv_3x3"), 6))


def _digits_fitness_data(steps):
  c = ml_collections.ConfigDict(dict(name="digits", val_fraction=0.2, normalization="standardize"))
  ds = data_lib.load(c, seed=0)
  data = fitness.make_fitness_data(ds.train.images, ds.train.labels, ds.val.images[:200], ds.val.labels[:200],
                                   batch_size=16, num_steps=steps, seed=0, eval_batch_size=100)
  return ds, data


SMALL_CHAIN = chain_space.ChainSpace(max_conv=2, filter_choices=(4, 8), kernel_choices=(3, 5), max_dense=1,
                                     unit_choices=(8, 16), activations=("relu", "tanh"))


@functools.lru_cache(maxsize=None)
def _looped(space):
  """The sequential (reference) fitness of the test population: the same for every microbatch setting,
  so it is compiled and run once per space."""
  ds, data = _digits_fitness_data(steps=6)
  evaluator = fitness.PopulationEvaluator(space, 10, ds.image_shape, optax.adam(3e-3), chunk_size=4,
                                          eval_batch_size=100, num_devices=1)
  return evaluator.sequential(space.spec.sample(jax.random.key(0), 6), fitness.individual_keys(jax.random.key(1), 0, 6),
                              data)


@pytest.mark.parametrize("space,microbatch", [
    pytest.param(SMALL_CHAIN, 0, marks=pytest.mark.slow),  # the whole population in one vmap: 3 min here
    # groups of 2 vmapped inside one compiled scan (fitness.vmap_microbatch); also in the 8-device test
    pytest.param(SMALL_CHAIN, 2, marks=pytest.mark.slow),
    (SMALL_CHAIN, 1),  # one individual at a time inside the compiled scan (the cpu preset, per device)
    pytest.param(cell_space.CellSpace(num_nodes=3, channels=4, num_stages=1), 0, marks=pytest.mark.slow),
], ids=["chain", "chain_microbatch2", "chain_microbatch1", "cell"])
def test_vmap_and_loop_agree_and_the_run_compiles_once(space, microbatch):
  ds, data = _digits_fitness_data(steps=6)
  evaluator = fitness.PopulationEvaluator(space, 10, ds.image_shape, optax.adam(3e-3), chunk_size=4,
                                          eval_batch_size=100, num_devices=1, microbatch=microbatch)
  genomes = space.spec.sample(jax.random.key(0), 6)  # 6 = a full chunk plus a padded one
  keys = fitness.individual_keys(jax.random.key(1), 0, 6)
  vmapped = evaluator(genomes, keys, data)
  looped = _looped(space)
  # Same fitness; float summation order may differ, so allow one borderline image of the 200 to flip.
  np.testing.assert_allclose(vmapped.fitness, looped.fitness, atol=1 / 200 + 1e-6)
  np.testing.assert_allclose(vmapped.train_loss, looped.train_loss, rtol=1e-4)
  assert vmapped.fitness.shape == (6,) and np.all((0 <= vmapped.fitness) & (vmapped.fitness <= 1))
  # A later generation (new genomes, new keys) and another evaluation split reuse the executable.
  again = evaluator(space.spec.sample(jax.random.key(2), 4), fitness.individual_keys(jax.random.key(1), 1, 4),
                    fitness.with_eval_split(data, ds.test.images[:150], ds.test.labels[:150], 100))
  assert again.fitness.shape == (4,)
  assert evaluator.num_traces == 1 and evaluator.num_compilations == 1
  # Different keys give different initial weights (so different training), same keys the same.
  other = evaluator(genomes, fitness.individual_keys(jax.random.key(9), 0, 6), data)
  assert not np.allclose(other.train_loss, vmapped.train_loss)


@pytest.mark.slow  # long: runs with DLBOOK_SLOW=1 (keeps the CI suite in its time budget)
def test_fused_activation_equals_each_activation_with_its_gradient():
  from dlbook.models.chain_cnn import ACTIVATIONS
  x = jnp.concatenate([jnp.linspace(-30.0, 30.0, 2001), jnp.array([0.0, 1e-8, -1e-8])])
  names = kernels.FUSED_ACTIVATIONS
  for i, name in enumerate(names):
    fused = lambda v: kernels.fused_activation(i, v, names)
    np.testing.assert_allclose(fused(x), ACTIVATIONS[name](x), atol=3e-7, err_msg=name)
    np.testing.assert_allclose(jax.vmap(jax.grad(fused))(x), jax.vmap(jax.grad(ACTIVATIONS[name]))(x), atol=1e-6,
                               err_msg=name)
  # Under vmap each individual gets its own activation.
  out = jax.vmap(lambda i: kernels.fused_activation(i, x, names))(jnp.arange(4))
  for i, name in enumerate(names):
    np.testing.assert_allclose(out[i], ACTIVATIONS[name](x), atol=3e-7)


@pytest.mark.parametrize("shape", [(2, 6, 6, 3), (2, 7, 5, 3)])
def test_max_pool_2x2_equals_flax_max_pool_with_gradient_on_ties(shape):
  import flax.linen as nn
  x = jnp.asarray(np.random.default_rng(0).integers(-2, 3, shape), jnp.float32)  # many tied maxima
  ours, flax_pool = kernels.max_pool_2x2, lambda v: nn.max_pool(v, (2, 2), strides=(2, 2))
  np.testing.assert_array_equal(ours(x), flax_pool(x))
  weights = jnp.arange(ours(x).size, dtype=jnp.float32).reshape(ours(x).shape)
  grad = lambda pool: jax.grad(lambda v: jnp.sum(pool(v) * weights))(x)
  np.testing.assert_array_equal(grad(ours), grad(flax_pool))  # first maximum gets it, as flax


def test_vmap_microbatch_must_divide_the_chunk():
  with pytest.raises(DlbookError, match="vmap_microbatch"):
    fitness.PopulationEvaluator(SMALL_CHAIN, 10, (8, 8, 1), optax.adam(3e-3), chunk_size=4, eval_batch_size=100,
                                num_devices=1, microbatch=3)


def test_vmap_microbatch_auto_is_the_cpu_presets_choice_on_a_split_cpu_and_the_whole_chunk_elsewhere():
  from configs import evolve_cell, evolve_chain
  assert fitness.resolve_microbatch("auto", "cpu", 2) == 1  # the cpu presets' measured choice, unchanged
  assert fitness.resolve_microbatch("auto", "cpu", 1) == 0
  for backend in ("gpu", "tpu"):
    assert fitness.resolve_microbatch("auto", backend, 1) == fitness.resolve_microbatch("auto", backend, 8) == 0
  assert fitness.resolve_microbatch(2, "gpu", 1) == fitness.resolve_microbatch("2", "cpu", 1) == 2  # explicit kept
  for module in (evolve_chain, evolve_cell):
    for preset in ("smoke", "cpu", "full"):
      config = module.get_config(preset)
      assert config.fitness.vmap_microbatch == "auto"
      assert config.cpu_devices == (2 if preset == "cpu" else 0)
  with pytest.raises(DlbookError, match="vmap_microbatch"):
    fitness.resolve_microbatch("some", "cpu", 2)


SHARDING_SCRIPT = r"""
import json, jax, numpy as np, optax
from dlbook.nas import chain_space, fitness
import tests.test_evolutionary_nas as t
ds, data = t._digits_fitness_data(steps=4)
space = chain_space.ChainSpace(max_conv=2, filter_choices=(4, 8), kernel_choices=(3, 5), max_dense=1,
                               unit_choices=(8, 16), activations=("relu", "tanh"))
genomes = space.spec.sample(jax.random.key(0), 8)
keys = fitness.individual_keys(jax.random.key(1), 0, 8)
out = {"devices": jax.device_count()}
for n, microbatch in ((8, 0), (2, 2), (1, 0)):  # (2, 2): 4 individuals per device, scanned in groups of 2
  ev = fitness.PopulationEvaluator(space, 10, ds.image_shape, optax.adam(3e-3), chunk_size=8,
                                   eval_batch_size=100, num_devices=n, microbatch=microbatch)
  r = ev(genomes, keys, data)
  out[f"fitness_{n}"] = r.fitness.tolist()
  out[f"loss_{n}"] = r.train_loss.tolist()
  g = jax.device_put(genomes, ev._population)
  out[f"shards_{n}"] = len(g["n_conv"].sharding.device_set)
print("RESULT" + json.dumps(out))
"""


@pytest.mark.slow  # minutes on 2 shared cores (compiles a supernet); DLBOOK_SLOW=1
def test_population_is_sharded_over_8_devices_and_agrees_with_1():
  env = dict(os.environ, PYTHONPATH=ROOT, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", SHARDING_SCRIPT], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.split("RESULT", 1)[1])
  assert out["devices"] == 8 and out["shards_8"] == 8 and out["shards_2"] == 2 and out["shards_1"] == 1
  for n in (8, 2):
    np.testing.assert_allclose(out[f"fitness_{n}"], out["fitness_1"], atol=1 / 200 + 1e-6)  # <= 1 image of 200
    np.testing.assert_allclose(out[f"loss_{n}"], out["loss_1"], rtol=1e-4)


def _load(workdir, name):
  with open(os.path.join(workdir, name)) as f:
    return json.load(f)


@pytest.mark.slow  # minutes on 2 shared cores (compiles a supernet); DLBOOK_SLOW=1
def test_evolve_chain_smoke_runs_and_resumes_after_a_kill(tmp_path):
  workdir = str(tmp_path / "chain")
  # cpu_devices=2: the launcher splits the CPU into 2 devices and shards the population over them.
  args = ("--config=configs/evolve_chain.py:smoke", "--config.cpu_devices=2", f"--workdir={workdir}")
  proc = run_launcher("experiments.evolve", *args)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "best_fitness=" in proc.stdout
  results = _load(workdir, "results.json")
  rows = _load(workdir, "generations.json")
  m = results["metrics"]
  best = [r["best_fitness"] for r in rows]
  assert [r["generation"] for r in rows] == [0, 1, 2] and best == m["best_fitness_per_generation"]
  assert all(b >= a for a, b in zip(best, best[1:]))  # best fitness never decreases
  assert m["best_fitness"] == max(max(r["population_fitness"]) for r in rows)
  assert m["fitness_function_traces"] == 1 and m["fitness_function_compilations"] == 1
  assert results["devices_used"] == 2
  for name in ("fitness.png", "best_architecture.png", "best_architecture.json", "history.jsonl"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0
  assert os.listdir(os.path.join(workdir, "tensorboard"))
  assert set(results["best_architecture"]) == {"n_conv", "conv_filters", "conv_kernel", "n_dense", "dense_units",
                                               "activation"}
  # A kill after generation 1: the last checkpoint and the outputs written later are gone.
  shutil.rmtree(os.path.join(workdir, "checkpoints", "2"))
  os.remove(os.path.join(workdir, "results.json"))
  proc = run_launcher("experiments.evolve", *args)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "resumed after generation 1" in proc.stderr
  resumed = _load(workdir, "results.json")
  assert resumed["resumed_after_generation"] == 1
  assert _load(workdir, "generations.json") == rows  # exactly the uninterrupted run
  assert resumed["metrics"]["best_fitness"] == m["best_fitness"]


@pytest.mark.slow  # minutes on 2 shared cores (compiles a supernet); DLBOOK_SLOW=1
def test_evolve_cell_smoke_runs(tmp_path):
  workdir = str(tmp_path / "cell")
  proc = run_launcher("experiments.evolve", "--config=configs/evolve_cell.py:smoke", f"--workdir={workdir}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  results = _load(workdir, "results.json")
  cells = results["best_architecture"]["cells"]
  assert len(cells) == 1 and [tuple(e[1:]) for e in cells[0]] == [(0, 1), (0, 2), (1, 2)]
  best = results["metrics"]["best_fitness_per_generation"]
  assert len(best) == 3 and all(b >= a for a, b in zip(best, best[1:]))
  assert os.path.getsize(os.path.join(workdir, "best_architecture.png")) > 0


def test_a_diverged_individual_has_no_fitness():
  # Its accuracy is that of NaN logits: the GA gets NaN (never selected) instead.
  result = fitness.Evaluation(np.float32([0.5, 0.1, 0.3]), np.float32([1.0, np.nan, np.inf]))
  np.testing.assert_array_equal(result.ga_fitness(), np.float32([0.5, np.nan, np.nan]))
  fine = fitness.Evaluation(np.float32([0.5, 0.1]), np.float32([1.0, 2.0]))
  np.testing.assert_array_equal(fine.ga_fitness(), fine.fitness)


@pytest.mark.slow  # minutes on 2 shared cores (compiles a supernet); DLBOOK_SLOW=1
def test_evolve_stops_with_one_line_when_every_individual_diverges(tmp_path):
  workdir = tmp_path / "diverged"
  proc = run_launcher("experiments.evolve", "--config=configs/evolve_chain.py:smoke",
                      "--config.optimizer.learning_rate=1e30", f"--workdir={workdir}")
  assert proc.returncode == 2, proc.stderr[-3000:]
  errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and "generation 0: every individual's fitness is non-finite" in errors[0], errors
  assert "Traceback" not in proc.stderr
  assert not (workdir / "results.json").exists() and not (workdir / "best_architecture.json").exists()
  assert not (workdir / "checkpoints").exists() or not os.listdir(workdir / "checkpoints")


@pytest.mark.parametrize("args,message", [
    (("--config=configs/evolve_chain.py:tiny",), "unknown preset 'tiny'"),
    pytest.param(("--config=configs/evolve_chain.py:smoke", "--config.ga.selection=wheel"), "unknown selection 'wheel'",
                 marks=pytest.mark.slow),
    (("--config=configs/evolve_cell.py:smoke", "--config.space.ops=('none','conv_9x9')"), "cell ops"),
    pytest.param(("--config=configs/evolve_chain.py:smoke", "--config.ga.num_offspring=4"), "num_offspring",
                 marks=pytest.mark.slow),
])
def test_evolve_bad_input_exits_with_one_line(tmp_path, args, message):
  proc = run_launcher("experiments.evolve", *args, f"--workdir={tmp_path / 'w'}")
  assert proc.returncode == 2
  errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and message in errors[0], proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr
