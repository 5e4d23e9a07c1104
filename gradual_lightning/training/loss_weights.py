"""Knowledge-weighted loss: a weight per training question from the probe its stage selects from.

A stage's `loss_weights` says how a question's probe result becomes its weight:

- `{by: category, weights: {MaybeKnown: 2.0, HighlyKnown: 0.5}}`: one weight per category; a category left out
  weighs 1.0.
- `{by: p_greedy, a: 0.5, b: 1.0}` or `{by: p_sampled, ...}`: weight = a + b * P, linear in the question's P value
  (a >= 0 and a + b >= 0, so every weight in [0, 1] is >= 0). P_sampled exists only where the probe sampled: with
  adaptive sampling only greedy-0 questions, and the default re-probes sample nothing, so a stage that meets a
  question without it fails, naming how many.

The module (`module.py::weighted_loss`) averages each example's token losses, multiplies by its weight and divides
by the batch's sum of weights: a weight scales a question's share of the gradient whatever its answer's length.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gradual_lightning.categories import CATEGORIES

WEIGHT_BY = ("category", "p_greedy", "p_sampled")
_KEYS = {"category": ("by", "weights"), "p_greedy": ("by", "a", "b"), "p_sampled": ("by", "a", "b")}


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


@dataclass(frozen=True)
class LossWeights:
    """A validated `loss_weights` mapping (hashable: a Stage holds it)."""

    by: str
    weights: tuple[tuple[str, float], ...] = ()  # by=category: (category, weight) for every category
    a: float = 1.0  # by=p_*: weight = a + b * P
    b: float = 0.0

    @classmethod
    def from_config(cls, cfg: Any, fail: Callable[[str, str], Any]) -> LossWeights | None:
        """From a stage's `loss_weights` (None: no weighting); `fail(field, message)` raises the stage's error."""
        if cfg is None or isinstance(cfg, LossWeights):
            return cfg
        name = "loss_weights"
        if not isinstance(cfg, Mapping):
            fail(name, f"must be a mapping with 'by' ({list(WEIGHT_BY)}) or null, got {cfg!r}")
        by = cfg.get("by")
        if by not in WEIGHT_BY:
            fail(name, f"'by' must be one of {list(WEIGHT_BY)}, got {by!r}")
        unknown = sorted(set(cfg) - set(_KEYS[by]))
        if unknown:
            fail(name, f"unknown key(s) {unknown} for by={by}; allowed: {list(_KEYS[by])}")
        if by == "category":
            weights = cfg.get("weights")
            if not isinstance(weights, Mapping) or not weights:
                fail(name, f"by=category needs 'weights', a mapping category -> weight, got {weights!r}")
            for c, w in weights.items():
                if c not in CATEGORIES:
                    fail(name, f"unknown category {c!r} in weights; expected some of {list(CATEGORIES)}")
                if not _number(w) or not w >= 0:
                    fail(name, f"weight of {c} must be a number >= 0, got {w!r}")
            full = {c: float(weights.get(c, 1.0)) for c in CATEGORIES}
            if not any(full.values()):
                fail(name, "every category weighs 0: nothing would be trained")
            return cls(by=by, weights=tuple(full.items()))
        a, b = cfg.get("a", 1.0), cfg.get("b", 0.0)
        for key, v in (("a", a), ("b", b)):
            if not _number(v):
                fail(name, f"'{key}' must be a number, got {v!r}")
        if a < 0 or a + b < 0:
            fail(name, f"weight = a + b * P must be >= 0 for every P in [0, 1], got a={a}, b={b}")
        if a == 0 and a + b == 0:
            fail(name, "a = 0 and b = 0: every question weighs 0, nothing would be trained")
        return cls(by=by, a=float(a), b=float(b))

    def weight(self, category: str | None, p_greedy: float | None, p_sampled: float | None) -> float | None:
        """A question's weight; None when the value it needs was not measured (a p_sampled never sampled)."""
        if self.by == "category":
            return dict(self.weights).get(category)
        p = p_greedy if self.by == "p_greedy" else p_sampled
        return None if p is None else self.a + self.b * p

    def to_dict(self) -> dict[str, Any]:
        if self.by == "category":
            return {"by": self.by, "weights": dict(self.weights)}
        return {"by": self.by, "a": self.a, "b": self.b}
