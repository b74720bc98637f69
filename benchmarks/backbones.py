"""CPU training-step time of dlbook's backbones against the same architectures in PyTorch.

  python -m benchmarks.backbones [--archs=mobilenet_v2,resnet50] [--sizes=224,32] [--batch_size=32]
      [--steps=3 --repeats=5] [--torchvision_site=DIR]

One step = forward, softmax cross-entropy, backward and an SGD-momentum update, in training mode
(BatchNorm batch statistics, dropout). dlbook: `dlbook.training.make_train_step`, jitted once (compile
time is reported apart). PyTorch (2.13.0 CPU): `torchvision.models.<arch>(weights=None)` when torchvision
imports (pass --torchvision_site to a folder holding torchvision 0.28, which works beside torch 2.13 once its
compiled-ops registration is skipped: its models need none), else for MobileNetV2 the published definition
in tests/test_backbone_weights.py. At a CPU-preset size the small-input variant is used in both frameworks
only where the architectures agree (same strides), so the default preset size keeps the 224-px strides.

The two frameworks are timed alternately, `repeats` rounds of `steps` steps each; the fastest round counts
(load from other processes only slows a round down). Prints per architecture and size:
  arch=... size=... dlbook_step_s=... torch_step_s=... dlbook_vs_torch_ratio=... (and *_cpu_ratio, CPU time)
"""

import importlib
import os

# torch's OpenMP threads spin after each parallel region and starve XLA's threads (and vice versa) when the
# two frameworks alternate in one process; passive waiting keeps each framework's timing its own.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import resource
import sys
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

from dlbook import models, runtime
from dlbook.training import TrainState
from dlbook.training.steps import make_train_step

flags.DEFINE_list("archs", ["mobilenet_v2"], "Registered backbone names.")
flags.DEFINE_list("sizes", ["224", "32"], "Square input sizes.")
flags.DEFINE_integer("batch_size", 32, "Batch size.")
flags.DEFINE_integer("num_classes", 10, "Classes of the head.")
flags.DEFINE_integer("steps", 3, "Steps per timed round.")
flags.DEFINE_integer("repeats", 5, "Rounds per framework (alternating).")
flags.DEFINE_enum("allocator", "tuned", ["tuned", "default", "keep"],
                  "tuned: glibc tunables that keep freed memory for reuse (dlbook.runtime.tune_malloc, what every "
                  "launcher uses; the process restarts itself with them); keep: mallopt thresholds set in-process "
                  "(dlbook.runtime.keep_freed_memory); default: glibc's own settings. Both frameworks share it.")
flags.DEFINE_string("torchvision_site", None, "A site-packages folder with torchvision 0.28 (optional).")
flags.DEFINE_string("depthwise", None, "dlbook MobileNet depthwise implementation to try (conv or taps).")
FLAGS = flags.FLAGS


def cpu_time():
  r = resource.getrusage(resource.RUSAGE_SELF)
  return r.ru_utime + r.ru_stime


def torch_model(torch, arch, num_classes):
  if FLAGS.torchvision_site and FLAGS.torchvision_site not in sys.path:
    sys.path.append(FLAGS.torchvision_site)
  sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))
  try:
    tvm = importlib.import_module("torchvision.models")
  except ImportError:
    tvm = None
  if tvm is not None:
    if not hasattr(tvm, arch):   # Keras-only families (Xception, Inception-V3 as built here, ResNet101V2)
      return None, "no torchvision model"
    return getattr(tvm, arch)(weights=None, num_classes=num_classes), "torchvision"
  if arch != "mobilenet_v2":
    return None, "no torchvision"
  from tests.test_backbone_weights import torch_mobilenet_v2
  net = torch_mobilenet_v2(torch)
  net.classifier[1] = torch.nn.Linear(1280, num_classes)
  return net, "published definition"


def dlbook_step(arch, size, batch, num_classes):
  kwargs = {"depthwise": FLAGS.depthwise} if FLAGS.depthwise else {}
  model = models.build(arch, num_classes=num_classes, **kwargs)
  x = jnp.zeros((1, size, size, 3))
  variables = jax.jit(lambda k: model.init({"params": k, "dropout": k}, x))(jax.random.key(0))
  state = TrainState.create(apply_fn=model.apply, params=variables["params"], tx=optax.sgd(0.01, momentum=0.9),
                            batch_stats=variables.get("batch_stats", {}))
  rng = np.random.default_rng(0)
  data = {"image": jnp.asarray(rng.normal(size=(batch, size, size, 3)), jnp.float32),
          "label": jnp.asarray(rng.integers(0, num_classes, batch))}
  step = jax.jit(make_train_step(), donate_argnums=0)
  key = jax.random.key(1)
  t0 = time.perf_counter()
  state, m = step(state, data, key)
  jax.block_until_ready(m)
  compile_s = time.perf_counter() - t0
  holder = [state]

  def run(n):
    for _ in range(n):
      holder[0], m = step(holder[0], data, key)
    jax.block_until_ready(m)

  return run, compile_s


def torch_step(torch, net, size, batch, num_classes):
  opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
  net.train()
  x = torch.randn(batch, 3, size, size)
  y = torch.randint(0, num_classes, (batch,))
  loss_fn = torch.nn.CrossEntropyLoss()

  def run(n):
    for _ in range(n):
      opt.zero_grad(set_to_none=True)
      loss_fn(net(x), y).backward()
      opt.step()

  run(1)   # warm-up (allocator, first-touch)
  return run


def timed(run, steps):
  w, c = time.perf_counter(), cpu_time()
  run(steps)
  return (time.perf_counter() - w) / steps, (cpu_time() - c) / steps


def main(argv):
  del argv
  if FLAGS.allocator == "tuned" and not runtime.tune_malloc():
    print("allocator=tuned unavailable here (not glibc >= 2.35); glibc defaults")
  import torch
  if FLAGS.allocator == "keep":
    runtime.keep_freed_memory()
  print(f"allocator={FLAGS.allocator} torch={torch.__version__} jax={jax.__version__} threads_torch={torch.get_num_threads()} "
        f"cpus={os.cpu_count()} load1={os.getloadavg()[0]:.2f}")
  for arch in FLAGS.archs:
    for size in (int(s) for s in FLAGS.sizes):
      net, source = torch_model(torch, arch, FLAGS.num_classes)
      if net is None:
        print(f"arch={arch} size={size} skipped=no_torch_reference")
        continue
      jrun, compile_s = dlbook_step(arch, size, FLAGS.batch_size, FLAGS.num_classes)
      trun = torch_step(torch, net, size, FLAGS.batch_size, FLAGS.num_classes)
      jt, tt = [], []
      for _ in range(FLAGS.repeats):
        jt.append(timed(jrun, FLAGS.steps))
        tt.append(timed(trun, FLAGS.steps))
      jw, tw = min(t[0] for t in jt), min(t[0] for t in tt)
      jc, tc = min(t[1] for t in jt), min(t[1] for t in tt)
      print(f"arch={arch} size={size} batch={FLAGS.batch_size} torch_model={source.replace(' ', '_')} "
            f"dlbook_compile_s={compile_s:.1f} dlbook_step_s={jw:.4f} torch_step_s={tw:.4f} "
            f"dlbook_vs_torch_ratio={jw / tw:.3f} dlbook_vs_torch_cpu_ratio={jc / tc:.3f} "
            f"load1={os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
  app.run(main)
