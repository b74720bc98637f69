"""The report of the pan-cancer pipeline (book ch. 12): tables in the layout of book Tables 12.1 and 12.2.

`write_report` reads every unit's results.json, aggregates the base models of each split with the
four rules of `dlbook.medical.ensemble` (weights: validation macro-F1), and writes into the workdir
``table.md`` (every base model, aggregator and baseline: mean ± sample std over the splits; the
per-class table and confusion matrix of the pooled out-of-fold predictions; book Table 12.1 next to
it), ``confusion.png`` and ``results.json``; with `docs_dir`, copies of the first two under docs/.
"""

import json
import os
import shutil
from typing import Dict, List, Optional, Sequence

import numpy as np

from dlbook.errors import require
from dlbook.medical import ensemble
from dlbook.metrics import classification_metrics, confusion_matrix, per_class_report, roc_auc_ovr
from dlbook.tables import STD_NOTE, mean_std, module_command
from dlbook.training import reporting

# Book Table 12.1 (TCGA Pan-Cancer, 33 types): accuracy, precision, recall, F-score (%), two decimals;
# and the weighted-average voting of §12.3.2's text, one decimal for precision and recall.
BOOK_TABLE_12_1 = (("DenseNet", (87.32, 87.32, 87.67, 87.44), 2), ("ResNet50", (90.45, 91.05, 90.77, 91.22), 2),
                   ("Inception-V3", (93.10, 93.53, 93.05, 93.15), 2), ("Xception", (92.54, 93.76, 93.45, 93.71), 2),
                   ("Ensemble method (average voting)", (96.88, 96.94, 96.90, 96.93), 2),
                   ("Weighted average voting (text of §12.3.2)", (97.15, 97.2, 97.1, 97.15), 1))
METRICS = (("accuracy", "Accuracy"), ("precision_macro", "Precision (macro)"), ("recall_macro", "Recall (macro)"),
           ("f1_macro", "F1 (macro)"), ("f1_weighted", "F1 (weighted)"), ("roc_auc_macro", "ROC-AUC (macro, OvR)"))


def f_score_check(precision: float, recall: float, f: float, decimals: int) -> str:
  """Whether a printed F-score can come from its printed precision and recall: any averaging of F1
  (of the macro P and R, mean of per-class F1, weighted) obeys F <= (P + R) / 2. Printed values carry
  ±half a unit of the last digit, so F - (P + R)/2 up to one unit can be rounding."""
  margin = f - (precision + recall) / 2
  unit = 10.0 ** -decimals
  if margin <= 1e-9:
    return "possible"
  if margin < unit - 1e-9:
    return f"F exceeds (P+R)/2 by {margin:.3f}: within rounding"
  if margin < unit + 1e-9:
    return (f"F exceeds (P+R)/2 by {margin:.3f}: impossible (rounding of the printed values reaches the bound "
            f"only at its edge)")
  return f"**impossible**: F exceeds (P+R)/2 = {(precision + recall) / 2:.3f} by {margin:.3f}"


def method_name(method: str) -> str:
  from dlbook.medical.pancancer import METHOD_NAMES
  return METHOD_NAMES.get(method, ensemble.NAMES.get(method, method))


def collect(workdir: str, splits, methods: Sequence[str]) -> Dict[str, Dict[str, dict]]:
  """{split name: {method: results payload}} of the finished units."""
  from dlbook.medical.pancancer import _method_dir
  out = {}
  for split in splits:
    for m in methods:
      path = os.path.join(_method_dir(workdir, split, m), "results.json")
      if os.path.exists(path):
        with open(path) as f:
          out.setdefault(split.name, {})[m] = json.load(f)
  return out


def aggregate_split(payloads: Dict[str, dict], base_models: Sequence[str], aggregators: Sequence[str],
                    num_classes: int) -> Optional[dict]:
  """The aggregators on one split whose base models have all finished (else None)."""
  if not all(m in payloads for m in base_models):
    return None
  first = payloads[base_models[0]]
  for m in base_models:
    require(payloads[m]["test_samples"] == first["test_samples"], f"base model {m} was tested on other samples "
                                                                  f"than {base_models[0]} in {first['split']}")
  y = np.asarray(first["test_labels"])
  probs = np.stack([np.asarray(payloads[m]["test_probs"]) for m in base_models])
  weights, fallback = ensemble.validation_weights({m: payloads[m]["metrics"]["val_f1_macro"] for m in base_models},
                                                  base_models)
  out = {"weights": dict(zip(base_models, weights.tolist())), "weights_fallback_uniform": fallback, "methods": {}}
  preds = {}
  for a in aggregators:
    pred, scores = ensemble.aggregate(a, probs, weights)
    preds[a] = pred
    m = classification_metrics(y, pred, num_classes)
    m.update(roc_auc_ovr(y, scores))
    out["methods"][a] = {"metrics": m, "test_pred": pred.tolist(), "test_labels": y.tolist()}
  if "soft" in preds and "weighted_average" in preds:
    out["soft_equals_weighted_average"] = bool(np.array_equal(preds["soft"], preds["weighted_average"]))
  return out


