"""An independent XuNet-style steganalyzer (Xu, Wu & Shi 2016; book §8.3.2, Tables 7.2, 8.2).

Xu et al.'s design: a fixed high-pass "KV" filter, then five groups of
convolution -> (ABS in group 1) -> BN -> TanH (groups 1-2) / ReLU (groups 3-5) -> average
pooling, with 5×5 convolutions in groups 1-2 and 1×1 convolutions in groups 3-5
(8, 16, 32, 64, 128 channels), global average pooling and a linear classifier.

**Choices** (docs/stego.md): colour images are filtered channel by channel with the KV
kernel (3 residual maps); pooling is 5×5 average pooling with stride 2 ('SAME') in groups
1-4 and global in group 5, so a 64×64 input ends at 4×4 before the global pool; the output
is one logit with covers labelled 1 and stego images 0 (the book's convention), trained
with the sigmoid cross-entropy of Eq. 7.5. Inputs are 8-bit pixel values (0..255) as
float, so the KV residuals are in grey levels.

The §8.3.2 protocol (4000 training images, 2000 validation = 1000 cover + 1000 stego,
500 cover + 500 stego test) is scaled to the covers available by `pair_split`; cover
and stego of one cover image always fall in the same split, and training batches hold
both (Xu et al.'s paired batches).
"""

from typing import Sequence, Tuple

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dlbook.errors import require
from dlbook.stego import losses

# The 5×5 "KV" high-pass kernel (Ker & Böhme 2008, used by Qian et al. 2015 and Xu et al. 2016).
KV_KERNEL = np.array([[-1, 2, -2, 2, -1],
                      [2, -6, 8, -6, 2],
                      [-2, 8, -12, 8, -2],
                      [2, -6, 8, -6, 2],
                      [-1, 2, -2, 2, -1]], np.float32) / 12.0

# §8.3.2: training images, validation pairs, test pairs.
BOOK_SPLIT = (2000, 1000, 500)


def kv_filter(images):
  """Applies the fixed KV kernel to every channel ([N,H,W,C] -> [N,H,W,C]); never trained."""
  chex.assert_rank(images, 4)
  c = images.shape[-1]
  kernel = jnp.tile(jnp.asarray(KV_KERNEL)[:, :, None, None], (1, 1, 1, c))
  return jax.lax.conv_general_dilated(images, kernel, (1, 1), "SAME",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=c)


class XuNet(nn.Module):
  """XuNet-style steganalyzer; ``__call__(images 0..255, train)`` -> logit of P(cover)."""
  channels: Sequence[int] = (8, 16, 32, 64, 128)
  bn_momentum: float = 0.9

  @nn.compact
  def __call__(self, images, train: bool = False):
    require(len(self.channels) == 5, f"XuNet has 5 groups, got channels {tuple(self.channels)}")
    x = kv_filter(images.astype(jnp.float32))
    for i, c in enumerate(self.channels):
      k = 5 if i < 2 else 1
      x = nn.Conv(int(c), (k, k), padding="SAME", use_bias=False, name=f"conv{i}")(x)
      if i == 0:
        x = jnp.abs(x)  # the ABS layer: the sign of the residual carries no information
      x = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum, name=f"bn{i}")(x)
      x = jnp.tanh(x) if i < 2 else nn.relu(x)
      if i < 4:
        x = nn.avg_pool(x, (5, 5), strides=(2, 2), padding="SAME")
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(1, name="fc")(x)[:, 0]


def pair_split(num_train_covers: int, num_test_covers: int, limits: Tuple[int, int, int] = BOOK_SPLIT):
  """Pair counts (train, val, test) for the §8.3.2 protocol scaled to the covers at hand.

  Training and validation pairs come from the training covers in the book's 2:1 ratio;
  test pairs from the held-out covers. Each count is capped at the book's figure.
  """
  train = min(limits[0], (2 * num_train_covers) // 3)
  val = min(limits[1], num_train_covers - train)
  test = min(limits[2], num_test_covers)
  require(train >= 2 and val >= 1 and test >= 1,
          f"too few covers for the XuNet test: {num_train_covers} training and {num_test_covers} test covers")
  return train, val, test


def make_train_step():
  """`step(state, batch, key) -> (state, metrics)` on a batch of paired cover/stego uint8 images."""

  def step(state, batch, key):
    del key  # deterministic given the batch
    cover, stego = batch["cover"], batch["stego"]
    chex.assert_equal_shape([cover, stego])
    n = cover.shape[0]
    images = jnp.concatenate([cover, stego]).astype(jnp.float32)

    def loss_fn(params):
      logits, updates = state.apply_fn({"params": params, "batch_stats": state.batch_stats}, images,
                                       train=True, mutable=["batch_stats"])
      return losses.steganalyzer_loss(logits[:n], logits[n:]), (logits, updates["batch_stats"])

    (loss, (logits, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    state = state.apply_gradients(grads=grads, batch_stats=stats)
    acc = 0.5 * (jnp.mean(logits[:n] > 0) + jnp.mean(logits[n:] <= 0))
    return state, {"loss": loss, "accuracy": acc}

  return step


def predict_cover(state, images):
  """Inference: True where the image is judged a cover (logit > 0)."""
  logits = state.apply_fn({"params": state.params, "batch_stats": state.batch_stats},
                          jnp.asarray(images, jnp.float32), train=False)
  return logits > 0
