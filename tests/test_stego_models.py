"""Stego losses against hand-computed values, the §8.2.2 tensor shapes, LSB, XuNet's KV filter,
and the Algorithm 1-3 gradient routing of the train step."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlbook.errors import DlbookError
from dlbook.stego import gsivat, losses, lsb, multi_message, steps, training, two_stage, xunet
from dlbook.stego.networks import build_networks
from dlbook.stego.settings import Settings


# ----------------------------------------------------------------------------- losses

def test_distance_matches_hand_computed_values():
  a = jnp.array([[0.0, 1.0], [2.0, 2.0]])
  b = jnp.array([[1.0, 1.0], [0.0, 2.0]])
  assert float(losses.distance(a, b, "mse")) == pytest.approx((1 + 0 + 4 + 0) / 4)
  assert float(losses.distance(a, b, "l1")) == pytest.approx((1 + 0 + 2 + 0) / 4)
  assert float(losses.distance(a, b, "l2")) == pytest.approx((1.0 + 2.0) / 2, rel=1e-5)
  with pytest.raises(DlbookError, match="unknown distance 'cosine'"):
    losses.distance(a, b, "cosine")


def test_steganalyzer_loss_labels_cover_one_and_stego_zero():
  # Eq. 7.5 with sigmoid(logit): cover (y=1) costs -log σ(x), stego (y=0) costs -log(1 - σ(x)).
  cover, stego = jnp.array([2.0, 0.0]), jnp.array([-1.0, 3.0])
  sig = lambda x: 1 / (1 + math.exp(-x))
  expected = 0.5 * ((-math.log(sig(2.0)) - math.log(sig(0.0))) / 2 +
                    (-math.log(1 - sig(-1.0)) - math.log(1 - sig(3.0))) / 2)
  assert float(losses.steganalyzer_loss(cover, stego)) == pytest.approx(expected, rel=1e-5)
  # A perfect steganalyzer has a small loss, a reversed one a large loss.
  assert float(losses.steganalyzer_loss(jnp.array([9.0]), jnp.array([-9.0]))) < 1e-3
  assert float(losses.steganalyzer_loss(jnp.array([-9.0]), jnp.array([9.0]))) > 8
  # The generator's term: stego judged against the cover label, -log σ(x).
  assert float(losses.generator_adversarial_loss(jnp.array([0.5]))) == pytest.approx(-math.log(sig(0.5)), rel=1e-5)


def test_bce_message_loss_matches_hand_computed_values_and_keeps_wrong_bits_learning():
  bits = jnp.array([[1, 0, 1]])
  logits = jnp.array([[2.0, 0.0, -3.0]])
  softplus = lambda x: math.log1p(math.exp(x))
  expected = (softplus(-2.0) + softplus(0.0) + softplus(3.0)) / 3  # -log σ(x) for 1, -log(1 - σ(x)) for 0
  assert float(losses.extractor_loss(bits, logits, "bce")) == pytest.approx(expected, rel=1e-6)
  # A confidently wrong bit: tanh + MSE barely moves it, the cross-entropy pushes it at full strength.
  h = jnp.array([[-6.0]])
  mse_grad = jax.grad(lambda z: losses.extractor_loss(jnp.array([[1]]), jnp.tanh(z), "mse"))(h)
  bce_grad = jax.grad(lambda z: losses.extractor_loss(jnp.array([[1]]), z, "bce"))(h)
  assert abs(float(mse_grad[0, 0])) < 1e-4 and float(bce_grad[0, 0]) == pytest.approx(-1 / (1 + math.exp(-6)), rel=1e-5)
  # Multi-receiver sum uses the same kind per receiver.
  total, each = losses.multi_message_decoder_loss([bits, bits], [logits, logits], "bce")
  assert float(total) == pytest.approx(2 * expected, rel=1e-6) and len(each) == 2


def test_logits_extractor_head_is_the_tanh_head_before_its_tanh():
  images = jax.random.uniform(jax.random.key(1), (2, 64, 64, 3), minval=-1, maxval=1)
  tanh_x, logit_x = (two_stage.extractor(256, (4, 4, 4, 4), 16, 4, head) for head in ("tanh", "logits"))
  variables = tanh_x.init(jax.random.key(0), images)
  np.testing.assert_allclose(tanh_x.apply(variables, images), jnp.tanh(logit_x.apply(variables, images)),
                             rtol=1e-5, atol=1e-6)
  with pytest.raises(DlbookError, match="unknown extractor head 'sigmoid'"):
    two_stage.extractor(256, head="sigmoid")
  with pytest.raises(DlbookError, match="unknown loss.message_loss 'hinge'"):
    steps.StepConfig(message_bits=(8,), message_loss="hinge")


@pytest.mark.slow  # long: runs with DLBOOK_SLOW=1 (keeps the CI suite in its time budget)
def test_bce_message_loss_trains_the_extractor_on_its_logits():
  import importlib
  c = importlib.import_module("configs.stego_two_stage").get_config("smoke")
  c.loss.message_loss = "bce"
  assert {x.head for x in build_networks(Settings.from_config(c))[1]} == {"logits"}
  assert Settings.from_config(c).step.message_loss == "bce"
  state = _tiny_state(head="logits")
  batch = {"image": jax.random.uniform(jax.random.key(3), (4, 16, 16, 3), minval=-1, maxval=1)}
  step = jax.jit(steps.make_train_step(steps.StepConfig(message_bits=(64,), message_loss="bce")))
  new, metrics = step(state, batch, jax.random.key(5))
  assert float(metrics["l_d"]) > 0 and np.isfinite(float(metrics["l_d"]))
  assert any(not np.allclose(x, y) for x, y in zip(jax.tree_util.tree_leaves(new.extractors[0].params),
                                                   jax.tree_util.tree_leaves(state.extractors[0].params)))


def test_losses_are_the_equations_terms():
  cover = jnp.zeros((1, 2, 2, 1))
  stego = jnp.full((1, 2, 2, 1), 0.5)
  bits = jnp.array([[1, 0]])
  decoded = jnp.array([[0.5, -0.5]])  # targets ±1 -> squared errors 0.25, 0.25
  assert float(losses.extractor_loss(bits, decoded)) == pytest.approx(0.25)
  assert float(losses.generator_adversarial_loss(jnp.array([0.0]))) == pytest.approx(math.log(2), rel=1e-5)
  # Eq. 7.6: d(C, S) by default, d(C, C_R) on request.
  recon = jnp.full((1, 2, 2, 1), 0.1)
  assert float(losses.cover_reconstruction_loss(cover, stego)) == pytest.approx(0.25)
  assert float(losses.cover_reconstruction_loss(cover, stego, recon, target="reconstruction")) == pytest.approx(0.01)
  with pytest.raises(DlbookError, match="cr_target"):
    losses.cover_reconstruction_loss(cover, stego, target="cover")
  # Ch. 8: the decoder term sums every receiver's error.
  total, each = losses.multi_message_decoder_loss([bits, bits], [decoded, -decoded])
  assert [float(e) for e in each] == pytest.approx([0.25, 2.25])
  assert float(total) == pytest.approx(2.5)


@pytest.mark.slow  # long: runs with DLBOOK_SLOW=1 (keeps the CI suite in its time budget)
def test_gsivat_step_descends_the_weighted_generator_loss():
  """GSIVAT (§6.3.4): with one stage, the train step moves the generator by the gradient of
  L_G = λ_G d(C, C') + λ_E L_E + λ_S L_S, written out here term by term (plain SGD, lr 1)."""
  import optax
  gen = gsivat.gsivat_generator(64, (4, 4, 4, 4), 16, cover_shortcut=True)
  extractor = two_stage.extractor(64, (4, 4, 4, 4), 4)
  stegan = two_stage.steganalyzer((4, 4, 4, 4))
  state = steps.create_state(jax.random.key(0), gen, (extractor,), stegan, (16, 16, 3), (64,),
                             lambda: optax.sgd(1.0))
  cover = jax.random.uniform(jax.random.key(3), (4, 16, 16, 3), minval=-1, maxval=1)
  key = jax.random.key(5)
  lam_g, lam_e, lam_s = 2.0, 3.0, 5.0
  cfg = steps.StepConfig(message_bits=(64,), lambda_g=lam_g, lambda_d=lam_e, lambda_s=lam_s, split_stages=False)
  new, _ = steps.make_train_step(cfg)(state, {"image": cover}, key)

  bits = steps.sample_messages(key, 4, (64,))[0]
  g, x, st = state.generator, state.extractors[0], state.steganalyzer

  def l_g(params):
    (stego, _), _ = g.apply_fn({"params": params, "batch_stats": g.batch_stats}, cover,
                               [losses.bits_to_signs(bits)], train=True, mutable=["batch_stats"])
    seen = steps.quantize_8bit(stego)
    decoded, _ = x.apply_fn({"params": x.params, "batch_stats": x.batch_stats}, seen, train=True,
                            mutable=["batch_stats"])
    logits, _ = st.apply_fn({"params": st.params, "batch_stats": st.batch_stats},
                            jnp.concatenate([cover, seen]), train=True, mutable=["batch_stats"])
    distortion = jnp.mean((cover - stego) ** 2)
    extraction = jnp.mean((losses.bits_to_signs(bits) - decoded) ** 2)
    adversarial = jnp.mean(optax.sigmoid_binary_cross_entropy(logits[4:], jnp.ones_like(logits[4:])))
    return lam_g * distortion + lam_e * extraction + lam_s * adversarial

  expected = jax.tree.map(lambda p, d: p - d, g.params, jax.grad(l_g)(g.params))
  for a, b in zip(jax.tree_util.tree_leaves(new.generator.params), jax.tree_util.tree_leaves(expected)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------- §8.2.2 shapes

def _shapes(model, bits):
  cover = jnp.zeros((2, 64, 64, 3))
  signs = [jnp.zeros((2, b)) for b in bits]
  (stego, aux), variables = jax.eval_shape(lambda: model.init_with_output(jax.random.key(0), cover, signs))
  return stego, aux, variables["params"]


@pytest.mark.parametrize("embedding, cr_shape, stage2_in", [
    ("early", (4, 4, 512), 1024), ("mid", (8, 8, 256), 384), ("late", (16, 16, 128), 160)])
def test_multi_message_generators_have_the_book_shapes(embedding, cr_shape, stage2_in):
  bits = multi_message.message_sizes(2.0, 2)
  assert bits == (4096, 4096)
  gen = multi_message.multi_message_generator(embedding, bits)
  stego, aux, params = _shapes(gen, bits)
  assert stego.shape == (2, 64, 64, 3)
  assert aux["reconstruction"].shape == (2,) + cr_shape  # the stage-1 output C_R
  assert params["stage1_fc"]["kernel"].shape == (64 * 64 * 3, 8192)  # FC on the flattened cover
  depth = multi_message.EMBEDDINGS[embedding]
  first_stage2 = params[f"stage2_up{depth}"]["kernel"]
  assert first_stage2.shape[2] == stage2_in  # C_R channels + two reshaped messages
  assert two_stage.embedding_shape(64, depth, 4096) == cr_shape[:2] + ((stage2_in - cr_shape[2]) // 2,)
  n_stage1 = sum(k.startswith("stage1_up") and not k.endswith("_bn") for k in params)
  assert n_stage1 == depth


def test_conventional_generator_joins_messages_before_the_fc_layer():
  bits = (4096, 4096)
  stego, aux, params = _shapes(multi_message.multi_message_generator("conventional", bits), bits)
  assert stego.shape == (2, 64, 64, 3) and aux == {}
  assert params["stage2_fc"]["kernel"].shape == (64 * 64 * 3 + 8192, 8192)  # reshaped to 4x4x512
  assert not any(k.startswith("stage1") for k in params)  # a single-stage network
  # GSIVAT's Alice is the same design with one message.
  _, _, p = _shapes(gsivat.gsivat_generator(4096), (4096,))
  assert p["stage2_fc"]["kernel"].shape == (64 * 64 * 3 + 4096, 8192)


def test_extractor_and_steganalyzer_shapes():
  images = jnp.zeros((2, 64, 64, 3))
  out, variables = jax.eval_shape(lambda: two_stage.extractor(4096).init_with_output(jax.random.key(0), images))
  assert out.shape == (2, 4096)
  assert variables["params"]["fc"]["kernel"].shape == (4 * 4 * 256, 4096)  # 4 convs down to 4x4x256 (§8.2.3)
  out, variables = jax.eval_shape(lambda: two_stage.steganalyzer().init_with_output(jax.random.key(0), images))
  assert out.shape == (2,) and variables["params"]["fc"]["kernel"].shape == (4096, 1)
  # The CPU presets' position-wise head keeps the output size.
  out, _ = jax.eval_shape(lambda: two_stage.extractor(4096, (8, 8, 8, 8), 16).init_with_output(
      jax.random.key(0), images))
  assert out.shape == (2, 4096)


def test_generator_rejects_bad_configurations():
  with pytest.raises(DlbookError, match="unknown embedding 'middle'"):
    multi_message.multi_message_generator("middle", (4096, 4096))
  with pytest.raises(DlbookError, match="cannot be reshaped"):
    multi_message.multi_message_generator("late", (1000, 1000))
  with pytest.raises(DlbookError, match="does not split"):
    multi_message.message_sizes(1.0 / 3.0, 2)
  with pytest.raises(DlbookError, match="stage1_depth"):
    two_stage.two_stage_generator(4096, stage1_depth=4)


def test_cover_shortcut_outputs_the_cover_plus_a_bounded_residual():
  gen = two_stage.two_stage_generator(16 * 16, stage1_depth=2, channels=(4, 4, 4, 4), image_size=16,
                                      cover_shortcut=True)
  cover = jax.random.uniform(jax.random.key(1), (2, 16, 16, 3), minval=-1, maxval=1)
  signs = [jnp.ones((2, 256))]
  variables = gen.init(jax.random.key(0), cover, signs)
  stego, aux = gen.apply(variables, cover, signs)
  assert stego.shape == cover.shape and float(jnp.abs(stego).max()) <= 1.0
  assert aux["reconstruction"].shape == (2, 4, 4, 4)
  # space-to-depth is a lossless rearrangement
  x = jnp.arange(2 * 4 * 4 * 3, dtype=jnp.float32).reshape(2, 4, 4, 3)
  y = two_stage.space_to_depth(x, 2)
  assert y.shape == (2, 2, 2, 12) and sorted(np.asarray(y).ravel()) == sorted(np.asarray(x).ravel())
  np.testing.assert_array_equal(two_stage.depth_to_space(y, 2), x)


def test_bounded_residual_stays_in_range_without_clipping():
  cover = jnp.array([-1.0, -0.5, 0.0, 0.5, 1.0])
  for t in (-1.0, -0.3, 0.0, 0.3, 1.0):
    s = two_stage.bounded_residual(cover, jnp.full_like(cover, t))
    assert float(s.min()) >= -1.0 and float(s.max()) <= 1.0
  # t scales the headroom in its direction: +0.5 moves halfway to 1, -0.5 halfway to -1.
  np.testing.assert_allclose(two_stage.bounded_residual(cover, jnp.full_like(cover, 0.5)), (cover + 1.0) / 2)
  np.testing.assert_allclose(two_stage.bounded_residual(cover, jnp.full_like(cover, -0.5)), (cover - 1.0) / 2)
  # A saturated pixel can still move inwards, and the gradient says so (clip would pass none).
  grad = jax.grad(lambda t: two_stage.bounded_residual(jnp.float32(1.0), t))(jnp.float32(-0.1))
  assert float(grad) == 2.0
  gen = two_stage.two_stage_generator(256, 2, (4, 4, 4, 4), 16, cover_shortcut=True, residual="bounded")
  c = jnp.ones((2, 16, 16, 3))  # all-white covers: every pixel at the top of the range
  stego, _ = gen.apply(gen.init(jax.random.key(0), c, [jnp.ones((2, 256))]), c, [jnp.ones((2, 256))])
  assert float(stego.max()) <= 1.0 and float(stego.min()) < 1.0
  with pytest.raises(DlbookError, match="unknown generator.residual"):
    bad = two_stage.two_stage_generator(256, 2, (4, 4, 4, 4), 16, cover_shortcut=True, residual="wrap")
    bad.init(jax.random.key(0), c, [jnp.ones((2, 256))])


# ------------------------------------------------------------------------------- LSB

@pytest.mark.parametrize("bpp", [1, 2, 3, 5])
def test_lsb_round_trips_exactly(bpp):
  rng = np.random.default_rng(bpp)
  cover = rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
  n = lsb.capacity_bits(cover.shape, bpp)
  bits = rng.integers(0, 2, (3, n))
  stego = lsb.embed(cover, bits, seed=7)
  np.testing.assert_array_equal(lsb.extract(stego, n, seed=7), bits)
  change = np.abs(stego.astype(int) - cover.astype(int))
  if bpp <= 3:  # one bit plane: every value changes by at most one grey level
    assert change.max() <= 1
    assert abs(change.mean() - 0.5 * n / cover[0].size) < 0.05  # half the visited LSBs flip
  else:
    assert change.max() <= 3
  wrong = lsb.extract(stego, n, seed=8)
  assert 0.35 < np.mean(wrong == bits) < 0.65  # another key reads noise


def test_lsb_rejects_bad_input():
  with pytest.raises(DlbookError, match="uint8"):
    lsb.embed(np.zeros((8, 8, 3), np.float32), np.zeros(8, int))
  with pytest.raises(DlbookError, match="can hold"):
    lsb.embed(np.zeros((2, 2, 1), np.uint8), np.zeros(33, int))


# ----------------------------------------------------------------------------- XuNet

def test_xunet_high_pass_filter_is_the_kv_kernel():
  kv = np.array([[-1, 2, -2, 2, -1], [2, -6, 8, -6, 2], [-2, 8, -12, 8, -2],
                 [2, -6, 8, -6, 2], [-1, 2, -2, 2, -1]]) / 12.0
  np.testing.assert_allclose(xunet.KV_KERNEL, kv)
  impulse = np.zeros((1, 9, 9, 3), np.float32)
  impulse[0, 4, 4, 1] = 1.0
  out = np.asarray(xunet.kv_filter(jnp.asarray(impulse)))
  np.testing.assert_allclose(out[0, 2:7, 2:7, 1], kv[::-1, ::-1], atol=1e-6)  # each channel on its own
  assert np.abs(out[..., [0, 2]]).max() == 0
  flat = np.full((1, 9, 9, 3), 100.0, np.float32)
  assert np.abs(np.asarray(xunet.kv_filter(jnp.asarray(flat)))[0, 2:7, 2:7]).max() < 1e-4  # high-pass
  # The filter is fixed: no trainable 5x5 kernel with 1 input channel per group exists.
  model = xunet.XuNet()
  logits, variables = jax.eval_shape(lambda: model.init_with_output(jax.random.key(0), jnp.zeros((2, 64, 64, 3))))
  assert logits.shape == (2,)
  shapes = [p.shape for p in jax.tree_util.tree_leaves(variables["params"])]
  assert (5, 5, 3, 8) in shapes and (5, 5, 1, 3) not in shapes
  assert xunet.pair_split(1608, 266) == (1072, 536, 266)
  assert xunet.pair_split(100000, 100000) == xunet.BOOK_SPLIT


# ------------------------------------------------------------------ train step routing

def _tiny_state(depth=2, bits=(64,), head="tanh"):
  gen = multi_message.multi_message_generator("late" if depth == 2 else "conventional", bits, (4, 4, 4, 4), 16,
                                              cover_shortcut=True)
  extractors = tuple(two_stage.extractor(b, (4, 4, 4, 4), 4, head=head) for b in bits)
  stegan = two_stage.steganalyzer((4, 4, 4, 4))
  return steps.create_state(jax.random.key(0), gen, extractors, stegan, (16, 16, 3), bits,
                            lambda: training.adam(1e-3, 0.5))


@pytest.mark.slow  # long: runs with DLBOOK_SLOW=1 (keeps the CI suite in its time budget)
def test_split_stages_routes_gradients_as_algorithms_1_and_3():
  """Stage 1 follows L_CR alone and each extractor its own L_D: neither depends on λ_D or λ_S;
  stage 2 descends the weighted L_SC, so it does."""
  state = _tiny_state(bits=(64, 64))
  batch = {"image": jax.random.uniform(jax.random.key(3), (4, 16, 16, 3), minval=-1, maxval=1)}
  outs = []
  for lambda_d, lambda_s in ((1.0, 0.0), (3.0, 0.5)):
    cfg = steps.StepConfig(message_bits=(64, 64), lambda_g=1.0, lambda_d=lambda_d, lambda_s=lambda_s)
    new, metrics = steps.make_train_step(cfg)(state, batch, jax.random.key(5))
    outs.append(new)
    assert {"l_cr", "l_d", "l_st", "bit_acc_1", "bit_acc_2"} <= set(metrics)
  a, b = outs
  p1, p2 = a.generator.params, b.generator.params
  for k in p1:
    same = all(np.array_equal(x, y) for x, y in zip(jax.tree_util.tree_leaves(p1[k]), jax.tree_util.tree_leaves(p2[k])))
    assert same == k.startswith("stage1"), k
  for xa, xb in zip(a.extractors, b.extractors):
    for x, y in zip(jax.tree_util.tree_leaves(xa.params), jax.tree_util.tree_leaves(xb.params)):
      np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)
  # The steganalyzer was updated (Algorithm 2) and the generator's step counter advanced.
  assert int(a.generator.step) == 1 and int(a.steganalyzer.step) == 1
  moved = jax.tree_util.tree_leaves(jax.tree.map(lambda x, y: np.abs(x - y).max(), a.steganalyzer.params,
                                                 state.steganalyzer.params))
  assert max(moved) > 0


def test_lambda_g_ramp():
  cfg = steps.StepConfig(message_bits=(8,), lambda_g=10.0, lambda_g_start=1.0, lambda_g_ramp=(10, 20))
  assert [float(cfg.lambda_g_at(s)) for s in (0, 10, 15, 20, 99)] == pytest.approx([1, 1, 5.5, 10, 10])
  assert float(steps.StepConfig(message_bits=(8,), lambda_g=4.0).lambda_g_at(7)) == 4.0
  with pytest.raises(DlbookError, match="lambda_d"):
    steps.StepConfig(message_bits=(8,), lambda_d=0.0)


def test_fractionally_strided_conv_equals_flax_conv_transpose():
  import flax.linen as nn
  x = jax.random.normal(jax.random.key(0), (2, 5, 6, 3))
  ours = two_stage.FractionallyStridedConv(4)
  variables = ours.init(jax.random.key(1), x)
  variables = jax.tree.map(lambda v: v + 0.1, variables)  # a non-zero bias too
  ref = nn.ConvTranspose(4, (4, 4), strides=(2, 2), padding="SAME")
  y = ours.apply(variables, x)
  assert y.shape == (2, 10, 12, 4)
  np.testing.assert_allclose(y, ref.apply(variables, x), rtol=1e-5, atol=1e-5)


@pytest.mark.slow  # long: runs with DLBOOK_SLOW=1 (keeps the CI suite in its time budget)
def test_dihedral_cover_augmentation_transforms_covers_only():
  """With `cover_augment="dihedral"` the step sees a symmetry of each cover and the same messages:
  covers invariant under all 8 symmetries give exactly the un-augmented step; others do not."""
  state = _tiny_state()
  step_fns = {a: jax.jit(steps.make_train_step(steps.StepConfig(message_bits=(64,), cover_augment=a)))
              for a in ("none", "dihedral")}
  levels = jax.random.uniform(jax.random.key(3), (4, 1, 1, 3), minval=-1, maxval=1)
  symmetric = {"image": jnp.broadcast_to(levels, (4, 16, 16, 3))}  # constant covers
  textured = {"image": jax.random.uniform(jax.random.key(4), (4, 16, 16, 3), minval=-1, maxval=1)}
  leaves = lambda batch, a: jax.tree_util.tree_leaves(step_fns[a](state, batch, jax.random.key(5))[0].generator.params)
  for x, y in zip(leaves(symmetric, "none"), leaves(symmetric, "dihedral")):
    np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
  assert any(not np.allclose(x, y) for x, y in zip(leaves(textured, "none"), leaves(textured, "dihedral")))
  with pytest.raises(DlbookError, match="unknown cover_augment"):
    steps.StepConfig(message_bits=(8,), cover_augment="rotate")


@pytest.mark.parametrize("message_side", [4, 8, 16, 32])
def test_per_position_extractor_reads_each_bit_where_the_generator_wrote_it(message_side):
  """The head's per-position outputs are rearranged to the generator's message grid: the bits of
  message cell (i, j) come from head positions inside the image region of that cell."""
  bits, head_side = 4096, 16
  model = two_stage.extractor(bits, (4, 4, 4, 4), head_side, message_side)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
  # Replace the head by a probe: position (y, x) outputs its own coordinates in every channel.
  grid = jnp.stack(jnp.meshgrid(jnp.arange(head_side), jnp.arange(head_side), indexing="ij"), -1)
  c = bits // head_side ** 2
  decoded = two_stage.to_message_layout(jnp.broadcast_to(
      (grid[..., :1] * head_side + grid[..., 1:]).astype(jnp.float32), (1, head_side, head_side, c)), message_side)
  cells = decoded.reshape(message_side, message_side, -1)  # the generator's layout (embedding_shape)
  pixel_cell = 64 // message_side
  for (i, j) in ((0, 0), (message_side - 1, 1), (message_side // 2, message_side - 1)):
    positions = np.asarray(cells[i, j]).astype(int)
    ys, xs = positions // head_side * (64 // head_side), positions % head_side * (64 // head_side)
    # each head position is a 4x4 pixel block; it must overlap the message cell's pixels
    assert (ys // pixel_cell <= i).all() and ((ys + 3) // pixel_cell >= i).all(), (i, j)
    assert (xs // pixel_cell <= j).all() and ((xs + 3) // pixel_cell >= j).all(), (i, j)
  assert sorted(np.asarray(decoded).ravel().tolist()) == sorted(np.repeat(np.arange(256.0), c).tolist())
  out = model.apply(variables, jax.random.normal(jax.random.key(1), (2, 64, 64, 3)))
  assert out.shape == (2, bits)
  with pytest.raises(DlbookError, match="message_side"):
    two_stage.extractor(bits, (4, 4, 4, 4), head_side, 12).init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
