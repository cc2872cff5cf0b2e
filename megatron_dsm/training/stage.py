"""What a stage gives ``Trainer.fit``: the ``Stage`` base class, and
``BatchStage``, a stage whose step is one pass over its micro-batches.

``Trainer.fit(stage)`` (training/loop.py) runs the step loop, the log lines,
the evaluation and checkpoint cadence, ``--exit-interval`` and the exit
signals for every stage; a stage supplies only what is its own:

* ``setup(trainer)``: build what it needs beside the trainer's model (data
  sets, frozen models, a sampler), after the process groups exist and
  before a checkpoint is restored;
* ``start(trainer)``: position itself after the restore (data order at
  ``trainer.consumed_samples``);
* ``step(trainer) -> StepResult``: one optimizer step.  ``BatchStage``'s
  is ``trainer.train_step`` over ``microbatches(trainer)`` with
  ``forward_step`` (pretraining, SFT, reward models); RL's is a rollout,
  then train steps;
* ``eval_interval(trainer)`` and ``evaluate(trainer) -> dict``: held-out
  metrics, run before the first step, every ``eval_interval`` steps and at
  the last one (``None``: the stage does not evaluate; ``0``: first and
  last only);
* ``state_dict()`` / ``load_state_dict(common, directory)`` and
  ``write_files(directory)``: its part of the checkpoint's common state and
  files of its own (RL's frozen reference, PPO's critic), written before the
  checkpoint is published;
* ``finished(trainer)``: an early stop of its own (default never).

Entry points wrap their work in ``stage_main`` for one ``error:`` line and
exit status 2 on bad input.
"""

from __future__ import annotations

import abc
import dataclasses
import sys
from pathlib import Path
from typing import Callable

import torch

from megatron_dsm import checkpoint, platform
from megatron_dsm.config import ConfigError
from megatron_dsm.data.tokenizer import TokenizerError


def mean_metric(total: torch.Tensor, count) -> torch.Tensor:
    """A logged metric that is a mean over units (tokens, sequences, scored
    positions) spread over micro-batches: ``[total, count]`` of one
    micro-batch.  ``Trainer.reduce_metrics`` sums both over micro-batches and
    data-parallel ranks and logs their ratio, the mean of the whole batch."""
    return torch.stack([total.detach().float().reshape(()),
                        torch.as_tensor(count, device=total.device).detach().float().reshape(())])


def loss_count(n) -> torch.Tensor:
    """A loss function's unit count as megatron-core's schedules add it up
    (an int tensor; ``n`` may be a float count of 0/1 mask entries)."""
    return torch.as_tensor(n).detach().round().to(torch.int)


@dataclasses.dataclass
class StepResult:
    metrics: dict              # reduced over micro-batches and data-parallel ranks
    grad_norm: float | None
    skipped: bool


class Stage(abc.ABC):
    """Base class of the stages ``Trainer.fit`` runs (see the module docstring)."""

    #: the heading of a separate evaluation line, `` {eval_title} at iteration N | ... |``
    eval_title = "validation loss"
    #: prefix of the evaluation metrics in the dict ``fit`` returns
    eval_prefix = "validation "
    #: evaluation metrics go into the step's log line (and force one) instead
    eval_in_log_line = False

    def setup(self, trainer) -> None:
        """Build what the stage needs beside the model (before a restore)."""

    def start(self, trainer) -> None:
        """Position the stage after the restore (or at a fresh start)."""

    def banner(self, trainer) -> str | None:
        """One line describing the run, printed once it is set up."""
        return None

    # -- steps ------------------------------------------------------------
    @abc.abstractmethod
    def step(self, trainer) -> StepResult:
        """One optimizer step."""

    def samples_per_step(self, trainer) -> int:
        """Samples one step consumes over all ranks (``consumed samples``)."""
        return trainer.train_cfg.global_batch_size

    def tokens_per_step(self, trainer) -> int | None:
        """Tokens of one step for the ``tokens per second`` field (None: no field)."""
        return None

    def finished(self, trainer) -> bool:
        return False

    # -- evaluation -------------------------------------------------------
    def eval_interval(self, trainer) -> int | None:
        return None

    @abc.abstractmethod
    def evaluate(self, trainer) -> dict:
        """Held-out metrics (run when ``eval_interval`` is not None)."""

    # -- checkpoints ------------------------------------------------------
    def state_dict(self) -> dict:
        """Entries added to the checkpoint's common state."""
        return {}

    def load_state_dict(self, common: dict, directory: Path) -> None:
        """Restore from a loaded checkpoint's common state and directory."""

    def write_files(self, directory: Path) -> None:
        """Files of this rank added to a checkpoint before it is published."""


class BatchStage(Stage):
    """A stage whose step is ``trainer.train_step`` over its micro-batches."""

    def step(self, trainer) -> StepResult:
        return trainer.train_step(self.forward_step, self.microbatches(trainer))

    @abc.abstractmethod
    def microbatches(self, trainer) -> list:
        """This rank's micro-batches of the next step."""

    @abc.abstractmethod
    def forward_step(self, data_iterator, model):
        """megatron-core's ``forward_step_func``: (output, loss function).
        The loss function returns ``(loss summed over the micro-batch's
        units, their count, metrics)``; the loop divides the gradient by the
        count summed over micro-batches and data-parallel ranks
        (``Trainer``: megatron-core's ``calculate_per_token_loss``)."""


def stage_main(body: Callable[[], object], *errors: type[Exception]) -> int:
    """Entry-point wrapper shared by the training stages (pretrain, SFT,
    reward models, RL): bad input is one ``error:`` line and exit code 2 —
    config, checkpoint and tokenizer errors plus the stage's own ``errors`` —
    and the process groups are always torn down."""
    try:
        rc = body()
    except (ConfigError, checkpoint.CheckpointError, TokenizerError, *errors) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    finally:
        platform.destroy_distributed()
    return rc if isinstance(rc, int) else 0
