# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3
#     name: python3
# ---

# %% [markdown]
# # Evolutionary NAS: a GA population trained in one vmap, and its fitness curve
#
# The genetic algorithm of book ch. 2 (Figs. 2.1/2.2) searches the chain-structured space of Table 2.1
# (conv layers, filters, kernels, dense layers, units, activation). Every genome is a path through one
# fixed-shape supernet, so a whole generation trains and is evaluated as **one** `jax.vmap`-ed program:
# one compilation, however many individuals. This notebook runs the `smoke` preset of
# `configs/evolve_chain.py` (digits, population 4, 2 generations, 4 training steps per individual) from
# the library, then reads the run's `generations.json` and plots the fitness curve.
#
# The real search is the launcher with a larger preset (Fashion-MNIST `cpu`, about 2 minutes on 2 cores;
# CIFAR-10 `full` for accelerators):
# `python -m experiments.evolve --config=configs/evolve_chain.py:cpu --workdir=/tmp/evolve_cpu`.

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

print("backend:", jax.default_backend(), "devices:", jax.devices())
# CI runs this notebook with DLBOOK_NOTEBOOK_CI=1 on two CPU cores: one conv layer at most and 2 training
# steps per individual instead of 4, so the population's program compiles faster.
CI = os.environ.get("DLBOOK_NOTEBOOK_CI") == "1"

# %% [markdown]
# ## The search space and a population
# The GA engine (`dlbook.evolution`) knows nothing about networks: a population is one batched pytree
# `{gene: [P, ...]}`. The search space encodes and decodes genomes.

# %%
from configs import evolve_chain
from dlbook import evolution
from dlbook.nas import evolutionary_nas

config = evolve_chain.get_config("smoke")
if CI:
  config.space.max_conv = 1
  config.fitness.train_steps = 2
space = evolutionary_nas.make_space(config.space)
ga, ga_params = evolutionary_nas.make_ga(space.spec, config.ga)
population = ga.init(jax.random.key(config.seed), ga_params).population
print("genes:", space.spec.num_genes, "| population:", evolution.population_size(population))
for i in range(evolution.population_size(population)):
  print(i, space.decode(evolution.take(population, i)))

# %% [markdown]
# ## Run the search
# `evolutionary_nas.search` is what `experiments/evolve.py` calls: each generation's offspring train and
# are evaluated in one vmap over the supernet (sharded over the local devices), fitness is the validation
# accuracy, and the best genome and the book's baseline are retrained on the test split at the end.
# Rerunning with the same working directory resumes after the last finished generation.

# %%
workdir = os.path.join(tempfile.mkdtemp(prefix="dlbook_evolve_"), "run")
results = evolutionary_nas.search(config, workdir)
m = results["metrics"]
print("best fitness:", m["best_fitness"], "| generations:", m["generations"], "| stop:", m["stop_reason"])
print("fitness function compiled", m["fitness_function_compilations"], "time(s) for the whole search")
print("best architecture:", results["best_architecture"])

# %% [markdown]
# ## The fitness curve
# `generations.json` holds one record per generation: every individual's fitness, the population mean and
# the best so far. (The run also drew this as `fitness.png`.)

# %%
with open(os.path.join(workdir, "generations.json")) as f:
  rows = json.load(f)
gens = [r["generation"] for r in rows]
fig, ax = plt.subplots(figsize=(6, 4))
for r in rows:
  fit = [x for x in r["population_fitness"] if x is not None]
  ax.scatter([r["generation"]] * len(fit), fit, s=12, color="0.6")
ax.plot(gens, [r["population_mean"] for r in rows], "o--", label="population mean")
ax.plot(gens, [r["best_fitness"] for r in rows], "o-", color="tab:red", label="best so far")
ax.set_xlabel("generation")
ax.set_ylabel("fitness (validation accuracy)")
ax.set_xticks(gens)
ax.legend(loc="lower right")
plt.show()

# %% [markdown]
# ## Check the run
# The best-so-far fitness never decreases, the whole search compiled its fitness function once, and
# `results.json` holds finite test accuracies for the best genome and the baseline.

# %%
best = [r["best_fitness"] for r in rows]
assert len(rows) == m["generations"] + 1 and all(b <= c for b, c in zip(best, best[1:])), best
assert math.isclose(best[-1], m["best_fitness"], rel_tol=1e-6) and 0.0 <= best[-1] <= 1.0
assert m["fitness_function_compilations"] == 1, m["fitness_function_compilations"]
with open(os.path.join(workdir, "results.json")) as f:
  saved = json.load(f)
assert all(math.isfinite(saved["metrics"][k]) for k in ("best_test_accuracy_mean", "baseline_test_accuracy_mean"))
print("best genome test accuracy:", saved["metrics"]["best_test_accuracy_mean"],
      "| baseline:", saved["metrics"]["baseline_test_accuracy_mean"])
