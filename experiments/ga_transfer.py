"""GA transfer learning with DenseNet-121-SE (seed 004) against random search at the same budget.

  python -m experiments.ga_transfer --config=configs/ga_transfer.py[:smoke|cpu|full] --workdir=DIR [--docs_dir=docs]
      [--report_only]

Rerunning with the same --workdir resumes, inside a generation's training too. Writes, per seed,
ga/generations.json (raw and decoded genes, fitness, validation and test scores of every individual),
random_search/draws.json, fitness.png, genes.png, TensorBoard events and results.json, then table.md and
results.json over the seeds (the table also to DOCS_DIR/ga_transfer_<preset>_table.md with --docs_dir). --report_only trains nothing and
writes the table of the seeds finished so far (labelled partial).
"""

from absl import flags
from ml_collections import config_flags

from dlbook import launch
from dlbook.hpsearch import ga_transfer_search

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file, optionally with a :preset.")
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.json.")
flags.DEFINE_string("docs_dir", None, "Also write the table into this directory.")
flags.DEFINE_bool("report_only", False, "Train nothing: the table of the seeds finished so far.")


def main(argv):
  del argv
  config = launch.require_flag(FLAGS.config, "config")
  workdir = launch.workdir_path(launch.require_flag(FLAGS.workdir, "workdir"))
  m = ga_transfer_search.run(config, workdir, FLAGS.docs_dir, FLAGS.report_only)["metrics"]
  line = " ".join(f"{arm}_best_fitness={m[f'{arm}_best_fitness_mean']:.4f}" for arm in ("ga", "random_search")
                  if m.get(f"{arm}_best_fitness_mean") is not None)
  print(f"{line} results={workdir}/results.json")


def cli():
  launch.run(main)


if __name__ == "__main__":
  cli()
