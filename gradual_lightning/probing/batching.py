"""Pure batching helpers: padding, position ids, length buckets and prefill groups (no model, no transformers)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

PAD_SIDES = ("left", "right")


def pad_batch(seqs: Sequence[Sequence[int]], value: int, side: str = "left") -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask) of shape [B, longest]: each sequence padded with `value` on `side`; mask 1 on real tokens.

    Left padding lines prompts up for generation (their last tokens in the last column); right padding suits
    training batches (labels padded with -100 stay aligned with their inputs)."""
    if side not in PAD_SIDES:
        raise ValueError(f"side={side!r}; expected one of {PAD_SIDES}")
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), value, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, s in enumerate(seqs):
        if s:
            cols = slice(width - len(s), width) if side == "left" else slice(0, len(s))
            ids[row, cols] = torch.as_tensor(list(s), dtype=torch.long)
            mask[row, cols] = 1
    return ids, mask


def positions_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Position of each token among the real ones of its row (a pad repeats its left neighbour's; pads are never
    attended to, so their positions do not matter)."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def suffix_batch_inputs(
    suffixes: Sequence[Sequence[int]], prefix_lens: Sequence[int], pad_id: int, extra: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inputs to prefill left-padded suffixes on top of cached prefixes, row i's of `prefix_lens[i]` tokens.

    The cache holds each row's prefix in its first slots, zero-padded up to P = max(prefix_lens) (`kv.stack_rows`).
    Returns input_ids [B, S], attention_mask [B, P + S + extra] (ones over the row's prefix, zeros over its pads,
    which sit between prefix and suffix, ones over the suffix and the `extra` slots left for new tokens: the causal
    mask hides those until they are written) and position_ids [B, S] (the row's prefix length + index among its real
    suffix tokens), so every row sees exactly the positions and keys of its unpadded prompt.
    """
    if len(prefix_lens) != len(suffixes):
        raise ValueError(f"{len(prefix_lens)} prefix lengths for {len(suffixes)} suffixes")
    ids, suffix_mask = pad_batch(suffixes, pad_id, "left")
    width = max(prefix_lens, default=0)
    head = (torch.arange(width)[None, :] < torch.as_tensor(list(prefix_lens))[:, None]).long()
    mask = torch.cat([head, suffix_mask, torch.ones((len(suffixes), extra), dtype=torch.long)], dim=1)
    return ids, mask, positions_from_mask(mask)[:, width : width + ids.shape[1]]


def common_prefix_len(seqs: Sequence[Sequence[int]]) -> int:
    """Number of leading tokens all sequences share."""
    first = seqs[0]
    n = min(len(s) for s in seqs)
    for s in seqs[1:]:
        n = next((i for i in range(n) if s[i] != first[i]), n)
    return n


def shared_template_len(suffixes: Sequence[Sequence[int]], min_saving: int) -> int:
    """How many leading tokens of `suffixes` (one prefix's questions) to cache with the prefix as a shared template.

    Their common leading tokens, leaving every suffix at least one token of its own (its forward yields its logits),
    and none unless sharing saves more than `min_saving` tokens of prefill (the price of the template's own forward).
    """
    if not suffixes:
        return 0
    shared = max(0, min(common_prefix_len(suffixes), min(len(s) for s in suffixes) - 1))
    return shared if (len(suffixes) - 1) * shared > min_saving else 0


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
