# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3
#     name: python3
# ---

# %% [markdown]
# # dlbook quickstart: train from a config, resume, read the results
#
# Runs on Colab (GPU or TPU runtime) or locally from a dlbook checkout. The `smoke` preset trains a tiny
# CNN on scikit-learn's digits in seconds; switch to `cpu` or `full` for real runs.

# %% tags=["colab-setup"]
# Colab only (CI skips this cell): install dlbook and the JAX build for the runtime's accelerator.
# Set DLBOOK_REPO to the git address of your dlbook copy.
DLBOOK_REPO = "https://github.com/YOUR_ORG/dlbook.git"
# !git clone --depth 1 {DLBOOK_REPO} /content/dlbook
# %cd /content/dlbook
# !pip install -q -e .
# !pip install -q -U "jax[cuda12]"  # GPU runtime; on a TPU runtime: pip install -q -U "jax[tpu]"

# %%
import json
import math
import os
import shutil
import tempfile

import jax

print("backend:", jax.default_backend(), "devices:", jax.devices())

# %% [markdown]
# ## Train from a config
# `configs/classify.py` holds the presets; any key can be changed before training.

# %%
from configs import classify
from dlbook.training import loop

config = classify.get_config("smoke")
workdir = os.path.join(tempfile.mkdtemp(prefix="dlbook_quickstart_"), "run")
results = loop.train_and_evaluate(config, workdir)
print(results["metrics"])

# %% [markdown]
# ## Resume
# A run that stops early (killed, preempted) leaves its checkpoints. Running the same config on the same
# working directory restores the latest one and continues from there; a finished run is only read back.
# Here the interruption is simulated: the finished run loses its `results.json` and its newest checkpoint.

# %%
checkpoints = os.path.join(workdir, "checkpoints")
steps = sorted(int(d) for d in os.listdir(checkpoints) if d.isdigit())
print("checkpoints at steps", steps)
os.remove(os.path.join(workdir, "results.json"))
shutil.rmtree(os.path.join(checkpoints, str(steps[-1])))
resumed = loop.train_and_evaluate(config, workdir)
print("resumed from step", resumed["resumed_from_step"], "| test accuracy", resumed["metrics"]["test_accuracy"])

# %% [markdown]
# ## Read the results
# `results.json` holds the test metrics, the parameter count and the config that made them.

# %%
with open(os.path.join(workdir, "results.json")) as f:
  saved = json.load(f)
print(sorted(saved))
print("test accuracy:", saved["metrics"]["test_accuracy"])
# The resumed run continued from the checkpoint and ended where the uninterrupted one did.
assert saved["resumed_from_step"] == steps[-2], (saved["resumed_from_step"], steps)
assert all(math.isfinite(saved["metrics"][k]) for k in ("test_accuracy", "test_loss", "val_accuracy"))
assert math.isclose(saved["metrics"]["test_accuracy"], results["metrics"]["test_accuracy"], abs_tol=1e-6)
assert saved["metrics"]["test_accuracy"] > 0.3  # ten classes: chance is 0.1
