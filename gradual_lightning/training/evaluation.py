"""Greedy few-shot accuracy of the model being trained (dev for epoch selection, test for the final numbers).

One fixed, seeded k-shot prompt per question (exemplars from the dev split, never the question itself), decoded
by the probing engine in its own no-grad loop: calling trainer.validate/predict from a hook would overwrite the
trainer's state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from gradual_lightning.probing.config import ProbeConfig
from gradual_lightning.probing.engine import GenerationEngine
from gradual_lightning.probing.runner import run_probe
from gradual_lightning.records import QARecord


def accuracy_config(probe_cfg: ProbeConfig) -> ProbeConfig:
    """The probe config of an accuracy check: one fixed prompt per question, greedy only."""
    return replace(probe_cfg, num_prompts=1, num_samples=0, exemplar_sets="fixed")


def correct_by_id(model, tokenizer, questions: Sequence[QARecord], exemplars: Sequence[QARecord],
                  probe_cfg: ProbeConfig, *, desc: str = "eval", progress: bool = False, rank: int = 0,
                  world_size: int = 1) -> dict[str, bool]:
    """question id -> whether the greedy answer to its fixed k-shot prompt is correct (for all `questions`; with
    world_size > 1 this rank decodes its shard and the results are gathered)."""
    if not questions:
        return {}
    cfg = accuracy_config(probe_cfg)
    was_training = model.training
    model.eval()
    try:
        engine = GenerationEngine(model, tokenizer, max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size)
        results = run_probe(engine, questions, exemplars, cfg, tokenizer=tokenizer, desc=desc, progress=progress,
                            rank=rank, world_size=world_size)
    finally:
        model.train(was_training)
    return {r.id: r.p_greedy == 1.0 for r in results}
