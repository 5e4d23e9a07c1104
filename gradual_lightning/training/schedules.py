"""Stage schedules: which pool questions each fine-tuning stage trains on, typed and checked before any training.

A schedule is a list of stages built from `conf/schedule/*.yaml` by `from_config`. Every mistake (unknown key,
category name, bad value) fails at start-up with a message naming the schedule, the stage index and the field,
rather than hours later at a stage boundary.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
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

    Sized selections (`_check_sizing`): `size` draws a seeded sample of the selection, an integer count or a share in
    (0, 1] (the late patch of known facts, `known_patch`). With `unknown_ratio` the stage trains a fixed-size SliCK
    mix: `size` questions (an integer), unknown_ratio * size of them (rounded half up) Unknown under the selection's
    probe and the rest from `categories` (the known ones).

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
    size: int | float | None = None
    unknown_ratio: float | None = None
    abstain_categories: tuple[str, ...] | None = None
    loss_weights: LossWeights | None = None  # a mapping in the config, validated into LossWeights
    # where this stage sits, for error messages only
    index: int = field(default=0, compare=False, repr=False)
    schedule: str = field(default="?", compare=False, repr=False)

    def error(self, name: str, msg: str) -> ScheduleError:
        """The error for field `name` of this stage (also raised by the ledger when the pool cannot fill it)."""
        return ScheduleError(f"schedule {self.schedule!r}, stage {self.index}, field {name!r}: {msg}")

    def _fail(self, name: str, msg: str):
        raise self.error(name, msg)

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
        self._check_sizing()
        self._check_abstain_and_weights()

    def _check_sizing(self) -> None:
        """`size` and `unknown_ratio` (known_patch, unknown_mix)."""
        fail, size, ratio = self._fail, self.size, self.unknown_ratio
        if size is not None:
            count = isinstance(size, int) and not isinstance(size, bool) and size >= 1
            if not count and not (isinstance(size, float) and 0 < size <= 1):
                fail("size", f"must be an integer >= 1 (a count) or a float in (0, 1] (a share), got {size!r}")
            if self.select == "previous":
                fail("size", "has no effect with select=previous (the previous selection is reused as is)")
        if ratio is None:
            return
        if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0 <= ratio <= 1:
            fail("unknown_ratio", f"must be a number in [0, 1], got {ratio!r}")
        if self.select != "categories":
            fail("unknown_ratio", f"needs select=categories (the known side of the mix), got select={self.select!r}")
        if "Unknown" in self.categories:
            fail("categories", f"are the known side of the unknown_ratio mix and must not hold Unknown, got "
                               f"{list(self.categories)!r}")
        if isinstance(size, bool) or not isinstance(size, int):
            fail("size", f"unknown_ratio needs a fixed training-set size, an integer >= 1, got {size!r}")

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
SCHEDULE_KEYS = ("name", "stages", "max_stages", "repeat_until_stable", "category", "abstention_text",
                 "order", "order_by", "known_patch", "unknown_ratio", "size")  # the last five: see from_config


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
    command line (`explicit`: (stage index, field) pairs, see `explicit_stage_fields`) keeps the user's value.

    Two schedule keys build stages: `order` (a curriculum, `expand_order`: the listed stages are templates, indices
    in `explicit` refer to them) and `known_patch` (`known_patch_stage`: one more stage at the end)."""
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            cfg = OmegaConf.to_container(cfg, resolve=True)
        if isinstance(stage_overrides, DictConfig):
            stage_overrides = OmegaConf.to_container(stage_overrides, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    stage_overrides, mine = dict(stage_overrides or {}), set(explicit)
    if stage_overrides:
        unknown = sorted(set(stage_overrides) - set(STAGE_KEYS))
        if unknown:
            raise ScheduleError(f"stage_overrides: unknown key(s) {unknown}; allowed: {list(STAGE_KEYS)}")
        if isinstance(cfg, Mapping) and isinstance(cfg.get("stages"), list | tuple):
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
    for i, raw in enumerate(raw_stages):
        if not isinstance(raw, Mapping):
            raise ScheduleError(f"schedule {name!r}, stage {i}: must be a mapping, got {raw!r}")
        unknown = sorted(set(raw) - set(STAGE_KEYS))
        if unknown:
            raise ScheduleError(f"schedule {name!r}, stage {i}: unknown key(s) {unknown}; allowed: {list(STAGE_KEYS)}")
    if cfg.get("order") is not None or cfg.get("order_by") is not None:
        raw_stages = expand_order(str(name), raw_stages, cfg.get("order"), cfg.get("order_by"))
    stages = [_stage(raw, i, str(name)) for i, raw in enumerate(raw_stages)]
    if cfg.get("known_patch") is not None:
        stages.append(known_patch_stage(str(name), cfg["known_patch"], stages, stage_overrides, mine))
    schedule = Schedule(name=name, stages=tuple(stages), max_stages=cfg.get("max_stages"),
                        repeat_until_stable=cfg.get("repeat_until_stable", False), category=cfg.get("category"),
                        abstention_text=cfg.get("abstention_text", ABSTENTION_TEXT))
    if cfg.get("known_patch") is not None and (schedule.repeat_until_stable or schedule.num_stages < len(stages)):
        schedule._fail("known_patch", "the patch must be the last stage run: it cannot follow a repeated stage "
                                      "(repeat_until_stable) or be cut off by max_stages "
                                      f"({schedule.max_stages!r} < {len(stages)} stages)")
    return schedule


def _stage(raw: Mapping[str, Any], index: int, schedule: str) -> Stage:
    kw = {k: _tuple(v) for k, v in raw.items()}
    if isinstance(kw.get("lr"), int) and not isinstance(kw.get("lr"), bool):
        kw["lr"] = float(kw["lr"])
    return Stage(**kw, index=index, schedule=schedule)


ORDER_BY = ("base", "latest")
ORDER_SETS = ("select", "categories", "base_categories")


def expand_order(name: str, templates: Sequence[Mapping[str, Any]], order: Any, order_by: Any) -> list[dict]:
    """A curriculum (`schedule=curriculum`): stage k trains on the questions of category `order[k]`, with the
    settings of listed stage min(k, last) (so a first stage and a template for every later one).

    `order_by=base` (default): by the base model's category (`select: all, base_categories: [order[k]]`): each
    question is trained in at most one stage, in order of what the base model knew, and the data are those of a single
    stage on the same categories (only the order differs); the pool is still re-probed after every stage. `latest`:
    by the latest probe (`select: categories, categories: [order[k]]`, later stages need `reprobe: true`): what
    stage k trains on follows what the model knows after stage k-1; a question trained earlier that is of order[k]
    now is trained again (nothing is excluded). Re-probes are greedy only unless reprobe.num_samples > 0, so they
    never find WeaklyKnown questions (`check_reprobe_sees`)."""
    def fail(field_name: str, msg: str):
        raise ScheduleError(f"schedule {name!r}, field {field_name!r}: {msg}")

    order_by = "base" if order_by is None else order_by
    if order_by not in ORDER_BY:
        fail("order_by", f"got {order_by!r}; expected one of {list(ORDER_BY)}")
    _check_categories(order, fail, "order")
    if len(set(order)) != len(order):
        fail("order", f"names a category twice: {list(order)!r}")
    for i, t in enumerate(templates):
        for key in ORDER_SETS:
            if key in t:
                raise ScheduleError(f"schedule {name!r}, stage {i}, field {key!r}: is set by the schedule's order "
                                    f"(one category per stage, order_by={order_by}); leave it out")
    stages = []
    for k, category in enumerate(order):
        pick = ({"select": "categories", "categories": [category]} if order_by == "latest"
                else {"select": "all", "base_categories": [category]})
        stage = {**templates[min(k, len(templates) - 1)], **pick}
        if order_by == "latest" and k > 0 and not stage.get("reprobe", False):
            raise ScheduleError(f"schedule {name!r}, stage {min(k, len(templates) - 1)}, field 'reprobe': "
                                f"order_by=latest selects stage {k} from the latest probe: it needs reprobe: true")
        stages.append(stage)
    return stages


PATCH = -1  # the known_patch stage's index in `explicit` (its real index depends on the schedule)
PATCH_DEFAULTS = {"select": "categories", "categories": ["HighlyKnown"], "size": 0.1, "reprobe": True,
                  "merge_adapter": True, "epochs": 1, "keep": "last"}


def known_patch_stage(name: str, block: Any, stages: Sequence[Stage], stage_overrides: Mapping[str, Any],
                      explicit: set[tuple[int, str]]) -> Stage:
    """The late patch of known facts (KnownPatch), appended to any schedule by `schedule.known_patch`: a short
    last stage on a seeded sample (`size`: 10% by default, or a count) of the questions HighlyKnown under the
    latest probe (it re-probes: the probe after the schedule's last stage), a fresh LoRA on the merged weights, one
    epoch at the last stage's lr. The block sets any stage field over these defaults (null keeps the default);
    `stage_overrides` apply to it as to every stage, except fields set on the command line
    (`schedule.known_patch.<field>=`)."""
    if not isinstance(block, Mapping):
        raise ScheduleError(f"schedule {name!r}, field 'known_patch': must be a mapping of stage fields (e.g. "
                            f"{{size: 0.1, epochs: 1}}) or null, got {block!r}")
    unknown = sorted(set(block) - set(STAGE_KEYS))
    if unknown:
        raise ScheduleError(f"schedule {name!r}, field 'known_patch': unknown key(s) {unknown}; allowed: "
                            f"{list(STAGE_KEYS)}")
    mine = {k for i, k in explicit if i == PATCH}
    mine |= set(block) if "*" in mine else set()
    block = {k: v for k, v in block.items() if v is not None}  # null: the default (lr: the last stage's)
    raw = {**PATCH_DEFAULTS, "lr": stages[-1].lr, **block,
           **{k: v for k, v in stage_overrides.items() if k not in mine}}
    return _stage(raw, len(stages), f"{name} (known_patch)")


def check_reprobe_sees(schedule: Schedule, reprobe_samples: int) -> None:
    """Re-probes with `reprobe.num_samples=0` (train.yaml's default) are greedy only: a question with P_greedy = 0
    is Unknown there, never WeaklyKnown. A stage that selects (or replays) WeaklyKnown questions from such a probe
    would select nothing: a config mistake, refused at start-up."""
    if reprobe_samples > 0:
        return
    reprobed = False
    for st in schedule.stages:
        reprobed = reprobed or (st.reprobe and st.index > 0)
        if not reprobed:
            continue
        if st.select == "categories" and "WeaklyKnown" in st.categories:
            field_name = "categories"
        elif st.replay_ratio > 0 and "WeaklyKnown" in st.replay_categories:
            field_name = "replay_categories"
        else:
            continue
        raise st.error(field_name, "selects WeaklyKnown questions from a re-probe, but re-probes are greedy only "
                                   "(reprobe.num_samples=0) and never find WeaklyKnown; set reprobe.num_samples "
                                   "> 0, or select by base category (base_categories; schedule.order_by=base)")


_STAGE_FIELD = re.compile(r"^[~+]*schedule\.stages\.(\d+)\.(\w+)=")
_PATCH_FIELD = re.compile(r"^[~+]*schedule\.known_patch(?:\.(\w+))?=")


def explicit_stage_fields(overrides: Iterable[str]) -> set[tuple[int, str]]:
    """(stage index, field) of every `schedule.stages.N.field=value` among Hydra command-line overrides;
    `schedule.known_patch.field=` gives (PATCH, field), a whole `schedule.known_patch={...}` (PATCH, "*")."""
    fields_ = {(int(m.group(1)), m.group(2)) for m in map(_STAGE_FIELD.match, overrides) if m}
    return fields_ | {(PATCH, m.group(1) or "*") for m in map(_PATCH_FIELD.match, overrides) if m}
