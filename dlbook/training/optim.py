"""Optimizers and schedules from a config, through optax.

`config.optimizer` keys: name (sgd | adam | adamw | rmsprop), learning_rate, schedule
(constant | cosine | step), final_learning_rate (cosine floor), warmup_steps,
momentum, nesterov, b1, b2, weight_decay, grad_clip_norm, and for the step
schedule decay_every_steps / decay_factor.

Weight decay is coupled L2 (added to the gradient before the optimizer, as in
PyTorch SGD and the DARTS reference) for sgd/adam and decoupled for adamw.
"""

import optax

from dlbook.errors import require
from dlbook.registry import Registry

OPTIMIZERS: Registry[optax.GradientTransformation] = Registry("optimizer")
SCHEDULES = ("constant", "cosine", "step")


def make_schedule(c, total_steps: int, cycles: int = 1) -> optax.Schedule:
  """The learning-rate schedule over `total_steps`; with `cycles` > 1 it restarts every
  total_steps // cycles steps (e.g. one cosine per fold when one model is trained fold after fold)."""
  require(int(cycles) >= 1, f"the schedule needs at least one cycle, got {cycles}")
  if cycles > 1:
    length = max(1, total_steps // cycles)
    one = make_schedule(c, length)
    return optax.join_schedules([one] * cycles, [length * i for i in range(1, cycles)])
  lr = float(c.learning_rate)
  require(lr > 0, f"optimizer.learning_rate must be positive, got {lr}")
  name = c.get("schedule", "constant")
  require(name in SCHEDULES, f"unknown optimizer.schedule {name!r}; valid: {', '.join(SCHEDULES)}")
  warmup = int(c.get("warmup_steps", 0))
  require(warmup >= 0, f"optimizer.warmup_steps must be >= 0, got {warmup}")
  decay_steps = max(1, total_steps - warmup)
  if name == "cosine":
    final = float(c.get("final_learning_rate", 0.0))
    require(0 <= final <= lr, f"optimizer.final_learning_rate must be in [0, learning_rate], got {final}")
    main = optax.cosine_decay_schedule(lr, decay_steps, alpha=final / lr)
  elif name == "step":
    every = int(c.get("decay_every_steps", 0))
    require(every > 0, "optimizer.decay_every_steps must be positive for the step schedule")
    main = optax.exponential_decay(lr, every, float(c.get("decay_factor", 0.5)), staircase=True)
  else:
    main = optax.constant_schedule(lr)
  if warmup:
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])
  return main


@OPTIMIZERS.register("sgd")
def _sgd(c, lr):
  return optax.sgd(lr, momentum=float(c.get("momentum", 0.9)) or None, nesterov=bool(c.get("nesterov", False)))


@OPTIMIZERS.register("adam")
def _adam(c, lr):
  return optax.adam(lr, b1=float(c.get("b1", 0.9)), b2=float(c.get("b2", 0.999)))


@OPTIMIZERS.register("adamw")
def _adamw(c, lr):
  return optax.adamw(lr, b1=float(c.get("b1", 0.9)), b2=float(c.get("b2", 0.999)),
                     weight_decay=float(c.get("weight_decay", 0.0)))


@OPTIMIZERS.register("rmsprop")
def _rmsprop(c, lr):  # WGAN (Arjovsky et al. 2017); decay = the squared-gradient average's rate
  return optax.rmsprop(lr, decay=float(c.get("decay", 0.9)), momentum=float(c.get("momentum", 0.0)) or None)


def make_optimizer(c, total_steps: int, cycles: int = 1) -> optax.GradientTransformation:
  """clip -> (coupled weight decay) -> optimizer with schedule, as one optax chain (`make_schedule`)."""
  builder = OPTIMIZERS.get(c.name)
  schedule = make_schedule(c, total_steps, cycles)
  wd = float(c.get("weight_decay", 0.0))
  require(wd >= 0, f"optimizer.weight_decay must be >= 0, got {wd}")
  clip = float(c.get("grad_clip_norm", 0.0) or 0.0)
  require(clip >= 0, f"optimizer.grad_clip_norm must be >= 0, got {clip}")
  parts = []
  if clip > 0:
    parts.append(optax.clip_by_global_norm(clip))
  if wd > 0 and c.name != "adamw":
    parts.append(optax.add_decayed_weights(wd))
  parts.append(builder(c, schedule))
  return optax.chain(*parts)
