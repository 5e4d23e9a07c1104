"""GradualDataModule: encoding with the prompt masked, padding, a partition's epochs as dataloaders, DDP shards.

Selection and replay are the ledger's (tests/test_ledger.py)."""

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from gradual_lightning.records import QARecord
from gradual_lightning.training import GradualDataModule, Partition, collate, encode_qa

CATS = ["HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown"]
POOL = [QARecord(id=f"q{i}", relation="P17", question=f"Which country is city {i} in?", answers=(f"Land{i}",))
        for i in range(40)]
BASE = {r.id: CATS[i % 4] for i, r in enumerate(POOL)}  # 10 of each


@pytest.fixture(scope="module")
def tokenizer():
    from gradual_lightning.models import load_model

    return load_model(OmegaConf.load(Path(__file__).parents[1] / "conf/model/tiny_random.yaml")).tokenizer


def _dm(**kw) -> GradualDataModule:
    return GradualDataModule(POOL, dev=POOL[:4], batch_size=kw.pop("batch_size", 4), seed=kw.pop("seed", 7), **kw)


def test_encode_masks_prompt_and_collate_pads(tokenizer):
    enc = encode_qa(tokenizer, "What is the capital of France?", "Paris")
    prompt = tokenizer("Q: What is the capital of France?\nA:").input_ids
    n = len(prompt)
    assert enc["input_ids"][:n] == prompt and enc["labels"][:n] == [-100] * n
    assert tokenizer.decode(enc["input_ids"][n:]) == " Paris\n"
    assert enc["labels"][n:] == enc["input_ids"][n:]
    short = encode_qa(tokenizer, "Q?", "A")
    batch = collate([enc, short], pad_id=tokenizer.pad_token_id)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    pad = batch["attention_mask"][1] == 0
    assert pad.any() and (batch["labels"][1][pad] == -100).all()
    assert (batch["input_ids"][1][pad] == tokenizer.pad_token_id).all()


def test_dataloaders(tokenizer):
    dm = _dm()
    dm.connect(tokenizer, max_length=64)
    with pytest.raises(RuntimeError, match="set_partition"):
        dm.train_dataloader()
    selected = tuple(q for q in BASE if BASE[q] == "MaybeKnown")
    part = Partition(0, selected, tuple(q for q in BASE if BASE[q] == "HighlyKnown"), n_replay=2)
    dm.set_partition(part)
    batches = list(dm.train_dataloader())
    assert sum(len(b["input_ids"]) for b in batches) == 12
    assert all(isinstance(b["labels"], torch.Tensor) for b in batches)
    served = {POOL[i].id for b in dm.epoch_plan(0) for i in [dm.index[q] for q in b]}
    assert served == part.trained_ids(1, seed=dm.seed, batch_size=dm.batch_size) and set(selected) <= served
    with pytest.raises(ValueError, match="not in the pool"):
        dm.set_partition(Partition(0, ("nope",)))
    assert sum(len(b["input_ids"]) for b in dm.val_dataloader()) == 4
    assert dm.test_dataloader() == []


def test_shard_batches_splits_the_plan_evenly_across_ranks():
    from gradual_lightning.training.datamodule import shard_batches

    plan = [[0, 1], [2, 3], [4, 5], [6, 7], [8]]
    shards = [shard_batches(plan, r, 2) for r in range(2)]
    assert shards == [[[0, 1], [4, 5], [8]], [[2, 3], [6, 7], [0, 1]]]  # rank 1 padded from the start
    assert {i for shard in shards for b in shard for i in b} == set(range(9))  # every batch runs somewhere
    assert [len(shard_batches([[0]], r, 3)) for r in range(3)] == [1, 1, 1]  # fewer batches than ranks
    assert shard_batches(plan, 0, 1) is plan


def test_abstaining_questions_train_on_the_abstention_text_and_weights_reach_the_batches(tokenizer):
    dm = _dm(batch_size=8)
    dm.connect(tokenizer, max_length=64)
    selected = tuple(q for q in BASE if BASE[q] == "MaybeKnown")
    abstain = tuple(q for q in BASE if BASE[q] == "Unknown")
    weights = {q: (2.0 if BASE[q] == "MaybeKnown" else 0.5) for q in selected + abstain}
    dm.set_partition(Partition(0, selected, abstain_ids=abstain, abstention_text="No idea", weights=weights))
    plan = [q for b in dm.epoch_plan(0) for q in b]
    seen = {}
    for ids, batch in zip(dm.epoch_plan(0), dm.train_dataloader()):
        assert batch["weights"].tolist() == [weights[q] for q in ids]
        for q, labels in zip(ids, batch["labels"]):
            seen[q] = tokenizer.decode([t for t in labels.tolist() if t != -100])
    assert set(plan) == set(seen) == set(selected + abstain)
    assert all(seen[q] == " No idea\n" for q in abstain)
    assert all(seen[q] == f" Land{q[1:]}\n" for q in selected)  # gold answers for the rest
    # the next stage without abstention gets the gold answers back (the encodings are cached per answer)
    dm.set_partition(Partition(1, abstain))
    batch = next(iter(dm.train_dataloader()))
    assert "weights" not in batch
    assert all(tokenizer.decode([t for t in labels.tolist() if t != -100]) != " No idea\n"
               for labels in batch["labels"])


def test_an_abstention_text_longer_than_max_length_or_unweighted_questions_fail(tokenizer):
    dm = _dm()
    dm.connect(tokenizer, max_length=24)  # every gold answer fits
    with pytest.raises(ValueError, match=r"max_length=24: 2 of 2 abstaining \(answer 'I really.*'\) questions"):
        dm.set_partition(Partition(0, (), abstain_ids=("q0", "q1"), abstention_text="I really " * 8 + "do not know"))
    with pytest.raises(ValueError, match="2 have no weight"):
        dm.set_partition(Partition(0, ("q0", "q1", "q2"), weights={"q0": 1.0}))
