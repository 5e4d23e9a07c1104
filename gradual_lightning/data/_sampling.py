"""Helpers shared by the loaders: path resolution, option checks, name normalisation and seeded, stratified
sampling.

Everything here is a pure function of its arguments (randomness comes from an explicit seed), so the same
config always yields the same data on any machine.
"""

from __future__ import annotations

import math
import random
import re
import unicodedata
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from gradual_lightning.records import DataError
from gradual_lightning.rng import seeded_rng

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parents[2]


def _hydra_original_cwd() -> list[Path]:
    try:
        from hydra.core.hydra_config import HydraConfig  # noqa: PLC0415
        from hydra.utils import get_original_cwd  # noqa: PLC0415

        return [Path(get_original_cwd())] if HydraConfig.initialized() else []
    except Exception:  # no Hydra, or not inside a Hydra job
        return []


def resolve_path(path: str | Path, what: str = "data path") -> Path:
    """A relative path is tried against the working directory, Hydra's original one (if a job changed
    directory), then the repo root (so `../shared/...` is found from anywhere in the checkout); a missing path
    is an error naming every place tried."""
    p = Path(str(path)).expanduser()
    bases = [Path.cwd(), *_hydra_original_cwd(), REPO_ROOT]
    tried = [p] if p.is_absolute() else list(dict.fromkeys(b / p for b in bases))
    for cand in tried:
        if cand.exists():
            return cand.resolve()
    raise DataError(f"{what} not found: {str(path)!r} (looked at {', '.join(str(t) for t in tried)})")


def positive_int(value, key: str, allow_none: bool = False) -> int | None:
    """`value` if it is an integer >= 1 (or None where `allow_none`); else a DataError naming the config `key` and
    the value. Booleans, floats and strings are refused rather than coerced."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DataError(f"{key}={value!r}: expected an integer >= 1{' or null' if allow_none else ''}")
    return value


def rng_for(seed: int, *salt: object) -> random.Random:
    """The loaders' generator per (seed, salt)."""
    return seeded_rng(seed, *salt)


def fold(text: str) -> str:
    """Comparison key for names: accents stripped, lower case, punctuation and spaces dropped."""
    return _NON_ALNUM.sub("", strip_accents(text).lower())


_NON_ALNUM = re.compile(r"[^0-9a-z]+")


def strip_accents(text: str) -> str:
    if text.isascii():
        return text
    return "".join(ch for ch in unicodedata.normalize("NFKD", text) if not unicodedata.combining(ch))


def unique(items: Sequence[str]) -> tuple[str, ...]:
    """Strip, drop blanks and exact repeats, keep order (so the canonical answer stays first). Variants that
    differ only in accents are kept on purpose: a model may print either form."""
    seen: set[str] = set()
    out = []
    for s in items:
        s = s.strip()
        if s and s not in seen:
            seen.add(s)
            out.append(s)
    return tuple(out)


def as_list(value) -> list | None:
    """None, a single string (comma separated allowed) or any sequence (OmegaConf ListConfig included)."""
    if value is None:
        return None
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value]


def allocate(total: int, capacity: dict[str, int]) -> dict[str, int]:
    """Split `total` as evenly as possible over the keys, never beyond a key's capacity (water-filling).
    Leftover units go to keys in sorted order, so the result is deterministic."""
    alloc = dict.fromkeys(capacity, 0)
    remaining = min(total, sum(capacity.values()))
    open_keys = sorted(k for k, c in capacity.items() if c > 0)
    while remaining > 0 and open_keys:
        share = max(1, remaining // len(open_keys))
        for k in list(open_keys):
            give = min(share, capacity[k] - alloc[k], remaining)
            alloc[k] += give
            remaining -= give
            if alloc[k] == capacity[k]:
                open_keys.remove(k)
            if remaining == 0:
                break
    return alloc


def stratified_sample(items: Sequence[T], k: int, weight: Callable[[T], float], rng: random.Random,
                      bins: int = 4) -> list[T]:
    """Draw k items spread evenly over `bins` equal-width bins of log10(weight): famous and obscure
    entities both appear, instead of a uniform draw that is almost all long tail. Input order must be
    deterministic; the output keeps it."""
    if k >= len(items):
        return list(items)
    logs = [math.log10(max(weight(x), 1.0)) for x in items]
    lo, hi = min(logs), max(logs)
    width = (hi - lo) / bins or 1.0
    groups: dict[str, list[int]] = {}
    for i, v in enumerate(logs):
        groups.setdefault(f"{min(int((v - lo) / width), bins - 1):02d}", []).append(i)
    quota = allocate(k, {b: len(ix) for b, ix in groups.items()})
    chosen: list[int] = []
    for b in sorted(groups):
        chosen.extend(rng.sample(groups[b], quota[b]))
    return [items[i] for i in sorted(chosen)]


def apportion(n: int, weights: dict[str, float]) -> dict[str, int]:
    """Largest-remainder rounding of n in proportion to the weights; the counts sum to n and a key never gets
    more than n * its share rounded up. Ties go to the earlier key in the dict's order (deterministic)."""
    total = sum(weights.values())
    if n <= 0 or total <= 0:
        return dict.fromkeys(weights, 0)
    raw = {k: n * w / total for k, w in weights.items()}
    counts = {k: int(math.floor(v + 1e-9)) for k, v in raw.items()}
    order = list(weights)
    for k in sorted(raw, key=lambda k: (counts[k] - raw[k], order.index(k)))[: max(0, n - sum(counts.values()))]:
        counts[k] += 1
    return counts
