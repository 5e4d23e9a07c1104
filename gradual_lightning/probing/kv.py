"""Cache layout for the generation engine: per-row prefix K/V laid into one preallocated cache, and a bounded memo.

A batch row is `[its own prefix K/V][pads][its suffix][new tokens]` in one cache: the prefixes (each a few-shot
prefix, possibly extended by a question template) start at slot 0 and are zero-padded on the right up to the batch's
longest; the suffixes are left-padded after that, so every row's last suffix token sits in the same column. The pads
are masked (`batching.suffix_batch_inputs`) and position ids count real tokens only, so each row sees exactly the
keys and positions of its unpadded prompt.

With `engine.py`, the only module that touches transformers cache internals (StaticCache/DynamicCache layers and
their fields); the engine calls these helpers and never reaches into a layer itself.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence

import torch
from transformers import DynamicCache, StaticCache

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer (keys, values), each [rows, kv heads, slots, head dim]


def kv_len(kv: KV) -> int:
    """Slots (tokens) held by a K/V; 0 for an empty one (no prefix)."""
    return kv[0][0].shape[2] if kv else 0


def stack_rows(heads: Sequence[KV], index: Sequence[int]) -> KV:
    """Per layer, row r = `heads[index[r]]` (one-row K/Vs) in its first slots, zeros after it up to the longest.

    One distinct head is expanded along the batch (a view, no copy). Several are padded once each, then gathered
    row by row (one copy of the batch's prefix block; the cache's own update copies it again)."""
    width = max(kv_len(h) for h in heads)
    if width == 0:
        return []
    if len(heads) == 1:
        return [(k.expand(len(index), -1, -1, -1), v.expand(len(index), -1, -1, -1)) for k, v in heads[0]]
    like = next(h for h in heads if h)
    rows = torch.as_tensor(list(index), device=like[0][0].device)
    out = []
    for layer in range(len(like)):
        pair = []
        for j in range(2):
            ref = like[layer][j]
            padded = ref.new_zeros((len(heads), ref.shape[1], width, ref.shape[3]))
            for d, head in enumerate(heads):
                if head:
                    padded[d, :, : kv_len(head)] = head[layer][j][0]
            pair.append(padded.index_select(0, rows))
        out.append(tuple(pair))
    return out


def narrow_rows(block: KV, start: int, stop: int, width: int) -> KV:
    """Rows [start, stop) of a prefix block and its first `width` slots (empty when width is 0)."""
    return [(k[start:stop, :, :width], v[start:stop, :, :width]) for k, v in block] if width else []


def new_cache(prefix: KV, max_len: int, config) -> StaticCache:
    """A preallocated cache of `max_len` slots holding the batch's prefix block (`stack_rows`) in its first slots.

    Static rather than dynamic: a DynamicCache concatenates (copies) its whole K/V at every decode step, which on a
    CPU costs a quarter of a step; a static one writes only the new token. An empty prefix leaves it empty (the
    first forward initialises it)."""
    cache = StaticCache(config=config, max_cache_len=max_len)
    for layer, (k, v) in zip(cache.layers, prefix):
        layer.update(k, v)
    return cache


def append(cache: StaticCache, kv: KV) -> None:
    """Write `kv` ([batch, heads, n, dim] per layer) into the next n slots of every layer."""
    for layer, (k, v) in zip(cache.layers, kv):
        layer.update(k, v)


def tail_kv(cache: StaticCache, start: int) -> KV:
    """Every layer's K/V from slot `start` on."""
    return [(layer.keys[:, :, start:], layer.values[:, :, start:]) for layer in cache.layers]


def right_aligned(parts: Sequence[KV], groups: Sequence[tuple[int, int]], rows: int, width: int) -> KV:
    """Join the K/V of row groups (`parts[g]` holds rows groups[g] = [start, stop)) into one [rows, heads, width,
    dim] per layer, each group's slots right-aligned (zeros, masked, on the left of shorter ones)."""
    joint = []
    for layer in range(len(parts[0])):
        pair = []
        for j in range(2):
            like = parts[0][layer][j]
            t = like.new_zeros((rows, like.shape[1], width, like.shape[3]))
            for (start, stop), part in zip(groups, parts):
                t[start:stop, :, width - part[layer][j].shape[2]:] = part[layer][j]
            pair.append(t)
        joint.append(tuple(pair))
    return joint


def select_rows(cache, index: torch.Tensor) -> None:
    """Keep (or repeat) cache rows in place: row i becomes old row index[i] (drop finished rows, repeat for samples)."""
    for layer in cache.layers:
        if getattr(layer, "is_initialized", False):
            layer.keys = layer.keys.index_select(0, index)
            layer.values = layer.values.index_select(0, index)
            if hasattr(layer, "batch_size"):
                layer.batch_size = index.numel()


def dynamic_cache(kv: KV, config) -> DynamicCache:
    """A growable cache starting from `kv` (left untouched), for the one-row forwards that build prefix K/V."""
    return DynamicCache(ddp_cache_data=kv, config=config) if kv else DynamicCache(config=config)


def cache_kv(cache) -> KV:
    return [(layer.keys, layer.values) for layer in cache.layers]


def has_sliding_layers(config) -> bool:
    """Whether the model's cache has sliding-window layers (their update is not a plain write at the next slots)."""
    return any(StaticCache(config=config, max_cache_len=8).is_sliding)


class KVMemo:
    """At most `size` K/Vs by key, least recently used evicted first: the engine's memo of prefix (+ template) K/V.

    Each entry is one row's K/V for a few-shot prefix (about 5 MB for SmolLM2-135M at ~100 tokens in fp32).
    `get(key, make)` returns the stored value or stores and returns `make()`."""

    def __init__(self, size: int):
        if size < 1:
            raise ValueError(f"prefix_cache_size={size!r}; expected an integer >= 1")
        self.size = int(size)
        self._items: OrderedDict[Hashable, KV] = OrderedDict()

    def get(self, key: Hashable, make: Callable[[], KV]) -> KV:
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        value = make()
        self._items[key] = value
        while len(self._items) > self.size:
            self._items.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._items)
