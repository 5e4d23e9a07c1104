"""Gradual fine-tuning: stage schedules, the data module that re-partitions the pool, the LoRA/full module, metrics.

The names below load on first use, so `gradual_lightning.training.metrics` (pure Python: the sweep report uses
it) does not pull in torch and Lightning.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "GradualDataModule": "datamodule", "collate": "datamodule", "encode_qa": "datamodule",
    "KnowledgeLedger": "ledger", "Partition": "ledger",
    "CausalLMModule": "module", "FinetuneConfig": "module", "warmup_lr_scheduler": "module",
    "Schedule": "schedules", "ScheduleError": "schedules", "Stage": "schedules", "from_config": "schedules",
}
__all__ = ["CausalLMModule", "FinetuneConfig", "GradualDataModule", "KnowledgeLedger", "Partition", "Schedule",
           "ScheduleError", "Stage",
           "collate", "encode_qa", "from_config", "warmup_lr_scheduler"]

if TYPE_CHECKING:
    from gradual_lightning.training.datamodule import GradualDataModule, collate, encode_qa
    from gradual_lightning.training.ledger import KnowledgeLedger, Partition
    from gradual_lightning.training.module import CausalLMModule, FinetuneConfig, warmup_lr_scheduler
    from gradual_lightning.training.schedules import Schedule, ScheduleError, Stage, from_config


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value
