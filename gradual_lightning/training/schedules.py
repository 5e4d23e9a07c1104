"""Stage schedules: which pool questions each fine-tuning stage trains on, typed and checked before any training.

A schedule is a list of stages built from `conf/schedule/*.yaml` by `from_config`. Every mistake (unknown key,
category name, bad value) fails at start-up with a message naming the schedule, the stage index and the field,
rather than hours later at a stage boundary.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from gradual_lightning.categories import CATEGORIES
from gradual_lightning.probing.matching import ABSTENTION_TEXT, normalize
from gradual_lightning.training.loss_weights import LossWeights

SELECTS = ("categories", "previous", "all")
REPLAY_EVERY = ("epoch", "step")
KEEPS = ("best", "last")


class ScheduleError(ValueError):
    """An invalid schedule; the message names schedule, stage index, field and the bad value."""


def _check_categories(names: Any, fail, name: str, allow_none: bool = False) -> None:
    if names is None and allow_none:
        return
    if isinstance(names, str) or not isinstance(names, list | tuple) or not names:
        fail(name, f"must be a non-empty list of categories from {list(CATEGORIES)}, got {names!r}")
    for c in names:
        if c not in CATEGORIES:
            fail(name, f"unknown category {c!r}; expected one of {list(CATEGORIES)}")


@dataclass(frozen=True)
class Stage:
    """One fine-tuning stage. `select` says where its training questions come from:

    - `categories`: pool questions whose category under the latest probe is in `categories`
    - `previous`: exactly the previous stage's selection (a control: same data, no re-selection)
    - `all`: the whole pool
    `base_categories` further keeps only questions whose base-model category is in it (ablations). Replay adds
    `replay_ratio * len(selection)` questions drawn from `replay_categories` (latest probe), redrawn every epoch or
    every step (`replay_every`). `keep` picks the weights the stage ends with: the best epoch by dev accuracy or the
    last one. `merge_adapter` merges the previous stage's LoRA into the weights and starts a fresh one.

    `abstain_categories` (R-Tuning; null = off) adds the pool questions of these categories (same probe as the
    selection) to the stage's training set with the schedule's `abstention_text` as their answer, instead of the
    gold one: the stage trains its selection on gold answers plus these on the abstention. With select=all they are
    already selected and take the abstention; with select=categories they must not overlap `categories`; with
    select=previous the previous stage's abstentions are reused as is. `loss_weights` (null = every question
    weighs 1) weighs each training question's loss by its probe result (`loss_weights.py`).
    """

    select: str = "categories"
    categories: tuple[str, ...] = ()
    base_categories: tuple[str, ...] | None = None
    reprobe: bool = False
    replay_ratio: float = 0.0
    replay_categories: tuple[str, ...] = ("HighlyKnown",)
    replay_every: str = "epoch"
    epochs: int = 4
    lr: float = 2e-4
    merge_adapter: bool = False
    reset_optimizer: bool = True
    keep: str = "best"
    abstain_categories: tuple[str, ...] | None = None
    loss_weights: LossWeights | None = None  # a mapping in the config, validated into LossWeights
    # where this stage sits, for error messages only
    index: int = field(default=0, compare=False, repr=False)
    schedule: str = field(default="?", compare=False, repr=False)

    def _fail(self, name: str, msg: str):
        raise ScheduleError(f"schedule {self.schedule!r}, stage {self.index}, field {name!r}: {msg}")

    def __post_init__(self) -> None:
        fail = self._fail
        if self.select not in SELECTS:
            fail("select", f"got {self.select!r}; expected one of {list(SELECTS)}")
        if self.select == "categories":
            _check_categories(self.categories, fail, "categories")
        elif self.categories:
            fail("categories", f"is only used with select=categories (select={self.select!r}), got "
                               f"{list(self.categories)!r}; leave it empty")
        if self.select == "previous" and self.index == 0:
            fail("select", "'previous' needs a previous stage; stage 0 has none")
        _check_categories(self.base_categories, fail, "base_categories", allow_none=True)
        if self.select == "previous" and self.base_categories is not None:
            fail("base_categories", "has no effect with select=previous (the previous selection is reused as is)")
        for name in ("reprobe", "merge_adapter", "reset_optimizer"):
            if not isinstance(getattr(self, name), bool):
                fail(name, f"must be true or false, got {getattr(self, name)!r}")
        ratio = self.replay_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not ratio >= 0:
            fail("replay_ratio", f"must be a number >= 0, got {ratio!r}")
        if ratio > 0:
            _check_categories(self.replay_categories, fail, "replay_categories")
        if self.replay_every not in REPLAY_EVERY:
            fail("replay_every", f"got {self.replay_every!r}; expected one of {list(REPLAY_EVERY)}")
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1:
            fail("epochs", f"must be an integer >= 1, got {self.epochs!r}")
        if isinstance(self.lr, bool) or not isinstance(self.lr, int | float) or not self.lr > 0:
            fail("lr", f"must be a number > 0, got {self.lr!r}")
        if self.keep not in KEEPS:
            fail("keep", f"got {self.keep!r}; expected one of {list(KEEPS)}")
        if self.merge_adapter and self.index == 0:
            fail("merge_adapter", "stage 0 has no previous adapter to merge")
        if self.merge_adapter and not self.reset_optimizer:
            fail("reset_optimizer", "must be true when merge_adapter is true (the new adapter has new parameters)")
        self._check_abstain_and_weights()

    def _check_abstain_and_weights(self) -> None:
        fail = self._fail
        _check_categories(self.abstain_categories, fail, "abstain_categories", allow_none=True)
        if self.abstain_categories is not None and self.select == "previous":
            fail("abstain_categories", "has no effect with select=previous (the previous stage's abstentions are "
                                       "reused as is)")
        both = sorted(set(self.abstain_categories or ()) & set(self.categories))
        if both and self.select == "categories":
            fail("abstain_categories", f"{both} are also in categories: a question trains on its answer or on the "
                                       "abstention, not both")
        object.__setattr__(self, "loss_weights", LossWeights.from_config(self.loss_weights, fail))

    def to_dict(self) -> dict[str, Any]:
        """Plain container (for run records and checkpoints)."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("index", "schedule")}
        for k in ("categories", "base_categories", "replay_categories", "abstain_categories"):
            d[k] = None if d[k] is None else list(d[k])
        d["loss_weights"] = None if self.loss_weights is None else self.loss_weights.to_dict()
        return d


