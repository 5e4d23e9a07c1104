"""The knowledge ledger: everything a gradual-learning run knows about its questions, as plain data (no Lightning).

It holds the base model's pool and test categories, the pool's categories and P values after every stage, test
correctness and greedy test answers after every stage, what every stage selected (from which probe) and the
questions it trained on. From that it decides what the next stage trains on (`select`: its selection, abstentions
and loss weights), whether a repeated stage still has something new (`newly_selected`), and computes every metric
of the run through the pure functions of `metrics.py`. It is the one owner of `trained_ids`. `state_dict()` is plain
lists, dicts, strings and numbers: it goes into checkpoints as is.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from gradual_lightning.probing.matching import ABSTENTION_TEXT
from gradual_lightning.rng import seeded_rng
from gradual_lightning.training import metrics as M
from gradual_lightning.training.schedules import ScheduleError, Stage

log = logging.getLogger(__name__)


PValues = dict[str, list]  # question id -> [p_greedy, p_sampled] of one probe (p_sampled None where not sampled)


@dataclass(frozen=True)
class Partition:
    """What one stage trains on: the selected pool questions (pool order, gold answers), the questions trained to
    answer `abstention_text` instead (`abstain_ids`), the pool replay is drawn from, and the loss weight of every
    question the stage may train on (`weights`; None: all weigh 1)."""

    stage: int  # 0-based stage index
    selected_ids: tuple[str, ...]
    replay_pool_ids: tuple[str, ...] = ()
    n_replay: int = 0
    replay_every: str = "epoch"
    selected_from_probe: int = 0  # which probe (0 = base, s = after stage s) the selection was made from
    abstain_ids: tuple[str, ...] = ()
    abstention_text: str = ABSTENTION_TEXT
    weights: dict[str, float] | None = None

    def __bool__(self) -> bool:
        return bool(self.selected_ids) or bool(self.abstain_ids) or self.n_replay > 0

    @property
    def train_ids(self) -> tuple[str, ...]:
        """Every epoch's fixed part: the selection, then the abstentions."""
        return self.selected_ids + self.abstain_ids

    def answers(self) -> dict[str, str]:
        """The training answer of the questions that do not train on their gold answer."""
        return dict.fromkeys(self.abstain_ids, self.abstention_text)

    def summary(self) -> dict[str, Any]:
        return {"n_selected": len(self.selected_ids), "n_abstain": len(self.abstain_ids),
                "n_replay_pool": len(self.replay_pool_ids), "n_replay": self.n_replay,
                "replay_every": self.replay_every, "loss_weighted": self.weights is not None}

    def epoch_plan(self, epoch: int, *, seed: int, batch_size: int) -> list[list[str]]:
        """The batches (lists of ids) of one epoch; a pure function of the partition, seed, batch size and epoch.

        replay_every=epoch: one replay sample per epoch, shuffled in with the selection. replay_every=step: the
        selection is spread over the batches and every batch draws its own replay questions."""
        rng = seeded_rng(seed, self.stage, epoch, sep="/")
        b = batch_size
        if self.replay_every == "epoch":
            ids = list(self.train_ids) + rng.sample(self.replay_pool_ids, self.n_replay)
            rng.shuffle(ids)
            return [ids[i:i + b] for i in range(0, len(ids), b)]
        sel = list(self.train_ids)
        rng.shuffle(sel)
        nb = math.ceil((len(sel) + self.n_replay) / b)
        batches = []
        for k in range(nb):
            n_rep = (k + 1) * self.n_replay // nb - k * self.n_replay // nb
            batch = sel[k * len(sel) // nb:(k + 1) * len(sel) // nb] + rng.sample(self.replay_pool_ids, n_rep)
            rng.shuffle(batch)
            batches.append(batch)
        return batches

    def trained_ids(self, epochs: int, *, seed: int, batch_size: int) -> set[str]:
        """Every question some epoch of the stage trains on (selection and replay draws)."""
        return {q for e in range(epochs) for batch in self.epoch_plan(e, seed=seed, batch_size=batch_size)
                for q in batch}


@dataclass
class StageRecord:
    """One stage of the run, as metrics.json's `stages` list holds it."""

    partition: Partition
    config: dict[str, Any]
    pool: dict[str, str] = field(default_factory=dict)  # categories after the stage
    test_correct: dict[str, bool] = field(default_factory=dict)
    trained_ids: list[str] = field(default_factory=list)  # trained on in this stage
    dev: dict[str, Any] = field(default_factory=dict)  # dev_accuracy, dev_accuracy_per_epoch, kept_epoch
    reused_from: dict[str, Any] | None = None  # loaded from the stage cache: key, run_dir, wall_s (stage_cache.py)
    pool_p: PValues = field(default_factory=dict)  # P values after the stage
    test_answers: dict[str, str] = field(default_factory=dict)  # greedy test answers after the stage


def _half_up(x: float) -> int:
    """x rounded to the nearest integer, halves up (Python's round() takes halves to the even one)."""
    return math.floor(x + 0.5)


class KnowledgeLedger:
    def __init__(self, pool_ids: Sequence[str], seed: int = 0, abstention_text: str = ABSTENTION_TEXT) -> None:
        self.pool_ids = list(pool_ids)
        self.seed = seed  # the run's seed: sized selections (`Stage.size`) are drawn from it
        if len(set(self.pool_ids)) != len(self.pool_ids):
            raise ValueError("KnowledgeLedger: the training pool holds duplicate question ids")
        self.abstention_text = abstention_text  # the schedule's: what abstaining stages train, what test counts
        self.base_pool: dict[str, str] = {}
        self.base_test: dict[str, str] = {}
        self.base_test_correct: dict[str, bool] = {}
        self.base_pool_p: PValues = {}
        self.base_test_answers: dict[str, str] = {}
        self.stages: list[StageRecord] = []
        self.basis = 0  # which probe stages select from (moves only when a stage re-probes)

    # ---- what the run knows --------------------------------------------------------------------------------------
    @property
    def has_base(self) -> bool:
        return bool(self.base_pool)

    def pool_after(self, s: int) -> dict[str, str]:
        """Pool categories after stage s (0: the base model)."""
        return self.base_pool if s == 0 else self.stages[s - 1].pool

    def pool_p_after(self, s: int) -> PValues:
        """Pool P values after stage s (0: the base model)."""
        return self.base_pool_p if s == 0 else self.stages[s - 1].pool_p

    @property
    def current_pool(self) -> dict[str, str]:
        return self.pool_after(len(self.stages))

    @property
    def trained_ids(self) -> set[str]:
        return {q for rec in self.stages for q in rec.trained_ids}

    @property
    def ever_selected(self) -> set[str]:
        return {q for rec in self.stages for q in rec.partition.selected_ids}

    # ---- selection -------------------------------------------------------------------------------------------
    def _select_ids(self, stage: Stage, categories: Mapping[str, str]) -> list[str]:
        if stage.select == "previous":
            if not self.stages:
                raise ValueError("select=previous: no previous stage has been run")
            return list(self.stages[-1].partition.selected_ids)
        missing = sum(q not in categories for q in self.pool_ids)
        if missing and stage.select == "categories":
            log.warning("%d of %d pool questions have no category in the probe; they are not selected",
                        missing, len(self.pool_ids))
        return self._matching(categories, stage.categories if stage.select == "categories" else None,
                              stage.base_categories)

    def _matching(self, categories: Mapping[str, str], wanted: Sequence[str] | None,
                  base: Sequence[str] | None) -> list[str]:
        """Pool questions (pool order) of a `wanted` category under `categories` and a `base` category at base
        (None: any)."""
        return [q for q in self.pool_ids if (wanted is None or categories.get(q) in wanted)
                and (base is None or self.base_pool.get(q) in base)]

    def newly_selected(self, stage: Stage) -> int:
        """How many questions `stage` would select from the latest probe that no earlier stage selected (0: a
        repeated stage is stable)."""
        ever = self.ever_selected
        return sum(q not in ever for q in self._select_ids(stage, self.current_pool))

    def select(self, stage: Stage) -> Partition:
        """The partition of the next stage. A stage that re-probes selects from the latest probe; one that does
        not keeps the probe the previous selection used (it must not see what the model learned meanwhile)."""
        if not self.has_base:
            raise RuntimeError("KnowledgeLedger.select: record the base probe first")
        if stage.reprobe:
            self.basis = len(self.stages)
        categories = self.pool_after(self.basis)
        index = len(self.stages)
        abstain = self._abstain_ids(stage, categories)
        abstaining = set(abstain)  # with select=all they are selected too: they train on the abstention
        selected = [q for q in self._select_ids(stage, categories) if q not in abstaining]
        if stage.size is not None:
            selected = self._sized(stage, selected, categories)
        chosen = set(selected) | abstaining
        replay_pool = [q for q in self.pool_ids if q not in chosen and categories.get(q) in stage.replay_categories]
        wanted = round(stage.replay_ratio * len(selected))
        n_replay = min(wanted, len(replay_pool))
        if n_replay < wanted:
            log.warning("stage %d: replay wants %d questions but only %d are %s", index + 1, wanted,
                        len(replay_pool), list(stage.replay_categories))
        if not selected and not abstain:
            log.warning("stage %d selects no question", index + 1)
        if stage.abstain_categories and not abstain:
            log.warning("stage %d: no question is %s, none trains to abstain", index + 1,
                        list(stage.abstain_categories))
        weights = self._weights(stage, [*selected, *abstain, *(replay_pool if n_replay else ())], categories)
        return Partition(index, tuple(selected), tuple(replay_pool), n_replay,
                         stage.replay_every, self.basis, tuple(abstain), self.abstention_text, weights)

    def _abstain_ids(self, stage: Stage, categories: Mapping[str, str]) -> list[str]:
        if stage.select == "previous":
            return list(self.stages[-1].partition.abstain_ids) if self.stages else []
        wanted = stage.abstain_categories or ()
        return [q for q in self.pool_ids if categories.get(q) in wanted]

    def _weights(self, stage: Stage, ids: list[str], categories: Mapping[str, str]) -> dict[str, float] | None:
        """Loss weight of every question the stage may train on, from the probe it selects from."""
        lw = stage.loss_weights
        if lw is None:
            return None
        p = self.pool_p_after(self.basis)
        weights = {q: lw.weight(categories.get(q), *p.get(q, (None, None))) for q in ids}
        where = f"schedule {stage.schedule!r}, stage {stage.index}, field 'loss_weights'"
        missing = [q for q, w in weights.items() if w is None]
        if missing:
            raise ScheduleError(
                f"{where}: by={lw.by} needs a value for every training question, but {len(missing)} of {len(ids)} "
                f"have none in the probe after stage {self.basis} (e.g. {missing[0]!r}); P_sampled exists only for "
                "questions the probe sampled (probe.adaptive_sampling=true samples greedy-0 questions only, "
                "re-probes sample nothing unless reprobe.num_samples > 0)")
        if ids and not any(weights.values()):
            raise ScheduleError(f"{where}: every one of the stage's {len(ids)} questions weighs 0 ({lw.to_dict()})")
        return weights

    def _sized(self, stage: Stage, selected: list[str], categories: Mapping[str, str]) -> list[str]:
        """A seeded draw from the selection (`size`: a count or a share), or with `unknown_ratio` the SliCK mix:
        exactly `size` questions, unknown_ratio * size (rounded half up) Unknown under `categories` (the selection's
        probe) and the rest from `selected`. Drawn with the run's seed and the stage index; returned in pool order."""
        rng = seeded_rng(self.seed, "select", stage.index, sep="/")
        if stage.unknown_ratio is None:
            n = stage.size if isinstance(stage.size, int) else max(1, _half_up(stage.size * len(selected)))
            if n > len(selected):
                log.warning("stage %d: size %d but only %d questions are %s; it takes them all", stage.index + 1,
                            n, len(selected), list(stage.categories) or stage.select)
            drawn = set(rng.sample(selected, min(n, len(selected))))
        else:
            unknown = self._matching(categories, ("Unknown",), stage.base_categories)
            n_unknown = _half_up(stage.unknown_ratio * stage.size)
            n_known = stage.size - n_unknown
            if n_unknown > len(unknown) or n_known > len(selected):
                fits = max(s for s in range(stage.size + 1) if _half_up(stage.unknown_ratio * s) <= len(unknown)
                           and s - _half_up(stage.unknown_ratio * s) <= len(selected))
                probe = "the base probe" if self.basis == 0 else f"the probe after stage {self.basis}"
                raise stage.error("size", f"{stage.size} questions at unknown_ratio {stage.unknown_ratio} need "
                                          f"{n_unknown} Unknown and {n_known} {'/'.join(stage.categories)}, but "
                                          f"{probe} has {len(unknown)} and {len(selected)}; at this ratio the pool "
                                          f"holds at most size={fits}")
            drawn = set(rng.sample(unknown, n_unknown)) | set(rng.sample(selected, n_known))
        return [q for q in self.pool_ids if q in drawn]

    # ---- recording -------------------------------------------------------------------------------------------
    def record_base(self, pool: Mapping[str, str], test: Mapping[str, str], test_correct: Mapping[str, bool], *,
                    pool_p: Mapping[str, Sequence] | None = None,
                    test_answers: Mapping[str, str] | None = None) -> None:
        self.base_pool, self.base_test, self.base_test_correct = dict(pool), dict(test), dict(test_correct)
        self.base_pool_p = {q: list(v) for q, v in (pool_p or {}).items()}
        self.base_test_answers = dict(test_answers or {})

    def record(self, stage: Stage, partition: Partition, *, pool: Mapping[str, str],
               test_correct: Mapping[str, bool], trained_ids: Sequence[str] | set[str],
               dev: Mapping[str, Any] | None = None, pool_p: Mapping[str, Sequence] | None = None,
               test_answers: Mapping[str, str] | None = None,
               reused_from: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Add a finished stage; returns its metrics.json record. `reused_from`: the stage was not trained here but
        loaded from the stage cache (which entry, who trained it, how long it took)."""
        if partition.stage != len(self.stages):
            raise ValueError(f"record: stage {partition.stage + 1} recorded after {len(self.stages)} stages")
        self.stages.append(StageRecord(partition, stage.to_dict(), dict(pool), dict(test_correct),
                                       sorted(trained_ids), dict(dev or {}),
                                       None if reused_from is None else dict(reused_from),
                                       {q: list(v) for q, v in (pool_p or {}).items()}, dict(test_answers or {})))
        return self.stage_record(len(self.stages))

    # ---- metrics ---------------------------------------------------------------------------------------------
    def test_correct_after(self, s: int) -> dict[str, bool]:
        return self.base_test_correct if s == 0 else self.stages[s - 1].test_correct

    def test_answers_after(self, s: int) -> dict[str, str]:
        """The greedy test answers after stage s (0 = base; empty where none were recorded)."""
        return self.base_test_answers if s == 0 else self.stages[s - 1].test_answers

    def test_abstained_after(self, s: int) -> dict[str, bool]:
        """Which test questions the model abstained on after stage s (empty where no answers were recorded)."""
        return M.abstained(self.test_answers_after(s), self.test_correct_after(s), self.abstention_text)

    def stage_record(self, s: int) -> dict[str, Any]:
        """metrics.json's record of stage s (1-based): what it trained on and what it changed."""
        rec = self.stages[s - 1]
        base, now = self.base_pool, rec.pool
        trained_so_far = {q for r in self.stages[:s] for q in r.trained_ids}
        split = M.knowledge_acquired_split(base, now, trained_so_far)
        return {"stage": s, **rec.partition.summary(), "selected_from_probe": rec.partition.selected_from_probe,
                "config": rec.config,
                "pool_counts": M.category_counts(now),
                "test_accuracy": M.accuracy(list(rec.test_correct.values())),
                "knowledge_acquired": M.knowledge_acquired([M.category_counts(base), M.category_counts(now)])[-1],
                "knowledge_acquired_trained": split["trained"],
                "knowledge_acquired_untrained": split["untrained"],
                "forgotten": M.forgotten(base, now),
                **rec.dev, **({"reused_from": rec.reused_from} if rec.reused_from else {})}

    def metrics(self) -> dict[str, Any]:
        """metrics.json: names other tools read (see README)."""
        pools = [self.pool_after(s) for s in range(len(self.stages) + 1)]
        counts = [M.category_counts(c) for c in pools]
        acquired = M.knowledge_acquired(counts)
        correct = [self.test_correct_after(s) for s in range(len(self.stages) + 1)]
        records = [self.stage_record(s) for s in range(1, len(self.stages) + 1)]
        dev = [r.get("dev_accuracy") for r in records]
        abstained = [self.test_abstained_after(s) for s in range(len(self.stages) + 1)]
        hallucinated = [M.hallucinated(c, a) for c, a in zip(correct, abstained)]
        return {
            "test_accuracy": M.accuracy(list(correct[-1].values())),
            "test_accuracy_per_stage": [M.accuracy(list(c.values())) for c in correct],
            "test_accuracy_by_base_category": M.accuracy_by_category(correct[-1], self.base_test),
            "retention": M.retention(correct[-1], self.base_test),
            "abstention_text": self.abstention_text,
            "test_abstention_rate": M.accuracy(list(abstained[-1].values())),
            "test_abstention_rate_per_stage": [M.accuracy(list(a.values())) for a in abstained],
            "test_abstention_by_base_category": M.accuracy_by_category(abstained[-1], self.base_test),
            "test_hallucination_rate": M.accuracy(list(hallucinated[-1].values())),
            "test_hallucination_rate_per_stage": [M.accuracy(list(h.values())) for h in hallucinated],
            "test_hallucination_by_base_category": M.accuracy_by_category(hallucinated[-1], self.base_test),
            "test_accuracy_answered": M.accuracy_answered(correct[-1], abstained[-1]),
            "dev_accuracy": dev[-1] if dev else None,
            "dev_accuracy_per_stage": dev,
            "pool_counts": counts,
            "knowledge_acquired": acquired,
            "incremental_gain": M.incremental_gain(acquired),
            "forgotten": [M.forgotten(self.base_pool, c) for c in pools],
            "transitions": [M.transition_matrix(self.base_pool, c) for c in pools],
            "knowledge_acquired_trained": [0] + [r["knowledge_acquired_trained"] for r in records],
            "knowledge_acquired_untrained": [0] + [r["knowledge_acquired_untrained"] for r in records],
            "stages": records,
        }

    # ---- resume ----------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"pool_ids": list(self.pool_ids), "base_pool": dict(self.base_pool), "base_test": dict(self.base_test),
                "base_test_correct": dict(self.base_test_correct), "basis": self.basis,
                "base_pool_p": {q: list(v) for q, v in self.base_pool_p.items()},
                "base_test_answers": dict(self.base_test_answers),
                "stages": [{**asdict(r), "partition": {**asdict(r.partition),
                                                       "selected_ids": list(r.partition.selected_ids),
                                                       "replay_pool_ids": list(r.partition.replay_pool_ids),
                                                       "abstain_ids": list(r.partition.abstain_ids)}}
                           for r in self.stages]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if list(state["pool_ids"]) != self.pool_ids:
            raise ValueError("the checkpointed ledger was made on another training pool: the data differ from the "
                             "checkpointed run")
        self.base_pool, self.base_test = dict(state["base_pool"]), dict(state["base_test"])
        self.base_test_correct, self.basis = dict(state["base_test_correct"]), int(state["basis"])
        self.base_pool_p = dict(state.get("base_pool_p", {}))  # .get: checkpoints from before P values and answers
        self.base_test_answers = dict(state.get("base_test_answers", {}))
        self.stages = []
        for r in state["stages"]:
            p = dict(r["partition"])
            part = Partition(**{**p, "selected_ids": tuple(p["selected_ids"]),
                                "replay_pool_ids": tuple(p["replay_pool_ids"]),
                                "abstain_ids": tuple(p.get("abstain_ids", ()))})
            self.stages.append(StageRecord(part, dict(r["config"]), dict(r["pool"]), dict(r["test_correct"]),
                                           list(r["trained_ids"]), dict(r["dev"]), r.get("reused_from"),
                                           dict(r.get("pool_p", {})), dict(r.get("test_answers", {}))))
