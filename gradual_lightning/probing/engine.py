"""Fast short-answer generation for SliCK probing: one KV cache per exemplar prefix, reused by every question.

A SliCK prompt is `prefix + suffix`: the prefix holds k few-shot exemplars of a relation (shared by every question of
that relation and exemplar set), the suffix is `"Q: <question>\\nA:"`. `GenerationEngine` runs one forward over the
prefix plus the suffixes' common leading tokens (the question template), keeps that K/V, and for each
length-bucketed batch of suffixes builds a fresh preallocated cache from it (expanded along the batch dim), prefills
the left-padded suffix tails on top (pads sit between prefix and tail, masked; position ids count real tokens only)
and decodes with a manual greedy/sampling loop that stops rows at the stop string or EOS and drops finished rows.
Sampling prefills each prompt once and repeats its cache `num_samples` times.

Tokenisation (the same for every method, so comparisons are exact): the prefix gets the tokenizer's normal special
tokens, the suffix none, and the two id lists are concatenated (`encode_prompt`). Answers are the decoded new text,
cut at the first stop string and stripped (`finish_text`); decoding stops at a token whose text contains the stop
string, at EOS, or after `max_new_tokens`.

The small pure functions (`left_pad`, `suffix_batch_inputs`, `greedy_token`, `sample_token`, `stop_flags`,
`new_cache`, `select_rows`, `length_buckets`, `finish_text`) carry the logic; `naive_generate` is the plain HF
`model.generate` baseline used by the benchmark and the tests.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache, GenerationConfig, StaticCache

PromptInput = str | tuple[str, str] | Sequence[int]
SHARE_MIN_SAVING = 24  # tokens of prefill a shared template must save to be worth its own forward

# ----------------------------------------------------------------------------------------------- tokenisation


def encode_prefix(tokenizer, prefix: str) -> list[int]:
    """Prefix ids with the tokenizer's normal special tokens (none for SmolLM2, BOS for Llama-3)."""
    return list(tokenizer(prefix).input_ids)


def encode_suffix(tokenizer, suffix: str) -> list[int]:
    return list(tokenizer(suffix, add_special_tokens=False).input_ids)


def encode_prompt(tokenizer, prefix: str, suffix: str) -> list[int]:
    """The exact ids the engine feeds for `prefix + suffix` (prefix and suffix tokenised separately)."""
    return encode_prefix(tokenizer, prefix) + encode_suffix(tokenizer, suffix)


def _prompt_ids(tokenizer, prompt: PromptInput) -> list[int]:
    if isinstance(prompt, str):
        return encode_prefix(tokenizer, prompt)
    if isinstance(prompt, tuple) and len(prompt) == 2 and all(isinstance(p, str) for p in prompt):
        return encode_prompt(tokenizer, *prompt)
    return [int(t) for t in prompt]


_STOP_IDS: dict[tuple[int, str], tuple[object, list[int]]] = {}


def eos_ids(model, tokenizer) -> list[int]:
    """EOS ids from the tokenizer and the model's generation config."""
    ids = {tokenizer.eos_token_id}
    gen = getattr(model, "generation_config", None)
    extra = getattr(gen, "eos_token_id", None) if gen is not None else None
    ids.update(extra if isinstance(extra, (list, tuple)) else [extra])
    return sorted(int(i) for i in ids if i is not None)


def stop_token_ids(tokenizer, stop: str) -> list[int]:
    """Ids of every vocabulary token whose text contains `stop` (decoded once per tokenizer, ~1 s, memoised)."""
    key = (id(tokenizer), stop)
    hit = _STOP_IDS.get(key)
    if hit is None or hit[0] is not tokenizer:
        texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
        hit = (tokenizer, [i for i, t in enumerate(texts) if stop and stop in t])
        _STOP_IDS[key] = hit
    return list(hit[1])


def finish_text(tokenizer, ids: Sequence[int], stop: str) -> str:
    """Decoded answer: special tokens skipped, cut at the first stop string, stripped."""
    text = tokenizer.decode(list(ids), skip_special_tokens=True)
    if stop:
        text = text.split(stop, 1)[0]
    return text.strip()


