"""Every GPU check in one call: dlbook's DARTS steps and GA population against the PyTorch reference.

  python -m benchmarks.gpu_check --reference_cnn=DIR [--parts=...] [--hessian=finite_difference]
      [--kernels=auto] [--timeout_s=240] [--smoke]

Meant for a machine with a GPU and JAX's CUDA plugin (about 8 minutes on one H200-class GPU; each part
runs in its own process under its own timeout, so a part that hangs costs only its timeout). It downloads
nothing: DIR is a copy of quark0/darts' `cnn/` folder (architect.py, genotypes.py, model_search.py,
operations.py, model.py, utils.py; `git show HEAD:cnn/<file>` from a clone), torch must be installed for
the reference parts (without DIR or torch they are skipped and no ratio is printed), and the GA part
reads Fashion-MNIST as `configs/evolve_chain.py:cpu` does.

Parts (in this order):
- `ref_search1`, `ref_search2`, `ref_eval`: the reference's search step (first / second order, its
  finite-difference Hessian) and its DARTS_V2 evaluation train step (`benchmarks/reference_darts.py`,
  cudnn.benchmark on);
- `search1`, `search2`, `eval`: the same steps in dlbook (`benchmarks/compile_only.py` builds them; the
  second order with `--hessian`, finite_difference by default to match the reference, and `remat_edges`),
  compiled with JAX's AOT API: compile seconds, XLA's temp buffers, the device's peak memory, seconds per
  step (median after warm-up);
- `ga16`, `ga64`: the GA population's fitness (`benchmarks/ga_population.py`, chain space at the cpu
  preset's sizes, `xla` convs, the whole population in one vmap) against the loop over individuals.
Batch 64 / C=16 / 8 cells (search), batch 96 / C=36 / 20 cells (evaluation), as the reference's scripts.

Prints each part's output as it comes, then a summary: per DARTS part `dlbook_vs_reference_ratio=`
(dlbook seconds / reference seconds; < 1: dlbook is faster) with both compile and step times and the
target, the GA's `vmap_vs_loop_speedup=` at P=16 and P=64, peak memory, and whether mixed precision
was checked. `--smoke` shrinks everything (3 cells, C=4, batch 4, 2 timed steps, GA smoke preset at
P=2) so that the whole script runs on a CPU in a few minutes, to check the script itself.
"""

import os
import re
import statistics
import subprocess
import sys
import threading
import time

from absl import app, flags

FLAGS = flags.FLAGS
PARTS = ("ref_search1", "ref_search2", "ref_eval", "search1", "search2", "eval", "ga16", "ga64")
flags.DEFINE_string("reference_cnn", None, "quark0/darts' cnn/ folder (reference parts are skipped without it).")
flags.DEFINE_list("parts", list(PARTS), f"Parts to run: {', '.join(PARTS)}.")
flags.DEFINE_enum("hessian", "finite_difference", ["finite_difference", "exact"],
                  "dlbook's second-order hypergradient (the reference's is the finite difference).")
flags.DEFINE_enum("kernels", "auto", ["auto", "cpu", "accelerator"], "dlbook's DARTS kernel set "
                  "(benchmarks/compile_only.py KERNELS; auto: per backend).")
flags.DEFINE_integer("timeout_s", 240, "Seconds each part may take (compile included).")
flags.DEFINE_integer("steps", 10, "Timed steps per DARTS part (median reported).")
flags.DEFINE_integer("warmup", 3, "Untimed steps after compilation.")
flags.DEFINE_string("ga_config", "configs/evolve_chain.py:cpu", "GA config for the ga16 / ga64 parts.")
flags.DEFINE_bool("smoke", False, "Tiny sizes that run on a CPU (checks the script, not the speed).")
flags.DEFINE_string("worker", None, "Internal: run one dlbook DARTS part in this process.")

SMOKE_SIZES = dict(batch=4, C=4, layers=3, eval_batch=4, eval_C=4, eval_layers=3)
FULL_SIZES = dict(batch=64, C=16, layers=8, eval_batch=96, eval_C=36, eval_layers=20)
# What the accelerator formulation should reach (the reference's step time on the same GPU, compile time).
TARGETS = {"search1": 1.0, "search2": 1.0, "eval": 1.0, "compile_s": 60.0, "ga16": 5.0}


