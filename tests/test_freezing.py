"""Selective freezing (book ch. 4): blocks, SSF/PSF schedules, masks, optimizer state, masked steps."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util

from dlbook import models
from dlbook.errors import DlbookError
from dlbook.training import create_train_state, freezing, make_train_step

SMALL = dict(n_conv=2, conv_filters=(4, 8), conv_kernel=(3, 3), n_dense=2, dense_units=(16, 16))


def small_state(tx, seed=0):
  model = models.build("chain_cnn", num_classes=10, **SMALL)
  return create_train_state(model, jax.random.key(seed), (1, 8, 8, 1), tx)


def batch(seed, n=16):
  k1, k2 = jax.random.split(jax.random.key(seed))
  return {"image": jax.random.normal(k1, (n, 8, 8, 1)), "label": jax.random.randint(k2, (n,), 0, 10)}


def algorithm2_starts(n, k):
  """Algorithm 2, step V, transcribed literally: do { ...freeze [l, l+K)... } while (l < N-2K)."""
  starts, l = [], 0
  while True:
    starts.append(l)
    if not l < n - 2 * k:
      break
    l += k
  return starts


# --------------------------------------------------------------------------- schedules

@pytest.mark.parametrize("k,starts", [(5, [0, 5, 10]), (4, [0, 4, 8, 12]), (2, [0, 2, 4, 6, 8, 10, 12, 14, 16])])
def test_psf_windows_follow_algorithm_2_for_20_cells(k, starts):
  windows = freezing.psf_windows(20, k)
  assert [a for a, _ in windows] == starts == algorithm2_starts(20, k)
  assert all(b - a == k for a, b in windows)
  assert windows[-1][1] == 20 - k  # the second-to-last block of K is the last one frozen


@pytest.mark.parametrize("fraction,k,iterations", [(0.25, 5, 3), (0.2, 4, 4), (0.1, 2, 9)])
def test_freeze_fraction_gives_the_books_iterations(fraction, k, iterations):
  assert freezing.psf_window_size(20, fraction) == k
  frozen = freezing.fine_iterations("psf", 20, fraction)
  assert len(frozen) == iterations  # rows of book Tables 4.4-4.6
  assert frozen[0] == tuple(range(k)) and 19 not in {b for f in frozen for b in f}


def test_do_while_and_inclusive_range_agree_when_k_divides_n():
  for n in (4, 6, 8, 12, 20, 40):
    for k in range(1, n // 2 + 1):
      if n % k == 0:
        assert [a for a, _ in freezing.psf_windows(n, k)] == algorithm2_starts(n, k)


def test_ssf_and_traditional_schedules():
  assert freezing.fine_iterations("ssf", 20) == [tuple(range(10))]
  assert freezing.fine_iterations("ssf", 7) == [(0, 1, 2)]
  assert freezing.fine_iterations("traditional", 20) == [()]


def test_bad_schedule_values_are_user_errors():
  with pytest.raises(DlbookError, match="unknown freezing mode 'psff'.*psf"):
    freezing.fine_iterations("psff", 20)
  with pytest.raises(DlbookError, match="freeze_fraction must be in"):
    freezing.psf_window_size(20, 0.75)
  with pytest.raises(DlbookError, match="K=11"):
    freezing.psf_windows(20, 11)
  with pytest.raises(DlbookError, match="unknown block layout 'resnet'"):
    freezing.model_blocks("resnet", {})


def test_phase_plan_gives_every_mode_the_same_total_steps():
  totals = set()
  for mode, ff in (("traditional", 0), ("ssf", 0), ("psf", 0.25), ("psf", 0.1)):
    plan = freezing.phase_plan(mode, 20, coarse_steps=100, fine_steps=50, freeze_fraction=ff)
    assert plan[0].frozen == () and (plan[0].start, plan[0].stop) == (0, 100)
    assert all(a.stop == b.start for a, b in zip(plan, plan[1:]))
    totals.add(plan[-1].stop)
  assert totals == {150}
  psf = freezing.phase_plan("psf", 20, 100, 50, 0.1)  # 9 iterations share 50 steps: 6,6,6,6,6,5,5,5,5
  assert [p.stop - p.start for p in psf[1:]] == [6] * 5 + [5] * 4
  assert freezing.phase_index(psf, 99) == 0 and freezing.phase_index(psf, 100) == 1
  assert freezing.phase_index(psf, 150) == 9
  with pytest.raises(DlbookError, match="fine_steps=5 cannot cover the 9"):
    freezing.phase_plan("psf", 20, 100, 5, 0.1)


# --------------------------------------------------------------------------- blocks

@pytest.mark.slow  # long: runs with DLBOOK_SLOW=1 (keeps the CI suite in its time budget)
def test_chain_cnn_blocks_are_layers_with_classifier_last():
  state = small_state(optax.sgd(0.1))
  blocks = freezing.model_blocks("chain_cnn", state.params)
  assert [b.name for b in blocks] == ["conv_0", "conv_1", "dense_0", "dense_1+classifier"]
  assert blocks[0].prefixes == (("conv_0",), ("bn_0",))
  covered = {p[0] for b in blocks for p in b.prefixes}
  assert covered == set(state.params)


def test_darts_eval_layout_one_block_per_cell():
  params = {"stem": {}, "aux_head": {}, "classifier": {}, **{f"cell_{i}": {} for i in range(20)}}
  blocks = freezing.model_blocks("darts_eval", params)
  assert len(blocks) == 20
  assert blocks[0].prefixes == (("stem",), ("cell_0",))
  assert blocks[10].prefixes == (("cell_10",),)  # numeric, not lexicographic, order
  assert blocks[-1].prefixes == (("cell_19",), ("aux_head",), ("classifier",))
  with pytest.raises(DlbookError, match="not numbered"):
    freezing.model_blocks("darts_eval", {"cell_0": {}, "cell_2": {}})


@pytest.mark.slow  # long: runs with DLBOOK_SLOW=1 (keeps the CI suite in its time budget)
def test_darts_eval_real_network_blocks_and_frozen_batchnorm():
  model = models.build("darts_eval", num_classes=10, genotype="DARTS_V2", init_channels=2, layers=3,
                       auxiliary=True, drop_path_prob=0.0)
  x = jax.random.normal(jax.random.key(0), (2, 32, 32, 1))
  # Random values on the real structure (a jitted init compiles for ~15 s on CPU); variances positive.
  shapes = jax.eval_shape(lambda x: model.init(jax.random.key(1), x, train=False), x[:1])
  rng = np.random.default_rng(0)
  variables = jax.tree.map(lambda s: jnp.asarray(np.abs(rng.normal(size=s.shape)) + 0.1, s.dtype), shapes)
  blocks = freezing.model_blocks("darts_eval", variables["params"])
  assert [b.name for b in blocks] == ["stem+cell_0", "cell_1", "cell_2+heads"]
  assert {p[0] for b in blocks for p in b.prefixes} == set(variables["params"])
  mask = freezing.trainable_mask(variables["params"], freezing.frozen_prefixes(blocks, (0,)))
  flat = traverse_util.flatten_dict(mask)
  assert {k[0] for k, v in flat.items() if not v} == {"stem", "cell_0"}

  @jax.jit
  def train_forward(variables, x):
    with freezing.frozen_batchnorm(freezing.frozen_prefixes(blocks, (0,))):
      return model.apply(variables, x, train=True, mutable=["batch_stats"])

  (_, aux), updates = train_forward(variables, x)
  assert aux is not None
  for name in variables["batch_stats"]:
    same = jax.tree.all(jax.tree.map(lambda a, b: bool((a == b).all()), updates["batch_stats"][name],
                                     variables["batch_stats"][name]))
    assert same == (name in ("stem", "cell_0")), name


# --------------------------------------------------------------------------- masks and optimizer state

def test_optimizer_state_only_for_trainable_leaves():
  state = small_state(optax.sgd(0.1))
  blocks = freezing.model_blocks("chain_cnn", state.params)
  mask = freezing.trainable_mask(state.params, freezing.frozen_prefixes(blocks, (1,)))
  trainable, frozen = freezing.partition(state.params, mask)
  assert {k[0] for k in frozen} == {"conv_1", "bn_1"}
  for base, copies in ((optax.adam(1e-3), 2),
                       (optax.chain(optax.add_decayed_weights(1e-2), optax.sgd(0.1, momentum=0.9)), 1)):
    opt_state = freezing.masked_optimizer(base, mask).init(state.params)
    arrays = [x for x in jax.tree.leaves(opt_state) if jnp.ndim(x) > 0]  # scalars: step counts
    assert sorted(x.shape for x in arrays) == sorted([v.shape for v in trainable.values()] * copies)
    frozen_shapes = {v.shape for v in frozen.values()} - {v.shape for v in trainable.values()}
    assert frozen_shapes and not frozen_shapes & {x.shape for x in arrays}
  costs = freezing.parameter_costs(state.params, blocks, freezing.phase_plan("psf", 4, 10, 10, 0.25))
  total = sum(x.size for x in jax.tree.leaves(state.params))
  assert costs["P1"] == total
  assert costs["P2"][1] == sum(x.size for x in trainable.values()) < total
  assert costs["average"][1] == (total + costs["P2"][1]) / 2


def test_transfer_opt_state_keeps_moments_of_leaves_that_stay_trainable():
  state = small_state(optax.sgd(0.1))
  blocks = freezing.model_blocks("chain_cnn", state.params)
  base = optax.sgd(0.1, momentum=0.9)
  ones = jax.tree.map(jnp.ones_like, state.params)
  tx_a = freezing.masked_optimizer(base, freezing.trainable_mask(state.params, freezing.frozen_prefixes(blocks, (0,))))
  _, st_a = tx_a.update(ones, tx_a.init(state.params), state.params)  # momentum = 1 on trainable leaves
  tx_b = freezing.masked_optimizer(base, freezing.trainable_mask(state.params, freezing.frozen_prefixes(blocks, (1,))))
  st_b = freezing.transfer_opt_state(st_a, tx_b.init(state.params))
  trace = st_b.inner_states["trainable"].inner_state[0].trace
  assert float(trace["dense_0"]["kernel"].min()) == 1.0  # trainable before and after: carried over
  assert float(jnp.abs(trace["conv_0"]["kernel"]).max()) == 0.0  # frozen before: fresh zeros
  assert isinstance(trace["conv_1"]["kernel"], optax.MaskedNode)  # frozen now: no state


# --------------------------------------------------------------------------- the masked step

def test_frozen_leaves_bit_identical_and_batchnorm_stats_fixed_after_many_steps():
  # A middle window (conv_1 + bn_1): gradients pass through it, weight decay is on.
  base = optax.chain(optax.add_decayed_weights(0.1), optax.sgd(0.05, momentum=0.9))
  state0 = small_state(base, seed=1)
  blocks = freezing.model_blocks("chain_cnn", state0.params)
  prefixes = freezing.frozen_prefixes(blocks, (1,))
  mask = freezing.trainable_mask(state0.params, prefixes)
  state = freezing.with_frozen_blocks(state0, base, mask)
  step = jax.jit(freezing.make_freeze_train_step(mask, prefixes))
  for i in range(30):
    state, metrics = step(state, batch(i), jax.random.key(i))
  assert np.isfinite(float(metrics["loss"]))
  p0, p1 = traverse_util.flatten_dict(state0.params), traverse_util.flatten_dict(state.params)
  for k in p0:
    same = np.asarray(p0[k]).tobytes() == np.asarray(p1[k]).tobytes()
    assert same == (k[0] in ("conv_1", "bn_1")), k  # frozen: bit-identical; trainable: changed
  s0, s1 = traverse_util.flatten_dict(state0.batch_stats), traverse_util.flatten_dict(state.batch_stats)
  for k in s0:
    same = np.asarray(s0[k]).tobytes() == np.asarray(s1[k]).tobytes()
    assert same == (k[0] == "bn_1"), k
  assert int(state.step) == 30


def test_frozen_batchnorm_runs_in_inference_mode():
  state = small_state(optax.sgd(0.1))
  blocks = freezing.model_blocks("chain_cnn", state.params)
  variables = {"params": state.params,
               "batch_stats": jax.tree.map(lambda x: x + 0.5, state.batch_stats)}  # non-trivial running stats
  x = batch(0)["image"]
  eval_logits = state.apply_fn(variables, x, train=False)
  with freezing.frozen_batchnorm(freezing.frozen_prefixes(blocks, range(len(blocks)))):
    all_frozen, updates = state.apply_fn(variables, x, train=True, mutable=["batch_stats"])
  np.testing.assert_allclose(all_frozen, eval_logits, rtol=1e-5, atol=1e-5)
  assert jax.tree.all(jax.tree.map(lambda a, b: bool((a == b).all()), updates["batch_stats"],
                                   variables["batch_stats"]))
  train_logits, _ = state.apply_fn(variables, x, train=True, mutable=["batch_stats"])
  assert float(jnp.abs(train_logits - eval_logits).max()) > 1e-3  # the interception made the difference


def count_primitive(jaxpr, name):
  """Occurrences of primitive `name` in a jaxpr, including nested (pjit, custom_vjp) jaxprs."""
  from jax.extend import core as jex_core

  def subjaxprs(value):
    if isinstance(value, jex_core.ClosedJaxpr):
      yield value.jaxpr
    elif isinstance(value, jex_core.Jaxpr):
      yield value
    elif isinstance(value, (tuple, list)):
      for v in value:
        yield from subjaxprs(v)

  n = 0
  for eqn in jaxpr.eqns:
    n += eqn.primitive.name == name
    for value in eqn.params.values():
      n += sum(count_primitive(sub, name) for sub in subjaxprs(value))
  return n


def test_gradients_only_for_trainable_leaves():
  """Convolutions in the traced step: forward 2; full backward 3 (conv_1 input and weight
  gradients, conv_0 weight gradient). A frozen prefix has no backward pass at all; a frozen
  middle window passes the activation gradient but computes no weight gradient."""
  base = optax.sgd(0.1, momentum=0.9)
  state = small_state(base)
  blocks = freezing.model_blocks("chain_cnn", state.params)

  def convs(frozen):
    prefixes = freezing.frozen_prefixes(blocks, frozen)
    mask = freezing.trainable_mask(state.params, prefixes)
    s = freezing.with_frozen_blocks(state, base, mask)
    jaxpr = jax.make_jaxpr(freezing.make_freeze_train_step(mask, prefixes))(s, batch(0), jax.random.key(0))
    return count_primitive(jaxpr.jaxpr, "conv_general_dilated")

  assert convs(()) == 5
  assert convs(freezing.ssf_frozen_blocks(4)) == 2  # SSF: conv_0, conv_1 frozen -> forward only
  assert convs((1,)) == 4  # PSF window on conv_1: + its input gradient + conv_0's weight gradient
  assert convs((0,)) == 3  # frozen first layer: only conv_1's weight gradient

@pytest.mark.slow  # long: runs with DLBOOK_SLOW=1 (keeps the CI suite in its time budget)
def test_all_trainable_mask_is_ordinary_training():
  base = optax.chain(optax.add_decayed_weights(1e-3), optax.sgd(0.1, momentum=0.9))
  state = small_state(base)
  mask = freezing.trainable_mask(state.params, ())
  masked = jax.jit(freezing.make_freeze_train_step(mask))
  plain = jax.jit(make_train_step())
  a, b = freezing.with_frozen_blocks(state, base, mask), state
  for i in range(3):
    a, _ = masked(a, batch(i), jax.random.key(i))
    b, _ = plain(b, batch(i), jax.random.key(i))
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7), a.params, b.params)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7), a.batch_stats, b.batch_stats)
