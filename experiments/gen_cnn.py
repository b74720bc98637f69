"""Gen-CNN (thesis seed 001 ch. 3): GA over architecture, loss, optimizer, weight decay and learning
rate, against random search at the same budget.

  python -m experiments.gen_cnn --config=configs/gen_cnn.py[:smoke|cpu|full] --workdir=DIR

Rerunning with the same --workdir resumes. Writes generations.json (raw and decoded genes, MCC and
fitness of every individual), random_search.json, final.json, fitness.png, genes.png, TensorBoard
events and results.json into --workdir.
"""

from absl import flags
from ml_collections import config_flags

from dlbook import launch
from dlbook.hpsearch import search

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file, optionally with a :preset.")
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.json.")


def main(argv):
  del argv
  config = launch.require_flag(FLAGS.config, "config")
  workdir = launch.workdir_path(launch.require_flag(FLAGS.workdir, "workdir"))
  m = search.search(config, workdir)["metrics"]
  line = f"gen_cnn_best_val_mcc={m['gen_cnn_best_validation_mcc']:.4f} generations={m['generations']}"
  for name in ("gen_cnn", "random_search"):
    if f"{name}_test_mcc" in m:
      line += f" {name}_test_mcc={m[f'{name}_test_mcc']:.4f}"
  print(f"{line} results={workdir}/results.json")


def cli():
  launch.run(main)


if __name__ == "__main__":
  cli()
