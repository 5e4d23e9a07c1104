"""Typed, validated probe settings (config group `probe`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from gradual_lightning.probing.backend import BACKENDS
from gradual_lightning.probing.matching import MATCH_MODES, NORMALIZER_VERSION
from gradual_lightning.probing.prompts import EXEMPLAR_SETS, FORMATS

EXEMPLAR_SOURCES = ("dev", "pool")
# Settings that change how fast a probe runs but not what it finds: left out of cache keys.
_SPEED_ONLY = ("batch_size",)


@dataclass(frozen=True)
class ProbeConfig:
    num_prompts: int = 10          # N_ex few-shot prompts per question (SliCK: 10)
    k_shot: int = 4                # exemplars per prompt
    exemplar_source: str = "dev"   # dev (SliCK) | pool (reference code)
    exemplar_sets: str = "fixed"   # fixed (shared per relation: prefix reuse) | random (per question)
    format: str = "plain"          # plain "Q: ...\nA: ..." | chat (the tokenizer's chat template)
    max_new_tokens: int = 12
    batch_size: int = 32
    num_samples: int = 16          # per prompt; 0 = greedy only
    temperature: float = 0.5
    top_k: int = 40
    adaptive_sampling: bool = True  # sample only questions whose greedy score leaves the category open
    early_stop_sampling: bool = False  # stop at a question's first correct sample (p_sampled becomes a lower bound)
    match: str = "exact"           # exact (SliCK) | contains (reference code)
    seed: int = 0
    backend: str = "engine"         # engine (prefix-KV cache) | hf (plain generate, the reference)

    def __post_init__(self) -> None:
        choices = {"exemplar_source": EXEMPLAR_SOURCES, "exemplar_sets": EXEMPLAR_SETS, "format": FORMATS,
                   "match": MATCH_MODES, "backend": BACKENDS}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ValueError(f"probe.{key}={getattr(self, key)!r} is not one of {allowed}")
        for key in ("num_prompts", "k_shot", "max_new_tokens", "batch_size"):
            if int(getattr(self, key)) < 1:
                raise ValueError(f"probe.{key}={getattr(self, key)!r} must be >= 1")
        if self.num_samples < 0 or self.top_k < 1 or self.temperature <= 0:
            raise ValueError(
                f"probe sampling settings invalid: num_samples={self.num_samples} (>= 0), "
                f"top_k={self.top_k} (>= 1), temperature={self.temperature} (> 0)"
            )

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> ProbeConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(cfg) - names)
        if unknown:
            raise ValueError(f"unknown probe keys {unknown}; known keys: {sorted(names)}")
        return cls(**dict(cfg))

    def cache_key(self) -> dict[str, Any]:
        key = {k: v for k, v in asdict(self).items() if k not in _SPEED_ONLY}
        key["normalizer_version"] = NORMALIZER_VERSION
        return key
