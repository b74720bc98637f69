"""A small walker over R objects parsed by PyPI ``rdata`` (no R needed).

``rdata``'s own conversion stops at the promises inside a Bioconductor ``ExpressionSet``'s
environment, so this walks its parse tree directly: pairlists become dicts, character vectors
lists of str, numeric vectors numpy arrays (with their ``dim`` applied in R's column-major
order), S4 objects and environments dicts of their slots / bindings. `expression_set` reads the
parts of an ``ExpressionSet`` that expression pipelines need.
"""

import functools
import os
from typing import Dict, List, Optional

import numpy as np

from dlbook.errors import DlbookError, require


def _deref(obj):
  while obj is not None and obj.info.type.name == "REF":
    obj = obj.referenced_object
  return obj


def symbol_name(obj) -> str:
  obj = _deref(obj)
  value = obj.value
  if hasattr(value, "value"):  # SYM wraps a CHAR
    value = value.value
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def pairlist(obj) -> Dict[str, object]:
  """A tagged pairlist (attributes, S4 slots, environment frames) as {tag: RObject}."""
  out = {}
  obj = _deref(obj)
  while obj is not None and obj.info.type.name == "LIST":
    car, cdr = obj.value
    if obj.tag is not None:
      out[symbol_name(obj.tag)] = _deref(car)
    obj = _deref(cdr)
  return out


def attributes(obj) -> Dict[str, object]:
  obj = _deref(obj)
  return pairlist(obj.attributes) if obj.attributes is not None else {}


def strings(obj) -> List[Optional[str]]:
  """A character vector as a list of str (NA as None)."""
  obj = _deref(obj)
  require(obj.info.type.name == "STR", f"expected an R character vector, got {obj.info.type.name}")
  return [None if c.value is None else c.value.decode("utf-8", "replace") for c in obj.value]


def vector(obj) -> np.ndarray:
  """A numeric / integer / logical vector or matrix as numpy (matrix shape from its ``dim``)."""
  obj = _deref(obj)
  kind = obj.info.type.name
  require(kind in ("REAL", "INT", "LGL"), f"expected an R numeric vector, got {kind}")
  value = np.asarray(obj.value)
  dim = attributes(obj).get("dim")
  if dim is not None:
    value = value.reshape(tuple(int(d) for d in vector(dim)), order="F")  # R is column-major
  return value


def factor(obj) -> List[Optional[str]]:
  """An R factor (integer codes + ``levels``) as its labels; a character vector as is."""
  obj = _deref(obj)
  if obj.info.type.name == "STR":
    return strings(obj)
  levels = strings(attributes(obj)["levels"])
  codes = np.asarray(obj.value)
  return [None if c < 1 else levels[c - 1] for c in codes]  # NA codes are negative


def dimnames(obj):
  """(row names, column names) of a matrix; None where absent."""
  names = attributes(obj).get("dimnames")
  if names is None:
    return None, None
  return tuple(None if v.info.type.name == "NILVALUE" else strings(v) for v in _deref(names).value)


def slots(obj) -> Dict[str, object]:
  """An S4 object's slots (its attributes minus ``class``)."""
  return {k: v for k, v in attributes(obj).items() if k != "class"}


def environment(obj) -> Dict[str, object]:
  """An environment's bindings, from its frame and its hash table."""
  env = _deref(obj).value
  out = pairlist(env.frame) if env.frame is not None else {}
  if env.hash_table is not None and env.hash_table.info.type.name == "VEC":
    for bucket in env.hash_table.value:
      out.update(pairlist(bucket))
  return out


def data_frame(obj) -> Dict[str, list]:
  """A data.frame as {column: list of values} plus its row names under ``'.row.names'``."""
  obj = _deref(obj)
  names = strings(attributes(obj)["names"])
  out = {}
  for name, col in zip(names, obj.value):
    col = _deref(col)
    out[name] = factor(col) if col.info.type.name == "STR" or "levels" in attributes(col) else vector(col).tolist()
  rows = attributes(obj).get("row.names")
  if rows is not None:
    out[".row.names"] = strings(rows) if rows.info.type.name == "STR" else None
  return out


@functools.lru_cache(maxsize=4)
def _parse(path: str, mtime: float, size: int):
  import warnings

  import rdata
  try:
    with warnings.catch_warnings():  # rdata warns before failing on a foreign file; the error says it all
      warnings.simplefilter("ignore")
      parsed = rdata.parser.parse_file(path)
  except Exception as e:  # rdata raises plain exceptions for corrupt or foreign files
    message = " ".join(str(e).split())[:200]  # one line
    raise DlbookError(f"cannot read R data file {path}: {type(e).__name__}: {message}") from None
  return pairlist(parsed.object)


def read_r_objects(path: str) -> Dict[str, object]:
  """The named objects of an ``.rda`` / ``.RData`` file (parsed once per file version per process)."""
  require(os.path.isfile(path), f"missing R data file {path}")
  st = os.stat(path)
  return _parse(os.path.abspath(path), st.st_mtime, st.st_size)


def expression_set(obj) -> Dict[str, object]:
  """A Biobase ``ExpressionSet``: ``exprs`` [features, samples], feature and sample names, phenoData columns."""
  s = slots(obj)
  missing = [k for k in ("assayData", "phenoData") if k not in s]
  require(not missing, f"not an ExpressionSet: slots {missing} missing (has {sorted(s)})")
  assay = environment(s["assayData"])
  require("exprs" in assay, f"ExpressionSet assayData has no 'exprs' matrix (has {sorted(assay)})")
  exprs = vector(assay["exprs"])
  features, samples = dimnames(assay["exprs"])
  pheno = data_frame(slots(s["phenoData"])["data"])
  annotation = strings(s["annotation"])[0] if "annotation" in s else None
  return {"exprs": exprs, "features": features, "samples": samples, "pheno": pheno, "annotation": annotation}
