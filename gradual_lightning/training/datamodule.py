"""GradualDataModule: serves the epochs of the current stage's partition (chosen by the `KnowledgeLedger`).

A stage's training set = the pool questions the ledger selected plus replay questions drawn afresh each epoch (or
each batch) with a seed derived from (seed, stage, epoch) (`Partition.epoch_plan`), so a resumed run sees exactly
the same batches. The module holds no selection state of its own: the recipe hands it each stage's partition.
The partition also says which questions train on the abstention text instead of their gold answer
(`Partition.answers()`) and each question's loss weight (`Partition.weights`, served as a batch's `weights`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from functools import partial
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from gradual_lightning.probing.batching import pad_batch
from gradual_lightning.records import QARecord
from gradual_lightning.training.ledger import Partition

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


def collate(examples: Sequence[Mapping[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad: input_ids with `pad_id`, labels with -100, attention_mask 0 on padding; examples that carry a
    `weight` give the batch its `weights` (one float per example)."""
    ids, mask = pad_batch([e["input_ids"] for e in examples], pad_id, "right")
    labels, _ = pad_batch([e["labels"] for e in examples], -100, "right")
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    if examples and "weight" in examples[0]:
        batch["weights"] = torch.tensor([float(e["weight"]) for e in examples], dtype=torch.float32)
    return batch


class _QADataset(Dataset):
    """Records encoded on first use (the pool can be large; a stage touches only part of it). `answers` replaces
    some questions' gold answer (abstention), `weights` adds each example's loss weight: both are the current
    partition's, set before each epoch's dataloader."""

    def __init__(self, records: Sequence[QARecord], tokenizer: Any, max_length: int | None) -> None:
        self.records, self.tokenizer, self.max_length = list(records), tokenizer, max_length
        self.answers: Mapping[str, str] = {}
        self.weights: Mapping[str, float] | None = None
        self._cache: dict[tuple[int, str], dict[str, list[int]]] = {}

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict[str, Any]:
        r = self.records[i]
        answer = self.answers.get(r.id, r.answer)
        if (i, answer) not in self._cache:
            self._cache[i, answer] = encode_qa(self.tokenizer, r.question, answer, self.max_length)
        if self.weights is None:
            return self._cache[i, answer]
        return {**self._cache[i, answer], "weight": self.weights[r.id]}


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
    """Holds pool/dev/test records; `set_partition(...)` fixes the stage's partition; `train_dataloader()` plans one
    epoch of it. Call `connect(tokenizer, max_length)` before any dataloader.

    The recipe builds each stage's Trainer with `reload_dataloaders_every_n_epochs=1`, so the plan (and its replay
    draw) is made afresh for every epoch."""

    def __init__(self, pool: Sequence[QARecord], dev: Sequence[QARecord] = (), test: Sequence[QARecord] = (),
                 batch_size: int = 16, eval_batch_size: int | None = None, seed: int = 0, num_workers: int = 0,
                 max_length: int | None = 128) -> None:
        super().__init__()
        self.pool, self.dev, self.test = list(pool), list(dev), list(test)
        ids = [r.id for r in self.pool]
        if len(set(ids)) != len(ids):
            raise ValueError("GradualDataModule: the training pool holds duplicate question ids")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        self.index = {qid: i for i, qid in enumerate(ids)}
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.seed, self.num_workers, self.max_length = int(seed), num_workers, max_length
        self.tokenizer: Any = None
        self._datasets: dict[str, _QADataset] = {}
        self.partition: Partition | None = None
        self.epoch = 0  # used when no trainer is attached; otherwise trainer.current_epoch

    # ---- runtime facts -------------------------------------------------------------------------------------------
    def connect(self, tokenizer: Any, max_length: int | None = None) -> None:
        """Give the tokenizer (and optionally a max sequence length) once the model is loaded."""
        self.tokenizer = tokenizer
        if max_length is not None:
            self.max_length = max_length
        if tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token; set tokenizer.pad_token first")
        self._datasets = {}
        if self.max_length is not None:
            self._check_lengths()

    def _check_lengths(self) -> None:
        """Fail before training when max_length would cut answers off (the loss would train on a truncated answer,
        or be NaN with every answer token gone)."""
        for split, records in (("pool", self.pool), ("dev", self.dev)):
            self._check_answers(records, {}, split)

    def _check_answers(self, records: Sequence[QARecord], answers: Mapping[str, str], what: str) -> None:
        lengths = {r.id: len(encode_qa(self.tokenizer, r.question, answers.get(r.id, r.answer))["input_ids"])
                   for r in records}
        over = {q: n for q, n in lengths.items() if n > self.max_length}
        if over:
            worst = max(over, key=over.get)
            raise ValueError(f"max_length={self.max_length}: {len(over)} of {len(records)} {what} questions are "
                             f"longer with their answer (up to {over[worst]} tokens, e.g. {worst!r}), so training "
                             f"would cut their answers off; set max_length={over[worst]} or more")

    def _dataset(self, split: str) -> _QADataset:
        if self.tokenizer is None:
            raise RuntimeError("GradualDataModule: call connect(tokenizer) before asking for a dataloader")
        if split not in self._datasets:
            records = {"pool": self.pool, "dev": self.dev, "test": self.test}[split]
            self._datasets[split] = _QADataset(records, self.tokenizer, self.max_length)
        return self._datasets[split]

    # ---- the stage -----------------------------------------------------------------------------------------------
    def set_partition(self, partition: Partition) -> None:
        unknown = [q for q in (*partition.train_ids, *partition.replay_pool_ids) if q not in self.index]
        if unknown:
            raise ValueError(f"the partition names {len(unknown)} ids not in the pool (e.g. {unknown[0]!r})")
        if partition.weights is not None:
            replay = partition.replay_pool_ids if partition.n_replay else ()
            unweighted = [q for q in (*partition.train_ids, *replay) if q not in partition.weights]
            if unweighted:
                raise ValueError(f"the partition weighs its questions but {len(unweighted)} have no weight "
                                 f"(e.g. {unweighted[0]!r})")
        if partition.abstain_ids and self.max_length is not None and self.tokenizer is not None:
            self._check_answers([self.pool[self.index[q]] for q in partition.abstain_ids], partition.answers(),
                                f"abstaining (answer {partition.abstention_text!r})")
        self.partition = partition

    def epoch_plan(self, epoch: int) -> list[list[str]]:
        """The batches (lists of ids) of one epoch of the current stage."""
        if self.partition is None:
            raise RuntimeError("GradualDataModule: call set_partition(...) before training")
        return self.partition.epoch_plan(epoch, seed=self.seed, batch_size=self.batch_size)

    # ---- dataloaders ---------------------------------------------------------------------------------------------
    def _current_epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else self.epoch

    def train_dataloader(self) -> DataLoader:
        plan = self.epoch_plan(self._current_epoch())
        batches = [[self.index[q] for q in batch] for batch in plan]
        dataset = self._dataset("pool")
        dataset.answers, dataset.weights = self.partition.answers(), self.partition.weights
        trainer = self.trainer
        if trainer is not None and trainer.world_size > 1:  # every rank plans the same epoch and runs its share
            batches = shard_batches(batches, trainer.global_rank, trainer.world_size)
        return DataLoader(dataset, batch_sampler=_FixedBatches(batches), num_workers=self.num_workers,
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
