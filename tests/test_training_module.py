"""CausalLMModule mechanics on the tiny random Llama: masking, LoRA-only updates, merge/new adapter, stage hparams."""

import copy
import warnings
from functools import partial

import pytest
import pytorch_lightning as pl
import torch

from gradual_lightning.records import QARecord
from gradual_lightning.training import (
    CausalLMModule,
    GradualDataModule,
    KnowledgeLedger,
    Stage,
    collate,
    encode_qa,
    warmup_lr_scheduler,
)

LORA = {"mode": "lora", "r": 4, "alpha": 8, "dropout": 0.0,
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}
POOL = [QARecord(id=f"q{i}", relation="P17", question=f"Where is town {i}?", answers=(f"Land {i}",))
        for i in range(6)]
CATS = {r.id: "MaybeKnown" for r in POOL}


@pytest.fixture(scope="module")
def tokenizer(tiny_random):
    return tiny_random.tokenizer


@pytest.fixture
def new_module(tiny_random):
    """new_module(finetune=LORA, lr=1e-2, **kw): a CausalLMModule on its own deep copy of the session's tiny model
    (peft wraps a model in place)."""

    def make(finetune=LORA, lr=1e-2, **kw) -> CausalLMModule:
        torch.manual_seed(0)
        return CausalLMModule(copy.deepcopy(tiny_random.model), tiny_random.tokenizer, finetune=finetune,
                              optimizer=partial(torch.optim.AdamW, lr=lr, weight_decay=0.0),
                              scheduler=partial(warmup_lr_scheduler, kind="cosine", warmup_ratio=0.0), **kw)

    return make


def _data(tokenizer, batch_size=3) -> GradualDataModule:
    dm = GradualDataModule(POOL, dev=POOL[:3], batch_size=batch_size, seed=0)
    dm.connect(tokenizer, max_length=32)
    ledger = KnowledgeLedger([r.id for r in POOL])
    ledger.record_base(CATS, {}, {})
    dm.set_partition(ledger.select(Stage(categories=("MaybeKnown",))))
    return dm


def _fit(module, dm, epochs=1, limit=3):
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                         limit_train_batches=limit, reload_dataloaders_every_n_epochs=1, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, datamodule=dm)
    return trainer


@torch.no_grad()
def _dev_loss(module, dm) -> float:
    module.eval()
    losses = [module._loss(b).item() for b in dm.val_dataloader()]
    module.train()
    return sum(losses) / len(losses)


def test_labels_only_on_answer_tokens(tokenizer, new_module):
    module = new_module()
    batch = next(iter(_data(tokenizer).train_dataloader()))
    labels = module._labels(batch)
    for ids, lab, mask in zip(batch["input_ids"], labels, batch["attention_mask"]):
        kept = [int(i) for i, y in zip(ids, lab) if y != -100]
        text = tokenizer.decode(kept)
        assert text.startswith(" Land ") and text.endswith("\n") and "Q:" not in text
        assert (lab[mask == 0] == -100).all()
    everything = new_module(loss_on="all")._labels(batch)
    assert ((everything != -100) == (batch["attention_mask"] == 1)).all()
    with pytest.raises(ValueError, match="loss_on"):
        new_module(loss_on="prompt")


def test_lora_trains_only_adapter_and_lowers_loss(tokenizer, new_module):
    module, dm = new_module(), _data(tokenizer)
    frozen = {n: p.detach().clone() for n, p in module.named_parameters() if not p.requires_grad}
    lora = {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}
    assert lora and all("lora_" in n for n in lora)
    before = _dev_loss(module, dm)
    _fit(module, dm, epochs=4, limit=2)
    after = _dev_loss(module, dm)
    assert after < before
    params = dict(module.named_parameters())
    assert all(torch.equal(params[n], t) for n, t in frozen.items())
    assert any(not torch.equal(params[n], t) for n, t in lora.items())


