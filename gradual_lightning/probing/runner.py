"""Probe a model on a set of questions: greedy phase, adaptive sampling phase, categories.

Each phase hands the backend (`backend.py`) chunks of (prefix, suffix) prompts, ordered by prefix but cut regardless
of it: a chunk holds many questions of few prefixes (a backend computes each exemplar prefix once and shares the
question template), and a small pool still fills its chunks with several exemplar sets.
Work can be sharded across data-parallel ranks (each rank probes questions[rank::world_size]); results are gathered
in input order.

`probe.method` says how (`run_probe` dispatches on it):
- generate: greedy answers and samples decoded (SliCK as published); p_sampled = share of correct samples.
- score: no decoding. One teacher-forced pass per (prompt, alias) (`scoring.score_prompts` on the backend's
  `path_logits`) gives greedy correctness and the exact probability p_j that one sample from prompt j is correct.
  p_greedy = share of prompts whose greedy answer is an alias; p_sampled = mean_j p_j (the expected share of correct
  samples); p_detect = 1 - prod_j (1 - p_j) ** num_samples (the chance that SliCK's num_prompts x num_samples samples
  hold a correct one). Greedy answers are recorded only where they are right (the alias), None where not (unknown);
  no samples. The probabilities come with the forward that scores greedy, so every question gets them.
- hybrid: greedy answers decoded as in generate (wrong answers recorded, p_greedy identical), sampling replaced by
  the exact p_j of score, for the questions sampling would cover (`adaptive_sampling`).
With num_samples=0 neither p_sampled nor p_detect is computed. Scored values are lower bounds (see scoring.py).
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
from gradual_lightning.probing.scoring import Scored, p_detect, score_prompts
from gradual_lightning.records import QARecord


@dataclass
class ProbeResult:
    """One line of probe.jsonl (other tools read these names).

    `method` is how it was probed (rows written before the field was added load as generate). With score, `greedy`
    holds None for prompts whose greedy answer is not an alias (not decoded); `p_detect` is None for generate."""

    id: str
    relation: str
    question: str
    answers: list[str]
    exemplars: list[list[str]]
    greedy: list[str | None]
    samples: list[str]
    p_greedy: float
    p_sampled: float | None
    category: str
    p_sampled_is_lower_bound: bool = False
    p_detect: float | None = None
    method: str = "generate"

    def to_dict(self) -> dict:
        return asdict(self)


def _chunks(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _by_prefix(items: Sequence[tuple[str, int]], prompts: dict[str, list[Prompt]]) -> list[tuple[str, int]]:
    """(question id, prompt index) items grouped by their prompt's prefix, prefixes in order of first appearance."""
    groups: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for qid, j in items:
        groups[prompts[qid][j].prefix].append((qid, j))
    return [item for group in groups.values() for item in group]


def _pairs(prompts: dict[str, list[Prompt]], items: Sequence[tuple[str, int]]) -> list[tuple[str, str]]:
    return [(prompts[qid][j].prefix, prompts[qid][j].suffix) for qid, j in items]


def _all_items(prompts: dict[str, list[Prompt]]) -> list[tuple[str, int]]:
    return _by_prefix([(qid, j) for qid, plist in prompts.items() for j in range(len(plist))], prompts)


def _greedy_phase(backend, prompts: dict[str, list[Prompt]], chunk: int, bar) -> dict[str, list[str]]:
    """All greedy answers, one backend call per chunk of prompts (several prefixes where the pool is small)."""
    answers = {qid: [""] * len(plist) for qid, plist in prompts.items()}
    for part in _chunks(_all_items(prompts), chunk):
        for (qid, j), text in zip(part, backend.greedy(_pairs(prompts, part))):
            answers[qid][j] = text
        bar.update(len(part))
    return answers


