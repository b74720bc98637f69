"""GAN steganography experiments (book ch. 6-8): two-stage, multi-message, GSIVAT and LSB.

  python -m experiments.stego --config=configs/stego_two_stage.py[:smoke|cpu|full] --workdir=DIR [--config.key=value]
  python -m experiments.stego --config=configs/stego_multi.py[:PRESET] --workdir=DIR [--config.embedding=mid]

Each run writes results.json, TensorBoard events, curves.png, examples.png (cover / stego /
|difference|×10) and checkpoints into --workdir; rerunning the same command resumes.

  python -m experiments.stego --tables_from=RUNS_DIR [--docs=docs]

regenerates docs/stego_table_7_1.md, docs/stego_tables_8.md and docs/figures/stego_*.png from the
results.json files under RUNS_DIR (mean ± sample std over the seeds of each cell).
"""

from absl import flags
from ml_collections import config_flags

from dlbook import launch

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file, optionally with a :preset.")
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.json.")
flags.DEFINE_string("tables_from", None, "Regenerate the docs tables from the results.json files under this directory.")
flags.DEFINE_string("docs", "docs", "Where the tables and figures go (with --tables_from).")


def main(argv):
  del argv
  if FLAGS.tables_from:
    from dlbook.stego import report
    for path in report.write_tables(launch.workdir_path(FLAGS.tables_from), FLAGS.docs):
      print(f"wrote {path}")
    return
  from dlbook.stego import training
  config = launch.require_flag(FLAGS.config, "config")
  workdir = launch.workdir_path(launch.require_flag(FLAGS.workdir, "workdir"))
  results = training.train_and_evaluate(config, workdir)
  m = results["metrics"]
  print(f"psnr={m['psnr']:.2f} ssim={m['ssim']:.4f} extraction_accuracy={m['extraction_accuracy']:.2f} "
        f"steganalyzer_error={m.get('steganalyzer_error')} xunet_error={m.get('xunet_error')} "
        f"results={workdir}/results.json")


def cli():
  launch.run(main)


if __name__ == "__main__":
  cli()
