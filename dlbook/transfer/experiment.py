"""Transfer learning, end to end: an ImageNet backbone with a new head, fine-tuned on a dataset by
name, against the same network trained from scratch for the same number of steps, over seeds.

The medical chapters of the book (ch. 12-13) and the leukaemia thesis (seed 003) fine-tune ImageNet
backbones; this experiment measures what the pretrained weights bring on a small real set here. One
unit per (variant, seed) in `workdir/<variant>/seed_<s>/`, each on the shared runner (resumable);
the report (`results.json`, `table.md`) is over the units' results.json. "scratch" is the same
network (same layout settings, normalisation, head, freezing none) randomly initialised.
"""

import os
import time
from typing import List

import numpy as np
from absl import logging

from dlbook import data as data_lib
from dlbook import models
from dlbook.errors import require
from dlbook.tables import STD_NOTE, mean_std
from dlbook.training import checkpoint, reporting, transfer

VARIANTS = ("pretrained", "scratch")
REPORT_KEYS = ("seeds", "variants", "log_every_steps", "report_to")
TABLE_METRICS = (("test_accuracy", "test accuracy (%)", 100.0), ("test_f1_macro", "test macro F1 (%)", 100.0),
                 ("test_loss", "test loss", 1.0), ("val_accuracy", "validation accuracy (%)", 100.0))


def validate_config(config) -> None:
  """Every bad value raises a one-line DlbookError naming the key, before anything is written."""
  require(config.model_name in models.names(),
          f"unknown model_name {config.model_name!r}; valid: {', '.join(models.names())}")
  variants = tuple(config.variants)
  require(len(variants) > 0 and all(v in VARIANTS for v in variants),
          f"variants must be a non-empty subset of {VARIANTS}, got {variants}")
  require(len(config.seeds) > 0, "seeds must name at least one seed")
  for key in ("num_train_steps", "batch_size", "eval_batch_size", "log_every_steps", "checkpoint_every_steps"):
    require(int(config[key]) > 0, f"{key} must be positive, got {config[key]}")
  require(int(config.eval_every_steps) >= 0, f"eval_every_steps must be >= 0, got {config.eval_every_steps}")
  require(int(config.freeze_blocks) >= -1, f"freeze_blocks must be >= -1, got {config.freeze_blocks}")
  require(0 <= float(config.dropout) < 1, f"dropout must be in [0, 1), got {config.dropout}")
  require(config.data.get("normalization") == "unit", "data.normalization must be 'unit': the backbone's own "
          "input normalisation (from its weight file) is applied inside the network")
  require(int(config.data.get("channels") or 0) == 3, "data.channels must be 3 (ImageNet backbones take RGB)")
  require("pretrained" not in variants or bool(config.weights),
          "the 'pretrained' variant needs weights ('imagenet' or the path of a weight file)")


def unit_config(config, variant: str, seed: int):
  c = config.copy_and_resolve_references()
  with c.unlocked():
    for k in ("seeds", "variants", "report_to"):
      del c[k]
    c.variant = variant
    c.seed = int(seed)
  return c


def run_unit(config, variant: str, seed: int, dataset, weights_path, workdir: str) -> dict:
  """Trains and tests one (variant, seed); returns its results payload."""
  t0 = time.time()
  cfg = unit_config(config, variant, seed)
  unit = checkpoint.Workdir(os.path.join(workdir, variant, f"seed_{seed}"), cfg.to_dict())
  if unit.finished:
    return unit.results()
  net = transfer.build_network(
      config.model_name, num_outputs=dataset.num_classes, image_size=dataset.image_shape[0],
      weights_spec=weights_path if variant == "pretrained" else "", dropout=float(config.dropout),
      backbone_kwargs=config.backbone.to_dict(), seed=seed, like=weights_path or None)
  state, prefixes = transfer.make_state(net, config.optimizer, int(config.num_train_steps),
                                        freeze_blocks=int(config.freeze_blocks) if variant == "pretrained" else 0)
  unit.start()
  fit = transfer.fit(net, state, prefixes, [transfer.Segment(dataset.train, int(config.num_train_steps), dataset.val)],
                     unit.path, batch_size=int(config.batch_size), seed=seed, augment_config=config.data.augment,
                     num_classes=dataset.num_classes, eval_batch_size=int(config.eval_batch_size),
                     eval_every=int(config.eval_every_steps), log_every=int(config.log_every_steps),
                     checkpoint_every=int(config.checkpoint_every_steps), max_checkpoints=int(config.max_checkpoints),
                     started=t0, name=f"{variant}/seed_{seed}")
  test, probs = transfer.evaluate(net, fit.state, dataset.test, int(config.eval_batch_size), dataset.num_classes)
  fit.result.log.write(int(config.num_train_steps), transfer.scalars(test), prefix="test/")
  transfer.write_outputs(unit.path, fit.result.log, test, dataset.class_names, f"{variant}, seed {seed}")
  fit.result.log.close()
  metrics = {f"test_{k}": v for k, v in transfer.scalars(test).items()}
  metrics.update({f"val_{k}": v for k, v in fit.segment_metrics[-1].items() if k != "segment"})
  return reporting.write_results(
      unit.path, config=cfg, seed=seed, dataset=dataset.info, metrics=metrics, variant=variant,
      network=net.info(), frozen_blocks=[p[-1] for p in prefixes], confusion_matrix=test["confusion_matrix"],
      wall_time_s=fit.result.wall_time_s(t0), total_steps=int(config.num_train_steps),
      resumed_from_step=fit.result.start_step, train_steps_per_s=fit.result.steps_per_s)