STAGE_KEYS = tuple(f.name for f in fields(Stage) if f.name not in ("index", "schedule"))
SCHEDULE_KEYS = ("name", "stages", "max_stages", "repeat_until_stable", "category", "abstention_text")


@dataclass(frozen=True)
class Schedule:
    """An ordered list of stages. With `repeat_until_stable`, the last stage is repeated while its selection still
    holds questions never trained on before, up to `max_stages` stages in all. Without it, `max_stages` (if set)
    only truncates the list. `category` is a template parameter for presets (`schedule=category`).
    `abstention_text` is what stages with `abstain_categories` train their questions to answer, and what test
    answers count as abstentions (`matching.is_abstention`)."""

    name: str
    stages: tuple[Stage, ...]
    max_stages: int | None = None
    repeat_until_stable: bool = False
    category: str | None = None
    abstention_text: str = ABSTENTION_TEXT

    def _fail(self, name: str, msg: str):
        raise ScheduleError(f"schedule {self.name!r}, field {name!r}: {msg}")

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ScheduleError(f"schedule field 'name' must be a non-empty string, got {self.name!r}")
        if not self.stages:
            self._fail("stages", "needs at least one stage")
        m = self.max_stages
        if m is not None and (isinstance(m, bool) or not isinstance(m, int) or m < 1):
            self._fail("max_stages", f"must be an integer >= 1 or null, got {m!r}")
        if not isinstance(self.repeat_until_stable, bool):
            self._fail("repeat_until_stable", f"must be true or false, got {self.repeat_until_stable!r}")
        if self.repeat_until_stable:
            if m is None or m < len(self.stages):
                self._fail("max_stages", f"repeat_until_stable needs max_stages >= {len(self.stages)} (the listed "
                                         f"stages), got {m!r}")
            last = self.stages[-1]
            if last.select != "categories" or not last.reprobe:
                self._fail("repeat_until_stable", f"the repeated stage {last.index} must have select=categories "
                                                  "and reprobe=true, otherwise every repeat trains on the same data")
        if self.category is not None and self.category not in CATEGORIES:
            self._fail("category", f"unknown category {self.category!r}; expected one of {list(CATEGORIES)}")
        text = self.abstention_text
        if not isinstance(text, str) or "\n" in text or not normalize(text):
            self._fail("abstention_text", f"must be one line of text with letters or digits, got {text!r}")

    @property
    def abstains(self) -> bool:
        """Whether some stage trains questions to answer the abstention text."""
        return any(s.abstain_categories for s in self.stages)

    @property
    def num_stages(self) -> int:
        """The most stages this schedule can run."""
        if self.repeat_until_stable:
            return int(self.max_stages)
        return min(len(self.stages), self.max_stages or len(self.stages))

    def stage_at(self, index: int, newly_selected: int | None = None) -> Stage | None:
        """The stage to run at `index`, or None when the schedule is over.

        For a repeated stage (index beyond the listed ones) the caller passes `newly_selected`: how many of the
        questions the stage would select were never trained on before (`GradualDataModule.newly_selected`).
        Zero means the run is stable and the schedule ends.
        """
        if index < 0 or index >= self.num_stages:
            return None
        if index < len(self.stages):
            return self.stages[index]
        if newly_selected is None:
            raise ValueError(f"schedule {self.name!r}: stage {index} repeats stage {len(self.stages) - 1}; "
                             "pass newly_selected to decide whether the run is stable")
        if newly_selected == 0:
            return None
        return _replace_index(self.stages[-1], index)

    def stages_from(self, start: int, newly_selected: Callable[[Stage], int]) -> Iterator[Stage]:
        """The stages to run, from index `start` (the number already finished: 0, or where a resume picks up).

        A listed stage is always run. With `repeat_until_stable`, the last listed stage is then repeated while
        `newly_selected(stage)` (asked when the repeat is due, after the previous stage's re-probe) says it would
        still select questions never selected before, up to `num_stages` stages in all."""
        index = start
        while index < self.num_stages:
            if index < len(self.stages):
                yield self.stages[index]
            else:
                stage = _replace_index(self.stages[-1], index)
                if newly_selected(stage) == 0:
                    return
                yield stage
            index += 1

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "stages": [s.to_dict() for s in self.stages], "max_stages": self.max_stages,
                "repeat_until_stable": self.repeat_until_stable, "category": self.category,
                "abstention_text": self.abstention_text}


