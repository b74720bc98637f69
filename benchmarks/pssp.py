"""Seconds per training step of the attention Inception-BGRU (book Fig. 11.2), dlbook (JAX) vs the same
model written in PyTorch from the same definition, alternating in one process.

  python -m benchmarks.pssp [--variants=flax:1,scan:1,scan:4] [--rounds=3] [--steps=2] [--lengths=full]

One step = forward, masked cross-entropy, backward and Adam, batch 64, 700 residues, 42 features,
8 classes, random inputs, the model's default widths (inception 3 x 64, Conv(3) 128, BGRU 2 x 128 per
direction, dense 128). `--lengths=full` gives every protein 700 residues; `random` draws 50-700. Both
models honour each protein's length (dlbook: length-aware scans; PyTorch: `pack_padded_sequence`) and
mask padding out of BatchNorm statistics and attention.

A variant is `rnn_impl:unroll` (see dlbook/models/pssp.py): `flax` is nn.RNN / nn.Bidirectional (the
models' default), `scan` is lax.scan with the input projection hoisted out of the loop. Rounds alternate
dlbook variants and PyTorch (at each of `--torch_threads`); the median over rounds of each is reported
and the ratio is taken against the fastest PyTorch thread count. Prints name=value lines,
ending with `dlbook_vs_torch_ratio=` for the first variant (< 1: dlbook is faster).
Needs torch==2.13.0 (CPU) in the environment; never a dlbook dependency.
"""

import os
import statistics
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_list("variants", ["flax:1", "scan:1", "scan:4"], "dlbook recurrences to time, rnn_impl:unroll.")
flags.DEFINE_integer("rounds", 3, "Alternating rounds (dlbook variants, then PyTorch).")
flags.DEFINE_integer("steps", 2, "Timed steps per framework per round.")
flags.DEFINE_integer("batch", 64, "Proteins per batch.")
flags.DEFINE_integer("length", 700, "Residues per protein (padded length).")
flags.DEFINE_integer("features", 42, "Input features per residue.")
flags.DEFINE_enum("lengths", "full", ["full", "random"], "Protein lengths: all full, or random in 50..length.")
flags.DEFINE_bool("skip_torch", False, "Time dlbook only.")
flags.DEFINE_bool("torch_pack", False, "Pack sequences for PyTorch's GRU even when every protein is full "
                  "length (its CPU backward through packed sequences is slow: zero-filled slice gradients).")
flags.DEFINE_list("torch_threads", ["1", "2"], "PyTorch intra-op thread counts to time; the ratio uses the "
                  "fastest (on a shared, loaded machine 2 threads can be far slower than 1).")

UNITS, INCEPTION, CONV, DENSE, DROPOUT, CLASSES = 128, 64, 128, 128, 0.4, 8
PACK = [False]  # set from --torch_pack


def emit(**kv):
  print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in kv.items()), flush=True)


def make_batch():
  import numpy as np
  rng = np.random.default_rng(0)
  if FLAGS.lengths == "full":
    lengths = np.full(FLAGS.batch, FLAGS.length)
  else:
    lengths = rng.integers(50, FLAGS.length + 1, FLAGS.batch)
  mask = (np.arange(FLAGS.length)[None] < lengths[:, None]).astype(np.float32)
  x = rng.standard_normal((FLAGS.batch, FLAGS.length, FLAGS.features)).astype(np.float32) * mask[..., None]
  labels = (rng.integers(0, CLASSES, (FLAGS.batch, FLAGS.length)) * mask).astype(np.int32)
  return {"features": x, "labels": labels, "mask": mask}


# --------------------------------------------------------------------------------------------- dlbook
def dlbook_step(variant: str, batch):
  import jax
  import optax
  from dlbook import models
  from dlbook.medical import pssp
  from dlbook.training.state import TrainState
  impl, unroll = variant.split(":")
  model = models.build("pssp_attention_inception_bgru", rnn_impl=impl, unroll=int(unroll), units=UNITS,
                       inception_filters=INCEPTION, conv_filters=CONV, dense_units=DENSE, dropout=DROPOUT)
  t0 = time.perf_counter()
  variables = jax.jit(lambda k: model.init({"params": k, "dropout": k}, batch["features"][:1], batch["mask"][:1]))(
      jax.random.key(0))
  state = TrainState.create(apply_fn=model.apply, params=variables["params"], tx=optax.adam(1e-3),
                            batch_stats=variables["batch_stats"])
  step = jax.jit(pssp.make_train_step(), donate_argnums=0)
  compiled = step.lower(state, batch, jax.random.key(1)).compile()
  compile_s = time.perf_counter() - t0
  holder = {"state": state, "i": 0}

  def run():
    holder["i"] += 1
    holder["state"], metrics = compiled(holder["state"], batch, jax.random.key(holder["i"]))
    jax.block_until_ready(metrics)

  run()  # warm-up
  return run, compile_s


