"""GradualDataModule: the training pool re-partitioned at every stage boundary from the latest probe.

A stage's training set = the pool questions its `select` rule picks (see `schedules.Stage`) plus replay questions drawn
afresh each epoch (or each batch) with a seed derived from (seed, stage, epoch), so a resumed run sees exactly the
same batches. Everything a resume needs is in `state_dict()` as plain lists, dicts, strings and ints.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Iterator, Mapping, Sequence
from functools import partial
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from gradual_lightning.records import QARecord
from gradual_lightning.training.schedules import Stage

log = logging.getLogger(__name__)

PROMPT = "Q: {question}\nA:"  # the zero-shot form of the probing prompt; generation stops at "\n"
COMPLETION = " {answer}\n"  # canonical alias, then "\n" so the model learns to stop where probing stops


def encode_qa(tokenizer: Any, question: str, answer: str, max_length: int | None = None) -> dict[str, list[int]]:
    """Token ids of `Q: question\\nA: answer\\n` and labels that are -100 on the prompt (loss on the answer only).

    The prompt is tokenized like a generation prompt (with the tokenizer's special tokens, e.g. BOS) and the answer
    separately, so the prompt/answer boundary is exact."""
    prompt = tokenizer(PROMPT.format(question=question)).input_ids
    answer_ids = tokenizer(COMPLETION.format(answer=answer), add_special_tokens=False).input_ids
    ids, labels = prompt + answer_ids, [-100] * len(prompt) + answer_ids
    if max_length is not None:
        ids, labels = ids[:max_length], labels[:max_length]
    return {"input_ids": ids, "labels": labels}


def collate(examples: Sequence[Mapping[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad: input_ids with `pad_id`, labels with -100, attention_mask 0 on padding."""
    width = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e["input_ids"])
        ids[i, :n] = torch.tensor(e["input_ids"])
        labels[i, :n] = torch.tensor(e["labels"])
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


class _QADataset(Dataset):
    """Records encoded on first use (the pool can be large; a stage touches only part of it)."""

    def __init__(self, records: Sequence[QARecord], tokenizer: Any, max_length: int | None) -> None:
        self.records, self.tokenizer, self.max_length = list(records), tokenizer, max_length
        self._cache: dict[int, dict[str, list[int]]] = {}

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        if i not in self._cache:
            r = self.records[i]
            self._cache[i] = encode_qa(self.tokenizer, r.question, r.answer, self.max_length)
        return self._cache[i]


class _FixedBatches(Sampler):
    """A precomputed epoch plan (lists of dataset indices) used as a batch sampler."""

    def __init__(self, batches: list[list[int]]) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def shard_batches(batches: list[list[int]], rank: int, world_size: int) -> list[list[int]]:
    """This rank's share of an epoch plan: every `world_size`-th batch. The plan is padded by cycling from its start
    so that every rank runs the same number of steps (DDP hangs otherwise), as DistributedSampler pads samples."""
    if world_size <= 1 or not batches:
        return batches
    n = math.ceil(len(batches) / world_size) * world_size
    return [batches[i % len(batches)] for i in range(n)][rank::world_size]


