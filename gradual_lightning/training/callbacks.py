"""Lightning callbacks of a stage: dev accuracy each epoch, and keeping the best epoch's weights."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pytorch_lightning as pl
from pytorch_lightning.utilities.seed import isolate_rng

from gradual_lightning.probing.config import ProbeConfig
from gradual_lightning.records import QARecord
from gradual_lightning.training.evaluation import correct_by_id
from gradual_lightning.training.metrics import accuracy

log = logging.getLogger(__name__)


class DevAccuracyCallback(pl.Callback):
    """Greedy dev accuracy at the end of every training epoch (logged as `dev/accuracy`); with keep=best the
    weights of the best epoch are put back when the stage's fit ends, so stages are selected on dev, never test."""

    def __init__(self, dev: Sequence[QARecord], exemplars: Sequence[QARecord], probe_cfg: ProbeConfig,
                 keep: str = "best") -> None:
        self.dev, self.exemplars, self.probe_cfg, self.keep = list(dev), list(exemplars), probe_cfg, keep
        self.history: list[float] = []
        self.best_epoch: int | None = None
        self._best_state = None

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module) -> None:
        with isolate_rng():  # evaluating must not shift the training RNG
            correct = correct_by_id(pl_module.hf_model, pl_module.tokenizer, self.dev, self.exemplars,
                                    self.probe_cfg, desc="dev")
        acc = accuracy(list(correct.values())) or 0.0
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

    @property
    def best_accuracy(self) -> float | None:
        return None if self.best_epoch is None else self.history[self.best_epoch]
