"""Turns results.json files into a markdown table under docs/ (numbers are never typed by hand).

  python -m experiments.summarize --results='runs/classify_*/results.json' --out=docs/classify_results.md \
      [--metrics=test_accuracy,test_f1_macro,test_mcc] [--title="..."]

Runs whose configs differ only in `seed` are grouped: the table shows mean ± sample std over their seeds.
"""

import glob
import json
import os

from absl import flags

from dlbook import launch
from dlbook import tables

FLAGS = flags.FLAGS
flags.DEFINE_string("results", None, "Glob of results.json files.")
flags.DEFINE_string("out", None, "Markdown file to write.")
flags.DEFINE_list("metrics", ["test_accuracy", "test_f1_macro", "test_mcc"], "Metric keys to tabulate.")
flags.DEFINE_string("title", "Results", "Table title.")


def main(argv):
  del argv
  paths = sorted(glob.glob(launch.require_flag(FLAGS.results, "results")))
  if not paths:
    launch.fail(f"no results.json files match {FLAGS.results}")
  payloads = []
  for p in paths:
    with open(p) as f:
      payloads.append(dict(json.load(f), _path=p))
  text = tables.summary_markdown(payloads, FLAGS.metrics, FLAGS.title)
  out = launch.require_flag(FLAGS.out, "out")
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out, "w") as f:
    f.write(text)
  print(text)


if __name__ == "__main__":
  launch.run(main)
