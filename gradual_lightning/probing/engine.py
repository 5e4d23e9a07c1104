"""The prefix-KV probe backend: each few-shot prefix's K/V computed once, the questions of many prefixes batched.

A SliCK prompt is `prefix + suffix`: the prefix holds k few-shot exemplars of a relation (shared by every question of
that relation and exemplar set), the suffix is `"Q: <question>\\nA:"`. Every call takes a sequence of
(prefix, suffix) prompts with any mix of prefixes. `GenerationEngine` memoises, per distinct prefix, its K/V extended
by the question template its suffixes share in the call (their common leading tokens, "Q: What is the capital of"),
in a small LRU memo (`prefix_cache_size` entries). Prompts are length-bucketed by the suffix tokens left to prefill,
whatever their prefix; each batch gets a fresh preallocated cache holding every row's own prefix K/V (`kv.py`:
prefixes of different lengths zero-padded, the pads between a row's prefix and its suffix masked, position ids
counting real tokens only), prefills the left-padded suffix tails on top and decodes with a manual greedy/sampling
loop that stops rows at the stop string or EOS and drops finished rows. So the cost follows the number of prompts,
not the number of exemplar sets: a small pool (a few questions per set) still fills its batches. Sampling prefills
each prompt once and repeats its cache `num_samples` times. Teacher-forced scoring (`path_logits`) reads the logits
along given answer paths on top of the same cached prefixes.

Template sharing still pays with mixed batches: a row's prefill is its template (~7 tokens) plus its own question
tail (~5), so caching the template once per prefix removes about half of every row's prefill; it is decided per
prefix from that prefix's suffixes in the call (`batching.shared_template_len`), not from the batch.

Determinism: a head (prefix, template) is always computed the same way, the prefix alone in a one-row forward and the
template on top of it, so its K/V (and every answer) do not depend on which other prefixes share a call or on what
the memo holds; sampling draws from the caller's torch.Generator in batch order.

Sliding-window layers: the cache's window counts slots, pads included, so a row whose prompt plus pads exceeds the
window would see fewer real tokens than plain `generate` (probe prompts, ~100 tokens, are far shorter than windows);
prefill in length groups lays K/V out by hand and is off for such models (`_can_regroup`).

This module and `kv.py` (the cache layout) are the only ones that touch transformers internals (StaticCache /
DynamicCache layers, the forward's cache argument); tokenisation and token choice are shared with every backend
(`tokens.py`), batching is pure (`batching.py`).
"""

from __future__ import annotations

import inspect
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from gradual_lightning.probing.batching import length_buckets, plan_groups, shared_template_len, suffix_batch_inputs
from gradual_lightning.probing.kv import (
    KV,
    KVMemo,
    append,
    cache_kv,
    dynamic_cache,
    has_sliding_layers,
    kv_len,
    narrow_rows,
    new_cache,
    right_aligned,
    select_rows,
    stack_rows,
    tail_kv,
)
from gradual_lightning.probing.tokens import (
    PromptPair,
    encode_prefix,
    encode_suffix,
    eos_ids,
    finish_text,
    greedy_token,
    sample_token,
    stop_flags,
    stop_token_ids,
)

SHARE_MIN_SAVING = 24  # tokens of prefill a shared template must save to be worth its own forward

Head = tuple[tuple[int, ...], tuple[int, ...]]  # (prefix ids, shared template ids): what a row's cache starts with

# ----------------------------------------------------------------------------------------------- decode loop


@dataclass
class _Rows:
    """The rows still being decoded: their original row index and model inputs."""

    index: torch.Tensor  # [b] original row of each active row
    mask: torch.Tensor  # [b, cache slots] attention mask (zeros at the pads between prefix and suffix)
    positions: torch.Tensor  # [b] position id of the next token to feed

    def select(self, index: torch.Tensor, cache) -> _Rows:
        select_rows(cache, index)
        return _Rows(self.index[index], self.mask[index], self.positions[index])


