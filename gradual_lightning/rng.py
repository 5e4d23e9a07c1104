"""Seeded random generators, one per purpose, independent of PYTHONHASHSEED and of each other.

Two constructions exist and stay, because changing either would change data splits, exemplar sets or epoch plans
of every earlier run (and the README's reference numbers):
- `seeded_rng(seed, *salt, sep=":")`: `random.Random` seeded with the joined string (hashed with SHA-512 by Python).
  Data splits use ":" (`rng_for` in the loaders), epoch plans "/".
- `hashed_rng(seed, *keys)`: seeded with the first 8 bytes of SHA-256 of the "|"-joined keys (exemplar sets).
"""

from __future__ import annotations

import hashlib
import random


def seeded_rng(seed: int, *salt: object, sep: str = ":") -> random.Random:
    return random.Random(sep.join(str(s) for s in (seed, *salt)))


def hashed_rng(seed: int, *keys: str) -> random.Random:
    digest = hashlib.sha256("|".join([str(seed), *keys]).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))
