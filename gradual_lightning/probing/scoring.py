"""Teacher-forced scoring on any probe backend: SliCK's greedy and sampled correctness without decoding.

Feed prefix + suffix + alias tokens and read the next-token distributions along that path (`path_logits`, one
teacher-forced row per path): the greedy answer equals the alias iff every argmax follows the path and the argmax
after it ends the answer; the probability that one sample (temperature, top-k, as `tokens.sample_token`) equals
the alias is the product of the truncated-softmax probabilities along the path times the probability of ending
there. Distinct aliases are disjoint events (a path ends at an answer-ending token, which no alias contains), so
their probabilities add up.

"Ends the answer": EOS or a token whose text holds the stop string with only whitespace before it
(`tokens.answer_end_ids`): after it `finish_text` leaves the alias exactly as it was. With `max_new_tokens` (the
decoding limit) a path of exactly that length needs no end token (decoding stops there) and a longer one can never
be produced; without it the limit is ignored.

The scored answers are the aliases as given, each along its canonical tokenisation (`" " + alias`, as the model
writes an answer after "A:"); a path is kept only if its decoded text is correct under `match=exact`
(`matching.is_correct`: an alias that normalises to nothing, or one holding the stop string, can never be a correct
decoded answer and is dropped). The normalised forms of the aliases are not added: `match=exact` compares normalised
strings, but the variants that normalise to an alias are open-ended (case, punctuation, articles, spacing) and the
lower-cased, unpunctuated form is rarely what a model writes after capitalised exemplars.

So scored probabilities are LOWER BOUNDS of what decoding + `match=exact` would count, and a scored greedy miss may
be a decoded hit: another tokenisation of the same string, or a surface variant that normalises to an alias
("Paris." or "paris" for "Paris", "United States" for "the United States"), is not counted. Hits are exact: a scored
greedy hit is a decoded greedy answer that equals the (decoded) alias, up to numerical near-ties of the argmax.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from gradual_lightning.probing.backend import ProbeBackend
from gradual_lightning.probing.matching import is_correct
from gradual_lightning.probing.tokens import (
    PromptPair,
    answer_end_ids,
    encode_suffix,
    finish_text,
    stop_token_ids,
    truncated_probs,
)


@dataclass(frozen=True)
class Scored:
    """One prompt scored against its aliases."""

    greedy_hit: bool        # greedy decoding produces one of the aliases exactly
    greedy_answer: str | None  # that answer (the decoded alias) on a hit, else None (unknown: not decoded)
    p_sample: float         # P(one sample at temperature/top-k is one of the aliases), summed over them


def alias_paths(tokenizer, aliases: Sequence[Sequence[str]], stop: str = "\n"
                ) -> tuple[list[list[int]], list[int], list[str]]:
    """Token paths of every distinct alias of every prompt, which prompt each path belongs to, and its decoded
    answer. Paths whose decoded answer would not be correct under match=exact are left out."""
    paths, owner, texts = [], [], []
    for i, names in enumerate(aliases):
        for name in dict.fromkeys(a.strip() for a in names if a.strip()):
            if stop and stop in name:
                continue
            path = encode_suffix(tokenizer, " " + name)
            text = finish_text(tokenizer, path, stop)
            if path and is_correct(text, names, "exact"):
                paths.append(path)
                owner.append(i)
                texts.append(text)
    return paths, owner, texts


def end_ids(backend: ProbeBackend) -> list[int]:
    """Tokens that end an answer and leave it as it is: EOS (the backend's stop ids that are not stop-string
    tokens) and the stop-string tokens with only whitespace before the stop."""
    with_stop = set(stop_token_ids(backend.tokenizer, backend.stop))
    eos = [i for i in backend.stop_ids if i not in with_stop]
    return answer_end_ids(backend.tokenizer, eos, backend.stop)


def score_prompts(backend: ProbeBackend, prompts: Sequence[PromptPair], aliases: Sequence[Sequence[str]],
                  *, temperature: float, top_k: int, max_new_tokens: int | None = None) -> list[Scored]:
    """Per (prefix, suffix) prompt, any mix of prefixes: greedy hit and sample probability against its aliases, from
    one `path_logits` call (one teacher-forced row per alias path)."""
    paths, owner, texts = alias_paths(backend.tokenizer, aliases, backend.stop)
    if max_new_tokens is not None:
        keep = [j for j, p in enumerate(paths) if len(p) <= max_new_tokens]
        paths, owner, texts = [paths[j] for j in keep], [owner[j] for j in keep], [texts[j] for j in keep]
    hit: list[str | None] = [None] * len(prompts)
    total = [0.0] * len(prompts)
    if not paths:
        return [Scored(False, None, 0.0) for _ in prompts]
    ends = torch.tensor(end_ids(backend), dtype=torch.long)
    for path, o, text, logits in zip(paths, owner, texts, backend.path_logits(prompts, paths, owner)):
        n = len(path)
        needs_end = max_new_tokens is None or n < max_new_tokens
        valid = ends[ends < logits.shape[-1]]
        best = logits.argmax(-1)
        if hit[o] is None and best[:n].tolist() == list(path) and (
                not needs_end or bool((valid == best[n]).any())):
            hit[o] = text
        probs = truncated_probs(logits.float(), temperature=temperature, top_k=top_k)
        p = probs[torch.arange(n), torch.tensor(path, dtype=torch.long)].prod()
        if needs_end:
            p = p * probs[n, valid].sum()
        total[o] += float(p)
    return [Scored(h is not None, h, min(1.0, max(0.0, t))) for h, t in zip(hit, total)]


def greedy_matches_alias(backend: ProbeBackend, prompts: Sequence[PromptPair], aliases: Sequence[Sequence[str]], *,
                         max_new_tokens: int | None = None) -> list[bool]:
    """Per prompt: would greedy decoding of prefix+suffix produce exactly one of its aliases?"""
    return [s.greedy_hit for s in score_prompts(backend, prompts, aliases, temperature=1.0, top_k=0,
                                                max_new_tokens=max_new_tokens)]


def p_sample_equals_alias(backend: ProbeBackend, prompts: Sequence[PromptPair], aliases: Sequence[Sequence[str]],
                          *, temperature: float, top_k: int, max_new_tokens: int | None = None) -> list[float]:
    """Per prompt: probability that one sample (temperature, top-k) equals one of its aliases (summed over them)."""
    return [s.p_sample for s in score_prompts(backend, prompts, aliases, temperature=temperature, top_k=top_k,
                                              max_new_tokens=max_new_tokens)]


def p_detect(p_per_prompt: Sequence[float], num_samples: int) -> float:
    """The probability that `num_samples` independent samples from each prompt hold at least one correct answer:
    1 - prod_j (1 - p_j) ** num_samples (computed in log space, exact for tiny p)."""
    log_miss = 0.0
    for p in p_per_prompt:
        p = min(1.0, max(0.0, float(p)))
        if p >= 1.0:
            return 1.0
        log_miss += num_samples * math.log1p(-p)
    return -math.expm1(log_miss) if log_miss < 0 else 0.0  # not -0.0