def _forward_kwarg(model) -> str:
    """transformers >= 5.? names the cache argument `cache` (`past_key_values` is its deprecated alias)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


class GenerationEngine:
    """Greedy and sampled short answers for many (prefix, suffix) prompts, reusing each prefix's KV cache.

    `batch_size` prompts are prefilled and decoded together (batches are length-bucketed, prefixes mixed).
    Sampling decodes up to `sample_batch_rows` rows at once (default 4 * batch_size), i.e. that many // num_samples
    prompts per batch. Finished rows are removed from the batch once they are at least `compact_fraction` of it
    (removal copies the cache, so it is not done for every single finished row); the loop ends when all rows are
    done. With `share_suffix_prefix` each prefix's suffixes' common leading tokens (the question template) are cached
    with the prefix too. A batch's suffixes are prefilled in length groups when that saves more padded tokens than
    `group_overhead_tokens` per extra forward (-1: never). At most `prefix_cache_size` prefix (+ template) K/Vs are
    kept. Works with any dtype (computation in the model's dtype, sampling softmax in fp32) and with peft-wrapped
    models.
    """

    def __init__(self, model, tokenizer, *, max_new_tokens: int = 12, batch_size: int = 32, stop: str = "\n",
                 sample_batch_rows: int | None = None, compact_fraction: float = 0.25,
                 share_suffix_prefix: bool = True, group_overhead_tokens: int = 24, prefix_cache_size: int = 64):
        self.model = model
        self.tokenizer = tokenizer
        self.max_new_tokens = int(max_new_tokens)
        self.batch_size = max(1, int(batch_size))
        self.sample_batch_rows = max(1, int(sample_batch_rows or 4 * self.batch_size))
        self.compact_fraction = float(compact_fraction)
        self.stop = stop
        self.stop_ids = sorted(set(stop_token_ids(tokenizer, stop)) | set(eos_ids(model, tokenizer)))
        # A stop string of one character is always inside one token: the token-level test is exact. A longer one
        # could span tokens, so those rows' text is checked too.
        self._text_stop = len(stop.encode()) > 1
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.stop_ids[0]
        self._cache_kw = _forward_kwarg(model)
        self._stop_mask: torch.Tensor | None = None
        self.share_suffix_prefix = bool(share_suffix_prefix)
        self.group_overhead_tokens = int(group_overhead_tokens)
        # grouped prefill lays K/V out by hand: plain full-attention layers only (not sliding-window ones)
        self._can_regroup = self.group_overhead_tokens >= 0 and not has_sliding_layers(model.config)
        self._heads = KVMemo(prefix_cache_size)  # Head -> its one-row K/V

    # -- model calls -------------------------------------------------------------------------------------------

    @property
    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor | None, positions: torch.Tensor | None,
                 cache) -> torch.Tensor:
        """Last-position logits [B, V]; `cache` is extended in place."""
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                         logits_to_keep=1, **{self._cache_kw: cache})
        return out.logits[:, -1]

    def _stops(self, vocab: int) -> torch.Tensor:
        if self._stop_mask is None or self._stop_mask.numel() != vocab:
            mask = torch.zeros(vocab, dtype=torch.bool, device=self._device)
            mask[torch.as_tensor([i for i in self.stop_ids if i < vocab], dtype=torch.long)] = True
            self._stop_mask = mask
        return self._stop_mask

    def _layout(self, prompts: Sequence[PromptPair]) -> tuple[list[Head], list[list[int]]]:
        """Per prompt: its head (prefix ids + the template its prefix's suffixes share in this call) and the suffix
        ids left to prefill (at least one, which yields its logits)."""
        prefix_ids = {p: tuple(encode_prefix(self.tokenizer, p)) for p in dict.fromkeys(p for p, _ in prompts)}
        suffix_ids = [encode_suffix(self.tokenizer, s) for _, s in prompts]
        by_prefix: dict[str, list[int]] = defaultdict(list)
        for i, (p, _) in enumerate(prompts):
            by_prefix[p].append(i)
        heads: list[Head] = [((), ())] * len(prompts)
        tails: list[list[int]] = [[] for _ in prompts]
        for p, rows in by_prefix.items():
            shared = (shared_template_len([suffix_ids[i] for i in rows], SHARE_MIN_SAVING)
                      if self.share_suffix_prefix else 0)
            for i in rows:
                heads[i], tails[i] = (prefix_ids[p], tuple(suffix_ids[i][:shared])), suffix_ids[i][shared:]
        return heads, tails

    def _head_kv(self, head: Head) -> KV:
        """The memoised K/V of a head ([1, heads, len, dim] per layer): the prefix alone, the template on top."""
        prefix, template = head
        if not template:
            return self._heads.get(head, lambda: self._extend([], list(prefix)))
        return self._heads.get(head, lambda: self._extend(self._head_kv((prefix, ())), list(template)))

    def _extend(self, kv: KV, ids: list[int]) -> KV:
        """K/V of (cached tokens + `ids`) for one row; `kv` itself is left untouched."""
        if not ids:
            return kv
        cache = dynamic_cache(kv, self.model.config)
        self._forward(torch.tensor([ids], device=self._device), None, None, cache)
        return cache_kv(cache)

    def _inputs(self, heads: Sequence[Head], tails: Sequence[Sequence[int]], extra: int = 0):
        """(prefix block, prefix lengths, ids, mask, positions) for one batch: each row's head K/V, its suffix tail
        left-padded after the longest head (`kv.stack_rows`, `batching.suffix_batch_inputs`)."""
        distinct = list(dict.fromkeys(heads))
        kvs = [self._head_kv(h) for h in distinct]
        where = {h: d for d, h in enumerate(distinct)}
        block = stack_rows(kvs, [where[h] for h in heads])
        lens = [kv_len(kvs[where[h]]) for h in heads]
        inputs = suffix_batch_inputs(tails, lens, self.pad_id, extra)
        return (block, lens, *(t.to(self._device) for t in inputs))

    def _prefill(self, heads: Sequence[Head], tails: Sequence[Sequence[int]]) -> tuple[object, torch.Tensor, _Rows]:
        """Cache + last logits for head + tail of each row, with `max_new_tokens` free slots.

        Tails sorted by length are prefilled in groups (`plan_groups`: less padding, at the price of more
        forwards) whose K/V are then laid side by side, right-aligned, after the prefix block for the joint decode.
        """
        block, lens, ids, mask, positions = self._inputs(heads, tails, extra=self.max_new_tokens)
        lengths = [len(s) for s in tails]
        groups = [(0, len(lengths))]
        if self._can_regroup and lengths == sorted(lengths):
            groups = plan_groups(lengths, self.group_overhead_tokens)
        cache = new_cache(block, mask.shape[1], self.model.config)
        if len(groups) == 1:
            logits = self._forward(ids, mask, positions, cache)
        else:
            logits, suffix_kv = self._grouped_prefill(block, lens, tails, groups)
            append(cache, suffix_kv)
        rows = _Rows(torch.arange(len(tails), device=self._device), mask, positions[:, -1] + 1)
        return cache, logits, rows

    def _grouped_prefill(self, block: KV, lens: Sequence[int], tails: Sequence[Sequence[int]],
                         groups: Sequence[tuple[int, int]]) -> tuple[torch.Tensor, KV]:
        """Prefill each group on its own (over its rows' prefixes, as wide as its longest); return all last logits
        and the tails' K/V [B, heads, longest tail, dim], right-aligned."""
        logits, parts = [], []
        for start, stop in groups:
            width = max(lens[start:stop])
            ids, mask, positions = (t.to(self._device) for t in
                                    suffix_batch_inputs(tails[start:stop], lens[start:stop], self.pad_id))
            cache = new_cache(narrow_rows(block, start, stop, width), mask.shape[1], self.model.config)
            logits.append(self._forward(ids, mask, positions, cache))
            parts.append(tail_kv(cache, width))
        return torch.cat(logits), right_aligned(parts, groups, len(tails), max(len(s) for s in tails))

    def _decode(self, cache, logits: torch.Tensor, rows: _Rows, pick: Callable[[torch.Tensor], torch.Tensor],
                decided: Callable[[list[int], list[list[int]]], list[int]] | None = None) -> list[list[int] | None]:
        """Decode loop: new token ids per original row (through the stop token); None for rows dropped by `decided`.

        `decided(finished_rows, tokens)` is told which rows just finished and returns other rows to abandon.
        Finished rows stay in the batch (fed their last token, output ignored) until they are `compact_fraction`
        of it, then the batch shrinks.
        """
        n = rows.index.numel()
        tokens: list[list[int]] = [[] for _ in range(n)]
        alive = [True] * n  # per original row
        dropped = [False] * n
        stop_mask = self._stops(logits.shape[-1])
        for step in range(self.max_new_tokens):
            nxt = pick(logits)
            row_list = rows.index.tolist()
            done = stop_flags(nxt, stop_mask).tolist()
            newly = []
            for r, t, d in zip(row_list, nxt.tolist(), done):
                if alive[r]:
                    tokens[r].append(t)
                    if d or (self._text_stop and self.stop in self.tokenizer.decode(tokens[r])):
                        alive[r] = False
                        newly.append(r)
            if decided is not None and newly:
                for r in decided(newly, tokens):
                    if alive[r]:
                        alive[r], dropped[r] = False, True
            live = [alive[r] for r in row_list]
            n_live = sum(live)
            if n_live == 0 or step == self.max_new_tokens - 1:
                break
            if len(live) - n_live >= max(1.0, self.compact_fraction * len(live)):
                keep = torch.tensor([i for i, ok in enumerate(live) if ok], device=self._device)
                rows, nxt = rows.select(keep, cache), nxt[keep]
            logits = self._forward(nxt[:, None], rows.mask, rows.positions[:, None], cache)
            rows.positions = rows.positions + 1
        return [None if d else t for t, d in zip(tokens, dropped)]

    # -- public API --------------------------------------------------------------------------------------------

    @torch.inference_mode()
    def greedy(self, prompts: Sequence[PromptPair]) -> list[str]:
        """Greedy answer text for each (prefix, suffix) prompt (decoded new text, cut at the first stop string,
        stripped), in input order."""
        if not prompts:
            return []
        heads, tails = self._layout(prompts)
        answers: list[str] = [""] * len(prompts)
        for batch in length_buckets([len(s) for s in tails], self.batch_size):
            cache, logits, rows = self._prefill([heads[i] for i in batch], [tails[i] for i in batch])
            for i, toks in zip(batch, self._decode(cache, logits, rows, greedy_token)):
                answers[i] = finish_text(self.tokenizer, toks, self.stop)
        return answers

    @torch.inference_mode()
    def sample(self, prompts: Sequence[PromptPair], *, num_samples: int, temperature: float, top_k: int,
               generator: torch.Generator, stop_at_first: Callable[[int, str], bool] | None = None
               ) -> list[list[str]]:
        """num_samples sampled answers per prompt (same post-processing). Seeded via `generator` => reproducible.

        Each prompt is prefilled once; its cache is then repeated num_samples times. Draws come from `generator`
        (on the model's device) in batch order, so the same generator state, prompts and engine settings give the
        same samples. `stop_at_first(prompt_index, answer)`: when it returns True for a finished sample, that
        prompt's unfinished samples are abandoned; its list then holds only the samples finished so far (in sample
        order, possibly fewer than num_samples). Since all samples of a prompt decode in parallel this saves only
        the steps of longer samples.
        """
        if not prompts:
            return []
        heads, tails = self._layout(prompts)
        n = max(1, int(num_samples))
        out: list[list[str]] = [[] for _ in prompts]

        def pick(logits: torch.Tensor) -> torch.Tensor:
            return sample_token(logits, temperature=temperature, top_k=top_k, generator=generator)

        for batch in length_buckets([len(s) for s in tails], max(1, self.sample_batch_rows // n)):
            cache, logits, rows = self._prefill([heads[i] for i in batch], [tails[i] for i in batch])
            rows = rows.select(torch.arange(len(batch), device=self._device).repeat_interleave(n), cache)
            rows.index = torch.arange(len(batch) * n, device=self._device)
            decided = None
            if stop_at_first is not None:
                def decided(finished: list[int], tokens: list[list[int]], batch=batch) -> list[int]:
                    drop: list[int] = []
                    for r in finished:
                        if stop_at_first(batch[r // n], finish_text(self.tokenizer, tokens[r], self.stop)):
                            drop.extend(range(r // n * n, r // n * n + n))
                    return drop
            results = self._decode(cache, logits.repeat_interleave(n, 0), rows, pick, decided)
            for r, toks in enumerate(results):
                if toks is not None:
                    out[batch[r // n]].append(finish_text(self.tokenizer, toks, self.stop))
        return out

    @torch.inference_mode()
    def path_logits(self, prompts: Sequence[PromptPair], paths: Sequence[Sequence[int]],
                    owner: Sequence[int]) -> list[torch.Tensor]:
        """Teacher-forced scores: for each path (answer tokens for prompt `owner[j]`), fp32 logits
        [len(path) + 1, V] at every path position and one after it, on top of the cached prefixes."""
        heads, tails = self._layout(prompts)
        rows = [list(tails[o]) + list(p) for o, p in zip(owner, paths)]
        out: list[torch.Tensor | None] = [None] * len(rows)
        for batch in length_buckets([len(r) for r in rows], self.batch_size):
            block, _, ids, mask, positions = self._inputs([heads[owner[j]] for j in batch], [rows[j] for j in batch])
            keep = max(len(paths[j]) for j in batch) + 1
            cache = new_cache(block, mask.shape[1], self.model.config)
            res = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                             logits_to_keep=keep, **{self._cache_kw: cache})
            for row, j in enumerate(batch):
                out[j] = res.logits[row, keep - len(paths[j]) - 1:].float()
        return out  # type: ignore[return-value]
