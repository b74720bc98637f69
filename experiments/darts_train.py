"""Train a DARTS cell (a published genotype or a searched genotype.json) in the evaluation network.

  python -m experiments.darts_train --config=configs/darts_train.py[:smoke|cpu|full] --workdir=DIR \
      [--config.genotype=DARTS_V1|DARTS_V2|path/to/genotype.json] [--config.key=value ...]

Rerunning the same command resumes from the latest checkpoint; a different genotype in the same
--workdir is refused.
"""

import os

from absl import flags
from ml_collections import config_flags

from dlbook import launch
from dlbook.nas.darts import runtime

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file, optionally with a :preset.")
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.json.")


def main(argv):
  del argv
  runtime.configure_cpu()
  from dlbook.models.darts.genotypes import genotype_to_dict, resolve_genotype, save_genotype
  from dlbook.nas.darts import visualize
  from dlbook.training import loop
  config = launch.require_flag(FLAGS.config, "config")
  workdir = launch.workdir_path(launch.require_flag(FLAGS.workdir, "workdir"))
  genotype = resolve_genotype(config.genotype)
  # The resolved cell goes into the config, so results.json records it and a rerun with a changed
  # genotype.json is refused by the workdir guard instead of resuming a different network.
  with config.unlocked():  # absl locks the config; the resolved cell is a new key
    config.model.genotype = genotype_to_dict(genotype)
  results = loop.train_and_evaluate(config, workdir)
  save_genotype(os.path.join(workdir, "genotype.json"), genotype)
  visualize.plot_genotype(genotype, os.path.join(workdir, "normal.png"), os.path.join(workdir, "reduce.png"),
                          str(config.genotype) if len(str(config.genotype)) < 40 else "")
  print(f"test_accuracy={results['metrics']['test_accuracy']:.4f} num_params={results['num_params']} "
        f"results={workdir}/results.json")


def cli():
  launch.run(main)


if __name__ == "__main__":
  cli()
