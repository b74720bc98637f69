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
import os
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
# Running again with the same working directory restores the latest checkpoint instead of starting over.

# %%
resumed = loop.train_and_evaluate(config, workdir)
print(resumed["metrics"])

# %% [markdown]
# ## Read the results
# `results.json` holds the test metrics, the parameter count and the config that made them.

# %%
with open(os.path.join(workdir, "results.json")) as f:
  saved = json.load(f)
print(sorted(saved))
print("test accuracy:", saved["metrics"]["test_accuracy"])
