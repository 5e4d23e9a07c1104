"""Probe a model on a set of questions: greedy phase, adaptive sampling phase, categories.

Prompts are grouped by their shared prefix, so a backend (`backend.py`) can compute each exemplar prefix once.
Work can be sharded across data-parallel ranks (each rank probes questions[rank::world_size]); results are gathered
in input order.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from tqdm.auto import tqdm

from gradual_lightning.probing.config import ProbeConfig
from gradual_lightning.probing.mastery import SLICK, MasteryThresholds, categorize
from gradual_lightning.probing.matching import is_correct
from gradual_lightning.probing.prompts import Prompt, build_prompts, draw_exemplar_sets
from gradual_lightning.records import QARecord


@dataclass
class ProbeResult:
    """One line of probe.jsonl (other tools read these names)."""

    id: str
    relation: str
    question: str
    answers: list[str]
    exemplars: list[list[str]]
    greedy: list[str]
    samples: list[str]
    p_greedy: float
    p_sampled: float | None
    category: str
    p_sampled_is_lower_bound: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def _chunks(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _greedy_phase(backend, prompts: dict[str, list[Prompt]], chunk: int, bar) -> dict[str, list[str]]:
    """All greedy answers, one backend call per (prefix, chunk of suffixes)."""
    groups: dict[str, list[tuple[str, int, str]]] = defaultdict(list)
    for qid, plist in prompts.items():
        for j, p in enumerate(plist):
            groups[p.prefix].append((qid, j, p.suffix))
    answers = {qid: [""] * len(plist) for qid, plist in prompts.items()}
    for prefix, items in groups.items():
        for part in _chunks(items, chunk):
            for (qid, j, _), text in zip(part, backend.greedy(prefix, [s for _, _, s in part])):
                answers[qid][j] = text
            bar.update(len(part))
    return answers


def _sampling_phase(backend, prompts, to_sample: dict[str, QARecord], cfg: ProbeConfig, chunk: int, bar):
    """Samples per question, prompt by prompt; with early stop, a question leaves once one sample is correct."""
    generator = torch.Generator().manual_seed(cfg.seed)
    samples: dict[str, list[str]] = {qid: [] for qid in to_sample}
    stopped_early: set[str] = set()
    for j in range(cfg.num_prompts):
        groups: dict[str, list[str]] = defaultdict(list)
        for qid in to_sample:
            if qid not in stopped_early:
                groups[prompts[qid][j].prefix].append(qid)
        for prefix, qids in groups.items():
            for part in _chunks(qids, chunk):
                outs = backend.sample(prefix, [prompts[q][j].suffix for q in part], num_samples=cfg.num_samples,
                                     temperature=cfg.temperature, top_k=cfg.top_k, generator=generator)
                for qid, texts in zip(part, outs):
                    samples[qid].extend(texts)
                    if cfg.early_stop_sampling and any(is_correct(t, to_sample[qid].answers, cfg.match) for t in texts):
                        stopped_early.add(qid)
                bar.update(len(part) * cfg.num_samples)
    return samples, stopped_early


def share_correct(predictions: Sequence[str], answers: Sequence[str], match: str) -> float | None:
    """P(correct) over a list of answers; None for an empty list (not sampled)."""
    if not predictions:
        return None
    return sum(is_correct(a, answers, match) for a in predictions) / len(predictions)


def results_from_answers(
    questions: Sequence[QARecord], prompts, greedy, samples, stopped_early, cfg: ProbeConfig,
    thresholds: MasteryThresholds,
) -> list[ProbeResult]:
    out = []
    for q in questions:
        g = greedy[q.id]
        p_greedy = share_correct(g, q.answers, cfg.match)
        s = samples.get(q.id)
        p_sampled = share_correct(s or [], q.answers, cfg.match)
        out.append(ProbeResult(
            id=q.id, relation=q.relation, question=q.question, answers=list(q.answers),
            exemplars=[list(p.exemplar_ids) for p in prompts[q.id]], greedy=g, samples=s or [],
            p_greedy=p_greedy, p_sampled=p_sampled, category=categorize(p_greedy, p_sampled, thresholds),
            p_sampled_is_lower_bound=q.id in stopped_early,
        ))
    return out


def run_probe(
    backend,
    questions: Sequence[QARecord],
    exemplar_source: Sequence[QARecord],
    cfg: ProbeConfig,
    thresholds: MasteryThresholds = SLICK,
    *,
    tokenizer=None,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = True,
    desc: str = "probe",
    gather: Callable[[list], list[list]] | None = None,
) -> list[ProbeResult]:
    """Probe `questions` (this rank's shard) and return results for all of them in input order.

    `gather` collects every rank's list (default: torch.distributed.all_gather_object when world_size > 1).
    """
    shard = list(questions)[rank::world_size]
    sets = draw_exemplar_sets(shard, exemplar_source, k=cfg.k_shot, num_prompts=cfg.num_prompts,
                              mode=cfg.exemplar_sets, seed=cfg.seed)
    prompts = build_prompts(shard, sets, fmt=cfg.format, tokenizer=tokenizer)
    chunk = cfg.batch_size * 4
    with tqdm(total=len(shard) * cfg.num_prompts, desc=f"{desc} greedy", unit="prompt",
              disable=not progress or rank != 0) as bar:
        greedy = _greedy_phase(backend, prompts, chunk, bar)

    samples: dict[str, list[str]] = {}
    stopped: set[str] = set()
    if cfg.num_samples > 0:
        to_sample = {q.id: q for q in shard if not cfg.adaptive_sampling
                     or thresholds.needs_sampling(share_correct(greedy[q.id], q.answers, cfg.match))}
        with tqdm(total=len(to_sample) * cfg.num_prompts * cfg.num_samples, desc=f"{desc} sampling",
                  unit="sample", disable=not progress or rank != 0 or not to_sample) as bar:
            samples, stopped = _sampling_phase(backend, prompts, to_sample, cfg, chunk, bar)

    results = results_from_answers(shard, prompts, greedy, samples, stopped, cfg, thresholds)
    if world_size == 1:
        return results
    if gather is None:
        gather = _all_gather
    everything = {r.id: r for part in gather(results) for r in part}
    return [everything[q.id] for q in questions]


def _all_gather(results: list) -> list[list]:
    import torch.distributed as dist

    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, results)
    return parts


def recategorize(results: Sequence[ProbeResult], thresholds: MasteryThresholds) -> list[ProbeResult]:
    """Categories under other thresholds from stored P values (no new generation)."""
    for r in results:
        r.category = categorize(r.p_greedy, r.p_sampled, thresholds)
    return list(results)