def _sampling_phase(backend, prompts, to_sample: dict[str, QARecord], cfg: ProbeConfig, chunk: int, bar):
    """Samples per question, prompt index by prompt index (each a chunked call over the questions still sampled,
    across their prefixes); with early stop, a question leaves once one sample is correct."""
    generator = torch.Generator().manual_seed(cfg.seed)
    samples: dict[str, list[str]] = {qid: [] for qid in to_sample}
    stopped_early: set[str] = set()
    for j in range(cfg.num_prompts):
        items = _by_prefix([(qid, j) for qid in to_sample if qid not in stopped_early], prompts)
        for part in _chunks(items, chunk):
            outs = backend.sample(_pairs(prompts, part), num_samples=cfg.num_samples, temperature=cfg.temperature,
                                  top_k=cfg.top_k, generator=generator)
            for (qid, _), texts in zip(part, outs):
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
    if cfg.method != "generate":
        results = _exact_probe(backend, shard, prompts, cfg, thresholds, chunk, not progress or rank != 0, desc)
    else:
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


def _score_phase(backend, prompts: dict[str, list[Prompt]], answers: dict[str, Sequence[str]], cfg: ProbeConfig,
                 chunk: int, bar) -> dict[str, list[Scored]]:
    """Every prompt of `prompts` scored against its question's aliases, one backend call per chunk of prompts."""
    scored: dict[str, list] = {qid: [None] * len(plist) for qid, plist in prompts.items()}
    for part in _chunks(_all_items(prompts), chunk):
        outs = score_prompts(backend, _pairs(prompts, part), [answers[qid] for qid, _ in part],
                             temperature=cfg.temperature, top_k=cfg.top_k, max_new_tokens=cfg.max_new_tokens)
        for (qid, j), out in zip(part, outs):
            scored[qid][j] = out
        bar.update(len(part))
    return scored


def _exact_probe(backend, shard: Sequence[QARecord], prompts, cfg: ProbeConfig, thresholds: MasteryThresholds,
                 chunk: int, quiet: bool, desc: str) -> list[ProbeResult]:
    """method=score or hybrid (module docstring): greedy decoded (hybrid) or scored (score), sampling scored."""
    answers = {q.id: q.answers for q in shard}
    if cfg.method == "hybrid":
        with tqdm(total=len(shard) * cfg.num_prompts, desc=f"{desc} greedy", unit="prompt", disable=quiet) as bar:
            greedy = _greedy_phase(backend, prompts, chunk, bar)
        p_greedy = {q.id: share_correct(greedy[q.id], q.answers, cfg.match) for q in shard}
        to_score = [q.id for q in shard if cfg.num_samples > 0 and (
            not cfg.adaptive_sampling or thresholds.needs_sampling(p_greedy[q.id]))]
        with tqdm(total=len(to_score) * cfg.num_prompts, desc=f"{desc} scoring", unit="prompt",
                  disable=quiet or not to_score) as bar:
            scored = _score_phase(backend, {qid: prompts[qid] for qid in to_score}, answers, cfg, chunk, bar)
    else:
        with tqdm(total=len(shard) * cfg.num_prompts, desc=f"{desc} scoring", unit="prompt", disable=quiet) as bar:
            scored = _score_phase(backend, prompts, answers, cfg, chunk, bar)
        greedy = {qid: [s.greedy_answer for s in row] for qid, row in scored.items()}
        p_greedy = {qid: sum(s.greedy_hit for s in row) / len(row) for qid, row in scored.items()}
        if cfg.num_samples == 0:
            scored = {}
    out = []
    for q in shard:
        p = [s.p_sample for s in scored[q.id]] if q.id in scored else None
        p_sampled = sum(p) / len(p) if p else None
        detect = p_detect(p, cfg.num_samples) if p else None
        out.append(ProbeResult(
            id=q.id, relation=q.relation, question=q.question, answers=list(q.answers),
            exemplars=[list(x.exemplar_ids) for x in prompts[q.id]], greedy=greedy[q.id], samples=[],
            p_greedy=p_greedy[q.id], p_sampled=p_sampled,
            category=categorize(p_greedy[q.id], p_sampled, thresholds, detect), p_detect=detect, method=cfg.method,
        ))
    return out


def _all_gather(results: list) -> list[list]:
    import torch.distributed as dist

    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, results)
    return parts


def recategorize(results: Sequence[ProbeResult], thresholds: MasteryThresholds) -> list[ProbeResult]:
    """Categories under other thresholds from stored P values (no new generation); p_detect where stored."""
    for r in results:
        r.category = categorize(r.p_greedy, r.p_sampled, thresholds, r.p_detect)
    return list(results)
