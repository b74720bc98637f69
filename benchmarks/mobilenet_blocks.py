"""MobileNetV2's layers one at a time, dlbook against torchvision, forward + backward in training mode.

  python -m benchmarks.mobilenet_blocks --torchvision_site=DIR [--parts=stem,expand,depthwise,block]
      [--shapes=32x224x3x32x32x2,32x56x24x144x24x1,...] [--repeats=5]

Where the whole network's step ratio (`benchmarks/backbones.py`) is far from the ratios of its parts,
the difference lies in how the whole program is compiled and scheduled, not in a slow kernel. Each part
(dlbook's `ConvBN` / `InvertedResidual` with the default `taps` depthwise lowering; torchvision's
`Conv2dNormActivation` / `InvertedResidual`) is timed on a shape N x H x Cin x Chidden x Cout x stride;
the loss is mean(y^2), gradients w.r.t. the parameters and (but for the stem) the input. The frameworks
alternate, `repeats` rounds, median counts. Prints `part=... shape=... dlbook_ms=... torch_ms=... ratio=...`.
"""

import os
import sys
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from dlbook.models.backbones.common import ConvBN
from dlbook.models.backbones.mobilenet import InvertedResidual

flags.DEFINE_list("parts", ["stem", "expand", "depthwise", "block"], "Which layers to time.")
flags.DEFINE_list("shapes", ["32x224x3x32x32x2", "32x112x16x96x24x2", "32x56x24x144x24x1"],
                  "N x H x Cin x Chidden x Cout x stride (the stem uses Cin -> Chidden).")
flags.DEFINE_integer("repeats", 5, "Timed rounds per framework.")
flags.DEFINE_string("torchvision_site", None, "A site-packages folder with torchvision 0.28.")
FLAGS = flags.FLAGS


def modules(torch, part, cin, hidden, cout, stride):
  from torchvision.models.mobilenetv2 import InvertedResidual as TorchBlock
  from torchvision.ops.misc import Conv2dNormActivation
  relu6 = torch.nn.ReLU6
  if part == "stem":
    return ConvBN(hidden, 3, stride, act="relu6"), Conv2dNormActivation(cin, hidden, 3, stride, activation_layer=relu6), cin
  if part == "expand":
    return ConvBN(hidden, 1, act="relu6"), Conv2dNormActivation(cin, hidden, 1, activation_layer=relu6), cin
  if part == "depthwise":
    return (ConvBN(hidden, 3, stride, groups=-1, act="relu6", depthwise="taps"),
            Conv2dNormActivation(hidden, hidden, 3, stride, groups=hidden, activation_layer=relu6), hidden)
  return InvertedResidual(hidden, cout, stride, depthwise="taps"), TorchBlock(cin, cout, stride, hidden // cin), cin


def time_part(torch, part, shape):
  n, h, cin, hidden, cout, stride = (int(v) for v in shape.split("x"))
  jmod, tmod, c = modules(torch, part, cin, hidden, cout, stride)
  x = jax.random.normal(jax.random.key(0), (n, h, h, c))
  v = jmod.init(jax.random.key(1), x, train=False)
  wrt_input = part != "stem"

  def loss(params, stats, x):
    y, updates = jmod.apply({"params": params, "batch_stats": stats}, x, train=True, mutable=["batch_stats"])
    return jnp.mean(y * y), updates

  grad = jax.jit(jax.grad(loss, argnums=(0, 2) if wrt_input else 0, has_aux=True))
  jstep = lambda: jax.block_until_ready(grad(v["params"], v["batch_stats"], x))  # noqa: E731
  tx = torch.randn(n, c, h, h, requires_grad=wrt_input)
  tmod.train()

  def tstep():
    y = tmod(tx)
    (y * y).mean().backward()

  jstep(), tstep()  # compile, warm up
  jt, tt = [], []
  for _ in range(FLAGS.repeats):
    t = time.perf_counter(); jstep(); jt.append(time.perf_counter() - t)
    t = time.perf_counter(); tstep(); tt.append(time.perf_counter() - t)
  j, t = float(np.median(jt)), float(np.median(tt))
  return j, t


def main(argv):
  del argv
  import torch
  if FLAGS.torchvision_site and FLAGS.torchvision_site not in sys.path:
    sys.path.append(FLAGS.torchvision_site)
  sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))
  print(f"torch={torch.__version__} jax={jax.__version__} threads_torch={torch.get_num_threads()} "
        f"load1={os.getloadavg()[0]:.2f}")
  for part in FLAGS.parts:
    for shape in FLAGS.shapes:
      j, t = time_part(torch, part, shape)
      print(f"part={part} shape={shape} dlbook_ms={j * 1e3:.0f} torch_ms={t * 1e3:.0f} ratio={j / t:.2f} "
            f"load1={os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
  app.run(main)