class GradualDataModule(pl.LightningDataModule):
    """Holds pool/dev/test records; `set_stage(...)` fixes the stage's partition; `train_dataloader()` plans one epoch.

    Call `connect(tokenizer, max_length)` before any dataloader. `trained_ids` is every question that appeared in a
    planned training epoch (selected or replayed); `target_ids` only those a stage selected.
    """

    def __init__(self, pool: Sequence[QARecord], dev: Sequence[QARecord] = (), test: Sequence[QARecord] = (),
                 batch_size: int = 16, eval_batch_size: int | None = None, seed: int = 0, num_workers: int = 0,
                 max_length: int | None = 128) -> None:
        super().__init__()
        self.pool, self.dev, self.test = list(pool), list(dev), list(test)
        ids = [r.id for r in self.pool]
        if len(set(ids)) != len(ids):
            raise ValueError("GradualDataModule: the training pool holds duplicate question ids")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.index = {qid: i for i, qid in enumerate(ids)}
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.seed, self.num_workers, self.max_length = int(seed), num_workers, max_length
        self.tokenizer: Any = None
        self._datasets: dict[str, _QADataset] = {}
        self._reset_partition()
        self.target_ids: set[str] = set()
        self.trained_ids: set[str] = set()
        self.history: list[dict[str, Any]] = []
        self.epoch = 0  # used when no trainer is attached; otherwise trainer.current_epoch

    def _reset_partition(self) -> None:
        self.stage_index = -1
        self.stage: dict[str, Any] | None = None
        self.selected_ids: list[str] = []
        self.replay_pool_ids: list[str] = []
        self.n_replay = 0
        self.replay_every = "epoch"

    # ---- runtime facts -------------------------------------------------------------------------------------------
    def connect(self, tokenizer: Any, max_length: int | None = None) -> None:
        """Give the tokenizer (and optionally a max sequence length) once the model is loaded."""
        self.tokenizer = tokenizer
        if max_length is not None:
            self.max_length = max_length
        if tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token; set tokenizer.pad_token first")
        self._datasets = {}

    def _dataset(self, split: str) -> _QADataset:
        if self.tokenizer is None:
            raise RuntimeError("GradualDataModule: call connect(tokenizer) before asking for a dataloader")
        if split not in self._datasets:
            records = {"pool": self.pool, "dev": self.dev, "test": self.test}[split]
            self._datasets[split] = _QADataset(records, self.tokenizer, self.max_length)
        return self._datasets[split]

    # ---- partition -----------------------------------------------------------------------------------------------
    def select_ids(self, stage: Stage, current: Mapping[str, str],
                   base: Mapping[str, str] | None = None) -> list[str]:
        """The ids `stage` would train on (pool order), without replay and without changing any state."""
        if stage.select == "previous":
            if self.stage_index < 0:
                raise ValueError("select=previous: no previous stage has been set")
            return list(self.selected_ids)
        if stage.base_categories is not None and base is None:
            raise ValueError("stage has base_categories but no base probe was given")
        missing = sum(r.id not in current for r in self.pool)
        if missing and stage.select == "categories":
            log.warning("%d of %d pool questions have no category in the probe; they are not selected",
                        missing, len(self.pool))
        out = []
        for r in self.pool:
            if stage.select == "categories" and current.get(r.id) not in stage.categories:
                continue
            if stage.base_categories is not None and base.get(r.id) not in stage.base_categories:
                continue
            out.append(r.id)
        return out

    def newly_selected(self, stage: Stage, current: Mapping[str, str], base: Mapping[str, str] | None = None) -> int:
        """How many questions `stage` would select that no earlier stage selected (0: a repeated stage is stable)."""
        return sum(q not in self.target_ids for q in self.select_ids(stage, current, base))

    def set_stage(self, stage_index: int, stage: Stage, current: Mapping[str, str],
                  base: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Fix the partition of stage `stage_index` from the latest probe (`current`) and the base probe.
        Returns the summary also appended to `history`."""
        selected = self.select_ids(stage, current, base)
        chosen = set(selected)
        replay_pool = [r.id for r in self.pool if r.id not in chosen and current.get(r.id) in stage.replay_categories]
        wanted = round(stage.replay_ratio * len(selected))
        n_replay = min(wanted, len(replay_pool))
        if n_replay < wanted:
            log.warning("stage %d: replay wants %d questions but only %d are %s", stage_index, wanted,
                        len(replay_pool), list(stage.replay_categories))
        if not selected:
            log.warning("stage %d selects no question: it will train on nothing", stage_index)
        self.stage_index, self.stage = int(stage_index), stage.to_dict()
        self.selected_ids, self.replay_pool_ids = selected, replay_pool if n_replay else []
        self.n_replay, self.replay_every = n_replay, stage.replay_every
        self.target_ids.update(selected)
        summary = {"stage": self.stage_index, "n_selected": len(selected), "n_replay_pool": len(replay_pool),
                   "n_replay": n_replay, "replay_every": stage.replay_every}
        self.history.append(summary)
        return summary

    def epoch_plan(self, epoch: int) -> list[list[str]]:
        """The batches (lists of ids) of one epoch of the current stage; a pure function of the state and `epoch`.

        replay_every=epoch: one replay sample per epoch, shuffled in with the selection. replay_every=step: the
        selection is spread over the batches and every batch draws its own replay questions."""
        rng = random.Random(f"{self.seed}/{self.stage_index}/{epoch}")
        b = self.batch_size
        if self.replay_every == "epoch":
            ids = self.selected_ids + rng.sample(self.replay_pool_ids, self.n_replay)
            rng.shuffle(ids)
            return [ids[i:i + b] for i in range(0, len(ids), b)]
        sel = list(self.selected_ids)
        rng.shuffle(sel)
        nb = math.ceil((len(sel) + self.n_replay) / b)
        batches = []
        for k in range(nb):
            n_rep = (k + 1) * self.n_replay // nb - k * self.n_replay // nb
            batch = sel[k * len(sel) // nb:(k + 1) * len(sel) // nb] + rng.sample(self.replay_pool_ids, n_rep)
            rng.shuffle(batch)
            batches.append(batch)
        return batches

    # ---- dataloaders ---------------------------------------------------------------------------------------------
    def _current_epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else self.epoch

    def train_dataloader(self) -> DataLoader:
        if self.stage_index < 0:
            raise RuntimeError("GradualDataModule: call set_stage(...) before training")
        trainer = self.trainer
        if self.n_replay and trainer is not None and trainer.reload_dataloaders_every_n_epochs != 1:
            log.warning("replay is redrawn per epoch only with Trainer(reload_dataloaders_every_n_epochs=1)")
        plan = self.epoch_plan(self._current_epoch())
        for batch in plan:
            self.trained_ids.update(batch)
        batches = [[self.index[q] for q in batch] for batch in plan]
        if trainer is not None and trainer.world_size > 1:  # every rank plans the same epoch and runs its share
            batches = shard_batches(batches, trainer.global_rank, trainer.world_size)
        return DataLoader(self._dataset("pool"), batch_sampler=_FixedBatches(batches), num_workers=self.num_workers,
                          collate_fn=partial(collate, pad_id=self.tokenizer.pad_token_id))

    def _eval_loader(self, split: str) -> DataLoader | list:
        ds = self._dataset(split)
        if not len(ds):
            return []
        return DataLoader(ds, batch_size=self.eval_batch_size, shuffle=False, num_workers=self.num_workers,
                          collate_fn=partial(collate, pad_id=self.tokenizer.pad_token_id))

    def val_dataloader(self) -> DataLoader | list:
        return self._eval_loader("dev")

    def test_dataloader(self) -> DataLoader | list:
        return self._eval_loader("test")

    # ---- resume --------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "batch_size": self.batch_size, "stage_index": self.stage_index,
                "stage": self.stage, "selected_ids": list(self.selected_ids),
                "replay_pool_ids": list(self.replay_pool_ids), "n_replay": self.n_replay,
                "replay_every": self.replay_every, "target_ids": sorted(self.target_ids),
                "trained_ids": sorted(self.trained_ids), "history": [dict(h) for h in self.history]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        unknown = [q for q in (*state["selected_ids"], *state["replay_pool_ids"]) if q not in self.index]
        if unknown:
            raise ValueError(f"checkpointed partition names {len(unknown)} ids not in the pool (e.g. {unknown[0]!r}): "
                             "the data differ from the checkpointed run")
        self.seed, self.batch_size = int(state["seed"]), int(state["batch_size"])
        self.stage_index, self.stage = int(state["stage_index"]), state["stage"]
        self.selected_ids, self.replay_pool_ids = list(state["selected_ids"]), list(state["replay_pool_ids"])
        self.n_replay, self.replay_every = int(state["n_replay"]), str(state["replay_every"])
        self.target_ids, self.trained_ids = set(state["target_ids"]), set(state["trained_ids"])
        self.history = [dict(h) for h in state["history"]]
