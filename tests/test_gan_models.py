"""Book §5.3 shapes (checked abstractly with jax.eval_shape, so at full size for free), and the
alternating D/G steps on small MLPs."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dlbook.errors import DlbookError
from dlbook.gan.models import DCGANDiscriminator, DCGANGenerator, MLPDiscriminator, MLPGenerator
from dlbook.gan.train import StepSettings, create_gan_state, make_steps, prng_key


def shapes(tree):
  return jax.tree.map(lambda x: tuple(x.shape), tree)


def test_dcgan_generator_has_the_book_shapes():
  g = DCGANGenerator()  # z in R^100 -> FC 4*4*1024 -> 4 fractionally-strided convs -> 64x64x3
  z = jax.ShapeDtypeStruct((2, 100), jnp.float32)
  variables = jax.eval_shape(lambda z: g.init(jax.random.key(0), z), z)
  p = shapes(variables["params"])
  assert p["project"]["kernel"] == (100, 4 * 4 * 1024)
  assert [p[f"up_{i}"]["kernel"][-1] for i in range(4)] == [512, 256, 128, 3]
  assert "up_4" not in p
  out = jax.eval_shape(lambda v, z: g.apply(v, z), variables, z)
  assert out.shape == (2, 64, 64, 3)


def test_dcgan_discriminator_has_the_book_shapes_and_acgan_has_two_heads():
  x = jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32)
  d = DCGANDiscriminator()
  variables = jax.eval_shape(lambda x: d.init(jax.random.key(0), x), x)
  p = shapes(variables["params"])
  assert [p[f"conv_{i}"]["kernel"] for i in range(4)] == [(4, 4, 3, 64), (4, 4, 64, 128), (4, 4, 128, 256),
                                                         (4, 4, 256, 512)]
  assert p["logit"]["kernel"] == (4 * 4 * 512, 1)
  assert set(variables["batch_stats"]) == {"norm_1", "norm_2", "norm_3"}  # no BN on the input layer
  assert jax.eval_shape(lambda v, x: d.apply(v, x), variables, x).shape == (2,)
  two = DCGANDiscriminator(num_classes=10, norm="layer")
  v2 = jax.eval_shape(lambda x: two.init(jax.random.key(0), x), x)
  assert "batch_stats" not in v2
  logit, classes = jax.eval_shape(lambda v, x: two.apply(v, x), v2, x)
  assert logit.shape == (2,) and classes.shape == (2, 10)


def test_conditional_generator_depends_on_class_and_noise():
  for conditioning in ("concat", "multiply"):
    g = DCGANGenerator(z_dim=8, output_size=8, channels=1, base_width=8, start_size=2, num_classes=3, embed_dim=4,
                       conditioning=conditioning)
    z = jnp.concatenate([jnp.ones((3, 8)), -jnp.ones((1, 8))])
    labels = jnp.array([0, 1, 2, 0])
    variables = jax.jit(lambda k: g.init(k, z, labels))(prng_key(0))
    out = jax.jit(g.apply)(variables, z, labels)
    assert out.shape == (4, 8, 8, 1) and float(jnp.abs(out).max()) <= 1.0
    assert float(jnp.abs(out[0] - out[1]).max()) > 0  # same z, another class -> another image
    assert float(jnp.abs(out[0] - out[3]).max()) > 0  # same class, another z -> another image
    expected_input = 8 + 4 if conditioning == "concat" else 8
    assert variables["params"]["project"]["kernel"].shape[0] == expected_input
  with pytest.raises(DlbookError, match="class labels"):
    jax.eval_shape(g.apply, variables, z)


def test_bad_sizes_are_user_errors():
  with pytest.raises(DlbookError, match="power of 2"):
    jax.eval_shape(lambda z: DCGANGenerator(z_dim=4, output_size=28, start_size=4).init(jax.random.key(0), z),
                   jnp.ones((1, 4)))
  with pytest.raises(DlbookError, match="norm"):
    jax.eval_shape(lambda x: DCGANDiscriminator(norm="group").init(jax.random.key(0), x), jnp.ones((1, 16, 16, 1)))


def mlp_state(settings, image_shape=(4, 4, 1), ada_p=0.0):
  g, d = MLPGenerator(image_shape, (16,)), MLPDiscriminator((16,))
  return create_gan_state(g, d, prng_key(0), image_shape, optax.adam(1e-2), optax.adam(1e-2), settings, ada_p)


def test_d_step_updates_only_d_and_clips_for_wgan_and_g_step_updates_only_g():
  settings = StepSettings(loss="wasserstein", z_dim=4, clip_value=0.01)
  state = mlp_state(settings)
  d_step, g_step = (jax.jit(f) for f in make_steps(settings))
  batch = {"image": jax.random.uniform(jax.random.key(1), (8, 4, 4, 1), minval=-1, maxval=1),
           "label": jnp.zeros(8, jnp.int32)}
  after_d, metrics = d_step(state, batch, prng_key(2))
  leaves = jax.tree.leaves(after_d.d.params)
  assert max(float(jnp.abs(x).max()) for x in leaves) <= 0.01 + 1e-7  # weight clipping
  assert any(float(jnp.abs(x).max()) > 0.01 for x in jax.tree.leaves(state.d.params))  # it did clip something
  jax.tree.map(np.testing.assert_array_equal, after_d.g.params, state.g.params)
  np.testing.assert_allclose(metrics["wasserstein_estimate"], metrics["d_real"] - metrics["d_fake"], rtol=1e-5)
  after_g, g_metrics = g_step(after_d, batch, prng_key(3))
  jax.tree.map(np.testing.assert_array_equal, after_g.d.params, after_d.d.params)
  assert any(float(jnp.abs(a - b).max()) > 0 for a, b in zip(jax.tree.leaves(after_g.g.params),
                                                             jax.tree.leaves(after_d.g.params)))
  assert int(after_g.step) == 1 and np.isfinite(float(g_metrics["g_loss"]))
  # repeated critic steps on the same batch and fakes lower the (clipped) critic's loss
  state, first = d_step(after_g, batch, prng_key(2))
  for _ in range(10):
    state, last = d_step(state, batch, prng_key(2))
  assert float(last["d_loss"]) < float(first["d_loss"])


def test_gradient_penalty_step_reports_the_penalty_and_ada_p_moves():
  settings = StepSettings(loss="wasserstein", z_dim=4, gp_weight=10.0, ada=True, ada_interval=1,
                          ada_speed_images=80.0)
  state = mlp_state(settings, ada_p=0.5)
  d_step, _ = make_steps(settings)
  batch = {"image": jnp.zeros((8, 4, 4, 1)), "label": jnp.zeros(8, jnp.int32)}
  state, m = jax.jit(d_step)(state, batch, prng_key(1))
  assert float(m["gradient_penalty"]) > 0
  # one batch of 8 per adjustment, 80 images for a full swing: p moves by 0.1 toward the target
  assert float(m["ada_p"]) == pytest.approx(0.6 if float(m["r_t"]) > 0.6 else 0.4)
