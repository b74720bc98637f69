"""GA transfer learning with DenseNet-SE (seed 004): the vmapped population equals each individual trained
alone on its truly cut network with a static freezing mask; freezing keeps leaves bit-identical; genes,
repair and decoding; the launcher end to end, resume mid-generation, bad input."""

import json
import os
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util

from dlbook import evolution
from dlbook.data.pipeline import Split
from dlbook.hpsearch import ga_transfer as gt
from dlbook.hpsearch import ga_transfer_search as search
from dlbook.models.backbones import densenet
from dlbook.training import freezing
from dlbook.training.state import TrainState
from tests.conftest import run_launcher

TINY = dict(blocks=(1, 2), growth=4, init_features=8, se_reduction=4, stem_stride=1, stem_pool=False)
ENDS = (1, 3)
WIDTHS = (12, 14)  # block outputs of the whole tiny network: 8 + 4; 12 // 2 + 2*4
SIZE, CLASSES, BATCH, STEPS = 8, 3, 4, 3
# XLA:CPU's backend optimisations cost most of the compile time of these small programs and change no
# result beyond rounding: the test compiles without them.
FAST = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


# ----------------------------------------------------------------------------------- the reference network

class CutSE(nn.Module):
  """SE on the first w channels with the full network's hidden width (the masked network's SE sees the
  excluded layers' channels as zeros, which add nothing to fc1 and whose scales multiply zeros)."""
  hidden: int

  @nn.compact
  def __call__(self, x):
    s = nn.relu(nn.Dense(self.hidden, name="fc1")(jnp.mean(x, axis=(1, 2))))
    return x * nn.sigmoid(nn.Dense(x.shape[-1], name="fc2")(s))[:, None, None, :]


