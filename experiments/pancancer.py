"""Pan-cancer classification from gene expression with an ensemble of CNNs (book ch. 12).

  python -m experiments.pancancer --config=configs/pancancer.py[:smoke|cpu|full] --workdir=DIR \
      [--config.key=value ...] [--docs_dir=docs] [--report_only]

Trains every (split, base model) and (split, baseline) unit of the config (`dlbook.medical.pancancer`),
then writes `table.md` (every base model, aggregator and baseline, mean ± sample std over the test
folds; per-class table and confusion matrix; book Table 12.1 beside them), `confusion.png` and
results.json into --workdir, and with --docs_dir also docs/pancancer_results.md and its figure.
Rerunning resumes: finished units are skipped, an interrupted one continues from its checkpoint.
"""

from absl import flags
from ml_collections import config_flags

from dlbook import launch

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file, optionally with a :preset.")
flags.DEFINE_string("workdir", None, "Directory for the units' checkpoints, logs and results.json.")
flags.DEFINE_string("docs_dir", None, "Also write <docs_name>.md and figures/<docs_name>_confusion.png here.")
flags.DEFINE_bool("report_only", False, "Only regenerate the report from the finished units.")


def main(argv):
  del argv
  from dlbook.medical import pancancer
  config = launch.require_flag(FLAGS.config, "config")
  workdir = launch.workdir_path(launch.require_flag(FLAGS.workdir, "workdir"))
  payload = (pancancer.report_only if FLAGS.report_only else pancancer.run)(config, workdir, FLAGS.docs_dir)
  m = payload["metrics"]
  print(f"units={m['units_finished']}/{m['units_expected']} table={workdir}/table.md "
        f"results={workdir}/results.json")


def cli():
  launch.run(main)


if __name__ == "__main__":
  cli()
