"""Supervised classification on any registered dataset and model.

  python -m experiments.train --config=configs/classify.py[:smoke|cpu|fashion_mnist|full] --workdir=DIR \
      [--config.key=value ...]

Rerunning with the same --workdir resumes from the latest checkpoint.
"""

from absl import flags
from ml_collections import config_flags

from dlbook import launch
from dlbook.training import loop

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file, optionally with a :preset.")
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.json.")


def main(argv):
  del argv
  config = launch.require_flag(FLAGS.config, "config")
  workdir = launch.workdir_path(launch.require_flag(FLAGS.workdir, "workdir"))
  results = loop.train_and_evaluate(config, workdir)
  print(f"test_accuracy={results['metrics']['test_accuracy']:.4f} results={workdir}/results.json")


def cli():
  launch.run(main)


if __name__ == "__main__":
  cli()
