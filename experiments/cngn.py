"""Artificial astrocytes (CNGN, thesis seed 001 ch. 4): Str x Weak grid, greedy moving grid, noise floor.

  python -m experiments.cngn --config=configs/cngn.py[:smoke|cpu|full] --workdir=DIR [--config.key=value ...] \
      [--docs_dir=docs]

Trains the plain CNN for every noise seed, every Str x Weak cell for every seed and the moving grid
(`dlbook.astro`), then writes table.md, grid_delta.png, moving.png and results.json into --workdir (and
with --docs_dir also docs/astrocytes_table.md and docs/figures/astrocytes_*.png). Rerunning resumes:
finished units are skipped, an interrupted one continues from its latest checkpoint.
"""

from absl import flags
from ml_collections import config_flags

from dlbook import launch

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file, optionally with a :preset.")
flags.DEFINE_string("workdir", None, "Directory for every unit's checkpoints, logs and results.json.")
flags.DEFINE_string("docs_dir", None, "Also write astrocytes_table.md and figures/astrocytes_*.png here.")


def main(argv):
  del argv
  from dlbook import astro
  config = launch.require_flag(FLAGS.config, "config")
  workdir = launch.workdir_path(launch.require_flag(FLAGS.workdir, "workdir"))
  payload = astro.run_experiment(config, workdir, FLAGS.docs_dir)
  m = payload["metrics"]
  print(f"units={m['units_finished']}/{m['units_expected']} cnn_test_accuracy={m['cnn_test_accuracy_mean']:.4f} "
        f"table={workdir}/table.md results={workdir}/results.json")


def cli():
  launch.run(main)


if __name__ == "__main__":
  cli()
