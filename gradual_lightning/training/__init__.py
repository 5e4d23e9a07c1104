"""Gradual fine-tuning: stage schedules, the data module that re-partitions the pool, the LoRA/full module, metrics."""

from gradual_lightning.training.datamodule import GradualDataModule, collate, encode_qa
from gradual_lightning.training.module import CausalLMModule, FinetuneConfig, warmup_lr_scheduler
from gradual_lightning.training.schedules import Schedule, ScheduleError, Stage, from_config

__all__ = ["CausalLMModule", "FinetuneConfig", "GradualDataModule", "Schedule", "ScheduleError", "Stage",
           "collate", "encode_qa", "from_config", "warmup_lr_scheduler"]
