"""The Gen-CNN vs random-search table over seeds from finished runs' results.json.

  python -m experiments.gen_cnn_table --out=docs/gen_cnn_table.md RUN_DIR [RUN_DIR ...]
"""

import json
import os

from absl import flags

from dlbook import launch
from dlbook.errors import require
from dlbook.hpsearch import report
from dlbook.training import reporting

FLAGS = flags.FLAGS
flags.DEFINE_string("out", None, "Markdown file to write.")


def main(argv):
  dirs = argv[1:]
  require(bool(dirs), "name at least one finished Gen-CNN run directory")
  payloads = []
  for d in dirs:
    path = os.path.join(d, "results.json")
    require(os.path.exists(path), f"{path} does not exist (the run has not finished)")
    with open(path) as f:
      payloads.append(json.load(f))
  text = "# Gen-CNN against random search\n\n" + report.comparison_markdown(
      payloads, "python -m experiments.gen_cnn_table --out=" + str(FLAGS.out) + " " + " ".join(
          os.path.basename(os.path.normpath(d)) for d in dirs))
  reporting.write_text_atomic(FLAGS.out, text)
  print(text)


if __name__ == "__main__":
  launch.run(main)
