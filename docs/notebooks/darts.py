# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3
#     name: python3
# ---

# %% [markdown]
# # DARTS on an accelerator: kernel choices, a search, the cells, training the genotype
#
# dlbook's DARTS networks pick their kernels per backend (`conv_impl`, `pool_impl`, `edges` = "auto"):
# on the CPU the formulations measured fastest there, on GPUs/TPUs the native XLA kernels. This notebook
# shows the choice, runs the `smoke` search (a 3-cell supernet on digits) and trains the found genotype.

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

from dlbook.models.darts import operations as ops
from dlbook.models.darts.search_network import resolve_edges

print("backend:", jax.default_backend())
print("auto picks: conv_impl =", ops.resolve("conv_impl", "auto"), "| pool_impl =", ops.resolve("pool_impl", "auto"),
      "| edges =", resolve_edges("auto"))
# CI runs this notebook with DLBOOK_NOTEBOOK_CI=1 on two CPU cores, where compiling the smoke supernet takes
# minutes: there the cells have one intermediate node and 2 channels, and each stage trains one step.
CI = os.environ.get("DLBOOK_NOTEBOOK_CI") == "1"

# %% [markdown]
# ## Search (first order, smoke size)
# The config's `model.conv_impl` is set to "auto" so that the accelerator's kernels are used.

# %%
from configs import darts_search
from dlbook.nas.darts import search

config = darts_search.get_config("smoke")
config.model.conv_impl = "auto"
if CI:
  config.model.update(steps=1, multiplier=1, init_channels=2)
  config.update(num_train_steps=1, batch_size=8)
workdir = tempfile.mkdtemp(prefix="dlbook_darts_")
found = search.search(config, os.path.join(workdir, "search"))
print("genotype:", found["genotype"])

# %% [markdown]
# ## The cells
# The search wrote the normal and reduction cells as pictures next to `genotype.json`.

# %%
print(sorted(os.listdir(os.path.join(workdir, "search"))))

# %% [markdown]
# ## Train the genotype

# %%
from configs import darts_train
from dlbook.models.darts.genotypes import genotype_to_dict, resolve_genotype
from dlbook.training import loop

train_config = darts_train.get_config("smoke")
train_config.genotype = os.path.join(workdir, "search", "genotype.json")
train_config.model.conv_impl = "auto"
if CI:
  train_config.model.update(init_channels=2, auxiliary=False)
  train_config.update(num_train_steps=1, batch_size=8)
with train_config.unlocked():  # as experiments/darts_train.py: the resolved cell goes into the config
  train_config.model.genotype = genotype_to_dict(resolve_genotype(train_config.genotype))
trained = loop.train_and_evaluate(train_config, os.path.join(workdir, "train"))
print(trained["metrics"])

# %% [markdown]
# ## Check the run
# The saved genotype is the one the search returned, every node of each cell keeps two inputs, and the trained
# network's results.json holds finite test metrics.

# %%
with open(os.path.join(workdir, "search", "genotype.json")) as f:
  saved = json.load(f)
assert saved == json.loads(json.dumps(found["genotype"])), (saved, found["genotype"])
assert len(saved["normal"]) == len(saved["reduce"]) == 2 * config.model.steps
with open(os.path.join(workdir, "train", "results.json")) as f:
  metrics = json.load(f)["metrics"]
assert all(math.isfinite(metrics[k]) for k in ("test_accuracy", "test_loss")), metrics
