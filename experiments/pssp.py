"""Protein secondary structure prediction (book ch. 11): the models of Tables 11.1-11.3 x seeds.

  python -m experiments.pssp --config=configs/pssp.py[:smoke|cpu|full] --workdir=DIR \
      [--config.key=value ...] [--docs_dir=docs] [--report_only]

Trains every (model, seed) of the config (`dlbook.medical.pssp_experiment`) with early stopping on a
validation split of the training chains, then writes `table.md` (book Tables 11.1-11.3 with the book's
claims beside ours, mean ± sample std over seeds), the pictures and results.json into --workdir, and
with --docs_dir also docs/pssp_results.md and docs/figures/pssp_*.png. --report_only regenerates them
from the runs that exist. Rerunning resumes: finished runs are skipped, an interrupted one continues
from its latest checkpoint.
"""

from absl import flags
from ml_collections import config_flags

from dlbook import launch

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file, optionally with a :preset.")
flags.DEFINE_string("workdir", None, "Directory for the grid's checkpoints, logs and results.json.")
flags.DEFINE_bool("report_only", False, "Only regenerate table.md and the pictures from existing runs.")
flags.DEFINE_string("docs_dir", None, "Also write pssp_results.md and figures/pssp_*.png here.")


def main(argv):
  del argv
  from dlbook.medical import pssp_experiment
  config = launch.require_flag(FLAGS.config, "config")
  workdir = launch.workdir_path(launch.require_flag(FLAGS.workdir, "workdir"))
  if FLAGS.report_only:
    payload = pssp_experiment.report_only(config, workdir, FLAGS.docs_dir)
  else:
    payload = pssp_experiment.run_grid(config, workdir, FLAGS.docs_dir)
  m = payload["metrics"]
  print(f"runs={m['units_finished']}/{m['units_expected']} table={workdir}/table.md results={workdir}/results.json")


def cli():
  launch.run(main)


if __name__ == "__main__":
  cli()