class CutDenseNet(nn.Module):
  """The tiny DenseNet-SE truly cut after `include` dense layers: stem, layers 1..include, the transitions
  between completed blocks, the cut block's SE, global pooling (after the final BN only in the last block),
  the pooled features zero-padded to the widest block (the head's input width)."""
  include: int
  se_hidden: tuple

  @nn.compact
  def __call__(self, x, train=False, include=None):
    bn = lambda name: nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name)  # noqa: E731
    x = nn.Conv(TINY["init_features"], (7, 7), (1, 1), padding=((3, 3), (3, 3)), use_bias=False, name="stem_conv")(x)
    x = nn.relu(bn("stem_bn")(x))
    k = 0
    for b, n in enumerate(TINY["blocks"]):
      for _ in range(n):
        k += 1
        if k <= self.include:
          x = jnp.concatenate([x, densenet.DenseLayer(TINY["growth"], name=f"layer_{k}")(x, train)], -1)
      x = CutSE(self.se_hidden[b], name=f"se_{b + 1}")(x)
      if self.include <= ENDS[b]:
        if b == len(ENDS) - 1:
          x = nn.relu(bn("norm_final")(x))
        feats = jnp.mean(x, axis=(1, 2))
        return jnp.pad(feats, ((0, 0), (0, WIDTHS[-1] - feats.shape[-1])))
      x = nn.relu(bn(f"transition_{b + 1}_norm")(x))
      x = nn.Conv(x.shape[-1] // 2, (1, 1), use_bias=False, name=f"transition_{b + 1}_conv")(x)
      x = nn.avg_pool(x, (2, 2), (2, 2))


def cut_variables(full, model, collection="params"):
  """The masked network's variables of one individual restricted to the cut network's shapes."""
  shapes = traverse_util.flatten_dict(jax.eval_shape(lambda: model.init(
      {"params": jax.random.key(0), "dropout": jax.random.key(0)}, jnp.zeros((1, SIZE, SIZE, 3))))[collection])
  flat = traverse_util.flatten_dict(full)
  out = {}
  for k, s in shapes.items():
    v = flat[k]
    out[k] = v[tuple(slice(0, d) for d in s.shape)]  # the cut block's SE: leading rows/columns
  return traverse_util.unflatten_dict(out)


@pytest.fixture(scope="module")
def setup():
  start = gt.load_start("densenet_se", num_classes=CLASSES, image_size=SIZE, weights_spec="", backbone_kwargs=TINY)
  rng = np.random.default_rng(0)
  images = rng.uniform(size=(STEPS, BATCH, SIZE, SIZE, 3)).astype(np.float32)
  labels = rng.integers(0, CLASSES, size=(STEPS, BATCH)).astype(np.int32)
  val = Split(rng.uniform(size=(10, SIZE, SIZE, 3)).astype(np.float32), rng.integers(0, CLASSES, 10).astype(np.int32))
  # (included, frozen): cut inside block 2 with block 1 (stem, layer 1, transition 1) frozen; cut at the end
  # of block 1 with nothing frozen; the whole network (final BN) with block 1 frozen.
  genes = {"included": jnp.array([2, 1, 3], jnp.int32), "frozen": jnp.array([1, 0, 1], jnp.int32),
           "learning_rate": jnp.array([1e-2, 3e-3, 2e-2], jnp.float32), "dropout": jnp.array([0.2, 0.5, 0.8])}
  keys = jax.random.split(jax.random.key(3), 3)  # threefry: rbg bits differ under vmap
  state0 = gt.init_population(start, keys)
  initial = jax.device_get(state0)
  step = gt.population_step(start.model, start.blocks, max_frozen=2).lower(
      state0, genes, images[0], labels[0], keys, jnp.int32(0)).compile(FAST)
  state, losses = state0, []
  for s in range(STEPS):
    state, m = step(state, genes, images[s], labels[s], keys, jnp.int32(s))
    losses.append(float(m["loss"]))
  infer = gt.eval_fn(start.model).lower(state.params, state.batch_stats, genes["included"], val.images[:4]).compile(FAST)
  fit = gt.evaluate_population(infer, state, genes, val, 4)
  return dict(start=start, images=images, labels=labels, val=val, genes=genes, keys=keys, initial=initial,
              final=jax.device_get(state), losses=losses, fitness=fit)


def test_vmapped_population_equals_each_individual_trained_alone_on_its_cut_network(setup):
  s = setup
  start, final, initial = s["start"], s["final"], s["initial"]
  hidden = tuple(w // TINY["se_reduction"] for w in WIDTHS)
  ref_losses, ref_fitness = [], []
  for i in range(3):
    n, f = int(s["genes"]["included"][i]), int(s["genes"]["frozen"][i])
    lr, rate = float(s["genes"]["learning_rate"][i]), float(s["genes"]["dropout"][i])
    model = gt.GANet(CutDenseNet(n, hidden), CLASSES, start.model.normalization)
    take = lambda t: jax.tree.map(lambda x: x[i], t)  # noqa: E731
    params = cut_variables(take(initial.params), model)
    stats = cut_variables(take(initial.batch_stats), model, "batch_stats")
    prefixes = tuple(("backbone",) + p for p in densenet.frozen_prefixes(f, TINY["blocks"]))
    mask = freezing.trainable_mask(params, prefixes)
    state = TrainState.create(apply_fn=lambda v, x, train, **kw: model.apply(v, x, dropout=rate, train=train, **kw),
                              params=params, tx=freezing.masked_optimizer(optax.adam(lr), mask), batch_stats=stats)
    batch0 = {"image": s["images"][0], "label": s["labels"][0]}
    step = jax.jit(freezing.make_freeze_train_step(mask, prefixes)).lower(state, batch0, s["keys"][i]).compile(FAST)
    losses = []
    for t in range(STEPS):
      batch = {"image": s["images"][t], "label": s["labels"][t]}
      state, m = step(state, batch, jax.random.fold_in(s["keys"][i], t))
      losses.append(float(m["loss"]))
    ref_losses.append(losses)
    # every leaf of the cut network equals the masked network's (sliced) leaf after training
    want = cut_variables(take(final.params), model)
    # Adam divides by sqrt(v): a rounding difference in a near-zero gradient moves a weight by up to ~lr x 1e-3
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=5e-5), state.params, want)
    want_stats = cut_variables(take(final.batch_stats), model, "batch_stats")
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=5e-5), state.batch_stats, want_stats)
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    logits = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(variables, s["val"].images).compile(FAST)(
        variables, s["val"].images)
    ref_fitness.append(float(optax.softmax_cross_entropy_with_integer_labels(logits, s["val"].labels).mean()))
  np.testing.assert_allclose(s["losses"], np.mean(ref_losses, axis=0), rtol=5e-4)
  np.testing.assert_allclose(s["fitness"]["loss"], ref_fitness, rtol=1e-3)
  assert len(set(np.round(ref_fitness, 4))) == 3  # three different individuals, not one repeated


