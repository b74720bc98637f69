"""Leukaemia ALL vs HEM (seed 003): MobileNetV2 with ImageNet weights and baselines, subject-disjoint
folds (independent by default, the thesis's sequential folds as an option), fold ensemble on the
preliminary test set (docs/leukaemia.md).

  python -m experiments.leukaemia --config=configs/leukaemia.py[:smoke|cpu|full] --workdir=DIR \
      [--config.data.name=cnmc:/path/to/C-NMC_Leukemia] [--config.modes="('independent','sequential')"]

Rerunning with the same --workdir resumes: finished units are kept, an interrupted one continues
from its latest checkpoint.
"""

from absl import flags
from ml_collections import config_flags

from dlbook import launch
from dlbook.medical import leukaemia

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file, optionally with a :preset.")
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs, results.json and table.md.")


def main(argv):
  del argv
  config = launch.require_flag(FLAGS.config, "config")
  workdir = launch.workdir_path(launch.require_flag(FLAGS.workdir, "workdir"))
  results = leukaemia.train_and_evaluate(config, workdir)
  print(results["table"])
  print(f"results={workdir}/results.json")


def cli():
  launch.run(main)


if __name__ == "__main__":
  cli()
