"""Brain tumour MRI (book ch. 13): MobileNetV3-Large transfer learning with median -> Wiener denoising,
patient-grouped folds, per-class report, ROC-AUC, Grad-CAM (and its overlap with tumorMask), and the
model's size, multiplications and CPU latency (docs/brain_tumour.md).

  python -m experiments.brain_tumour --config=configs/brain_tumour.py[:smoke|cpu|full] --workdir=DIR \
      [--config.data.data_dir=/path/to/figshare] [--config.weights=FILE] [--docs_dir=docs]

With --docs_dir also docs/brain_tumour_table.md and docs/figures/brain_tumour_<preset>_*.png. Rerunning
with the same --workdir resumes: finished folds are kept, an interrupted one continues from its latest
checkpoint.
"""

from absl import flags
from ml_collections import config_flags

from dlbook import launch
from dlbook.medical import brain_tumour

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file, optionally with a :preset.")
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs, results.json and table.md.")
flags.DEFINE_string("docs_dir", None, "Also write brain_tumour_table.md and figures/brain_tumour_*.png here.")


def main(argv):
  del argv
  config = launch.require_flag(FLAGS.config, "config")
  workdir = launch.workdir_path(launch.require_flag(FLAGS.workdir, "workdir"))
  results = brain_tumour.train_and_evaluate(config, workdir, FLAGS.docs_dir)
  print(results["table"])
  print(f"results={workdir}/results.json")


def cli():
  launch.run(main)


if __name__ == "__main__":
  cli()
