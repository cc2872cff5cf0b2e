"""SIGTERM / SIGUSR1: finish the step, save, exit cleanly.

What Megatron-LM's ``--exit-signal-handler`` does, on for every stage: a
scheduler's warning signal (Slurm sends SIGTERM before SIGKILL, or the
signal ``--signal=USR1@90`` asks for) only sets a flag; ``Trainer.fit``
reads it after each step, all ranks agree on it (one rank may be the only
one signalled), then the run saves a checkpoint and returns as it does at
the end.  The flag stays set for the rest of the process, so a fit nested
inside another stage's step (a reward model trained between RL iterations)
stops, and the outer fit stops after that step.
"""

from __future__ import annotations

import signal
import threading

import torch

from megatron_dsm import platform

EXIT_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class ExitSignals:
    """Context manager: while any ``fit`` runs, the exit signals set a flag
    instead of killing the process; the previous handlers come back when
    the outermost one ends."""

    def __init__(self, signals=EXIT_SIGNALS):
        self.signals = tuple(signals)
        self.received = 0          # the signal number, 0 while none came
        self._depth = 0
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        self.received = signum

    def __enter__(self) -> "ExitSignals":
        # Python handlers can only be set from the main thread; elsewhere the
        # process keeps its default behaviour.
        if self._depth == 0 and threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.signals}
        self._depth += 1
        return self

    def __exit__(self, *exc) -> None:
        self._depth -= 1
        if self._depth == 0:
            for s, h in self._previous.items():
                signal.signal(s, h)
            self._previous = {}

    def agreed(self) -> str | None:
        """The name of a signal any rank received, else None (a collective
        when the run has more than one process)."""
        got = self.received
        if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
            got = int(platform.all_reduce_values([got], op=torch.distributed.ReduceOp.MAX,
                                                 dtype=torch.int64)[0])
        return signal.Signals(got).name if got else None


EXIT = ExitSignals()
