"""Lightning callback of a stage: dev accuracy each epoch, and keeping the best epoch's weights."""

from __future__ import annotations

import logging
from typing import Any

import pytorch_lightning as pl

from gradual_lightning.training.metrics import accuracy

log = logging.getLogger(__name__)


class DevAccuracyCallback(pl.Callback):
    """Greedy dev accuracy at the end of every training epoch (logged as `dev/accuracy`); with keep=best the
    weights of the best epoch are put back when the stage's fit ends, so stages are selected on dev, never test.

    `dev_accuracy(model) -> {question id: correct}` is the prober's (`Prober.dev_accuracy`); the recipe reads
    `result()` after the fit."""

    def __init__(self, dev_accuracy, keep: str = "best") -> None:
        self.dev_accuracy, self.keep = dev_accuracy, keep
        self.history: list[float] = []
        self.best_epoch: int | None = None
        self._best_state = None

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module) -> None:
        acc = accuracy(list(self.dev_accuracy(pl_module.hf_model).values())) or 0.0
        self.history.append(acc)
        pl_module.log("dev/accuracy", acc, prog_bar=True)
        if self.keep == "best" and (self.best_epoch is None or acc > self.history[self.best_epoch]):
            self.best_epoch, self._best_state = trainer.current_epoch, pl_module.trainable_state()
        elif self.keep == "last":
            self.best_epoch = trainer.current_epoch

    def on_fit_end(self, trainer: pl.Trainer, pl_module) -> None:
        if self.keep == "best" and self._best_state is not None:
            pl_module.load_trainable_state(self._best_state)
            log.info("kept epoch %d (dev accuracy %.3f)", self.best_epoch, self.history[self.best_epoch])
        self._best_state = None

    def result(self) -> dict[str, Any]:
        """dev_accuracy (of the kept epoch), dev_accuracy_per_epoch and kept_epoch, for the stage's record."""
        best = None if self.best_epoch is None else self.history[self.best_epoch]
        return {"dev_accuracy": best, "dev_accuracy_per_epoch": list(self.history), "kept_epoch": self.best_epoch}