def _predictions(payload: dict) -> np.ndarray:
  if "test_pred" in payload:
    return np.asarray(payload["test_pred"])
  return np.asarray(payload["test_probs"]).argmax(-1)


def summarize(config, runs: Dict[str, Dict[str, dict]], splits, class_names) -> dict:
  """Per method: per-split metrics, and per repeat the pooled out-of-fold labels and predictions."""
  k = len(class_names)
  base, aggs, baselines = list(config.base_models), list(config.aggregators), list(config.baselines)
  methods = base + aggs + baselines
  rows = {m: {"splits": [], "metrics": [], "pooled": {}} for m in methods}
  ensembles = {}
  for split in splits:
    payloads = runs.get(split.name, {})
    agg = aggregate_split(payloads, base, aggs, k) if aggs else None
    if agg is not None:
      ensembles[split.name] = agg
    for m in methods:
      if m in aggs:
        if agg is None:
          continue
        p = agg["methods"][m]
        y, pred, metrics = np.asarray(p["test_labels"]), np.asarray(p["test_pred"]), p["metrics"]
      elif m in payloads:
        y, pred, metrics = np.asarray(payloads[m]["test_labels"]), _predictions(payloads[m]), payloads[m]["metrics"]
      else:
        continue
      rows[m]["splits"].append(split.name)
      rows[m]["metrics"].append(metrics)
      pooled = rows[m]["pooled"].setdefault(split.repeat, {"y": [], "pred": [], "folds": 0})
      pooled["y"] += y.tolist()
      pooled["pred"] += pred.tolist()
      pooled["folds"] += 1
  n_folds = int(config.splits.n_folds)
  for m in methods:
    complete = {r: p for r, p in rows[m]["pooled"].items() if p["folds"] == n_folds}  # every patient tested once
    rows[m]["per_class"] = [per_class_report(p["y"], p["pred"], k, class_names) for p in complete.values()]
    rows[m]["confusion"] = (sum(confusion_matrix(p["y"], p["pred"], k) for p in complete.values())
                            if complete else None)
    rows[m]["repeats_complete"] = len(complete)
  return {"rows": rows, "ensembles": ensembles, "methods": methods}


def _cell(values, scale=100.0, digits=2):
  vals = [v for v in values if v is not None and np.isfinite(v)]
  return mean_std(vals, digits=digits, scale=scale, one=" (1 split)")