def table_markdown(config, runs: List[dict], command: str) -> str:
  """Pretrained against scratch: one row per variant, cells over seeds."""
  data = runs[0]["dataset"]
  about = f" ({data['description']})" if data.get("description") else ""
  lines = [f"Transfer learning: {config.model_name} with a new head on {data.get('name')}{about}, "
           f"{data.get('train_size')} training / "
           f"{data.get('val_size')} validation / {data.get('test_size')} test images at "
           f"{config.data.image_size} px, {config.num_train_steps} steps of batch {config.batch_size}; "
           f"cells: {STD_NOTE} ({len(config.seeds)} seeds: {', '.join(str(s) for s in config.seeds)}).", "",
           f"Generated by `{command}`.", "",
           "| variant | weights | frozen blocks | " + " | ".join(t[1] for t in TABLE_METRICS) + " | wall time (s) |",
           "|---" * (len(TABLE_METRICS) + 4) + "|"]
  for variant in config.variants:
    mine = [r for r in runs if r["variant"] == variant]
    weights = os.path.basename(mine[0]["network"]["weights"] or "") or "random initialisation"
    cells = [mean_std([r["metrics"].get(k) for r in mine], digits=2, scale=s, one=" (1 seed)")
             for k, _, s in TABLE_METRICS]
    wall = np.mean([r["wall_time_s"] for r in mine])
    lines.append(f"| {variant} | {weights} | {len(mine[0]['frozen_blocks'])} | " + " | ".join(cells)
                 + f" | {wall:.0f} |")
  return "\n".join(lines) + "\n"


def train_and_evaluate(config, workdir: str) -> dict:
  """Every (variant, seed) unit that has not finished, then the report; returns the report payload."""
  t0 = time.time()
  validate_config(config)
  top = checkpoint.Workdir(workdir, config.to_dict(), ignore=REPORT_KEYS)
  weights_path = transfer.resolve_weights(config.model_name, config.weights)
  dataset = data_lib.load(config.data, seed=int(config.seeds[0]))
  require(dataset.image_shape[-1] == 3, f"dataset {config.data.name!r} gives {dataset.image_shape[-1]} channels")
  top.start()
  runs = []
  for seed in config.seeds:
    for variant in config.variants:
      runs.append(run_unit(config, variant, int(seed), dataset, weights_path, top.path))
      logging.info("%s seed %d: test accuracy %.4f", variant, seed, runs[-1]["metrics"]["test_accuracy"])
  command = transfer.report_command()
  table = table_markdown(config, runs, command)
  transfer.write_table(top, table, config.get("report_to"))
  summary = {v: {k: [r["metrics"].get(k) for r in runs if r["variant"] == v] for k, _, _ in TABLE_METRICS}
             for v in config.variants}
  payload = dict(reporting.run_info(), config=config.to_dict(), summary=summary, table=table,
                 units=[os.path.relpath(os.path.join(top.path, r["variant"], f"seed_{r['seed']}"), top.path)
                        for r in runs], wall_time_s=time.time() - t0)
  reporting.write_json_atomic(top.join("results.json"), payload)
  return payload
