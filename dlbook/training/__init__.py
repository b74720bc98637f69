"""Train state, optimizers, pure steps, checkpoints, reporting and the training loop."""

from dlbook.training.checkpoint import Checkpointer, guard_workdir
from dlbook.training.optim import make_optimizer, make_schedule
from dlbook.training.state import TrainState, count_params, create_train_state, init_variables
from dlbook.training.steps import classification_loss, cross_entropy, eval_step, make_train_step
