"""Grad-CAM equals the hand-derived class activation map of a GAP + dense network."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlbook.errors import DlbookError
from dlbook.medical.gradcam import energy_in_mask, gradcam


class Features(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.relu(nn.Conv(4, (3, 3), name="conv")(x))


class GapNet(nn.Module):
  """features -> global average pool -> dense: CAM_c = ReLU(Σ_k W_kc A_k) / (H·W) (Zhou et al. 2016)."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    a = Features(name="features")(x)
    return nn.Dense(3, name="head")(a.mean(axis=(1, 2)))


@pytest.fixture(scope="module")
def setup():
  model = GapNet()
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 5, 1))
  variables = model.init(jax.random.PRNGKey(1), x)
  return model, variables, x


def test_gradcam_is_the_class_activation_map(setup):
  model, variables, x = setup
  a = Features().apply({"params": variables["params"]["features"]}, x)  # [2, 6, 5, 4]
  w = variables["params"]["head"]["kernel"]  # [4, 3]
  target = np.array([2, 0])
  cam, cls = gradcam(model, variables, x, "features", target=target, upsample=False, normalize=False, train=False)
  np.testing.assert_array_equal(cls, target)
  hand = np.maximum(np.einsum("nhwk,kn->nhw", np.asarray(a), np.asarray(w)[:, target]) / 30.0, 0.0)
  np.testing.assert_allclose(cam, hand, rtol=1e-5, atol=1e-7)
  assert (hand > 0).any() and (hand == 0).any()  # the ReLU is exercised


def test_gradcam_defaults_argmax_upsamples_and_normalizes(setup):
  model, variables, x = setup
  logits = model.apply(variables, x)
  cam, cls = gradcam(model, variables, x, "features")
  np.testing.assert_array_equal(cls, np.argmax(logits, -1))
  assert cam.shape == (2, 6, 5)
  np.testing.assert_allclose(cam.max(axis=(1, 2)), 1.0, rtol=1e-6)
  with pytest.raises(DlbookError, match="valid: features, features/conv, head"):
    gradcam(model, variables, x, "backbone")


def test_energy_in_mask_by_hand():
  cam = jnp.array([[[1.0, 3.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])
  mask = jnp.array([[[0, 1], [1, 1]], [[1, 1], [1, 1]]])
  np.testing.assert_allclose(energy_in_mask(cam, mask), [0.75, 0.0])
