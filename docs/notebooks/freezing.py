# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3
#     name: python3
# ---

# %% [markdown]
# # Coarse-to-fine training with selective freezing (SSF and PSF)
#
# Book ch. 4: a network is first trained with every weight free (the *coarse* phase), then fine-tuned
# with part of it frozen. **SSF** freezes the first half of the N blocks once; **PSF(K)** slides a frozen
# window of K blocks down the network, one fine-tuning iteration per window (Algorithm 2). Frozen leaves
# get no update and no optimizer state, and XLA computes no gradient for them. *Traditional* training
# trains the same total number of epochs with nothing frozen.
#
# This notebook runs the grid of `configs/coarse_to_fine.py:smoke` (digits, a 4-block chain CNN,
# 2 coarse + 1 fine epochs) through the library, shows which parameter leaves each phase froze and the test
# accuracy after every phase, and checks on the checkpoints that frozen weights did not move.
# The book-sized grids are the launcher with another preset, e.g. Fashion-MNIST (1-2 hours on 2 cores):
# `python -m experiments.coarse_to_fine --config=configs/coarse_to_fine.py:cpu --workdir=/tmp/c2f_cpu`.

# %% tags=["colab-setup"]
# Colab only (CI skips this cell): install dlbook and the JAX build for the runtime's accelerator.
DLBOOK_REPO = "https://github.com/YOUR_ORG/dlbook.git"
# !git clone --depth 1 {DLBOOK_REPO} /content/dlbook
# %cd /content/dlbook
# !pip install -q -e .
# !pip install -q -U "jax[cuda12]"  # GPU runtime; on a TPU runtime: pip install -q -U "jax[tpu]"

# %%
import json
import math
import os
import tempfile

import jax
import matplotlib.pyplot as plt
import numpy as np

print("backend:", jax.default_backend(), "devices:", jax.devices())
# CI runs this notebook with DLBOOK_NOTEBOOK_CI=1 on two CPU cores: one data fraction instead of two.
CI = os.environ.get("DLBOOK_NOTEBOOK_CI") == "1"

# %% [markdown]
# ## The blocks and the phase plans
# A block is a set of parameter subtrees (for the chain CNN: one conv layer with its BatchNorm, or one dense
# layer; the classifier joins the last). `phase_plan` gives, per mode, the coarse phase and the fine
# iterations with their frozen blocks; `trainable_mask` turns a phase into a boolean mask over the leaves.

# %%
from configs import coarse_to_fine as c2f_configs
from dlbook import coarse_to_fine, data, models
from dlbook.training import freezing
from dlbook.training.state import init_variables

config = c2f_configs.get_config("smoke")
if CI:
  config.train_fractions = (1.0,)
dataset = data.load(config.data, seed=0)
model = models.build(config.model_name, num_classes=dataset.num_classes, **config.model.to_dict())
shapes = jax.eval_shape(lambda: init_variables(model, jax.random.key(0), (1,) + dataset.image_shape))["params"]
blocks = freezing.model_blocks(config.model_name, shapes)
print("blocks:", [b.name for b in blocks])

def frozen_leaves(frozen):
  """The parameter leaves (paths) a phase with blocks `frozen` fixed leaves untouched."""
  mask = freezing.trainable_mask(shapes, freezing.frozen_prefixes(blocks, frozen))
  return ["/".join(k.key for k in path) for path, trainable in jax.tree_util.tree_leaves_with_path(mask)
          if not trainable]

for mode in config.modes:
  for ff in (config.freeze_fractions if mode == "psf" else (0.0,)):
    plan = freezing.phase_plan(mode, len(blocks), coarse_steps=1, fine_steps=3, freeze_fraction=ff)
    print(coarse_to_fine.grid.method_name(mode, ff))
    for phase in plan:
      print(f"  {phase.name:7s} frozen blocks {list(phase.frozen) or '-'}: {frozen_leaves(phase.frozen) or '-'}")

# %% [markdown]
# ## Train the grid
# `run_grid` is what `experiments/coarse_to_fine.py` calls. For each (data fraction, seed) the coarse
# phase is trained once and every mode fine-tunes from its checkpoint; each run writes a results.json, and
# the grid writes `table.md` (the layout of book Tables 4.1-4.6). Rerunning resumes.

# %%
workdir = os.path.join(tempfile.mkdtemp(prefix="dlbook_c2f_"), "grid")
grid = coarse_to_fine.run_grid(config, workdir)
print(grid["metrics"])
with open(os.path.join(workdir, "table.md")) as f:
  print(f.read())

# %% [markdown]
# ## Accuracy per phase
# Each fine-tuning run's results.json lists its phases: the frozen blocks and the test accuracy after it.

# %%
runs = []
for run in coarse_to_fine.grid_runs(config):
  with open(os.path.join(run.directory(workdir), "results.json")) as f:
    runs.append((run, json.load(f)))
fig, ax = plt.subplots(figsize=(6, 4))
for run, res in runs:
  print(f"{run.label} (data {run.train_fraction:g}): coarse {res['metrics']['coarse_test_accuracy']:.3f}", end="")
  for it in res["iterations"]:
    print(f" | {it['name']} frozen {it['frozen_blocks'] or '-'} -> {it['test_accuracy']:.3f}", end="")
  print(f" | P1 {res['P1']:,} trainable, P2 {res['P2']}")
  accs = [res["metrics"]["coarse_test_accuracy"]] + [it["test_accuracy"] for it in res["iterations"]]
  ax.plot(range(len(accs)), accs, "o-", label=f"{run.label}, data {run.train_fraction:g}")
ax.set_xlabel("phase (0 = coarse, then the fine iterations)")
ax.set_ylabel("test accuracy")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# ## Check: frozen weights did not move
# The SSF run's last checkpoint and the shared coarse checkpoint hold the same values on every frozen leaf
# (BatchNorm statistics included: frozen BatchNorm layers run in inference mode), and different values on
# the trainable ones.

# %%
from dlbook.training import checkpoint

ssf = next(run for run, _ in runs if run.mode == "ssf")
def final_tree(unit_dir):
  ckpt = checkpoint.Checkpointer(os.path.join(unit_dir, "checkpoints"))
  tree = ckpt.restore(None)["state"]
  ckpt.close()
  return tree

coarse = final_tree(os.path.join(os.path.dirname(ssf.directory(workdir)), "coarse"))
fine = final_tree(ssf.directory(workdir))
frozen = set(frozen_leaves(freezing.ssf_frozen_blocks(len(blocks))))
changed = {}
for collection in ("params", "batch_stats"):
  for path, before in jax.tree_util.tree_leaves_with_path(coarse[collection]):
    name = "/".join(k.key for k in path)
    after = fine[collection]
    for k in path:
      after = after[k.key]
    changed[collection + ":" + name] = not np.array_equal(np.asarray(before), np.asarray(after))
print({k: ("changed" if v else "unchanged") for k, v in changed.items()})
assert frozen and all(not changed["params:" + p] for p in frozen), "a frozen parameter moved"
assert all(changed["params:" + p] for p in frozen_leaves(()) if p not in frozen), "a trainable parameter did not move"
assert all(not v for k, v in changed.items() if k.startswith("batch_stats:") and
           any(k[len("batch_stats:"):].split("/")[0] == p.split("/")[0] for p in frozen))
assert all(math.isfinite(it["test_accuracy"]) for _, res in runs for it in res["iterations"])
