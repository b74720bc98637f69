"""The Colab notebooks of docs/notebooks: py:percent sources in sync with their .ipynb, code that compiles,
and every cell but the Colab set-up run end to end in this process, as `nbmake` would run them in a kernel
(in CI those of CI_NOTEBOOKS, the others with DLBOOK_SLOW=1). DLBOOK_NOTEBOOK_CI=1 is set meanwhile: the
notebooks that read it shrink their runs below the smoke presets (each says how in its first code cell).
Each notebook ends with assertions on what it produced, so a broken one fails here.

`python -m tests.test_notebooks` rewrites each .ipynb from its .py (the jupytext py:percent format, read
here without jupytext: `# %%` starts a code cell, `# %% [markdown]` a markdown cell whose lines drop
their "# ", `tags=[...]` after the marker become cell tags, and "# !" / "# %" lines in code cells are
IPython commands, as jupytext writes them)."""

import ast
import glob
import json
import os
import re
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = sorted(glob.glob(os.path.join(ROOT, "docs", "notebooks", "*.py")))
SETUP_TAG = "colab-setup"  # the install cell: Colab only, never run in CI
NOTEBOOKS = {"quickstart.py", "darts.py", "evolution.py", "freezing.py", "steganography.py"}
CI_VARIABLE = "DLBOOK_NOTEBOOK_CI"  # set while CI runs a notebook: it trims its runs to fit the budget
# Run in CI: every notebook, at its CI size (docs/accelerators.md has the measured seconds). A notebook left
# out of this set would run only with DLBOOK_SLOW=1.
CI_NOTEBOOKS = set(NOTEBOOKS)


def read_percent(path: str) -> list:
  """Cells of a py:percent file as (cell_type, tags, source lines)."""
  with open(path) as f:
    lines = f.read().split("\n")
  if lines and lines[0] == "# ---":  # the jupytext header
    lines = lines[lines.index("# ---", 1) + 1:]
  cells = []
  for line in lines:
    marker = re.match(r"^# %%(?: \[(\w+)\])?(?: tags=(\[.*\]))?\s*$", line)
    if marker:
      cells.append(("markdown" if marker.group(1) == "markdown" else "code", json.loads(marker.group(2) or "[]"), []))
    elif cells:
      cells[-1][2].append(line)
  out = []
  for kind, tags, body in cells:
    while body and not body[-1].strip():
      body.pop()
    if kind == "markdown":
      body = [re.sub(r"^# ?", "", l) for l in body]
    else:
      body = [re.sub(r"^# ([!%].*)$", r"\1", l) for l in body]
    out.append((kind, tags, body))
  return out


def to_notebook(cells: list) -> dict:
  nb_cells = []
  for kind, tags, body in cells:
    source = [l + "\n" for l in body[:-1]] + body[-1:]
    cell = {"cell_type": kind, "metadata": {"tags": tags} if tags else {}, "source": source}
    if kind == "code":
      cell.update(execution_count=None, outputs=[])
    nb_cells.append(cell)
  return {"cells": nb_cells, "nbformat": 4, "nbformat_minor": 4,  # 4.4: no cell ids needed
          "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                       "language_info": {"name": "python"}, "accelerator": "GPU",
                       "jupytext": {"formats": "ipynb,py:percent"}}}


def load_notebook(path: str) -> dict:
  try:
    import nbformat  # validates against the notebook schema where installed
    return nbformat.read(path, as_version=4)
  except ImportError:
    with open(path) as f:
      return json.load(f)


def cell_source(cell) -> str:
  return cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])


def test_there_are_notebooks_and_each_source_has_its_ipynb():
  assert {os.path.basename(p) for p in SOURCES} >= NOTEBOOKS
  for path in SOURCES:
    assert os.path.exists(path[:-3] + ".ipynb"), f"{path} has no .ipynb: run python -m tests.test_notebooks"


@pytest.mark.parametrize("path", SOURCES, ids=os.path.basename)
def test_ipynb_is_in_sync_with_its_source_and_its_code_compiles(path):
  nb = load_notebook(path[:-3] + ".ipynb")
  assert nb["nbformat"] == 4
  expected = to_notebook(read_percent(path))["cells"]
  got = [{"cell_type": c["cell_type"], "tags": c.get("metadata", {}).get("tags", []), "source": cell_source(c)}
         for c in nb["cells"]]
  assert got == [{"cell_type": c["cell_type"], "tags": c["metadata"].get("tags", []), "source": "".join(c["source"])}
                 for c in expected], f"{path[:-3]}.ipynb is out of date: run python -m tests.test_notebooks"
  code = [c for c in nb["cells"] if c["cell_type"] == "code"]
  assert SETUP_TAG in code[0].get("metadata", {}).get("tags", []), "the first code cell must be the Colab set-up"
  assert all(SETUP_TAG not in c.get("metadata", {}).get("tags", []) for c in code[1:])
  for i, cell in enumerate(code):
    lines = cell_source(cell).split("\n")
    magics = [l for l in lines if l.lstrip().startswith(("!", "%"))]
    assert i == 0 or not magics, f"{path}: IPython commands {magics} outside the set-up cell would not run in CI"
    ast.parse("\n".join(l for l in lines if l not in magics))  # a syntax error fails here, before any user does


@pytest.mark.parametrize("path", [p if os.path.basename(p) in CI_NOTEBOOKS else pytest.param(p, marks=pytest.mark.slow)
                                  for p in SOURCES], ids=os.path.basename)
def test_notebook_runs_end_to_end_at_ci_size(path, monkeypatch, tmp_path):
  """Every code cell but the Colab set-up, in order, in one namespace, as a kernel would run them; the
  notebooks' temporary working directories go under pytest's tmp_path."""
  import tempfile
  monkeypatch.chdir(ROOT)
  monkeypatch.syspath_prepend(ROOT)
  monkeypatch.setenv(CI_VARIABLE, "1")
  monkeypatch.setenv("MPLBACKEND", "Agg")
  monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
  import matplotlib.pyplot as plt
  namespace = {"__name__": "__notebook__"}
  try:
    for cell in load_notebook(path[:-3] + ".ipynb")["cells"]:
      if cell["cell_type"] == "code" and SETUP_TAG not in cell.get("metadata", {}).get("tags", []):
        exec(compile(cell_source(cell), path, "exec"), namespace)  # noqa: S102 (our own notebook)
  finally:
    plt.close("all")


if __name__ == "__main__":
  for source in SOURCES:
    with open(source[:-3] + ".ipynb", "w") as f:
      json.dump(to_notebook(read_percent(source)), f, indent=1)
      f.write("\n")
    print("wrote", source[:-3] + ".ipynb", file=sys.stderr)