def table_markdown(config, summary: dict, class_names, data_info: dict, splits, expected: int, finished: int,
                   wall_time_s: float, command: str) -> str:
  rows, methods = summary["rows"], summary["methods"]
  base, aggs = list(config.base_models), list(config.aggregators)
  n_rep, n_folds = len(config.splits.repeats), int(config.splits.n_folds)
  lines = ["# Pan-cancer ensemble (book ch. 12): generated results", ""]
  if finished < expected:
    lines += [f"**PARTIAL RESULTS: {finished} of {expected} units finished.**", ""]
  dropped = data_info.get("dropped_classes") or {}
  lines += [f"Generated by `{module_command(command)}` in {reporting.format_duration(wall_time_s)} "
            f"(this invocation; the units' own times are below).", "",
            f"- Data: {data_info.get('dataset', data_info.get('source', config.data.name))}"
            + (f", label `{data_info['label']}`" if data_info.get("label") else "")
            + f"; {sum(summary['class_counts'])} patients, {len(class_names)} classes: "
            + ", ".join(f"{c} {n}" for c, n in zip(class_names, summary["class_counts"]))
            + (f"; dropped (fewer than {config.data.get('min_class_size', 0)} patients): "
               + ", ".join(f"{c} {n}" for c, n in dropped.items()) if dropped else "") + ".",
            f"- Splits: {n_rep} repeat(s) × {n_folds} patient-grouped stratified folds = {len(splits)} test folds; "
            f"validation: a grouped stratified {float(config.splits.val_fraction):.0%} of each fold's training part. "
            f"Expression → image fitted on each training part only: {summary['transform']}.",
            f"- Cells: test-fold metrics in %, {STD_NOTE.replace('seeds', 'the test folds of every repeat')}.",
            ""]
  lines += ["## Every base model, aggregator and baseline (layout of book Table 12.1)", "",
            "| Method | " + " | ".join(t for _, t in METRICS) + " | validation macro-F1 | splits |",
            "|---" * (len(METRICS) + 3) + "|"]
  for m in methods:
    r = rows[m]
    if not r["metrics"]:
      continue
    cells = [_cell([x.get(key) for x in r["metrics"]]) for key, _ in METRICS]
    val = _cell([x.get("val_f1_macro") for x in r["metrics"]]) if m not in aggs else "—"
    lines.append(f"| {method_name(m)} | " + " | ".join(cells) + f" | {val} | {len(r['metrics'])} |")
  lines += ["", "Precision, recall and F1 are macro averages over the classes (scikit-learn's macro-F1, the mean of "
            "per-class F1). The baselines' ROC-AUC uses logistic-regression probabilities and the SVM's decision "
            "function. \"Soft\" (Σ w_j d_j) and weighted average (Σ w_j d_j / Σ w_j) differ by the factor "
            "1 / Σ w_j, so they predict the same class for every patient"
            + (" (checked on every split here: "
               + ("identical" if all(e.get("soft_equals_weighted_average", True) for e in summary["ensembles"].values())
                  else "**NOT identical**") + ")." if summary["ensembles"] else ".")]
  lines += ["", "## Book Table 12.1 (TCGA Pan-Cancer, 33 cancer types; not reproduced here)", "",
            "These are the book's claims on data that is not on this machine; the rows above are a different "
            "task (other data, classes and scale) and are not comparable number for number.", "",
            "| Method (book) | Accuracy | Precision | Recall | F-score | (P+R)/2 | F-score vs precision and recall |",
            "|---|---|---|---|---|---|---|"]
  for name, (acc, p, r, f), d in BOOK_TABLE_12_1:
    lines.append(f"| {name} | {acc:.2f} | {p:.{d}f} | {r:.{d}f} | {f:.2f} | {(p + r) / 2:.3f} | "
                 f"{f_score_check(p, r, f, d)} |")
  lines += ["", "Under any one averaging F ≤ (P+R)/2 (the harmonic mean never exceeds the arithmetic mean), so an "
            "F-score above the mean of its precision and recall cannot come from them. The book's text also gives "
            "the average ensemble's accuracy as 96.89 (table: 96.88).", ""]
  # Per-class table and confusion matrix of the headline ensemble (book Table 12.2, Fig. 12.6).
  headline = next((a for a in ("weighted_average", "average", "soft", "hard") if a in aggs and rows[a]["per_class"]),
                  next((m for m in methods if rows[m]["per_class"]), None))
  if headline is not None:
    r = rows[headline]
    lines += [f"## Per class: {method_name(headline)} (layout of book Table 12.2)", "",
              f"Pooled out-of-fold predictions (every patient tested once per repeat), per repeat, then "
              f"{'mean ± sample std over ' + str(r['repeats_complete']) + ' repeats' if r['repeats_complete'] > 1 else 'one repeat'}.",
              "", "| Class | Precision | Recall | F1 | Specificity | Support (per repeat) |", "|---|---|---|---|---|---|"]
    for i, c in enumerate(class_names):
      per = [rep[i] for rep in r["per_class"]]
      lines.append(f"| {c} | " + " | ".join(_cell([x[key] for x in per], scale=1.0) for key in
                                            ("precision", "recall", "f1", "specificity"))
                   + f" | {per[0]['support']} |")
    cm = np.asarray(r["confusion"])
    lines += ["", f"Confusion matrix of {method_name(headline)}, summed over {r['repeats_complete']} repeat(s) "
              "(rows: true class, columns: predicted; `confusion.png`):", "",
              "| true \\ predicted | " + " | ".join(class_names) + " |", "|---" * (len(class_names) + 1) + "|"]
    lines += [f"| {c} | " + " | ".join(str(int(v)) for v in cm[i]) + " |" for i, c in enumerate(class_names)]
    lines += ["", "## Per-class F1 of every method (book Fig. 12.7 as a table)", "",
              "| Class | " + " | ".join(method_name(m) for m in methods if rows[m]["per_class"]) + " |",
              "|---" * (1 + sum(1 for m in methods if rows[m]["per_class"])) + "|"]
    for i, c in enumerate(class_names):
      lines.append(f"| {c} | " + " | ".join(_cell([rep[i]["f1"] for rep in rows[m]["per_class"]], scale=1.0)
                                            for m in methods if rows[m]["per_class"]) + " |")
  lines += ["", "## Training of the base models", "",
            "| Base model | parameters | epochs trained | best epoch | early-stopped | wall time per unit (s) |",
            "|---|---|---|---|---|---|"]
  for m in base:
    ps = summary["payloads"].get(m, [])
    if not ps:
      continue
    lines.append(f"| {method_name(m)} | {ps[0]['num_params']:,} | {_cell([p['epochs_trained'] for p in ps], 1, 1)} | "
                 f"{_cell([p['best_epoch'] for p in ps], 1, 1)} | {sum(p['stopped_early'] for p in ps)}/{len(ps)} | "
                 f"{_cell([p['wall_time_s'] for p in ps], 1, 0)} |")
  if summary["ensembles"]:
    lines += ["", "Ensemble weights w_j (validation macro-F1 of each base model; never a test score), mean ± sample "
              "std over splits: " + ", ".join(
                  f"{method_name(m)} {_cell([e['weights'][m] for e in summary['ensembles'].values()], 1.0)}"
                  for m in base) + "."]
    fallback = sum(e["weights_fallback_uniform"] for e in summary["ensembles"].values())
    if fallback:
      lines.append(f"In {fallback} split(s) every base model had validation macro-F1 0; the weighted rules used "
                   "uniform weights there.")
  lines.append("")
  return "\n".join(lines)


