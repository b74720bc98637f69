"""Seconds per step of the reference PyTorch DARTS (quark0/darts, `cnn/`), on the CPU or a GPU.

  python -m benchmarks.reference_darts CNN_DIR [--device cpu|cuda] [--parts search1,search2,eval]
      [--batch 64] [--C 16] [--layers 8] [--eval_batch 96] [--eval_C 36] [--eval_layers 20] [--steps 10] [--warmup 3]

CNN_DIR is the reference's `cnn/` folder (architect.py, genotypes.py, model_search.py, operations.py, and
for `eval` model.py and utils.py); nothing is downloaded. The parts, as the reference's training scripts
run them:
- `search1` / `search2`: one search step of `train_search.py`: `Architect.step` (first order, or
  `unrolled=True`: the second order with its finite-difference Hessian-vector product), then the weight
  step (cross-entropy, backward, gradient clipping at 5, SGD lr 0.025 momentum 0.9 weight decay 3e-4) on
  `model_search.Network(C, 10, layers)`, batch `--batch` of 32x32x3 random inputs;
- `eval`: one training step of `train.py` on `model.NetworkCIFAR(C, 10, layers, auxiliary=True, DARTS_V2)`
  with drop-path 0.2, the auxiliary loss weighted 0.4, clipping 5, batch `--eval_batch`.
On CUDA, cudnn.benchmark is on, as the reference's scripts set it.

The reference was written for PyTorch 0.3; a temporary copy of its files gets today's call forms
(`Tensor.sub(alpha, other)` -> `sub(other, alpha=alpha)` and the like), on the CPU `.cuda()` becomes
the identity and drop-path draws its mask on the CPU, and a missing torchvision (imported by utils.py
for data transforms only) is replaced by an empty module. Nothing of the copy is kept.

Prints name=value lines: `reference_search_order1_s=`, `reference_search_order2_s=`,
`reference_eval_train_step_s=` (medians of `--steps` after `--warmup`, with min and max).
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import types

SEARCH_FILES = ("architect.py", "genotypes.py", "model_search.py", "operations.py")
EVAL_FILES = ("model.py", "utils.py")
# PyTorch 0.3's positional-alpha forms, removed since; the replacements compute the same thing.
CALL_FORMS = (("theta.sub(eta, moment+dtheta)", "theta.sub(moment+dtheta, alpha=eta)"),
              ("p.data.add_(R, v)", "p.data.add_(v, alpha=R)"),
              ("p.data.sub_(2*R, v)", "p.data.sub_(v, alpha=2*R)"),
              ("g.data.sub_(eta, ig.data)", "g.data.sub_(ig.data, alpha=eta)"))
CPU_FORMS = (("torch.cuda.FloatTensor(", "torch.FloatTensor("),)


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("cnn_dir", help="the reference's cnn/ folder")
  p.add_argument("--device", default="cpu", help="cpu or cuda")
  p.add_argument("--parts", default="search1,search2,eval", help="comma-separated: search1, search2, eval")
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--C", type=int, default=16)
  p.add_argument("--layers", type=int, default=8)
  p.add_argument("--eval_batch", type=int, default=96)
  p.add_argument("--eval_C", type=int, default=36)
  p.add_argument("--eval_layers", type=int, default=20)
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--warmup", type=int, default=3)
  p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
  return p.parse_args(argv)


def patched_copy(cnn_dir: str, files, cpu: bool) -> str:
  """A temporary copy of the reference's files with today's call forms; returns its folder."""
  missing = [f for f in files if not os.path.exists(os.path.join(cnn_dir, f))]
  if missing:
    sys.exit(f"error: {cnn_dir} lacks {', '.join(missing)}: it must be quark0/darts' cnn/ folder")
  tmp = tempfile.mkdtemp(prefix="reference_darts_")
  for name in files:
    with open(os.path.join(cnn_dir, name)) as f:
      text = f.read()
    for old, new in CALL_FORMS + (CPU_FORMS if cpu else ()):
      text = text.replace(old, new)
    with open(os.path.join(tmp, name), "w") as f:
      f.write(text)
  return tmp


def timed(fn, steps: int, warmup: int, sync):
  times = []
  for i in range(warmup + steps):
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    if i >= warmup:
      times.append(time.perf_counter() - t0)
  return statistics.median(times), min(times), max(times)


def main(argv=None):
  a = parse_args(argv)
  parts = [p for p in a.parts.split(",") if p]
  unknown = set(parts) - {"search1", "search2", "eval"}
  if unknown:
    sys.exit(f"error: unknown --parts {', '.join(sorted(unknown))}; valid: search1, search2, eval")
  cpu = a.device == "cpu"
  files = SEARCH_FILES + (EVAL_FILES if "eval" in parts else ())
  tmp = patched_copy(a.cnn_dir, files, cpu)
  sys.path.insert(0, tmp)
  try:
    import torch
    import torch.nn as nn
    if a.threads:
      torch.set_num_threads(a.threads)
    if cpu:
      torch.Tensor.cuda = lambda self, *args, **kw: self
      nn.Module.cuda = lambda self, *args, **kw: self
    else:
      torch.backends.cudnn.enabled = True
      torch.backends.cudnn.benchmark = True
    try:
      import torchvision  # noqa: F401  (utils.py imports its transforms; not used here)
    except ImportError:
      stub = types.ModuleType("torchvision")
      stub.transforms = types.ModuleType("torchvision.transforms")
      sys.modules["torchvision"], sys.modules["torchvision.transforms"] = stub, stub.transforms
    device = torch.device(a.device)
    sync = (lambda: None) if cpu else torch.cuda.synchronize
    torch.manual_seed(0)
    criterion = nn.CrossEntropyLoss().to(device)
    common = f"device={a.device} threads={torch.get_num_threads()} torch={torch.__version__}"

    if "search1" in parts or "search2" in parts:
      from architect import Architect
      from model_search import Network
      model = Network(a.C, 10, a.layers, criterion).to(device)
      optimizer = torch.optim.SGD(model.parameters(), 0.025, momentum=0.9, weight_decay=3e-4)
      arch_args = types.SimpleNamespace(momentum=0.9, weight_decay=3e-4, arch_learning_rate=3e-4,
                                        arch_weight_decay=1e-3)
      architect = Architect(model, arch_args)
      batch = lambda n: (torch.randn(n, 3, 32, 32, device=device), torch.randint(0, 10, (n,), device=device))
      (xt, yt), (xv, yv) = batch(a.batch), batch(a.batch)
      model.train()
      for order in (1, 2):
        if f"search{order}" not in parts:
          continue

        def search_step(order=order):
          architect.step(xt, yt, xv, yv, 0.025, optimizer, unrolled=order == 2)
          optimizer.zero_grad()
          loss = criterion(model(xt), yt)
          loss.backward()
          nn.utils.clip_grad_norm_(model.parameters(), 5)
          optimizer.step()

        med, best, worst = timed(search_step, a.steps, a.warmup, sync)
        print(f"reference_search_order{order}_s={med:.5f} min={best:.5f} max={worst:.5f} batch={a.batch} C={a.C} "
              f"layers={a.layers} {common}", flush=True)

    if "eval" in parts:
      import genotypes
      from model import NetworkCIFAR
      net = NetworkCIFAR(a.eval_C, 10, a.eval_layers, True, genotypes.DARTS_V2).to(device)
      net.drop_path_prob = 0.2
      params = sum(p.numel() for name, p in net.named_parameters() if "auxiliary" not in name)
      optimizer = torch.optim.SGD(net.parameters(), 0.025, momentum=0.9, weight_decay=3e-4)
      x = torch.randn(a.eval_batch, 3, 32, 32, device=device)
      y = torch.randint(0, 10, (a.eval_batch,), device=device)
      net.train()

      def eval_step():
        optimizer.zero_grad()
        logits, aux = net(x)
        loss = criterion(logits, y) + 0.4 * criterion(aux, y)
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 5)
        optimizer.step()

      med, best, worst = timed(eval_step, a.steps, a.warmup, sync)
      print(f"reference_eval_train_step_s={med:.5f} min={best:.5f} max={worst:.5f} batch={a.eval_batch} "
            f"C={a.eval_C} layers={a.eval_layers} params_no_aux={params} {common}", flush=True)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
  main()
