"""A steganography experiment's config, read and checked once (book ch. 6-8).

`Settings.from_config(config)` turns the ml_collections config of `configs/stego_*.py` into one
frozen object: every value the networks, the train step, the loops and the evaluation need, each
validated with a message naming its key. Nothing else reads the config.
"""

import dataclasses
from typing import Optional, Tuple

from dlbook.errors import require
from dlbook.stego import losses
from dlbook.stego.steps import COVER_AUGMENTS, StepConfig

METHODS = ("two_stage", "multi_message", "gsivat", "lsb")


@dataclasses.dataclass(frozen=True)
class XuNetSettings:
  """The independent steganalyzer of the security test (book §8.3.2; Xu et al. 2016)."""
  enabled: bool
  channels: Tuple[int, ...]
  num_train_steps: int
  batch_pairs: int
  learning_rate: float
  eval_every_steps: int
  limits: Tuple[int, int, int]


@dataclasses.dataclass(frozen=True)
class Settings:
  method: str
  embedding: str
  payload_bpp: float
  num_messages: int
  image_size: int
  message_bits: Tuple[int, ...]
  stage1_depth: int
  generator_channels: Tuple[int, ...]
  cover_shortcut: bool
  residual: str
  extractor_channels: Tuple[int, ...]
  head_side: int
  steganalyzer_channels: Tuple[int, ...]
  step: Optional[StepConfig]      # None for LSB (no training)
  learning_rate: float
  final_learning_rate: float
  b1: float
  b2: float
  seed: int
  batch_size: int
  eval_batch_size: int
  num_train_steps: int
  log_every_steps: int
  checkpoint_every_steps: int
  max_checkpoints: int
  lsb_key: int
  xunet: XuNetSettings

  @property
  def trains_gan(self) -> bool:
    return self.method != "lsb"

  @property
  def message_loss(self) -> str:
    return self.step.message_loss if self.step else "distance"

  @property
  def title(self) -> str:
    embedding = f" {self.embedding}" if self.method == "multi_message" else ""
    return f"{self.method}{embedding} {self.payload_bpp:g} bpp"

  @classmethod
  def from_config(cls, config) -> "Settings":
    """Reads and validates `config`; a bad value is a `DlbookError` naming its key."""
    from dlbook.stego.multi_message import EMBEDDINGS, message_sizes
    from dlbook.stego.two_stage import RESIDUALS
    c = config
    method = str(c.method)
    require(method in METHODS, f"unknown method {method!r}; valid: {', '.join(METHODS)}")
    require(float(c.payload_bpp) > 0, f"payload_bpp must be positive, got {c.payload_bpp}")
    require(int(c.num_messages) >= 1, f"num_messages must be >= 1, got {c.num_messages}")
    require(method == "multi_message" or int(c.num_messages) == 1,
            f"method {method!r} carries one message; num_messages={c.num_messages} needs method='multi_message'")
    require(method != "multi_message" or c.embedding in EMBEDDINGS,
            f"unknown embedding {c.embedding!r}; valid: {', '.join(EMBEDDINGS)}")
    for key in ("batch_size", "eval_batch_size", "log_every_steps", "checkpoint_every_steps", "max_checkpoints"):
      require(int(c[key]) > 0, f"{key} must be positive, got {c[key]}")
    require(int(c.num_train_steps) >= 0, f"num_train_steps must be >= 0, got {c.num_train_steps}")
    require(method == "lsb" or int(c.num_train_steps) > 0,
            f"num_train_steps must be positive for method {method!r}")
    require(c.data.image_size is not None and int(c.data.image_size) > 0,
            "data.image_size must be set (64 in the book)")
    require(c.data.get("normalization", "symmetric") == "symmetric",
            "stego covers must use data.normalization='symmetric' ([-1, 1], the generators' tanh range)")
    residual = str(c.generator.get("residual", "clip"))
    require(residual in RESIDUALS, f"unknown generator.residual {residual!r}; valid: {', '.join(RESIDUALS)}")
    message_loss = str(c.loss.get("message_loss", "distance"))
    require(message_loss in losses.MESSAGE_LOSSES,
            f"unknown loss.message_loss {message_loss!r}; valid: {', '.join(losses.MESSAGE_LOSSES)}")
    o = c.optimizer
    require(float(o.learning_rate) > 0, f"optimizer.learning_rate must be positive, got {o.learning_rate}")
    require(0 <= float(o.b1) < 1 and 0 <= float(o.b2) < 1, f"optimizer b1, b2 must be in [0, 1), got {o.b1}, {o.b2}")
    final_lr = float(o.get("final_learning_rate", -1.0))
    require(final_lr < 0 or final_lr <= float(o.learning_rate),
            f"optimizer.final_learning_rate must be in [0, learning_rate], got {final_lr}")
    bits = message_sizes(float(c.payload_bpp), int(c.num_messages), int(c.data.image_size))
    step = None
    if method != "lsb":
      l = c.loss
      single_stage = method == "gsivat" or (method == "multi_message" and c.embedding == "conventional")
      cover_augment = str(c.get("cover_augment", "none"))
      require(cover_augment in COVER_AUGMENTS,
              f"unknown cover_augment {cover_augment!r}; valid: {', '.join(COVER_AUGMENTS)}")
      step = StepConfig(message_bits=bits, lambda_g=float(l.lambda_g), lambda_d=float(l.lambda_d),
                        lambda_s=float(l.lambda_s), distance=l.distance,
                        cr_target="stego" if method == "gsivat" else l.cr_target,
                        split_stages=bool(l.split_stages) and not single_stage, quantize=bool(l.quantize),
                        lambda_g_start=float(l.lambda_g_start), lambda_g_ramp=tuple(int(v) for v in l.lambda_g_ramp),
                        cover_augment=cover_augment, message_loss=message_loss)
    x = c.xunet
    xunet = XuNetSettings(bool(x.enabled), tuple(int(v) for v in x.channels), int(x.num_train_steps),
                          int(x.batch_pairs), float(x.learning_rate), int(x.eval_every_steps),
                          tuple(int(v) for v in x.limits))
    if xunet.enabled:
      require(xunet.num_train_steps > 0 and xunet.batch_pairs > 0 and xunet.eval_every_steps > 0,
              "xunet.num_train_steps, xunet.batch_pairs and xunet.eval_every_steps must be positive")
    settings = cls(
        method=method, embedding=str(c.get("embedding", "late")), payload_bpp=float(c.payload_bpp),
        num_messages=int(c.num_messages), image_size=int(c.data.image_size), message_bits=bits,
        stage1_depth=int(c.stage1_depth), generator_channels=tuple(int(v) for v in c.generator.channels),
        cover_shortcut=bool(c.generator.cover_shortcut), residual=residual,
        extractor_channels=tuple(int(v) for v in c.extractor.channels), head_side=int(c.extractor.head_side),
        steganalyzer_channels=tuple(int(v) for v in c.steganalyzer.channels), step=step,
        learning_rate=float(o.learning_rate), final_learning_rate=final_lr, b1=float(o.b1), b2=float(o.b2),
        seed=int(c.seed), batch_size=int(c.batch_size), eval_batch_size=int(c.eval_batch_size),
        num_train_steps=int(c.num_train_steps), log_every_steps=int(c.log_every_steps),
        checkpoint_every_steps=int(c.checkpoint_every_steps), max_checkpoints=int(c.get("max_checkpoints", 2)),
        lsb_key=int(c.lsb_key), xunet=xunet)
    if settings.trains_gan:
      from dlbook.stego.networks import build_networks
      build_networks(settings)  # shape errors (payload vs. embedding resolution) before any data is loaded
    return settings
