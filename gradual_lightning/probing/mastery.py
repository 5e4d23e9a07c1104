"""SliCK mastery categories from P_greedy and P_sampled (or p_detect), with validated thresholds (group `mastery`).

A probe by generation (`probe.method=generate`) measures P_sampled as the share of correct samples: WeaklyKnown is
"some sample was correct". A probe by teacher forcing (`score`, `hybrid`) measures exact probabilities instead: the
expected share of correct samples is positive for almost every question, so WeaklyKnown is decided by `p_detect`,
the probability that SliCK's num_prompts x num_samples samples would hold at least one correct answer, against
`weakly_known_detect` (0.5: more likely than not that the published sampling would have found the answer).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gradual_lightning.categories import Category
from gradual_lightning.validation import ConfigError

_EPS = 1e-9


class MasteryError(ConfigError):
    """Thresholds that cannot define four ordered categories."""


@dataclass(frozen=True)
class MasteryThresholds:
    """HighlyKnown: p_greedy >= highly_known. MaybeKnown: maybe_known < p_greedy < highly_known.
    WeaklyKnown: p_greedy <= maybe_known and p_sampled > weakly_known, and, when the probe gives p_detect (exact
    probabilities, `probe.method` score or hybrid), also p_detect >= weakly_known_detect. Unknown: the rest.

    SliCK is highly_known=1, maybe_known=0, weakly_known=0. `weakly_known_detect` is not SliCK's (SliCK samples): it
    is used only for probes that give p_detect, and it is not part of any probe cache key (categories are re-derived
    from the stored values).
    """

    name: str = "slick"
    highly_known: float = 1.0
    maybe_known: float = 0.0
    weakly_known: float = 0.0
    weakly_known_detect: float = 0.5

    def __post_init__(self) -> None:
        for field in ("highly_known", "maybe_known", "weakly_known", "weakly_known_detect"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise MasteryError(f"mastery.{field}={value!r} (preset {self.name!r}) must be a number in [0, 1]")
        if not self.maybe_known < self.highly_known:
            raise MasteryError(
                f"mastery thresholds in the wrong order (preset {self.name!r}): need maybe_known < highly_known, "
                f"got maybe_known={self.maybe_known} and highly_known={self.highly_known}"
            )
        if self.weakly_known >= 1.0:
            raise MasteryError(f"mastery.weakly_known={self.weakly_known} leaves no room for WeaklyKnown (need < 1)")

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> MasteryThresholds:
        known = {"name", "highly_known", "maybe_known", "weakly_known", "weakly_known_detect"}
        unknown = set(cfg) - known
        if unknown:
            raise MasteryError(f"unknown mastery keys {sorted(unknown)}; expected {sorted(known)}")
        return cls(**dict(cfg))

    def needs_sampling(self, p_greedy: float) -> bool:
        """Sampling only separates WeaklyKnown from Unknown, so it is needed only below the MaybeKnown bound."""
        return p_greedy <= self.maybe_known + _EPS


SLICK = MasteryThresholds()


def categorize(p_greedy: float, p_sampled: float | None, thresholds: MasteryThresholds = SLICK,
               p_detect: float | None = None) -> str:
    """The category of one question, as its plain stored name (a `str`, never a `Category` member).

    p_sampled=None (not sampled) counts as no correct sample. p_detect=None (a probe by generation) leaves
    WeaklyKnown to p_sampled alone; otherwise p_detect must also reach `weakly_known_detect`."""
    if p_greedy >= thresholds.highly_known - _EPS:
        return Category.HIGHLY_KNOWN.value
    if p_greedy > thresholds.maybe_known + _EPS:
        return Category.MAYBE_KNOWN.value
    if p_sampled is not None and p_sampled > thresholds.weakly_known + _EPS and (
            p_detect is None or p_detect >= thresholds.weakly_known_detect - _EPS):
        return Category.WEAKLY_KNOWN.value
    return Category.UNKNOWN.value
