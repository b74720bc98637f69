"""Transfer learning: an ImageNet backbone (weights from a local file) fine-tuned with a new head on a
dataset by name, against the same network from scratch, over seeds (docs/transfer.md).

  python -m experiments.transfer --config=configs/transfer.py[:smoke|cpu|full] --workdir=DIR \
      [--config.weights=PATH|imagenet] [--config.model_name=NAME] [--config.freeze_blocks=N] ...

Rerunning with the same --workdir resumes: finished units are kept, an interrupted one continues
from its latest checkpoint.
"""

from absl import flags
from ml_collections import config_flags

from dlbook import launch
from dlbook.transfer import experiment

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file, optionally with a :preset.")
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs, results.json and table.md.")


def main(argv):
  del argv
  config = launch.require_flag(FLAGS.config, "config")
  workdir = launch.workdir_path(launch.require_flag(FLAGS.workdir, "workdir"))
  results = experiment.train_and_evaluate(config, workdir)
  print(results["table"])
  print(f"results={workdir}/results.json")


def cli():
  launch.run(main)


if __name__ == "__main__":
  cli()
