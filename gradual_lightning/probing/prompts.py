"""Few-shot prompts for probing: seeded exemplar sets from the question's own relation, never the question itself.

Two ways to draw exemplar sets (`probe.exemplar_sets`):
- `fixed` (default): N_ex sets per relation, drawn once from the seed and shared by every question of the relation.
  One prefix then serves hundreds of questions, so the engine computes its KV cache once: several times faster.
  The price: all questions of a relation see the same N_ex contexts, so an unlucky set affects them together.
- `random`: fresh sets per question (as published). Independent contexts, but no prefix is ever reused.
A question drawn as an exemplar of its own fixed set gets that one exemplar swapped for a spare.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from gradual_lightning.records import DataError, QARecord
from gradual_lightning.rng import hashed_rng

FORMATS = ("plain", "chat")
EXEMPLAR_SETS = ("fixed", "random")


@dataclass(frozen=True)
class Prompt:
    """A probe prompt split where the shared part ends: prefix (exemplars) + suffix (the question)."""

    prefix: str
    suffix: str
    exemplar_ids: tuple[str, ...]


def _by_relation(records: Sequence[QARecord]) -> dict[str, list[QARecord]]:
    groups: dict[str, list[QARecord]] = defaultdict(list)
    for r in records:
        groups[r.relation].append(r)
    return groups


def _check_enough(relation: str, available: int, needed: int) -> None:
    if available < needed:
        raise DataError(
            f"relation {relation!r} has {available} exemplar candidates, probing needs at least {needed} "
            f"(probe.k_shot + 1); lower probe.k_shot, use probe.exemplar_source=pool, or add data"
        )


def draw_exemplar_sets(
    questions: Sequence[QARecord], source: Sequence[QARecord], *, k: int, num_prompts: int, mode: str, seed: int
) -> dict[str, list[tuple[QARecord, ...]]]:
    """For each question id, `num_prompts` exemplar tuples of length k from the same relation, excluding itself."""
    if mode not in EXEMPLAR_SETS:
        raise ValueError(f"probe.exemplar_sets={mode!r} is not one of {EXEMPLAR_SETS}")
    pools = _by_relation(source)
    out: dict[str, list[tuple[QARecord, ...]]] = {}
    fixed: dict[str, list[list[QARecord]]] = {}
    for q in questions:
        pool = pools.get(q.relation, [])
        _check_enough(q.relation, len(pool), k + 1)
        if mode == "random":
            rng = hashed_rng(seed, "random", q.id)
            candidates = [e for e in pool if e.id != q.id and e.question != q.question]
            out[q.id] = [tuple(rng.sample(candidates, k)) for _ in range(num_prompts)]
            continue
        if q.relation not in fixed:  # k + 1 per set: the last one is the spare
            rng = hashed_rng(seed, "fixed", q.relation)
            fixed[q.relation] = [rng.sample(pool, k + 1) for _ in range(num_prompts)]
        sets = []
        for drawn in fixed[q.relation]:
            chosen, spare = drawn[:k], drawn[k]
            sets.append(tuple(spare if (e.id == q.id or e.question == q.question) else e for e in chosen))
        out[q.id] = sets
    return out


def plain_prompt(exemplars: Sequence[QARecord], question: QARecord) -> Prompt:
    prefix = "".join(f"Q: {e.question}\nA: {e.answer}\n" for e in exemplars)
    return Prompt(prefix, f"Q: {question.question}\nA:", tuple(e.id for e in exemplars))


def chat_prompt(exemplars: Sequence[QARecord], question: QARecord, tokenizer) -> Prompt:
    """Exemplars as user/assistant turns of the tokenizer's chat template (instruct models, as the reference code)."""
    turns = []
    for e in exemplars:
        turns += [{"role": "user", "content": e.question}, {"role": "assistant", "content": e.answer}]
    full = tokenizer.apply_chat_template(
        [*turns, {"role": "user", "content": question.question}], tokenize=False, add_generation_prompt=True
    )
    head = tokenizer.apply_chat_template(turns, tokenize=False)
    ids = tuple(e.id for e in exemplars)
    if full.startswith(head):
        return Prompt(head, full[len(head):], ids)
    return Prompt("", full, ids)  # a template that rewrites earlier turns: no shared prefix to reuse


def build_prompts(
    questions: Sequence[QARecord],
    exemplar_sets: dict[str, list[tuple[QARecord, ...]]],
    *,
    fmt: str = "plain",
    tokenizer=None,
) -> dict[str, list[Prompt]]:
    """question id -> one Prompt per exemplar set."""
    if fmt not in FORMATS:
        raise ValueError(f"probe.format={fmt!r} is not one of {FORMATS}")
    if fmt == "chat" and getattr(tokenizer, "chat_template", None) is None:
        raise ValueError("probe.format=chat needs a tokenizer with a chat template; this model has none")
    make = plain_prompt if fmt == "plain" else (lambda ex, q: chat_prompt(ex, q, tokenizer))
    return {q.id: [make(ex, q) for ex in exemplar_sets[q.id]] for q in questions}