def write_report(config, workdir: str, data, splits, docs_dir: Optional[str] = None,
                 wall_time_s: float = 0.0) -> dict:
  """table.md, confusion.png and results.json from whatever units exist."""
  methods = list(config.base_models) + list(config.baselines)
  runs = collect(workdir, splits, methods)
  finished = sum(len(v) for v in runs.values())
  expected = len(splits) * len(methods)
  require(finished > 0, f"no finished units under {workdir}; train first (without --report_only)")
  summary = summarize(config, runs, splits, data.class_names)
  summary["class_counts"] = np.bincount(data.y, minlength=len(data.class_names)).tolist()
  summary["payloads"] = {m: [runs[s][m] for s in runs if m in runs[s]] for m in config.base_models}
  sample = next(p for r in runs.values() for p in r.values())
  fitted = sample["config"].get("transform_fitted", {})
  t = config.transform
  kind = (f"the {t.top_k} most variable genes" if t.top_k else f"genes with variance > {t.variance_threshold}"
          if t.variance_threshold is not None else "every gene")
  summary["transform"] = (f"{kind} → {fitted.get('genes', '?')} genes, {fitted.get('side', '?')}×"
                          f"{fitted.get('side', '?')} image, log2(x+1) {t.log_transform}, scaling {t.scale}")
  table = table_markdown(config, summary, data.class_names, data.info, splits, expected, finished, wall_time_s,
                         reporting.command_line())
  reporting.write_text_atomic(os.path.join(workdir, "table.md"), table)
  headline = next((a for a in ("weighted_average", "average") if a in config.aggregators
                   and summary["rows"][a]["confusion"] is not None), None)
  if headline:
    reporting.plot_confusion(os.path.join(workdir, "confusion.png"), summary["rows"][headline]["confusion"],
                             data.class_names, f"{method_name(headline)}, pooled out-of-fold")
  if docs_dir:
    name = config.get("docs_name", "pancancer_results")
    os.makedirs(os.path.join(docs_dir, "figures"), exist_ok=True)
    shutil.copyfile(os.path.join(workdir, "table.md"), os.path.join(docs_dir, f"{name}.md"))
    if headline:
      shutil.copyfile(os.path.join(workdir, "confusion.png"), os.path.join(docs_dir, "figures", f"{name}_confusion.png"))
  rows = summary["rows"]
  metrics = {"complete": finished == expected, "units_finished": finished, "units_expected": expected,
             "methods": {m: {key: [x.get(key) for x in rows[m]["metrics"]] for key, _ in METRICS}
                         for m in summary["methods"]},
             "soft_equals_weighted_average": all(e.get("soft_equals_weighted_average", True)
                                                 for e in summary["ensembles"].values())}
  return reporting.write_results(workdir, config=config, seed=list(config.splits.repeats),
                                 dataset=dict(data.info, class_names=list(data.class_names)), metrics=metrics,
                                 wall_time_s=wall_time_s,
                                 ensembles={s: {k: v for k, v in e.items() if k != "methods"}
                                            for s, e in summary["ensembles"].items()})