def test_merge_then_new_adapter_keeps_the_function(tokenizer, new_module):
    module, dm = new_module(), _data(tokenizer)
    _fit(module, dm, epochs=1, limit=2)
    batch = next(iter(dm.val_dataloader()))
    module.eval()
    with torch.no_grad():
        ref = module(batch["input_ids"], batch["attention_mask"]).logits
        module.merge_adapter()
        assert not any(p.requires_grad for p in module.parameters())
        merged = module(batch["input_ids"], batch["attention_mask"]).logits
        module.new_adapter()
        fresh = module.hf_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert torch.allclose(ref, merged, atol=1e-4) and torch.allclose(ref, fresh, atol=1e-4)
    names = [n for n, p in module.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    with pytest.raises(RuntimeError, match="merge_adapter"):
        module.new_adapter()


def test_stage_lr_snapshot_and_restore(tokenizer, new_module):
    module, dm = new_module(lr=1e-2), _data(tokenizer)
    module.set_stage_hparams(lr=3e-3)
    trainer = _fit(module, dm, epochs=1, limit=1)
    assert trainer.optimizers[0].param_groups[0]["initial_lr"] == 3e-3
    snap = module.trainable_state()
    assert snap and all(t.device.type == "cpu" for t in snap.values())
    with torch.no_grad():
        for p in module.parameters():
            if p.requires_grad:
                p.add_(1.0)
    module.load_trainable_state(snap)
    assert all(torch.equal(dict(module.named_parameters())[n], t) for n, t in snap.items())


def test_full_finetuning_trains_everything(tokenizer, new_module):
    module = new_module(finetune={"mode": "full"}, lr=1e-3)
    assert all(p.requires_grad for p in module.parameters())
    module.merge_adapter()
    module.new_adapter()  # both no-ops in full mode
    assert module.hf_model is module.model
    with pytest.raises(ValueError, match="finetune.mode"):
        new_module(finetune={"mode": "qlora"})
    with pytest.raises(ValueError, match="unknown key"):
        new_module(finetune={"mode": "lora", "rank": 8})


def test_warmup_lr_scheduler_shapes():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = warmup_lr_scheduler(opt, total_steps=10, kind="linear", warmup_ratio=0.2)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] < lrs[1] < lrs[2] == 1.0 and lrs[-1] < 0.2


def test_carry_optimizer_state_into_the_next_stage(tokenizer, new_module):
    module, dm = new_module(), _data(tokenizer)
    _fit(module, dm, epochs=1, limit=2)
    state = module.optimizer_state()
    assert state and state["state"]
    module.carry_optimizer_state(state)
    module.set_stage_hparams(lr=5e-3)
    seen = {}

    class Peek(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            opt = trainer.optimizers[0]
            seen["step"] = int(next(iter(opt.state.values()))["step"])
            seen["lr"] = opt.param_groups[0]["initial_lr"]

    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         limit_train_batches=1, limit_val_batches=0, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[Peek()])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, datamodule=dm)
    assert seen == {"step": 2, "lr": 5e-3}  # moments carried over, new stage's lr


def test_a_non_finite_loss_stops_training(tokenizer, new_module):
    module = new_module()
    batch = collate([encode_qa(tokenizer, "Q?", "A")], pad_id=tokenizer.pad_token_id)
    batch["labels"][:] = -100  # every answer token truncated away: the mean loss over no token is NaN
    with pytest.raises(FloatingPointError, match="training loss is nan"):
        module.training_step(batch, 0)


def test_max_length_that_would_cut_answers_fails_before_training(tokenizer):
    dm = GradualDataModule(POOL, dev=POOL[:3], batch_size=3, seed=0)
    with pytest.raises(ValueError, match=r"max_length=8: \d+ of \d+ pool questions are longer"):
        dm.connect(tokenizer, max_length=8)


def test_weighted_loss_on_hand_built_logits():
    import math

    from gradual_lightning.training.module import per_example_loss, weighted_loss

    logits = torch.zeros(2, 4, 3)  # vocabulary of 3: a uniform guess costs log 3 per token
    logits[1, 1] = torch.tensor([0.0, 0.0, math.log(8.0)])  # example 1 predicts token 2 at step 2 with p = 0.8
    labels = torch.tensor([[-100, -100, 1, 2],    # example 0: two answer tokens (steps 2 and 3)
                           [-100, -100, 2, -100]])  # example 1: one answer token, the one it predicts
    per = per_example_loss(logits, labels)
    assert per.tolist() == pytest.approx([math.log(3), -math.log(0.8)])  # a mean over each example's own tokens
    w = torch.tensor([1.0, 3.0])
    assert weighted_loss(per, w).item() == pytest.approx((math.log(3) - 3 * math.log(0.8)) / 4)
    assert weighted_loss(per, torch.tensor([0.0, 2.0])).item() == pytest.approx(-math.log(0.8))  # weight 0: ignored
    assert weighted_loss(per, torch.zeros(2)).item() == 0.0  # nothing to learn from this batch
    assert torch.isnan(per_example_loss(logits, torch.full((2, 4), -100))).all()  # no answer token: caught upstream


def test_batch_weights_reach_the_modules_loss(tokenizer, new_module):
    module = new_module()
    examples = [encode_qa(tokenizer, r.question, r.answers[0]) for r in POOL[:3]]
    batch = collate(examples, pad_id=tokenizer.pad_token_id)
    with torch.no_grad():
        alone = [module._loss(collate([e], pad_id=tokenizer.pad_token_id)).item() for e in examples]  # HF's own loss
        assert module._loss({**batch, "weights": torch.tensor([1.0, 0.0, 0.0])}).item() == pytest.approx(alone[0],
                                                                                                         abs=1e-5)
        weighted = module._loss({**batch, "weights": torch.tensor([1.0, 2.0, 1.0])}).item()
    assert weighted == pytest.approx((alone[0] + 2 * alone[1] + alone[2]) / 4, abs=1e-5)