def sizes() -> dict:
  return SMOKE_SIZES if FLAGS.smoke else FULL_SIZES


def worker(part: str) -> None:
  """Compiles and times one dlbook DARTS step; prints name=value lines as soon as each is known."""
  import jax
  from benchmarks import compile_only
  kernels = compile_only.KERNELS[FLAGS.kernels]
  fn, make_args, shape = compile_only.build(part, kernels, sizes(), FLAGS.hessian)
  device = jax.devices()[0]
  print(f"part={part} backend={jax.default_backend()} device={device.device_kind.replace(' ', '_')} "
        f"jax={jax.__version__} kernels={FLAGS.kernels} hessian={FLAGS.hessian} "
        + " ".join(f"{k}={v}" for k, v in shape.items()), flush=True)
  args = jax.jit(make_args)()
  jax.block_until_ready(args)
  t0 = time.perf_counter()
  compiled = jax.jit(fn, donate_argnums=0).lower(*args).compile()
  print(f"part={part} dlbook_compile_s={time.perf_counter() - t0:.2f}", flush=True)
  memory = compiled.memory_analysis()
  if memory is not None:
    print(f"part={part} xla_temp_GB={memory.temp_size_in_bytes / 1e9:.3f} "
          f"xla_argument_GB={memory.argument_size_in_bytes / 1e9:.3f}", flush=True)
  times = []
  for i in range(FLAGS.warmup + FLAGS.steps):
    t0 = time.perf_counter()
    state, metrics = compiled(*args)
    jax.block_until_ready(metrics)
    if i >= FLAGS.warmup:
      times.append(time.perf_counter() - t0)
    args = (state,) + tuple(args[1:])
  stats = device.memory_stats() or {}
  peak = stats.get("peak_bytes_in_use")
  print(f"part={part} dlbook_step_s={statistics.median(times):.5f} min={min(times):.5f} max={max(times):.5f}"
        + (f" device_peak_GB={peak / 1e9:.3f}" if peak is not None else ""), flush=True)


def run_part(cmd, timeout_s: int, tag: str):
  """Runs `cmd`, echoing its lines prefixed with `tag` as they come; returns (output, status)."""
  lines = []
  proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)

  def pump():
    for line in proc.stdout:
      lines.append(line)
      if not re.match(r"^[WI]\d{4} ", line):  # absl/XLA log lines stay out of the echo
        print(f"[{tag}] {line.rstrip()}", flush=True)

  reader = threading.Thread(target=pump, daemon=True)
  reader.start()
  try:
    rc = proc.wait(timeout=timeout_s)
    status = "ok" if rc == 0 else f"failed rc={rc}"
  except subprocess.TimeoutExpired:
    os.killpg(proc.pid, 9)
    proc.wait()
    status = f"timed out after {timeout_s} s"
  reader.join(timeout=10)
  return "".join(lines), status


def value(text: str, name: str):
  match = re.findall(rf"(?:^|\s){re.escape(name)}=([0-9.eE+-]+)", text)
  return float(match[-1]) if match else None


def reference_device() -> str:
  """"" without torch; "cpu" at smoke size (torch not imported here), else "cuda" where torch sees a GPU."""
  import importlib.util
  if importlib.util.find_spec("torch") is None:
    return ""
  if FLAGS.smoke:
    return "cpu"
  import torch
  return "cuda" if torch.cuda.is_available() else "cpu"


def commands(part: str, ref_device: str):
  s = sizes()
  timing = ["--steps", str(2 if FLAGS.smoke else FLAGS.steps), "--warmup", str(1 if FLAGS.smoke else FLAGS.warmup)]
  if part.startswith("ref_"):
    flags_ = [f"--{k}={v}" for k, v in s.items()]
    return [sys.executable, "-m", "benchmarks.reference_darts", FLAGS.reference_cnn, "--device", ref_device,
            "--parts", part[4:]] + flags_ + timing + (["--threads", "1"] if FLAGS.smoke else [])
  if part.startswith("ga"):
    population = 2 if FLAGS.smoke else int(part[2:])
    config = "configs/evolve_chain.py:smoke" if FLAGS.smoke else FLAGS.ga_config
    return [sys.executable, "-m", "benchmarks.ga_population", f"--config={config}", f"--population={population}",
            "--formulations=xla", "--config.space.conv_impl=xla", "--config.fitness.vmap_microbatch=0",
            "--microbatches=0", "--vmap_devices=1", "--config.num_devices=1", "--host_devices=0"] + (
                ["--train_steps=2"] if FLAGS.smoke else [])
  return [sys.executable, "-m", "benchmarks.gpu_check", f"--worker={part}", f"--kernels={FLAGS.kernels}",
          f"--hessian={FLAGS.hessian}", f"--smoke={FLAGS.smoke}", f"--steps={timing[1]}", f"--warmup={timing[3]}"]