def test_frozen_and_excluded_leaves_stay_bit_identical(setup):
  s = setup
  initial, final, blocks = s["initial"], s["final"], TINY["blocks"]
  for i in range(3):
    n, f = int(s["genes"]["included"][i]), int(s["genes"]["frozen"][i])
    for coll in ("params", "batch_stats"):
      old = traverse_util.flatten_dict(getattr(initial, coll))
      new = traverse_util.flatten_dict(getattr(final, coll))
      for k in old:
        if k[0] != "backbone":
          continue
        frozen = gt.module_depth(k[1], blocks) <= f
        unused = n < gt.module_needed_from(k[1], blocks)
        same = np.array_equal(old[k][i], new[k][i])
        if frozen or unused:
          assert same, (i, coll, k)
        elif coll == "params" and k[1].startswith(("layer_", "se_")) and k[-1] == "kernel":
          assert not same, (i, coll, k)  # trainable, used leaves did train
  # the head's rows past the cut block's width (zero-padded features) never change
  np.testing.assert_array_equal(final.params["head"]["kernel"][1, 12:], initial.params["head"]["kernel"][1, 12:])


def test_genes_repair_and_decoding():
  spec = gt.genome_spec()
  assert [g.name for g in spec.genes] == list(gt.GENES)
  assert (spec.lows.tolist(), spec.highs.tolist()) == ([1, 0, pytest.approx(1e-6), pytest.approx(0.1)],
                                                       [58, 18, pytest.approx(0.1), pytest.approx(0.9)])
  ga, params = gt.make_ga(spec, 64, 5)
  state = ga.init(jax.random.key(0), params)  # the initial population: sampled, then repaired
  pop = state.population
  assert (np.asarray(pop["frozen"]) <= np.asarray(pop["included"])).all()
  assert (np.asarray(pop["included"]) < 18).any()  # the constraint bites in this draw
  # offspring (two-point crossover + mutation of every child) are repaired too
  state = state.replace(fitness=jax.random.normal(jax.random.key(1), (64,)))
  off, _ = evolution.compiled_steps(ga).ask(jax.random.key(2), state, params)
  assert (np.asarray(off["frozen"]) <= np.asarray(off["included"])).all()
  # repair clips: (included 3, frozen 12) -> frozen 3
  np.testing.assert_array_equal(gt.repair({"included": jnp.array([3, 40]), "frozen": jnp.array([12, 12])})["frozen"],
                                [3, 12])
  lrs = np.asarray(spec.sample(jax.random.key(1), 4000)["learning_rate"])
  assert 0.45 < np.mean(np.log10(lrs) < -3.5) < 0.55  # log-uniform: half the draws below the log-midpoint
  blocks = densenet.DENSENET_BLOCKS["densenet121"]
  d = gt.decode({"included": 7, "frozen": 6, "learning_rate": 1e-3, "dropout": 0.5}, blocks)
  assert (d["cut_block"], d["layers_in_cut_block"]) == (2, 1)
  assert d["frozen_modules"] == ["stem", "dense layers 1-6", "transition 1"]
  assert gt.decode({"included": 6, "frozen": 0, "learning_rate": 1e-3, "dropout": 0.5}, blocks)["cut_block"] == 1
  d = gt.decode({"included": 58, "frozen": 18, "learning_rate": 1e-3, "dropout": 0.5}, blocks)
  assert (d["cut_block"], d["frozen_modules"][-1]) == (4, "transition 2")


