"""Evolutionary neural architecture search (book ch. 2): chain-structured or cell-based space.

  python -m experiments.evolve --config=configs/evolve_chain.py[:smoke|cpu|full] --workdir=DIR
  python -m experiments.evolve --config=configs/evolve_cell.py[:smoke|cpu|full] --workdir=DIR

Every generation's population trains and evaluates as one jax.vmap over a fixed-shape supernet,
sharded over the devices (on a CPU, config.cpu_devices splits the host into that many, one per core).
Rerunning with the same --workdir resumes after the last finished generation. Writes
generations.json (best fitness per generation), fitness.png, best_architecture.{json,png},
TensorBoard events and results.json into --workdir.
"""

from absl import flags
from ml_collections import config_flags

from dlbook import launch, runtime
from dlbook.nas import evolutionary_nas

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file, optionally with a :preset.")
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.json.")


def main(argv):
  del argv
  config = launch.require_flag(FLAGS.config, "config")
  workdir = launch.workdir_path(launch.require_flag(FLAGS.workdir, "workdir"))
  runtime.split_cpu(int(config.get("cpu_devices", 0)))  # before the first JAX operation
  results = evolutionary_nas.search(config, workdir)
  m = results["metrics"]
  line = (f"best_fitness={m['best_fitness']:.4f} initial_mean={m['initial_population_mean_fitness']:.4f} "
          f"generations={m['generations']}")
  if "best_test_accuracy_mean" in m:
    line += (f" best_test={m['best_test_accuracy_mean']:.4f}±{m['best_test_accuracy_std']:.4f}"
             f" baseline_test={m['baseline_test_accuracy_mean']:.4f}±{m['baseline_test_accuracy_std']:.4f}")
  print(f"{line} results={workdir}/results.json")


def cli():
  launch.run(main)


if __name__ == "__main__":
  cli()
