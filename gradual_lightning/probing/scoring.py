"""Teacher-forced scoring on any probe backend: SliCK's greedy and sampled correctness without decoding.

Feed prefix + suffix + alias tokens and read the next-token distributions along that path (`path_logits`): the
greedy answer equals the alias iff every argmax follows the path and the argmax after it ends the answer; the
probability that one sample (temperature, top-k, as `tokens.sample_token`) equals the alias is the product of the
truncated-softmax probabilities along the path times the probability of ending there.

Caveats: an alias is scored along its canonical tokenisation (`" " + alias`, as the model writes an answer after
"A:"); a generation spelling the same text with other tokens is not counted. "Ends the answer" = EOS or a token
whose text holds the stop string with only whitespace before it (`tokens.answer_end_ids`); answers are compared as
exact stripped strings, so any normalisation must be applied to the aliases beforehand. The max_new_tokens limit of
decoding is ignored.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from gradual_lightning.probing.backend import ProbeBackend
from gradual_lightning.probing.tokens import answer_end_ids, encode_suffix, truncated_probs


def alias_paths(tokenizer, aliases: Sequence[Sequence[str]]) -> tuple[list[list[int]], list[int]]:
    """Token paths of every distinct alias of every suffix, and which suffix each path belongs to."""
    paths, owner = [], []
    for i, names in enumerate(aliases):
        for name in dict.fromkeys(a.strip() for a in names if a.strip()):
            paths.append(encode_suffix(tokenizer, " " + name))
            owner.append(i)
    return paths, owner


def _scored_paths(backend: ProbeBackend, prefix: str, suffixes: Sequence[str], aliases: Sequence[Sequence[str]]):
    paths, owner = alias_paths(backend.tokenizer, aliases)
    ends = torch.tensor(answer_end_ids(backend.tokenizer, backend.stop_ids, backend.stop))
    return zip(paths, owner, backend.path_logits(prefix, suffixes, paths, owner)), ends


def greedy_matches_alias(backend: ProbeBackend, prefix: str, suffixes: Sequence[str],
                         aliases: Sequence[Sequence[str]]) -> list[bool]:
    """Per suffix: would greedy decoding of prefix+suffix produce exactly one of its aliases?"""
    scored, ends = _scored_paths(backend, prefix, suffixes, aliases)
    hit = [False] * len(suffixes)
    for path, o, logits in scored:
        best = logits.argmax(-1)
        hit[o] |= best[:-1].tolist() == list(path) and bool((ends == best[-1]).any())
    return hit


def p_sample_equals_alias(backend: ProbeBackend, prefix: str, suffixes: Sequence[str],
                          aliases: Sequence[Sequence[str]], *, temperature: float, top_k: int) -> list[float]:
    """Per suffix: probability that one sample (temperature, top-k) equals one of its aliases (summed over them)."""
    scored, ends = _scored_paths(backend, prefix, suffixes, aliases)
    total = [0.0] * len(suffixes)
    for path, o, logits in scored:
        probs = truncated_probs(logits, temperature=temperature, top_k=top_k)
        p = probs[torch.arange(len(path)), torch.tensor(path, dtype=torch.long)].prod() if path else 1.0
        total[o] += float(p * probs[-1, ends[ends < probs.shape[-1]]].sum())
    return total
