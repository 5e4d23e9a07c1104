"""Pure functions of the exact-probing validation (`benchmarks/validate_exact.py`): why a scored greedy answer and a
decoded one disagree, calibration of p_detect against real sampling, and agreement of two category assignments.

No model here: the benchmark measures the facts (decoded answer, teacher-forced logits along each alias's canonical
token path) and these functions turn them into causes, bins and intervals.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from gradual_lightning.probing.matching import is_correct

# Why greedy correctness by scoring (scoring.py) and by decoding + match=exact disagree on one (question, prompt).
SURFACE_VARIANT = "decoded answer is a surface variant that normalises to an alias (lower bound)"
OVER_LIMIT = "alias longer than max_new_tokens"
NON_CANONICAL = "non-canonical tokenisation"
NEAR_TIE = "argmax near-tie"
OTHER = "other"
CAUSES = (SURFACE_VARIANT, OVER_LIMIT, NON_CANONICAL, NEAR_TIE, OTHER)

# p_detect bins of the calibration table: [0, .1), [.1, .3), ..., [.9, 1] (the last one closed).
CALIBRATION_EDGES = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0)


@dataclass(frozen=True)
class Departure:
    """Where greedy decoding leaves an answer's token path, read from teacher-forced logits along it."""

    position: int | None  # first step whose argmax is off the path (len(path): no end token after it); None: none
    token: int | None     # the argmax at that step
    margin: float         # smallest top-1 minus top-2 logit gap over the steps up to and including that one


def path_departure(logits: torch.Tensor, path: Sequence[int], end_ids: Sequence[int], needs_end: bool) -> Departure:
    """`logits` [len(path) + 1, V] along `path` (a backend's `path_logits`): greedy follows path token i at step i and
    then, if `needs_end`, picks one of `end_ids` (as `scoring.score_prompts` decides a greedy hit)."""
    ends = set(int(i) for i in end_ids)
    margin = math.inf
    for i in range(len(path) + (1 if needs_end else 0)):
        top = torch.topk(logits[i].float(), 2).values
        margin = min(margin, float(top[0] - top[1]))
        best = int(logits[i].argmax())  # as tokens.greedy_token: the first index on ties
        if (best != path[i]) if i < len(path) else (best not in ends):
            return Departure(i, best, margin)
    return Departure(None, None, margin)


def continues_alias(text_so_far: str, alias: str) -> bool:
    """Whether decoding that has written `text_so_far` (the canonical path's first tokens, then the token greedy picks
    instead of the next one) can still end as exactly `alias` after `finish_text` strips it: leading whitespace aside,
    the text is a start of the alias, or the whole alias followed by whitespace only."""
    text = text_so_far.lstrip()
    return alias.startswith(text) or text.rstrip() == alias


def classify_disagreement(*, decoded: str, aliases: Sequence[str], scored_hit: bool, margin: float | None,
                          over_limit: bool = False, continues: bool = False, tie_eps: float = 1e-3) -> str:
    """The cause of one disagreement between a decoded greedy answer (`decoded`, right or wrong under match=exact)
    and the scored greedy verdict (`scored_hit`). Facts measured along the alias's canonical token path:
    `margin`, the smallest top-1 minus top-2 logit gap of the greedy decisions up to and including the first one off
    the path (None: not measured); `over_limit`, the path is longer than max_new_tokens (scoring drops it);
    `continues`, the token greedy picks where it leaves the path still spells the alias (`continues_alias`)."""
    decoded_hit = is_correct(decoded, aliases, "exact")
    if decoded_hit == scored_hit:
        raise ValueError(f"no disagreement: decoded {decoded!r} and scored hit={scored_hit} agree")
    tie = margin is not None and margin < tie_eps
    if decoded_hit:  # decoding found it, scoring did not
        if decoded.strip() not in {a.strip() for a in aliases}:
            return SURFACE_VARIANT
        if over_limit:
            return OVER_LIMIT
        if continues:
            return NON_CANONICAL
        return NEAR_TIE if tie else OTHER
    return NEAR_TIE if tie else OTHER  # scoring says greedy writes the alias, decoding wrote something else


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float] | None:
    """Wilson score interval of a binomial share k/n (95% for z=1.96); None for n=0. Stays inside [0, 1] and is
    not degenerate at k=0 or k=n, where the normal interval is."""
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return None
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def bin_index(p: float, edges: Sequence[float] = CALIBRATION_EDGES) -> int:
    """Index of the bin [edges[i], edges[i+1]) holding p; the last bin is closed on the right."""
    if not edges[0] <= p <= edges[-1]:
        raise ValueError(f"{p} is outside the bins [{edges[0]}, {edges[-1]}]")
    for i in range(len(edges) - 2):
        if p < edges[i + 1]:
            return i
    return len(edges) - 2


def calibration_bins(p_detect: Sequence[float], found: Sequence[bool], edges: Sequence[float] = CALIBRATION_EDGES,
                     means: Mapping[str, Sequence[float]] | None = None) -> list[dict]:
    """Per p_detect bin: questions, mean p_detect, how many real sampling found (some sample correct), that share
    with its Wilson 95% interval, and the per-bin mean of each extra series in `means` (same order as p_detect).
    If p_detect is calibrated, the share lies within noise of the mean p_detect in every bin."""
    if len(p_detect) != len(found):
        raise ValueError(f"{len(p_detect)} p_detect values but {len(found)} outcomes")
    means = dict(means or {})
    for name, values in means.items():
        if len(values) != len(p_detect):
            raise ValueError(f"means[{name!r}] has {len(values)} values, p_detect {len(p_detect)}")
    members: list[list[int]] = [[] for _ in range(len(edges) - 1)]
    for i, p in enumerate(p_detect):
        members[bin_index(p, edges)].append(i)
    rows = []
    for b, idx in enumerate(members):
        n, k = len(idx), sum(bool(found[i]) for i in idx)
        ci = wilson_interval(k, n)
        row = {"bin": f"[{edges[b]:g}, {edges[b + 1]:g}" + ("]" if b == len(members) - 1 else ")"),
               "n": n, "mean_p_detect": sum(p_detect[i] for i in idx) / n if n else None,
               "found": k, "share_found": k / n if n else None,
               "ci95": list(ci) if ci else None}
        for name, values in means.items():
            row[f"mean_{name}"] = sum(values[i] for i in idx) / n if n else None
        rows.append(row)
    return rows


def matrix_agreement(matrix: Sequence[Sequence[int]]) -> float | None:
    """Share of the diagonal in a square count matrix (two category assignments of the same questions)."""
    total = sum(sum(row) for row in matrix)
    return sum(matrix[i][i] for i in range(len(matrix))) / total if total else None
