"""What every run writes: a progress line with steps/s and ETA, TensorBoard events,
a metrics history that survives resume, pictures, and an atomic `results.json`."""

import json
import os
import platform
import shlex
import sys
import time
from typing import Dict, Optional

import numpy as np
from absl import logging

from dlbook.files import atomic_write
from dlbook.training import distributed


def package_versions() -> Dict[str, str]:
  import importlib.metadata as md
  out = {"python": platform.python_version()}
  for name in ("jax", "jaxlib", "flax", "optax", "chex", "orbax-checkpoint", "ml-collections", "numpy",
               "scikit-learn", "scikit-image", "dlbook"):
    try:
      out[name] = md.version(name)
    except md.PackageNotFoundError:
      pass
  return out


def command_line() -> str:
  """The command that started this process, shell-quoted so it can be pasted back:
  `python -m experiments.train --config=... '--config.channels=(16, 32)'`."""
  if not sys.argv:
    return ""
  spec = getattr(sys.modules.get("__main__"), "__spec__", None)
  head = ["-m", spec.name] if spec is not None and spec.name != "__main__" else [sys.argv[0]]
  return shlex.join([os.path.basename(sys.executable)] + head + sys.argv[1:])


def run_info() -> dict:
  import jax
  return {"command": command_line(),
          "versions": package_versions(), "platform": platform.platform(),
          "devices": [str(d) for d in jax.devices()], "backend": jax.default_backend()}


def write_text_atomic(path: str, text: str) -> None:
  """Writes `text` through a fresh temporary file and an atomic rename (`dlbook.files.atomic_write`)."""
  atomic_write(path, lambda f: f.write(text.encode()))


def write_json_atomic(path: str, payload, **dump_kwargs) -> None:
  write_text_atomic(path, json.dumps(payload, **{"indent": 2, "default": _to_builtin, **dump_kwargs}))


def _to_builtin(x):
  if isinstance(x, (np.integer,)):
    return int(x)
  if isinstance(x, (np.floating,)):
    return float(x)
  if hasattr(x, "tolist"):
    return x.tolist()
  if hasattr(x, "to_dict"):
    return x.to_dict()
  return str(x)


def write_results(workdir: str, *, config, seed, dataset, metrics: dict, wall_time_s: float, **extra) -> dict:
  """Writes `results.json` (atomically, only on success, by the primary process) and returns its payload."""
  payload = dict(run_info(), config=config.to_dict() if hasattr(config, "to_dict") else config,
                 seed=seed, dataset=dataset, wall_time_s=wall_time_s, metrics=metrics, **extra)
  if distributed.is_primary():
    write_json_atomic(os.path.join(workdir, "results.json"), payload)
  distributed.barrier("results")
  return payload


def format_duration(seconds: float) -> str:
  seconds = int(max(0, seconds))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class Progress:
  """Logs `step s/T | metrics | X steps/s | ETA` measured since the (re)start."""

  def __init__(self, total_steps: int, start_step: int = 0, name: str = "train"):
    self.total, self.name = total_steps, name
    self.start_step, self.start_time = start_step, time.time()

  def rate(self, step: int) -> float:
    dt = time.time() - self.start_time
    return (step - self.start_step) / dt if dt > 0 else 0.0

  def line(self, step: int, metrics: Optional[dict] = None) -> str:
    rate = self.rate(step)
    eta = (self.total - step) / rate if rate > 0 else float("nan")
    parts = [f"{self.name} step {step}/{self.total}"]
    parts += [f"{k}={float(v):.4g}" for k, v in (metrics or {}).items()]
    parts += [f"{rate:.2f} steps/s", f"ETA {format_duration(eta) if np.isfinite(eta) else '?'}"]
    return " | ".join(parts)

  def log(self, step: int, metrics: Optional[dict] = None) -> None:
    logging.info(self.line(step, metrics))


class MetricsLog:
  """TensorBoard scalars plus a JSON-lines history (`history.jsonl`) that resume trims. Every process
  keeps the records; only the primary one writes the files."""

  def __init__(self, workdir: str, resume_step: int = 0):
    self.history_path = os.path.join(workdir, "history.jsonl")
    self.records = []
    if os.path.exists(self.history_path):
      with open(self.history_path) as f:
        self.records = [r for r in map(json.loads, filter(None, f.read().splitlines()))
                        if r["step"] <= resume_step]
    distributed.barrier("history-read")
    self.writer = None
    if distributed.is_primary():
      from tensorboardX import SummaryWriter
      with open(self.history_path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in self.records)
      self.writer = SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=resume_step or None)

  def write(self, step: int, scalars: dict, prefix: str = "") -> None:
    record = {"step": int(step)}
    for k, v in scalars.items():
      record[prefix + k] = float(v)
      if self.writer is not None:
        self.writer.add_scalar(prefix + k, float(v), int(step))
    self.records.append(record)
    if self.writer is not None:
      with open(self.history_path, "a") as f:
        f.write(json.dumps(record) + "\n")

  def series(self, key: str):
    pts = [(r["step"], r[key]) for r in self.records if key in r]
    return [p[0] for p in pts], [p[1] for p in pts]

  def close(self):
    if self.writer is not None:
      self.writer.flush()
      self.writer.close()


def plot_curves(path: str, log: MetricsLog, keys, title: str = "") -> None:
  if not distributed.is_primary():
    return
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.5), squeeze=False)
  for ax, group in zip(axes[0], keys):
    for key in group:
      xs, ys = log.series(key)
      if xs:
        ax.plot(xs, ys, label=key, marker="." if len(xs) < 50 else None)
    ax.set_xlabel("step")
    ax.legend()
    ax.grid(alpha=0.3)
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def plot_confusion(path: str, cm, class_names, title: str = "") -> None:
  if not distributed.is_primary():
    return
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  cm = np.asarray(cm)
  fig, ax = plt.subplots(figsize=(1.0 + 0.5 * len(cm), 0.8 + 0.5 * len(cm)))
  ax.imshow(cm, cmap="Blues")
  for (i, j), v in np.ndenumerate(cm):
    ax.text(j, i, str(v), ha="center", va="center", fontsize=7,
            color="white" if v > cm.max() / 2 else "black")
  ticks = range(len(cm))
  ax.set_xticks(ticks, [str(n) for n in class_names][:len(cm)] or ticks, rotation=60, fontsize=7)
  ax.set_yticks(ticks, [str(n) for n in class_names][:len(cm)] or ticks, fontsize=7)
  ax.set_xlabel("predicted")
  ax.set_ylabel("true")
  ax.set_title(title)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
