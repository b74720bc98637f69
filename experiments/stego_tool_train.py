"""Trains and exports the hiding model of the `dlbook-stego` tool.

  python -m experiments.stego_tool_train --config=configs/stego_tool.py[:smoke|cpu|full] --workdir=DIR \
      [--config.key=value ...]

Writes DIR/results.json, TensorBoard events, curves.png, samples.png, checkpoints (a rerun
resumes) and the exported model DIR/model for `dlbook-stego --model DIR/model`.
"""

from absl import flags
from ml_collections import config_flags

from dlbook import launch
from dlbook.stego import hider_train

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file, optionally with a :preset.")
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs, results.json and the exported model.")


def main(argv):
  del argv
  config = launch.require_flag(FLAGS.config, "config")
  workdir = launch.workdir_path(launch.require_flag(FLAGS.workdir, "workdir"))
  m = hider_train.train_and_evaluate(config, workdir)["metrics"]
  print(f"psnr={m['psnr']:.2f} ssim={m['ssim']:.4f} bit_accuracy={m['bit_accuracy']:.5f} bpp={m['bpp']:g} "
        f"rs_parity={m['rs_parity']} model={workdir}/model")


if __name__ == "__main__":
  launch.run(main)
