"""Gen-Soup (thesis seed 001 ch. 5): a GA over architecture, loss, optimizer, weight decay, learning rate
and the astrocytes' Str and Weak whose population trains one epoch per generation and inherits
(fitness-weighted averages of) its parents' weights; against a uniform soup, Gen-CNN and random search
at the same epoch budget.

  python -m experiments.gen_soup --config=configs/gen_soup.py[:smoke|cpu|full] --workdir=DIR [--docs_dir=docs]

Rerunning with the same --workdir resumes. Writes per seed (seedS/) generations.json (raw and decoded
genes, MCC, fitness, parents of every individual), checkpoints, final.json, fitness.png, genes.png,
TensorBoard events, gen_cnn/ (the Gen-CNN and random-search baseline) and results.json; then table.md
and results.json over seeds into --workdir (and with --docs_dir, gen_soup_PRESET_table.md and seed 0's
pictures).
"""

from absl import flags
from ml_collections import config_flags

from dlbook import launch

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file, optionally with a :preset.")
flags.DEFINE_string("workdir", None, "Directory for the seeds' checkpoints, logs and results.json.")
flags.DEFINE_string("docs_dir", None, "Also write gen_soup_PRESET_table.md and figures/ here.")


def main(argv):
  del argv
  from dlbook.hpsearch import gen_soup_search
  config = launch.require_flag(FLAGS.config, "config")
  workdir = launch.workdir_path(launch.require_flag(FLAGS.workdir, "workdir"))
  m = gen_soup_search.run(config, workdir, FLAGS.docs_dir)["metrics"]
  line = " ".join(f"{k}={v:.4f}" for k, v in m.items() if k.endswith("_test_mcc_mean"))
  print(f"{line} table={workdir}/table.md results={workdir}/results.json")


def cli():
  launch.run(main)


if __name__ == "__main__":
  cli()
