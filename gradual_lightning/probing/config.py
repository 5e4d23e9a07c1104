"""Typed, validated probe settings (config group `probe`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from gradual_lightning.models.loading import DTYPES
from gradual_lightning.probing.backend import BACKENDS
from gradual_lightning.probing.matching import MATCH_MODES, NORMALIZER_VERSION
from gradual_lightning.probing.prompts import EXEMPLAR_SETS, FORMATS
from gradual_lightning.validation import ConfigError, check_keys, check_types

EXEMPLAR_SOURCES = ("dev", "pool")
# generate: decode greedy answers and samples (SliCK as published). score: greedy correctness and sample
# probabilities by teacher forcing (runner.py, scoring.py). hybrid: greedy answers decoded, sampling scored.
METHODS = ("generate", "score", "hybrid")
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
    method: str = "generate"        # generate (decode, SliCK) | score (teacher forcing) | hybrid (decoded greedy)
    dtype: str | None = None        # compute dtype of probing: None = the model's; another = a cast copy (backend.py)

    def __post_init__(self) -> None:
        _validate(asdict(self), "probe")

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], group: str = "probe", base: ProbeConfig | None = None) -> ProbeConfig:
        """Settings from a config node; with `base`, the node only overrides some of base's (`reprobe`, `eval`).
        Errors name `group` and the key."""
        cfg = dict(cfg)
        check_keys(cls, cfg, group)
        values = {**(asdict(base) if base is not None else {}), **cfg}
        _validate(values, group)
        return cls(**values)

    def cache_key(self) -> dict[str, Any]:
        key = {k: v for k, v in asdict(self).items() if k not in _SPEED_ONLY}
        for field, default in (("method", "generate"), ("dtype", None)):
            if key[field] == default:  # the defaults: keys (and cache entries) from before the fields still hold
                del key[field]
        key["normalizer_version"] = NORMALIZER_VERSION
        return key


def _validate(values: Mapping[str, Any], group: str) -> None:
    check_types(ProbeConfig, values, group)
    choices = {"exemplar_source": EXEMPLAR_SOURCES, "exemplar_sets": EXEMPLAR_SETS, "format": FORMATS,
               "match": MATCH_MODES, "backend": BACKENDS, "method": METHODS, "dtype": (None, *DTYPES)}
    for key, allowed in choices.items():
        if key in values and values[key] not in allowed:
            raise ConfigError(f"{group}.{key}={values[key]!r} is not one of {allowed}")
    for key, low in {"num_prompts": 1, "k_shot": 1, "max_new_tokens": 1, "batch_size": 1, "num_samples": 0,
                     "top_k": 1}.items():
        if key in values and values[key] < low:
            raise ConfigError(f"{group}.{key}={values[key]!r} must be >= {low}")
    if "temperature" in values and not values["temperature"] > 0:
        raise ConfigError(f"{group}.temperature={values['temperature']!r} must be > 0")
    if values.get("method", "generate") != "generate" and values.get("match", "exact") != "exact":
        raise ConfigError(f"{group}.method={values['method']!r} scores exact answers only (the aliases' own "
                          f"token paths); {group}.match={values['match']!r} needs {group}.method='generate'")