def summary(results: dict) -> None:
  print("\n==== gpu_check summary" + (" (SMOKE sizes: checks the script, not the speed)" if FLAGS.smoke else ""))
  for part in ("search1", "search2", "eval"):
    ref_text, ref_status = results.get("ref_" + part, ("", "not run"))
    text, status = results.get(part, ("", "not run"))
    ref_key = "reference_eval_train_step_s" if part == "eval" else f"reference_search_order{part[-1]}_s"
    ref_s, ours_s, compile_s = value(ref_text, ref_key), value(text, "dlbook_step_s"), value(text, "dlbook_compile_s")
    fields = [f"part={part}", f"reference_s={ref_s if ref_s is not None else 'n/a'}",
              f"dlbook_s={ours_s if ours_s is not None else 'n/a'}",
              f"dlbook_compile_s={compile_s if compile_s is not None else 'n/a'}"]
    if ref_s and ours_s:
      ratio = ours_s / ref_s
      fields.append(f"dlbook_vs_reference_ratio={ratio:.3f} target<={TARGETS[part]} "
                    f"met={'yes' if ratio <= TARGETS[part] else 'no'}")
    else:
      fields.append("dlbook_vs_reference_ratio=n/a")
    if compile_s is not None:
      fields.append(f"compile_target<={TARGETS['compile_s']:.0f}s met={'yes' if compile_s <= TARGETS['compile_s'] else 'no'}")
    for name in ("xla_temp_GB", "device_peak_GB"):
      if value(text, name) is not None:
        fields.append(f"{name}={value(text, name)}")
    fields.append(f"status=dlbook:{status.replace(' ', '_')},reference:{ref_status.replace(' ', '_')}")
    print(" ".join(fields))
  for part in ("ga16", "ga64"):
    text, status = results.get(part, ("", "not run"))
    speedup = value(text, "vmap_vs_loop_speedup")
    line = f"part={part} population={value(text, 'population')} vmap_vs_loop_speedup={speedup}"
    if part in TARGETS and speedup is not None:
      line += f" target>={TARGETS[part]} met={'yes' if speedup >= TARGETS[part] else 'no'}"
    print(line + f" vmap_compile_s={value(text, 'xla_vmap_compile_s')} status={status.replace(' ', '_')}")
  print("mixed_precision=not_checked (dlbook's DARTS and GA networks have no reduced-precision option; "
        "everything runs in float32, as the reference)")


def main(argv):
  del argv
  if FLAGS.worker:
    worker(FLAGS.worker)
    return
  unknown = set(FLAGS.parts) - set(PARTS)
  if unknown:
    raise app.UsageError(f"unknown --parts {', '.join(sorted(unknown))}; valid: {', '.join(PARTS)}")
  ref_device = reference_device() if FLAGS.reference_cnn else ""
  if not ref_device:
    print("reference parts skipped: " + ("no --reference_cnn" if not FLAGS.reference_cnn else "torch not installed"),
          flush=True)
  if FLAGS.reference_cnn and not os.path.isdir(FLAGS.reference_cnn):
    raise app.UsageError(f"--reference_cnn={FLAGS.reference_cnn} is not a folder; it must be quark0/darts' cnn/")
  results, t_start = {}, time.time()
  for part in PARTS:
    if part not in FLAGS.parts or (part.startswith("ref_") and not ref_device):
      continue
    t0 = time.time()
    results[part] = run_part(commands(part, ref_device), FLAGS.timeout_s, part)
    print(f"[{part}] {results[part][1]} in {time.time() - t0:.1f} s", flush=True)
  summary(results)
  print(f"gpu_check_total_s={time.time() - t_start:.1f}")


if __name__ == "__main__":
  app.run(main)