def test_bad_input_is_one_line_and_exit_2(tmp_path):
  from configs import ga_transfer as cfg
  from dlbook.errors import DlbookError
  c = cfg.get_config("smoke")
  c.genes.frozen = (0, 9)
  with pytest.raises(DlbookError, match="genes.frozen"):
    search.validate_config(c)
  c = cfg.get_config("smoke")
  c.genes.learning_rate = (0.1, 1e-6)
  with pytest.raises(DlbookError, match="learning_rate"):
    search.validate_config(c)
  r = run_launcher("experiments.ga_transfer", "--config=configs/ga_transfer.py:smoke", f"--workdir={tmp_path}/w",
                   f"--config.weights={tmp_path}/missing.safetensors")
  lines = [line for line in r.stderr.strip().splitlines() if line.startswith("error:")]
  assert r.returncode == 2 and len(lines) == 1 and "missing.safetensors" in lines[0], r.stderr[-2000:]
  assert not os.path.exists(f"{tmp_path}/w/config.json")


def _history(workdir):
  with open(os.path.join(workdir, "seed_0", "ga", "generations.json")) as fh:
    return json.load(fh)


@pytest.mark.slow  # two launcher runs (several minutes of compiles on a busy 2-core machine): DLBOOK_SLOW=1
def test_smoke_end_to_end_and_resume_mid_generation_gives_the_same_history(tmp_path):
  out = str(tmp_path / "w")
  args = ["--config=configs/ga_transfer.py:smoke", f"--workdir={out}", "--config.keep_unit_checkpoints=True",
          f"--docs_dir={tmp_path}/docs"]
  r = run_launcher("experiments.ga_transfer", *args, timeout=1800)
  assert r.returncode == 0, r.stderr[-3000:]
  first = _history(out)
  with open(os.path.join(out, "results.json")) as fh:
    results = json.load(fh)
  assert len(first) == 3 and all(len(g["individuals"]) == 3 for g in first)
  for g in first:
    for p in g["individuals"]:
      assert p["genes"]["frozen"] <= p["genes"]["included"] and p["fitness"] == pytest.approx(-p["val_loss"])
  with open(os.path.join(out, "seed_0", "random_search", "draws.json")) as fh:
    assert len(json.load(fh)) == 9  # the GA's 3 x 3 trainings
  for name in ("fitness.png", "genes.png"):
    assert os.path.getsize(os.path.join(out, "seed_0", "ga", name)) > 1000
  assert os.path.exists(os.path.join(tmp_path, "docs", "ga_transfer_smoke_table.md"))
  # a kill in the middle of generation 1: its last training checkpoint, its evaluation, everything later gone
  ga = os.path.join(out, "seed_0", "ga")
  for p in ("results.json", "seed_0/ga/results.json", "seed_0/ga/checkpoints/1", "seed_0/ga/checkpoints/2",
            "seed_0/ga/gen_001/evaluation.json", "seed_0/ga/gen_001/checkpoints/4", "seed_0/ga/gen_002",
            "seed_0/random_search"):
    path = os.path.join(out, p)
    shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
  assert os.path.isdir(os.path.join(ga, "gen_001", "checkpoints", "2"))
  r = run_launcher("experiments.ga_transfer", *args, timeout=1800)
  assert r.returncode == 0, r.stderr[-3000:]
  assert "resumed from checkpoint step 2" in r.stderr
  assert _history(out) == first
  with open(os.path.join(out, "results.json")) as fh:
    assert json.load(fh)["metrics"] == results["metrics"]
