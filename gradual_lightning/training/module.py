"""CausalLMModule: an HF causal LM fine-tuned with LoRA (peft) or in full, with the hooks gradual learning needs.

Between stages a callback calls `merge_adapter()` + `new_adapter()` (fold the stage's LoRA into the weights and start
a fresh one), `set_stage_hparams(lr=...)`, and `trainable_state()` / `load_trainable_state()` to keep the best epoch.
The optimizer and lr scheduler arrive as Hydra `_partial_` factories (lightning-hydra-template style); the stage's lr
overrides the factory's.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import pytorch_lightning as pl
import torch

log = logging.getLogger(__name__)

LOSS_ON = ("answer", "all")
FINETUNE_MODES = ("lora", "full")
ALL_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class FinetuneConfig:
    """`mode: lora` (r, alpha, dropout, target_modules) or `mode: full` (every weight trains)."""

    mode: str = "lora"
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ALL_PROJECTIONS

    def __post_init__(self) -> None:
        if self.mode not in FINETUNE_MODES:
            raise ValueError(f"finetune.mode={self.mode!r}; expected one of {list(FINETUNE_MODES)}")
        if self.mode == "lora":
            if not isinstance(self.r, int) or self.r < 1:
                raise ValueError(f"finetune.r must be an integer >= 1, got {self.r!r}")
            if not self.alpha > 0:
                raise ValueError(f"finetune.alpha must be > 0, got {self.alpha!r}")
            if not 0 <= self.dropout < 1:
                raise ValueError(f"finetune.dropout must be in [0, 1), got {self.dropout!r}")
            if not self.target_modules:
                raise ValueError("finetune.target_modules must name at least one module")

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> FinetuneConfig:
        cfg = dict(cfg or {})
        allowed = set(cls.__dataclass_fields__)
        unknown = sorted(set(cfg) - allowed)
        if unknown:
            raise ValueError(f"finetune: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
        if "target_modules" in cfg:
            cfg["target_modules"] = tuple(cfg["target_modules"])
        return cls(**cfg)

    def lora_config(self):
        from peft import LoraConfig

        return LoraConfig(task_type="CAUSAL_LM", r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=list(self.target_modules))


def warmup_lr_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, kind: str = "cosine",
                        warmup_ratio: float = 0.1, min_lr_ratio: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup over `warmup_ratio * total_steps`, then cosine or linear decay to `min_lr_ratio * lr`."""
    if kind not in ("cosine", "linear", "constant"):
        raise ValueError(f"scheduler kind={kind!r}; expected cosine, linear or constant")
    total = max(1, int(total_steps))
    warmup = int(warmup_ratio * total)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if kind == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        decay = 0.5 * (1 + math.cos(math.pi * progress)) if kind == "cosine" else 1 - progress
        return min_lr_ratio + (1 - min_lr_ratio) * decay

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def per_example_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each example's mean next-token cross-entropy over its label tokens (labels -100 are ignored), shape (batch,):
    the causal-LM loss of one example, as the model's own loss computes it for a whole batch. NaN for an example with
    no label token (training stops on it: see training_step)."""
    target = labels[:, 1:]
    batch, steps = target.shape
    tokens = torch.nn.functional.cross_entropy(logits[:, :-1].float().reshape(batch * steps, -1), target.reshape(-1),
                                               ignore_index=-100, reduction="none").view(batch, steps)
    return tokens.sum(1) / (target != -100).sum(1)


def weighted_loss(per_example: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum_i w_i * loss_i / sum_i w_i over the batch (`loss_weights.py`): each example counts by its weight, not by
    its number of answer tokens. A batch whose weights are all 0 gives loss 0 (nothing to learn from it)."""
    weights = weights.to(per_example.dtype)
    return (weights * per_example).sum() / weights.sum().clamp_min(torch.finfo(per_example.dtype).tiny)