# ----------------------------------------------------------------------------------------------- batching


def common_prefix_len(seqs: Sequence[Sequence[int]]) -> int:
    """Number of leading tokens all sequences share."""
    first = seqs[0]
    n = min(len(s) for s in seqs)
    for s in seqs[1:]:
        n = next((i for i in range(n) if s[i] != first[i]), n)
    return n


def plan_groups(lengths: Sequence[int], overhead: int) -> list[tuple[int, int]]:
    """Cut ascending `lengths` into contiguous [start, stop) groups minimising sum(overhead + rows * longest row).

    That is the padded tokens a prefill computes when each group is one forward, `overhead` pricing a forward's
    fixed cost in tokens. Dynamic programming over the cut points, O(n^2).
    """
    n = len(lengths)
    cost = [0.0] + [float("inf")] * n
    start = [0] * (n + 1)
    for stop in range(1, n + 1):
        for i in range(stop):
            c = cost[i] + overhead + (stop - i) * lengths[stop - 1]
            if c < cost[stop]:
                cost[stop], start[stop] = c, i
    groups, stop = [], n
    while stop > 0:
        groups.append((start[stop], stop))
        stop = start[stop]
    return groups[::-1]


def length_buckets(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices sorted by length (stable), cut into consecutive batches: neighbours have similar lengths."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask) of shape [B, max_len], sequences right-aligned."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, s in enumerate(seqs):
        if s:
            ids[row, width - len(s) :] = torch.as_tensor(list(s), dtype=torch.long)
            mask[row, width - len(s) :] = 1
    return ids, mask


def positions_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Position of each token among the real ones of its row (a pad repeats its left neighbour's; pads are never
    attended to, so their positions do not matter)."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def suffix_batch_inputs(
    suffixes: Sequence[Sequence[int]], prefix_len: int, pad_id: int, extra: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inputs to prefill left-padded suffixes on top of a cached prefix of `prefix_len` tokens.

    Returns input_ids [B, S], attention_mask [B, prefix_len + S + extra] (ones over the prefix, zeros over each row's
    pads, which sit between prefix and suffix, ones over the suffix and the `extra` slots left for new tokens: the
    causal mask hides those until they are written) and position_ids [B, S] (prefix_len + index among the row's real
    suffix tokens), so every row sees exactly the positions and keys of its unpadded prompt.
    """
    ids, suffix_mask = left_pad(suffixes, pad_id)
    ones = torch.ones((len(suffixes), prefix_len), dtype=torch.long)
    mask = torch.cat([ones, suffix_mask, torch.ones((len(suffixes), extra), dtype=torch.long)], dim=1)
    return ids, mask, positions_from_mask(mask)[:, prefix_len : prefix_len + ids.shape[1]]


def new_cache(prefix_kv: Sequence[tuple[torch.Tensor, torch.Tensor]], batch: int, max_len: int, config) -> StaticCache:
    """A preallocated cache of `max_len` slots for `batch` rows, holding the prefix K/V in its first slots.

    Static rather than dynamic: a DynamicCache concatenates (copies) its whole K/V at every decode step, which on a
    CPU costs a quarter of a step; a static one writes only the new token. The shared prefix tensors are only read.
    """
    cache = StaticCache(config=config, max_cache_len=max_len)
    for layer, (k, v) in zip(cache.layers, prefix_kv):
        layer.update(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1))
    return cache


def select_rows(cache, index: torch.Tensor) -> None:
    """Keep (or repeat) cache rows in place: row i becomes old row index[i] (drop finished rows, repeat for samples)."""
    for layer in cache.layers:
        if getattr(layer, "is_initialized", False):
            layer.keys = layer.keys.index_select(0, index)
            layer.values = layer.values.index_select(0, index)
            if hasattr(layer, "batch_size"):
                layer.batch_size = index.numel()


# ----------------------------------------------------------------------------------------------- token choice


def greedy_token(logits: torch.Tensor) -> torch.Tensor:
    """[B, V] -> [B] argmax (first index on ties, as HF generate)."""
    return logits.argmax(dim=-1)


def sample_token(logits: torch.Tensor, *, temperature: float, top_k: int, generator: torch.Generator) -> torch.Tensor:
    """[B, V] -> [B]: softmax(top-k logits / temperature), one multinomial draw per row from `generator`."""
    if temperature <= 0:
        return greedy_token(logits)
    logits = logits.float() / temperature
    if 0 < top_k < logits.shape[-1]:
        values, indices = torch.topk(logits, top_k, dim=-1)
        choice = torch.multinomial(torch.softmax(values, dim=-1), 1, generator=generator)
        return indices.gather(-1, choice).squeeze(-1)
    return torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator).squeeze(-1)


def stop_flags(next_ids: torch.Tensor, stop_mask: torch.Tensor) -> torch.Tensor:
    """[B] bool: the token just chosen ends its row (EOS or a token whose text contains the stop string)."""
    return stop_mask[next_ids]


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
    """Greedy and sampled short answers for many suffixes under one shared prefix, reusing the prefix KV cache.

    `batch_size` suffixes are prefilled and decoded together (batches are length-bucketed). Sampling decodes up to
    `sample_batch_rows` rows at once (default 4 * batch_size), i.e. that many // num_samples prompts per batch.
    Finished rows are removed from the batch once they are at least `compact_fraction` of it (removal copies the
    cache, so it is not done for every single finished row); the loop ends when all rows are done.
    With `share_suffix_prefix` the suffixes' common leading tokens (the question template) are cached with the
    prefix too. A batch's suffixes are prefilled in length groups when that saves more padded tokens than
    `group_overhead_tokens` per extra forward (-1: never). Works with any dtype (computation in the model's dtype,
    sampling softmax in fp32) and with peft-wrapped models.
    """

    def __init__(self, model, tokenizer, *, max_new_tokens: int = 12, batch_size: int = 32, stop: str = "\n",
                 sample_batch_rows: int | None = None, compact_fraction: float = 0.25,
                 share_suffix_prefix: bool = True, group_overhead_tokens: int = 24):
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
        self._can_regroup = self.group_overhead_tokens >= 0 and not any(
            StaticCache(config=model.config, max_cache_len=8).is_sliding)
        self._base_key: tuple[int, ...] | None = None  # prefix ids -> their K/V
        self._base_kv: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._ext_key: tuple[tuple[int, ...], tuple[int, ...]] | None = None  # (prefix, template) -> K/V
        self._ext_kv: list[tuple[torch.Tensor, torch.Tensor]] = []

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

    def _shared(self, prefix: str, suffixes: Sequence[str]) -> tuple[list, list[list[int]]]:
        """(K/V of the prefix + the suffixes' common leading tokens, the suffixes' remaining ids).

        The suffixes of one relation share their template ("Q: What is the capital of"), so those tokens join the
        cached prefix: each row then prefills only its own tail (at least one token, which yields its logits).
        Worth it only when it saves more than a forward's overhead (a call with 1-2 suffixes keeps them whole).
        The prefix K/V ([1, heads, len, dim] per layer) is memoised, and so is its last extension.
        """
        suffix_ids = [encode_suffix(self.tokenizer, s) for s in suffixes]
        shared = common_prefix_len(suffix_ids) if self.share_suffix_prefix else 0
        shared = max(0, min(shared, min(len(s) for s in suffix_ids) - 1))
        if (len(suffix_ids) - 1) * shared <= SHARE_MIN_SAVING:
            shared = 0
        prefix_ids = tuple(encode_prefix(self.tokenizer, prefix))
        key = (prefix_ids, tuple(suffix_ids[0][:shared]))
        if key != self._ext_key:
            if prefix_ids == self._base_key:
                self._ext_kv = self._extend(self._base_kv, list(key[1]))
            else:  # one forward over prefix + template; the prefix's own K/V are its first slots (causality)
                self._ext_kv = self._extend([], [*prefix_ids, *key[1]])
                self._base_kv = [(k[:, :, : len(prefix_ids)], v[:, :, : len(prefix_ids)]) for k, v in self._ext_kv]
                self._base_key = prefix_ids
            self._ext_key = key
        return self._ext_kv, [s[shared:] for s in suffix_ids]

    def _extend(self, kv: list, ids: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """K/V of (cached tokens + `ids`) for one row; `kv` itself is left untouched."""
        if not ids:
            return kv
        config = self.model.config
        cache = DynamicCache(ddp_cache_data=kv, config=config) if kv else DynamicCache(config=config)
        self._forward(torch.tensor([ids], device=self._device), None, None, cache)
        return [(layer.keys, layer.values) for layer in cache.layers]

    def _prefill(self, prefix_kv, suffix_ids: Sequence[Sequence[int]]) -> tuple[StaticCache, torch.Tensor, _Rows]:
        """Cache + last logits for prefix+suffix of each row (suffixes left-padded after the shared prefix).

        Suffixes sorted by length are prefilled in groups (`plan_groups`: less padding, at the price of more
        forwards) whose K/V are then laid side by side, right-aligned, in one cache for the joint decode.
        """
        prefix_len = prefix_kv[0][0].shape[2] if prefix_kv else 0
        inputs = suffix_batch_inputs(suffix_ids, prefix_len, self.pad_id, extra=self.max_new_tokens)
        ids, mask, positions = (t.to(self._device) for t in inputs)
        lengths = [len(s) for s in suffix_ids]
        groups = [(0, len(lengths))]
        if self._can_regroup and lengths == sorted(lengths):
            groups = plan_groups(lengths, self.group_overhead_tokens)
        if len(groups) == 1:
            cache = new_cache(prefix_kv, len(suffix_ids), mask.shape[1], self.model.config)
            logits = self._forward(ids, mask, positions, cache)
        else:
            logits, suffix_kv = self._grouped_prefill(prefix_kv, prefix_len, suffix_ids, groups)
            cache = new_cache(prefix_kv, len(suffix_ids), mask.shape[1], self.model.config)
            for layer, (k, v) in zip(cache.layers, suffix_kv):
                layer.update(k, v)
        rows = _Rows(torch.arange(len(suffix_ids), device=self._device), mask, positions[:, -1] + 1)
        return cache, logits, rows

    def _grouped_prefill(self, prefix_kv, prefix_len: int, suffix_ids: Sequence[Sequence[int]],
                         groups: Sequence[tuple[int, int]]) -> tuple[torch.Tensor, list]:
        """Prefill each group on its own; return all last logits and the suffixes' K/V [B, heads, width, dim]."""
        width = max(len(s) for s in suffix_ids)
        logits, parts = [], []
        for start, stop in groups:
            ids, mask, positions = (t.to(self._device) for t in
                                    suffix_batch_inputs(suffix_ids[start:stop], prefix_len, self.pad_id))
            cache = new_cache(prefix_kv, stop - start, mask.shape[1], self.model.config)
            logits.append(self._forward(ids, mask, positions, cache))
            parts.append([(layer.keys[:, :, prefix_len:], layer.values[:, :, prefix_len:]) for layer in cache.layers])
        joint = []
        for li in range(len(parts[0])):
            pair = []
            for j in range(2):
                like = parts[0][li][j]
                t = like.new_zeros((len(suffix_ids), like.shape[1], width, like.shape[3]))
                for (start, stop), part in zip(groups, parts):
                    t[start:stop, :, width - part[li][j].shape[2] :] = part[li][j]
                pair.append(t)
            joint.append(tuple(pair))
        return torch.cat(logits), joint

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
    def greedy(self, prefix: str, suffixes: Sequence[str]) -> list[str]:
        """Greedy answer text for prefix+suffix for each suffix (decoded new text, cut at the first stop string,
        stripped)."""
        if not suffixes:
            return []
        prefix_kv, suffix_ids = self._shared(prefix, suffixes)
        answers: list[str] = [""] * len(suffixes)
        for batch in length_buckets([len(s) for s in suffix_ids], self.batch_size):
            cache, logits, rows = self._prefill(prefix_kv, [suffix_ids[i] for i in batch])
            for i, toks in zip(batch, self._decode(cache, logits, rows, greedy_token)):
                answers[i] = finish_text(self.tokenizer, toks, self.stop)
        return answers

    @torch.inference_mode()
    def sample(self, prefix: str, suffixes: Sequence[str], *, num_samples: int, temperature: float, top_k: int,
               generator: torch.Generator, stop_at_first: Callable[[int, str], bool] | None = None
               ) -> list[list[str]]:
        """num_samples sampled answers per suffix (same post-processing). Seeded via `generator` => reproducible.

        Each prompt is prefilled once; its cache is then repeated num_samples times. Draws come from `generator`
        (on the model's device) in batch order, so the same generator state, suffixes and engine settings give the
        same samples. `stop_at_first(suffix_index, answer)`: when it returns True for a finished sample, that
        suffix's unfinished samples are abandoned; its list then holds only the samples finished so far (in sample
        order, possibly fewer than num_samples). Since all samples of a prompt decode in parallel this saves only
        the steps of longer samples.
        """
        if not suffixes:
            return []
        prefix_kv, suffix_ids = self._shared(prefix, suffixes)
        n = max(1, int(num_samples))
        out: list[list[str]] = [[] for _ in suffixes]

        def pick(logits: torch.Tensor) -> torch.Tensor:
            return sample_token(logits, temperature=temperature, top_k=top_k, generator=generator)

        for batch in length_buckets([len(s) for s in suffix_ids], max(1, self.sample_batch_rows // n)):
            cache, logits, rows = self._prefill(prefix_kv, [suffix_ids[i] for i in batch])
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


# ----------------------------------------------------------------------------------------------- baseline


def generation_config(model, tokenizer, *, max_new_tokens: int, stop: str = "\n", **kw) -> GenerationConfig:
    """HF GenerationConfig that stops where the engine stops (EOS + every token containing `stop`)."""
    stops = sorted(set(stop_token_ids(tokenizer, stop)) | set(eos_ids(model, tokenizer)))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    kw.setdefault("do_sample", False)
    if not kw["do_sample"]:
        kw.update(temperature=None, top_k=None, top_p=None)
    return GenerationConfig(max_new_tokens=max_new_tokens, eos_token_id=stops, pad_token_id=pad, **kw)


@torch.inference_mode()
def naive_generate_ids(model, tokenizer, prompts: Sequence[PromptInput], *, max_new_tokens: int, batch_size: int = 1,
                       stop: str = "\n", **sampling) -> list[list[int]]:
    """New token ids per returned sequence (through the first stop token) from HF `model.generate`.

    `batch_size` prompts per call, left-padded when > 1. `sampling` goes to the GenerationConfig (e.g. do_sample=True,
    num_return_sequences=16, temperature=0.5, top_k=40); rows come out prompt-major as from HF.
    """
    device = next(model.parameters()).device
    gen = generation_config(model, tokenizer, max_new_tokens=max_new_tokens, stop=stop, **sampling)
    stops = set(gen.eos_token_id)
    ids = [_prompt_ids(tokenizer, p) for p in prompts]
    out_ids: list[list[int]] = []
    for start in range(0, len(ids), max(1, batch_size)):
        input_ids, mask = left_pad(ids[start : start + max(1, batch_size)], gen.pad_token_id)
        out = model.generate(input_ids=input_ids.to(device), attention_mask=mask.to(device), generation_config=gen)
        for row in out[:, input_ids.shape[1] :].tolist():
            end = next((i + 1 for i, t in enumerate(row) if t in stops), len(row))
            out_ids.append(row[:end])
    return out_ids


def naive_generate(model, tokenizer, prompts: Sequence[PromptInput], *, max_new_tokens: int, batch_size: int = 1,
                   stop: str = "\n") -> list[str]:
    """Baseline: HF `model.generate`, greedy, `batch_size` prompts per call (left padding when > 1).

    A prompt is a string (tokenised like a prefix), a (prefix, suffix) pair (tokenised exactly as the engine does:
    use this for fair comparisons) or a list of token ids. Same stop tokens and post-processing as the engine.
    """
    rows = naive_generate_ids(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                              stop=stop)
    return [finish_text(tokenizer, row, stop) for row in rows]
