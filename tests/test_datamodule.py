"""GradualDataModule: selection by category, base restriction, replay, deterministic redraws, resume."""

import pytest
import torch
from omegaconf import OmegaConf

from gradual_lightning.records import QARecord
from gradual_lightning.training import GradualDataModule, Stage, collate, encode_qa

CATS = ["HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown"]
POOL = [QARecord(id=f"q{i}", relation="P17", question=f"Which country is city {i} in?", answers=(f"Land{i}",))
        for i in range(40)]
BASE = {r.id: CATS[i % 4] for i, r in enumerate(POOL)}  # 10 of each
NOW = {**BASE, "q1": "HighlyKnown", "q2": "MaybeKnown"}  # q1 MK -> HK, q2 WK -> MK


@pytest.fixture(scope="module")
def tokenizer():
    from gradual_lightning.models import load_model

    return load_model(OmegaConf.load("conf/model/tiny_random.yaml")).tokenizer


def _dm(**kw) -> GradualDataModule:
    return GradualDataModule(POOL, dev=POOL[:4], batch_size=kw.pop("batch_size", 4), seed=kw.pop("seed", 7), **kw)


def test_select_by_current_category():
    dm = _dm()
    summary = dm.set_stage(0, Stage(categories=("MaybeKnown",)), BASE, BASE)
    assert dm.selected_ids == [r.id for r in POOL if BASE[r.id] == "MaybeKnown"]
    assert summary["n_selected"] == 10 and summary["n_replay"] == 0
    dm.set_stage(1, Stage(categories=("MaybeKnown",), index=1), NOW, BASE)
    assert "q1" not in dm.selected_ids and "q2" in dm.selected_ids and len(dm.selected_ids) == 10
    assert dm.target_ids == {r.id for r in POOL if BASE[r.id] == "MaybeKnown"} | {"q2"}


def test_base_categories_restriction_and_all_and_previous():
    dm = _dm()
    dm.set_stage(0, Stage(categories=("MaybeKnown", "HighlyKnown"), base_categories=("MaybeKnown",)), NOW, BASE)
    assert set(dm.selected_ids) == {r.id for r in POOL if BASE[r.id] == "MaybeKnown"}  # q1 now HK, base MK
    first = list(dm.selected_ids)
    dm.set_stage(1, Stage(select="previous", index=1), {q: "Unknown" for q in NOW}, BASE)
    assert dm.selected_ids == first
    dm.set_stage(2, Stage(select="all", index=2), NOW, BASE)
    assert dm.selected_ids == [r.id for r in POOL]
    with pytest.raises(ValueError, match="base probe"):
        dm.select_ids(Stage(categories=("Unknown",), base_categories=("Unknown",)), NOW, None)


def test_newly_selected():
    dm = _dm()
    stage = Stage(categories=("MaybeKnown",))
    assert dm.newly_selected(stage, BASE) == 10
    dm.set_stage(0, stage, BASE)
    assert dm.newly_selected(stage, BASE) == 0
    assert dm.newly_selected(stage, NOW) == 1  # q2


def test_replay_ratio_and_redraw_per_epoch():
    dm = _dm()
    stage = Stage(categories=("MaybeKnown",), replay_ratio=0.2, index=1)
    dm.set_stage(1, stage, NOW, BASE)
    hk_now = {q for q, c in NOW.items() if c == "HighlyKnown"}
    assert dm.n_replay == 2 and set(dm.replay_pool_ids) == hk_now

    def replay(plan):
        return sorted(q for b in plan for q in b if q not in dm.selected_ids)

    p0, p0_again, p1 = dm.epoch_plan(0), dm.epoch_plan(0), dm.epoch_plan(1)
    assert p0 == p0_again and p0 != p1
    assert len(replay(p0)) == 2 and set(replay(p0)) <= hk_now
    assert sorted(q for b in p0 for q in b if q in dm.selected_ids) == sorted(dm.selected_ids)
    assert [len(b) for b in p0] == [4, 4, 4]
    epochs = {tuple(replay(dm.epoch_plan(e))) for e in range(6)}
    assert len(epochs) > 1  # redrawn across epochs
    other_seed = _dm(seed=8)
    other_seed.set_stage(1, stage, NOW, BASE)
    assert [other_seed.epoch_plan(e) for e in range(3)] != [dm.epoch_plan(e) for e in range(3)]


def test_replay_every_step_draws_per_batch():
    dm = _dm(batch_size=3)
    dm.set_stage(0, Stage(categories=("MaybeKnown",), replay_ratio=0.5, replay_every="step"), NOW, BASE)
    plan = dm.epoch_plan(0)
    assert plan == dm.epoch_plan(0)
    assert sum(len(b) for b in plan) == 10 + 5 and len(plan) == 5
    sel = [q for b in plan for q in b if q in dm.selected_ids]
    assert sorted(sel) == sorted(dm.selected_ids)
    assert all(sum(q not in dm.selected_ids for q in b) == 1 for b in plan)  # one replay per batch


def test_replay_capped_by_candidates():
    dm = _dm()
    dm.set_stage(0, Stage(categories=("Unknown", "WeaklyKnown", "MaybeKnown"), replay_ratio=1.0), BASE, BASE)
    assert dm.n_replay == 10  # only 10 HighlyKnown exist


def test_state_dict_round_trip_gives_same_partition_and_batches():
    dm = _dm()
    dm.set_stage(0, Stage(categories=("MaybeKnown",)), BASE, BASE)
    dm.set_stage(1, Stage(categories=("MaybeKnown",), replay_ratio=0.2, index=1), NOW, BASE)
    state = dm.state_dict()
    restored = OmegaConf.to_container(OmegaConf.create(state))  # plain containers only
    assert restored == state
    fresh = _dm()
    fresh.load_state_dict(state)
    assert fresh.selected_ids == dm.selected_ids and fresh.stage_index == 1
    assert fresh.target_ids == dm.target_ids and fresh.history == dm.history
    assert [fresh.epoch_plan(e) for e in range(3)] == [dm.epoch_plan(e) for e in range(3)]
    with pytest.raises(ValueError, match="not in the pool"):
        GradualDataModule(POOL[:5]).load_state_dict(state)


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
    with pytest.raises(RuntimeError, match="set_stage"):
        dm.train_dataloader()
    dm.set_stage(0, Stage(categories=("MaybeKnown",), replay_ratio=0.2), NOW, BASE)
    batches = list(dm.train_dataloader())
    assert sum(len(b["input_ids"]) for b in batches) == 12
    assert all(isinstance(b["labels"], torch.Tensor) for b in batches)
    assert len(dm.trained_ids) == 12 and set(dm.selected_ids) <= dm.trained_ids
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