def _plain(x: Any) -> Any:
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(x, DictConfig | ListConfig):
            return OmegaConf.to_container(x, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    return x


class CausalLMModule(pl.LightningModule):
    """Trains `model` on batches of {input_ids, attention_mask, labels} (labels -100 outside the answer).

    `loss_on: all` also trains on the prompt tokens (labels = input_ids wherever attention_mask is 1).
    Per-stage settings: `set_stage_hparams(lr=..., total_steps=...)` before the stage's `fit`; both are read
    in `configure_optimizers` (so with one Trainer per stage each stage gets a fresh optimizer and schedule).
    """

    def __init__(self, model: Any, tokenizer: Any, finetune: Mapping[str, Any] | None = None,
                 optimizer: Callable[..., torch.optim.Optimizer] | None = None,
                 scheduler: Callable[..., Any] | None = None, loss_on: str = "answer") -> None:
        super().__init__()
        finetune = _plain(finetune)
        if loss_on not in LOSS_ON:
            raise ValueError(f"loss_on={loss_on!r}; expected one of {list(LOSS_ON)}")
        # model, tokenizer and the factories are objects, not hyperparameters (checkpoints must stay plain data)
        self.save_hyperparameters(ignore=["model", "tokenizer", "optimizer", "scheduler"], logger=False)
        self.finetune = FinetuneConfig.from_config(finetune)
        self.tokenizer = tokenizer
        self.optimizer_factory = optimizer or partial(torch.optim.AdamW, lr=2e-4, weight_decay=0.01)
        self.scheduler_factory = scheduler
        self.loss_on = loss_on
        self.stage_lr: float | None = None
        self.stage_total_steps: int | None = None
        self._carried_optimizer_state: dict | None = None
        self.model = model
        if self.finetune.mode == "lora":
            self.new_adapter()
        else:
            self.model.requires_grad_(True)

    # ---- the model and stage changes -------------------------------------------------------------------------
    @property
    def hf_model(self):
        """The model to generate with: the (peft-wrapped) model with the current adapter active."""
        return self.model

    @property
    def is_lora(self) -> bool:
        return self.finetune.mode == "lora"

    def merge_adapter(self) -> None:
        """Fold the current LoRA into the base weights (peft merge_and_unload); a no-op in full fine-tuning."""
        if not self.is_lora:
            log.info("merge_adapter: full fine-tuning has no adapter; nothing to merge")
            return
        from peft import PeftModel

        if isinstance(self.model, PeftModel):
            self.model = self.model.merge_and_unload()
            self.model.requires_grad_(False)

    def new_adapter(self) -> None:
        """Wrap the current (merged) weights in a fresh LoRA; B starts at zero, so the function is unchanged."""
        if not self.is_lora:
            return
        from peft import PeftModel, get_peft_model

        if isinstance(self.model, PeftModel):
            raise RuntimeError("new_adapter: the model still holds an adapter; call merge_adapter() first")
        self.model = get_peft_model(self.model, self.finetune.lora_config())

    def set_stage_hparams(self, lr: float | None = None, total_steps: int | None = None) -> None:
        """Settings of the next stage: its learning rate (None: the optimizer factory's) and the number of optimizer
        steps the lr schedule spans (None: `trainer.estimated_stepping_batches`, right for one Trainer per stage)."""
        self.stage_lr = None if lr is None else float(lr)
        self.stage_total_steps = total_steps

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """A CPU copy of the trainable weights (the LoRA, or everything in full mode): to keep the best epoch."""
        return {n: p.detach().to("cpu", copy=True) for n, p in self.named_parameters() if p.requires_grad}

    def load_trainable_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """Put back weights saved by `trainable_state()` (same stage, same adapter)."""
        params = dict(self.named_parameters())
        missing = sorted(set(state) - set(params))
        if missing:
            raise KeyError(f"load_trainable_state: no parameters named {missing[:3]}... in the current model")
        with torch.no_grad():
            for n, t in state.items():
                params[n].copy_(t.to(params[n].device))

    def optimizer_state(self) -> dict | None:
        """The current optimizer state, to carry into the next stage when `reset_optimizer` is false."""
        return self.trainer.optimizers[0].state_dict() if self._trainer and self.trainer.optimizers else None

    def carry_optimizer_state(self, state: dict | None) -> None:
        """Load moment estimates from `optimizer_state()` into the next stage's fresh optimizer at train start.
        Only valid when the trainable parameters are the same (no merge_adapter); lr and schedule are the new
        stage's."""
        self._carried_optimizer_state = state

    # ---- training ------------------------------------------------------------------------------------------------
    def _labels(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        if self.loss_on == "all":
            return batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        return batch["labels"]

    def forward(self, input_ids, attention_mask=None, labels=None):
        return self.model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)

    def _loss(self, batch) -> torch.Tensor:
        """The model's own loss (mean over the batch's label tokens); with per-example `weights` in the batch (a
        stage with loss_weights), the weighted mean of per-example losses instead."""
        labels = self._labels(batch)
        if "weights" not in batch:
            return self(batch["input_ids"], batch["attention_mask"], labels).loss
        logits = self(batch["input_ids"], batch["attention_mask"]).logits
        return weighted_loss(per_example_loss(logits, labels), batch["weights"])

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        if not torch.isfinite(loss):  # e.g. every label masked: never step on it
            raise FloatingPointError(f"training loss is {loss.item()} at epoch {self.current_epoch}, batch {batch_idx} "
                                     "(answers truncated away by max_length? a too high lr?)")
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(batch["input_ids"]))
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=True, on_epoch=False)
        return loss

    @torch.no_grad()
    def validation_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        self.log("val/loss", loss, on_epoch=True, prog_bar=True, batch_size=len(batch["input_ids"]))
        return loss

    def on_train_start(self) -> None:
        if self._carried_optimizer_state is not None:
            opt = self.trainer.optimizers[0]
            fresh = opt.state_dict()
            opt.load_state_dict({"state": self._carried_optimizer_state["state"],
                                 "param_groups": fresh["param_groups"]})
            self._carried_optimizer_state = None

    def configure_optimizers(self):
        decay, no_decay = [], []
        for p in self.parameters():
            if p.requires_grad:
                (decay if p.ndim >= 2 else no_decay).append(p)  # no weight decay on norms and biases
        if not decay and not no_decay:
            raise RuntimeError("configure_optimizers: the model has no trainable parameters")
        groups = [{"params": decay}] + ([{"params": no_decay, "weight_decay": 0.0}] if no_decay else [])
        kw = {} if self.stage_lr is None else {"lr": self.stage_lr}
        optimizer = self.optimizer_factory(params=groups, **kw)
        if self.scheduler_factory is None:
            return optimizer
        total = self.stage_total_steps or self.trainer.estimated_stepping_batches
        scheduler = self.scheduler_factory(optimizer=optimizer, total_steps=int(total))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