# ---------------------------------------------------------------------------------------------- torch
def torch_step(batch):
  """The same network in PyTorch (channels-last tensors [B, L, C] between layers)."""
  import torch
  from torch import nn
  from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

  class MaskedBN(nn.Module):
    """BatchNorm over real residues only; momentum and epsilon as Keras' (0.99 -> 0.01, 1e-3)."""

    def __init__(self, c):
      super().__init__()
      self.weight, self.bias = nn.Parameter(torch.ones(c)), nn.Parameter(torch.zeros(c))
      self.register_buffer("mean", torch.zeros(c))
      self.register_buffer("var", torch.ones(c))

    def forward(self, x, mask):
      m = mask[..., None]
      n = m.sum()
      if self.training:
        mean = (x * m).sum((0, 1)) / n
        var = (((x - mean) ** 2) * m).sum((0, 1)) / n
        with torch.no_grad():
          self.mean.mul_(0.99).add_(0.01 * mean)
          self.var.mul_(0.99).add_(0.01 * var)
      else:
        mean, var = self.mean, self.var
      return (x - mean) * torch.rsqrt(var + 1e-3) * self.weight + self.bias

  class ConvBlock(nn.Module):
    def __init__(self, cin, cout, k):
      super().__init__()
      self.conv = nn.Conv1d(cin, cout, k, padding=k // 2, bias=False)
      self.bn, self.drop = MaskedBN(cout), nn.Dropout(DROPOUT)

    def forward(self, x, mask):
      x = self.conv((x * mask[..., None]).transpose(1, 2)).transpose(1, 2)
      return self.drop(torch.relu(self.bn(x, mask)))

  class Attention(nn.Module):
    def __init__(self, d):
      super().__init__()
      self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
      self.bn, self.alpha = MaskedBN(d), nn.Parameter(torch.zeros(()))

    def forward(self, x, mask):
      keys = mask[:, None, :] > 0  # [B, 1, L]: attend to real residues only
      r = nn.functional.scaled_dot_product_attention(self.q(x), self.k(x), self.v(x), attn_mask=keys)
      return self.alpha * self.bn(r, mask) + (1 - self.alpha) * x

  class BGRU(nn.Module):
    def __init__(self, d):
      super().__init__()
      self.gru = nn.GRU(d, UNITS, batch_first=True, bidirectional=True)

    def forward(self, x, lengths):
      if not PACK[0] and bool((lengths == x.shape[1]).all()):
        return self.gru(x)[0]  # every protein full length: packing would change nothing
      packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
      y, _ = self.gru(packed)
      return pad_packed_sequence(y, batch_first=True, total_length=x.shape[1])[0]

  class Net(nn.Module):
    def __init__(self, f):
      super().__init__()
      self.bn_in = MaskedBN(f)
      self.inception = nn.ModuleList([ConvBlock(f, INCEPTION, k) for k in (1, 3, 5)])
      self.att0 = Attention(3 * INCEPTION)
      self.conv = ConvBlock(3 * INCEPTION, CONV, 3)
      self.gru1, self.att1 = BGRU(CONV), Attention(2 * UNITS)
      self.gru2, self.att2 = BGRU(2 * UNITS), Attention(2 * UNITS)
      self.dense, self.drop, self.out = nn.Linear(4 * UNITS, DENSE), nn.Dropout(DROPOUT), nn.Linear(DENSE, CLASSES)

    def forward(self, x, mask):
      lengths = mask.sum(1).long().cpu()
      x = self.bn_in(x, mask)
      x = torch.cat([b(x, mask) for b in self.inception], -1)
      x = self.conv(self.att0(x, mask), mask)
      a1 = self.att1(self.gru1(x, lengths), mask)
      a2 = self.att2(self.gru2(a1, lengths), mask)
      return self.out(self.drop(torch.relu(self.dense(torch.cat([a1, a2], -1)))))

  PACK[0] = FLAGS.torch_pack
  torch.manual_seed(0)
  net = Net(FLAGS.features).train()
  opt = torch.optim.Adam(net.parameters(), 1e-3)
  x, y, mask = (torch.from_numpy(batch["features"]), torch.from_numpy(batch["labels"]).long(),
                torch.from_numpy(batch["mask"]))

  def run():
    opt.zero_grad(set_to_none=True)
    logits = net(x, mask)
    losses = nn.functional.cross_entropy(logits.reshape(-1, CLASSES), y.reshape(-1), reduction="none")
    loss = (losses * mask.reshape(-1)).sum() / mask.sum()
    loss.backward()
    opt.step()

  threads = torch.get_num_threads()
  torch.set_num_threads(min(int(t) for t in FLAGS.torch_threads))  # warm up at the thread count least hurt by load
  run()
  torch.set_num_threads(threads)
  return run


def timed(run, steps):
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    run()
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def main(argv):
  del argv
  import jax
  batch = make_batch()
  emit(benchmark="pssp_attention_inception_bgru_train_step", batch=FLAGS.batch, length=FLAGS.length,
       features=FLAGS.features, lengths=FLAGS.lengths, backend=jax.default_backend(), cpu_count=os.cpu_count(),
       load_avg_1min=os.getloadavg()[0])
  runs = {}
  for variant in FLAGS.variants:
    runs[variant], compile_s = dlbook_step(variant, batch)
    emit(variant=variant, compile_s=compile_s)
  if not FLAGS.skip_torch:
    import torch
    torch_run = torch_step(batch)
    emit(torch=torch.__version__, default_torch_threads=torch.get_num_threads())
    for threads in map(int, FLAGS.torch_threads):
      runs[f"torch_{threads}t"] = lambda threads=threads: (torch.set_num_threads(threads), torch_run())
  times = {name: [] for name in runs}
  for r in range(FLAGS.rounds):
    for name, run in runs.items():
      times[name].append(timed(run, FLAGS.steps))
      emit(round=r, impl=name, step_s=times[name][-1], load_avg_1min=os.getloadavg()[0])
  medians = {name: statistics.median(t) for name, t in times.items()}
  for name, median in medians.items():
    emit(impl=name, median_step_s=median)
  torch_names = [n for n in medians if n.startswith("torch")]
  if torch_names:
    best = min(torch_names, key=medians.get)
    emit(fastest_torch=best, torch_step_s=medians[best])
    for variant in FLAGS.variants:
      emit(variant=variant, ratio_vs_torch=medians[variant] / medians[best])
    if FLAGS.variants:
      emit(dlbook_vs_torch_ratio=medians[FLAGS.variants[0]] / medians[best])


if __name__ == "__main__":
  from dlbook import launch
  launch.run(main)
