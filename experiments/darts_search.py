"""DARTS architecture search (book ch. 3).

  python -m experiments.darts_search --config=configs/darts_search.py[:smoke|cpu|full] --workdir=DIR \
      [--config.key=value ...]

Writes DIR/genotype.json (train it with experiments.darts_train --config.genotype=DIR/genotype.json),
the cell pictures DIR/normal.png and DIR/reduce.png, and DIR/results.json. Rerunning the same command
resumes from the latest checkpoint.
"""

from absl import flags
from ml_collections import config_flags

from dlbook import launch
from dlbook.nas.darts import runtime

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file, optionally with a :preset.")
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs, genotype.json and results.json.")


def main(argv):
  del argv
  runtime.configure_cpu()
  from dlbook.nas.darts import search  # imports JAX after the CPU settings
  config = launch.require_flag(FLAGS.config, "config")
  workdir = launch.workdir_path(launch.require_flag(FLAGS.workdir, "workdir"))
  results = search.search(config, workdir)
  print(f"genotype={results['genotype']} supernet_val_accuracy={results['metrics']['supernet_val_accuracy']:.4f} "
        f"results={workdir}/results.json")


def cli():
  launch.run(main)


if __name__ == "__main__":
  cli()
