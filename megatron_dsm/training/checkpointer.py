"""Checkpoints of a run: when to save, what goes in, and the restore.

``CheckpointManager`` sits beside ``Trainer.fit``: it owns the cadence
(``--save-interval``, the final save), puts the trainer's state (iteration,
consumed samples, LR schedule, configs, RNG) and the stage's state and files
into one checkpoint through ``megatron_dsm.checkpoint``, and restores them
(``--load``, ``--finetune``: weights only).
"""

from __future__ import annotations

import time
from pathlib import Path

from megatron_dsm import checkpoint, platform
from megatron_dsm.models.gpt import unwrap
from megatron_dsm.training.arguments import TrainConfig


class CheckpointManager:
    def __init__(self, train: TrainConfig, writer):
        self.save_dir, self.interval = train.save, train.save_interval
        self.load_from, self.finetune = train.load, train.finetune
        self.writer = writer
        self.last_saved: int | None = None

    def due(self, iteration: int) -> bool:
        """A save is due at this iteration (``--save-interval``)."""
        return bool(self.save_dir and self.interval and iteration % self.interval == 0)

    def final_due(self, iteration: int) -> bool:
        """At the end of a fit: the state is not saved yet."""
        return bool(self.save_dir) and iteration > 0 and self.last_saved != iteration

    def save(self, trainer, stage=None) -> Path:
        t0 = time.perf_counter()
        common = trainer.state_dict()
        if stage is not None:
            common.update(stage.state_dict())
        path = checkpoint.save_checkpoint(
            self.save_dir, trainer.iteration, unwrap(trainer.model), trainer.optimizer, common,
            platform.rng_state(), write_files=stage.write_files if stage is not None else None)
        self.last_saved = trainer.iteration
        self.writer.text(f"saved checkpoint {path} in {time.perf_counter() - t0:.2f}s")
        return path

    def load(self, trainer, stage=None) -> dict:
        """Restore ``--load`` into the trainer (and the stage); returns the
        checkpoint's common state (``loaded_from`` names its directory)."""
        common = checkpoint.load_checkpoint(self.load_from, unwrap(trainer.model), trainer.optimizer,
                                            finetune=self.finetune)
        if not self.finetune:
            trainer.load_state_dict(common)
            if "rng" in common:
                platform.set_rng_state(common["rng"])
        self.writer.text(f"loaded checkpoint {common.get('loaded_from')} "
                         f"(iteration {trainer.iteration}{', finetune' if self.finetune else ''})")
        if stage is not None:
            stage.load_state_dict(common, Path(common["loaded_from"]))
        return common