def _replace_index(stage: Stage, index: int) -> Stage:
    return Stage(**{**stage.to_dict(), "index": index, "schedule": stage.schedule})


def _tuple(v):
    return tuple(v) if isinstance(v, list | tuple) else v


def from_config(cfg: Any, stage_overrides: Mapping[str, Any] | None = None,
                explicit: Iterable[tuple[int, str]] = ()) -> Schedule:
    """Build and validate a Schedule from a `conf/schedule/*.yaml` node (DictConfig or plain mapping).

    `stage_overrides` (train.yaml's `stage_overrides`, e.g. {epochs: 1}) replace those fields in every stage: a
    quick run of any schedule that keeps its stages (debug=smoke). A field the user set for one stage on the
    command line (`explicit`: (stage index, field) pairs, see `explicit_stage_fields`) keeps the user's value."""
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            cfg = OmegaConf.to_container(cfg, resolve=True)
        if isinstance(stage_overrides, DictConfig):
            stage_overrides = OmegaConf.to_container(stage_overrides, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    if stage_overrides:
        unknown = sorted(set(stage_overrides) - set(STAGE_KEYS))
        if unknown:
            raise ScheduleError(f"stage_overrides: unknown key(s) {unknown}; allowed: {list(STAGE_KEYS)}")
        if isinstance(cfg, Mapping) and isinstance(cfg.get("stages"), list | tuple):
            mine = set(explicit)
            cfg = {**cfg, "stages": [{**st, **{k: v for k, v in stage_overrides.items() if (i, k) not in mine}}
                                     if isinstance(st, Mapping) else st for i, st in enumerate(cfg["stages"])]}
    if not isinstance(cfg, Mapping):
        raise ScheduleError(f"a schedule must be a mapping, got {type(cfg).__name__}")
    name = cfg.get("name", "?")
    unknown = sorted(set(cfg) - set(SCHEDULE_KEYS))
    if unknown:
        raise ScheduleError(f"schedule {name!r}: unknown key(s) {unknown}; allowed: {list(SCHEDULE_KEYS)}")
    raw_stages = cfg.get("stages")
    if not isinstance(raw_stages, list | tuple) or not raw_stages:
        raise ScheduleError(f"schedule {name!r}, field 'stages': must be a non-empty list, got {raw_stages!r}")
    stages = []
    for i, raw in enumerate(raw_stages):
        if not isinstance(raw, Mapping):
            raise ScheduleError(f"schedule {name!r}, stage {i}: must be a mapping, got {raw!r}")
        unknown = sorted(set(raw) - set(STAGE_KEYS))
        if unknown:
            raise ScheduleError(f"schedule {name!r}, stage {i}: unknown key(s) {unknown}; allowed: {list(STAGE_KEYS)}")
        kw = {k: _tuple(v) for k, v in raw.items()}
        if isinstance(kw.get("lr"), int) and not isinstance(kw.get("lr"), bool):
            kw["lr"] = float(kw["lr"])
        stages.append(Stage(**kw, index=i, schedule=str(name)))
    return Schedule(name=name, stages=tuple(stages), max_stages=cfg.get("max_stages"),
                    repeat_until_stable=cfg.get("repeat_until_stable", False), category=cfg.get("category"),
                    abstention_text=cfg.get("abstention_text", ABSTENTION_TEXT))


_STAGE_FIELD = re.compile(r"^[~+]*schedule\.stages\.(\d+)\.(\w+)=")


def explicit_stage_fields(overrides: Iterable[str]) -> set[tuple[int, str]]:
    """(stage index, field) of every `schedule.stages.N.field=value` among Hydra command-line overrides."""
    return {(int(m.group(1)), m.group(2)) for m in map(_STAGE_FIELD.match, overrides) if m}
