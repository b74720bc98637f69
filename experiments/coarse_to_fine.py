"""Coarse-to-fine training with SSF / PSF selective freezing (book ch. 4).

  python -m experiments.coarse_to_fine --config=configs/coarse_to_fine.py[:smoke|cpu|full] --workdir=DIR \
      [--config.key=value ...] [--report_only] [--docs_dir=docs]

Trains the grid modes x train_fractions x seeds of the config (`dlbook.coarse_to_fine`), then writes
`table.md` (book Tables 4.1-4.6, mean ± sample std over seeds), `psf_accuracy.png` and results.json
into --workdir, and with --docs_dir also docs/coarse_to_fine_table.md and docs/figures/psf_accuracy.png.
--report_only regenerates them from the runs that exist. Rerunning resumes: finished runs are skipped,
an interrupted one continues from its latest checkpoint.
"""

from absl import flags
from ml_collections import config_flags

from dlbook import launch

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file, optionally with a :preset.")
flags.DEFINE_string("workdir", None, "Directory for the grid's checkpoints, logs and results.json.")
flags.DEFINE_bool("report_only", False, "Only regenerate table.md and psf_accuracy.png from existing runs.")
flags.DEFINE_string("docs_dir", None, "Also write coarse_to_fine_table.md and figures/psf_accuracy.png here.")


def main(argv):
  del argv
  from dlbook import coarse_to_fine
  config = launch.require_flag(FLAGS.config, "config")
  workdir = launch.workdir_path(launch.require_flag(FLAGS.workdir, "workdir"))
  if FLAGS.report_only:
    coarse_to_fine.validate_config(config)
    payload = coarse_to_fine.write_report(config, workdir, FLAGS.docs_dir)
  else:
    payload = coarse_to_fine.run_grid(config, workdir, FLAGS.docs_dir)
  m = payload["metrics"]
  print(f"runs={m['runs_finished']}/{m['runs_expected']} table={workdir}/table.md results={workdir}/results.json")


def cli():
  launch.run(main)


if __name__ == "__main__":
  cli()
