"""GANs of book ch. 5: vanilla, DCGAN, WGAN, WGAN-GP and ACGAN (plus survey seed 002's
relativistic loss and ADA).

  python -m experiments.gan --config=configs/gan.py[:GAN][,PRESET] --workdir=DIR [--config.key=value ...]

Writes into DIR: samples.png (the final grid), samples/step_*.png (every
sample_every_steps), TensorBoard losses under tensorboard/, history.jsonl, curves.png,
orbax checkpoints and results.json. Rerunning the same command resumes after a kill.

  python -m experiments.gan --docs_from=RUN1,RUN2,... [--docs=docs/gan.md] [--figures=docs/figures]

regenerates the results table of docs/gan.md from those runs' results.json and copies
their final grids to docs/figures/gan_<gan>_<data>.png.
"""

from absl import flags
from ml_collections import config_flags

from dlbook import launch

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file, optionally with :GAN,PRESET.")
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs, samples and results.json.")
flags.DEFINE_list("docs_from", None, "Finished run directories whose results go into the docs table.")
flags.DEFINE_string("docs", "docs/gan.md", "Markdown file whose results table --docs_from rewrites.")
flags.DEFINE_string("figures", "docs/figures", "Where --docs_from copies the sample grids.")


def main(argv):
  del argv
  if FLAGS.docs_from:
    from dlbook.gan import report
    path = report.update_docs(FLAGS.docs_from, FLAGS.docs, FLAGS.figures)
    print(f"wrote {path}")
    return
  from dlbook.gan import train
  config = launch.require_flag(FLAGS.config, "config")
  workdir = launch.workdir_path(launch.require_flag(FLAGS.workdir, "workdir"))
  results = train.train_and_evaluate(config, workdir)
  m = results["metrics"]
  extra = "".join(f" {k}={m[k]:.4f}" for k in ("class_consistency", "classifier_score") if k in m)
  print(f"d_loss={m.get('final_d_loss', float('nan')):.4f} g_loss={m.get('final_g_loss', float('nan')):.4f}{extra} "
        f"samples={workdir}/samples.png results={workdir}/results.json")


def cli():
  launch.run(main)


if __name__ == "__main__":
  cli()
