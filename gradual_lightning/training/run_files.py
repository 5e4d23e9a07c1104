"""What a run writes as it goes, besides metrics.json: probe results and selections per stage (rank 0 only).

probe/stage0_pool.jsonl, probe/stage0_test.jsonl   the base probe of the pool and of the test set
probe/stage{N}_selected.json                       what stage N trains on, and from which probe it was selected;
                                                   `abstain_ids` and `abstention_text` for a stage that abstains,
                                                   `loss_weights` (id -> weight) for a weighted one
probe/stage{N}_pool.jsonl                          the pool re-probed after stage N
probe/test_correct.json                            per-question test correctness after every stage (0 = base)
probe/test_answers.json                            the greedy test answers they score, after every stage (0 = base)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pytorch_lightning.utilities import rank_zero_only

from gradual_lightning import io as gl_io
from gradual_lightning import tracking
from gradual_lightning.training import metrics as M
from gradual_lightning.training.ledger import KnowledgeLedger, Partition


@rank_zero_only  # under trainer=ddp every rank holds the same results: one writer
def write_base(out_dir: Path, pool: Iterable[Any], test: Iterable[Any]) -> None:
    gl_io.write_jsonl(out_dir / "probe" / "stage0_pool.jsonl", (r.to_dict() for r in pool))
    gl_io.write_jsonl(out_dir / "probe" / "stage0_test.jsonl", (r.to_dict() for r in test))


@rank_zero_only
def write_selection(out_dir: Path, partition: Partition) -> None:
    s = partition.stage + 1
    record = {"stage": s, "selected_from_probe": partition.selected_from_probe,
              "selected_ids": list(partition.selected_ids)}
    if partition.abstain_ids:
        record.update(abstain_ids=list(partition.abstain_ids), abstention_text=partition.abstention_text)
    if partition.weights is not None:
        record["loss_weights"] = dict(partition.weights)
    gl_io.write_json(out_dir / "probe" / f"stage{s}_selected.json", record)


@rank_zero_only
def write_stage(out_dir: Path, ledger: KnowledgeLedger, rows: list[Mapping[str, Any]]) -> None:
    s = len(ledger.stages)
    gl_io.write_jsonl(out_dir / "probe" / f"stage{s}_pool.jsonl", rows)
    gl_io.write_json(out_dir / "probe" / "test_correct.json",
                     [ledger.test_correct_after(i) for i in range(s + 1)])
    gl_io.write_json(out_dir / "probe" / "test_answers.json",
                     [ledger.test_answers_after(i) for i in range(s + 1)])


def log_stage(loggers: list, ledger: KnowledgeLedger, rows: list[Mapping[str, Any]]) -> None:
    """Stage scalars to every logger (the base model's counts as step 0 of the same curves), and W&B tables."""
    s = len(ledger.stages)
    record = ledger.stage_record(s)
    for logger in loggers:
        if s == 1:
            logger.log_metrics({f"stage/pool_counts/{c}": n for c, n in M.category_counts(ledger.base_pool).items()},
                               step=0)
        logger.log_metrics({f"stage/{k}": v for k, v in tracking.stage_scalars(record).items()}, step=s)
    tracking.log_stage(loggers, s, M.transition_matrix(ledger.base_pool, ledger.current_pool),
                       tracking.probe_examples(rows, ledger.base_pool, ledger.pool_after(s - 1), ledger.trained_ids))


def describe(partition: Partition, stage, num_stages: int) -> str:
    """One readable log line: what a stage trains on."""
    what = "the whole pool" if stage.select == "all" else (
        "the previous stage's questions again" if stage.select == "previous"
        else f"{'/'.join(stage.categories)} questions")
    if stage.base_categories is not None:
        what = "pool questions" if stage.select == "all" else what
        what += f" ({'/'.join(stage.base_categories)} at base)"
    if stage.unknown_ratio is not None:
        what += f" with a share {stage.unknown_ratio:g} of Unknown (a seeded mix)"
    elif stage.size is not None:
        what += f", a seeded sample (size {stage.size:g})"
    probe = "the base probe" if partition.selected_from_probe == 0 else \
        f"the probe after stage {partition.selected_from_probe}"
    line = (f"stage {partition.stage + 1}/{num_stages}: {len(partition.selected_ids)} {what} "
            f"(selected from {probe})")
    if partition.abstain_ids:
        line += (f" + {len(partition.abstain_ids)} {'/'.join(stage.abstain_categories or ('previous',))} trained to "
                 f"answer {partition.abstention_text!r}")
    if partition.n_replay:
        line += (f" + {partition.n_replay} replay of {len(partition.replay_pool_ids)} "
                 f"{'/'.join(stage.replay_categories)}, redrawn every {partition.replay_every}")
    if stage.loss_weights is not None:
        line += f"; loss weighted by {stage.loss_weights.by}"
    epochs = f"{stage.epochs} epoch{'s' if stage.epochs != 1 else ''}"
    return line + f"; {epochs} at lr {stage.lr:g}, keep the {stage.keep} epoch"
