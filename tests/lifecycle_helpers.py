"""A Lightning callback for the real-process SIGTERM tests (loaded by train.py through `+callbacks.*._target_`).

It marks the start of a stage's fit with a file and slows every batch a little, so a signal sent after the mark lands
inside the fit on a fast idle machine as on a loaded one."""

import time
from pathlib import Path

import pytorch_lightning as pl


class MarkFitAndSlowDown(pl.Callback):
    def __init__(self, marker: str, stage_epochs: int, seconds_per_batch: float = 0.5) -> None:
        self.marker, self.stage_epochs, self.seconds = Path(marker), stage_epochs, seconds_per_batch

    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.max_epochs == self.stage_epochs:  # the stage to interrupt (its epochs tell it apart)
            self.marker.touch()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.max_epochs == self.stage_epochs:
            time.sleep(self.seconds)
