"""`probe.method=score`: SliCK's greedy and sampled correctness from one teacher-forced forward per alias.

Instead of decoding, feed prefix + suffix + alias tokens (+ nothing more) and read the next-token distributions along
that path: the greedy answer equals the alias iff every argmax follows the path and the argmax after it ends the
answer; the probability that one sample (temperature, top-k, as `GenerationEngine.sample`) equals the alias is the
product of the truncated-softmax probabilities along the path times the probability of ending there.

Caveats: an alias is scored along its canonical tokenisation (`" " + alias`, as the model writes an answer after
"A:"); a generation spelling the same text with other tokens is not counted. "Ends the answer" = EOS or a token
whose text holds the stop string with only whitespace before it (what `finish_text` would cut to the alias exactly);
answers are compared as exact stripped strings, so any normalisation must be applied to the aliases beforehand.
The max_new_tokens limit of decoding is ignored.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from gradual_lightning.probing.engine import (
    GenerationEngine,
    encode_suffix,
    length_buckets,
    new_cache,
    suffix_batch_inputs,
)

_ENDS: dict[tuple[int, str], tuple[object, list[int]]] = {}


def answer_end_ids(tokenizer, eos: Sequence[int], stop: str = "\n") -> list[int]:
    """EOS + tokens whose text contains `stop` with only whitespace before it (vocabulary scan memoised)."""
    hit = _ENDS.get((id(tokenizer), stop))
    if hit is None or hit[0] is not tokenizer:
        texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
        hit = (tokenizer, [i for i, t in enumerate(texts) if stop and stop in t and not t.split(stop, 1)[0].strip()])
        _ENDS[(id(tokenizer), stop)] = hit
    return sorted(set(hit[1]) | set(eos))


@torch.inference_mode()
def path_logits(engine: GenerationEngine, prefix: str, suffixes: Sequence[str], paths: Sequence[Sequence[int]],
                owner: Sequence[int]) -> list[torch.Tensor]:
    """For each path (alias tokens for suffix owner[j]): fp32 logits [len(path) + 1, V] along the path.

    Uses the engine's cached prefix (+ shared question template); rows are (suffix tail + path), left-padded.
    """
    prefix_kv, tails = engine._shared(prefix, suffixes)
    prefix_len = prefix_kv[0][0].shape[2] if prefix_kv else 0
    rows = [list(tails[o]) + list(p) for o, p in zip(owner, paths)]
    out: list[torch.Tensor | None] = [None] * len(rows)
    for batch in length_buckets([len(r) for r in rows], engine.batch_size):
        ids, mask, positions = suffix_batch_inputs([rows[j] for j in batch], prefix_len, engine.pad_id)
        keep = max(len(paths[j]) for j in batch) + 1
        cache = new_cache(prefix_kv, len(batch), mask.shape[1], engine.model.config)
        res = engine.model(input_ids=ids.to(engine._device), attention_mask=mask.to(engine._device),
                           position_ids=positions.to(engine._device), use_cache=True, logits_to_keep=keep,
                           **{engine._cache_kw: cache})
        for row, j in enumerate(batch):
            n = len(paths[j]) + 1
            out[j] = res.logits[row, keep - n :].float()
    return out  # type: ignore[return-value]


def _paths(tokenizer, aliases: Sequence[Sequence[str]]) -> tuple[list[list[int]], list[int]]:
    paths, owner = [], []
    for i, names in enumerate(aliases):
        for name in dict.fromkeys(a.strip() for a in names if a.strip()):
            paths.append(encode_suffix(tokenizer, " " + name))
            owner.append(i)
    return paths, owner


def greedy_matches_alias(engine: GenerationEngine, prefix: str, suffixes: Sequence[str],
                         aliases: Sequence[Sequence[str]]) -> list[bool]:
    """Per suffix: would greedy decoding of prefix+suffix produce exactly one of its aliases?"""
    paths, owner = _paths(engine.tokenizer, aliases)
    ends = torch.tensor(answer_end_ids(engine.tokenizer, engine.stop_ids, engine.stop))
    hit = [False] * len(suffixes)
    for path, o, logits in zip(paths, owner, path_logits(engine, prefix, suffixes, paths, owner)):
        best = logits.argmax(-1)
        hit[o] |= best[:-1].tolist() == list(path) and bool((ends == best[-1]).any())
    return hit


def p_sample_equals_alias(engine: GenerationEngine, prefix: str, suffixes: Sequence[str],
                          aliases: Sequence[Sequence[str]], *, temperature: float, top_k: int) -> list[float]:
    """Per suffix: probability that one sample (temperature, top-k) equals one of its aliases (summed over them)."""
    paths, owner = _paths(engine.tokenizer, aliases)
    ends = torch.tensor(answer_end_ids(engine.tokenizer, engine.stop_ids, engine.stop))
    total = [0.0] * len(suffixes)
    for path, o, logits in zip(paths, owner, path_logits(engine, prefix, suffixes, paths, owner)):
        probs = truncated_probs(logits, temperature=temperature, top_k=top_k)
        p = probs[torch.arange(len(path)), torch.tensor(path, dtype=torch.long)].prod() if path else 1.0
        total[o] += float(p * probs[-1, ends[ends < probs.shape[-1]]].sum())
    return total


def truncated_probs(logits: torch.Tensor, *, temperature: float, top_k: int) -> torch.Tensor:
    """The distribution `sample_token` draws from: softmax over the top-k of logits / temperature, zero elsewhere."""
    if temperature <= 0:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).float()
    logits = logits / temperature
    if 0 < top_k < logits.shape[-1]:
        values, indices = torch.topk(logits, top_k, dim=-1)
        return torch.zeros_like(logits).scatter_(-1, indices, torch.softmax(values, dim=-1))
    return torch.softmax(logits, dim=-1)
