"""Probe a model's knowledge of a question set (SliCK categories). See conf/probe.yaml for the options."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from gradual_lightning.data import load_data
from gradual_lightning.io import write_json, write_jsonl
from gradual_lightning.models import load_model
from gradual_lightning.probing.cache import ProbeCache, default_cache_dir
from gradual_lightning.probing.config import ProbeConfig
from gradual_lightning.probing.mastery import MasteryThresholds
from gradual_lightning.probing.prober import probe_questions
from gradual_lightning.probing.summary import counts_by_relation, plot_categories, summary_table
from gradual_lightning.provenance import run_record
from gradual_lightning.quiet import quiet_libraries
from gradual_lightning.records import SPLITS, QARecord, QASplits
from gradual_lightning.training.metrics import category_counts
from gradual_lightning.validation import check_value

log = logging.getLogger("probe")


@dataclass(frozen=True)
class ProbeInputs:
    """What probe.yaml's config asks to probe, validated and loaded (the model aside)."""

    probe: ProbeConfig
    thresholds: MasteryThresholds
    data: QASplits
    split: str
    questions: list[QARecord]
    exemplars: list[QARecord]  # the exemplar source (`probe.exemplar_source`)


def probe_inputs(cfg: DictConfig) -> ProbeInputs:
    """Probe settings, thresholds, data, the questions of `data.split` (the first `max_questions`) and the exemplar
    source, as `run` probes them (benchmarks/validate_exact.py builds its probes with it too)."""
    check_value("max_questions", cfg.max_questions, "int", minimum=1, optional=True)
    probe_cfg = ProbeConfig.from_config(cfg.probe)
    thresholds = MasteryThresholds.from_config(cfg.mastery)
    data_cfg = OmegaConf.to_container(cfg.data, resolve=True)
    split = data_cfg.pop("split", "train")
    if split not in SPLITS:
        raise ValueError(f"data.split={split!r} is not one of {SPLITS}")
    data = load_data(data_cfg)
    questions = data[split][: cfg.max_questions] if cfg.max_questions else data[split]
    source = data.dev if probe_cfg.exemplar_source == "dev" else data.train
    return ProbeInputs(probe_cfg, thresholds, data, split, list(questions), list(source))


def run(cfg: DictConfig, out_dir: Path) -> dict:
    start = time.time()
    quiet_libraries()
    inputs = probe_inputs(cfg)
    probe_cfg, thresholds, data, split = inputs.probe, inputs.thresholds, inputs.data, inputs.split
    questions, source = inputs.questions, inputs.exemplars
    lm = load_model(cfg.model)
    results, from_cache = probe_questions(
        lm.model, lm.tokenizer, questions, source, probe_cfg, thresholds, model_fingerprint=lm.fingerprint,
        cache=ProbeCache(default_cache_dir(cfg.paths.cache_dir)) if cfg.cache else None, desc=f"probe {split}",
        progress=cfg.progress,
    )
    write_jsonl(out_dir / "probe.jsonl", (r.to_dict() for r in results))
    summary = {
        "split": split,
        "num_questions": len(results),
        "counts": category_counts([r.category for r in results]),
        "counts_by_relation": counts_by_relation(results),
        "mastery": OmegaConf.to_container(cfg.mastery, resolve=True),
        "probe": probe_cfg.cache_key(),
        "model": lm.name,
        "from_cache": from_cache,
        "wall_time_s": round(time.time() - start, 1),
        **run_record(cfg, seed=cfg.seed, data_fingerprint=data.fingerprint(), model_fingerprint=lm.fingerprint),
    }
    write_json(out_dir / "summary.json", summary)
    plot_categories(results, out_dir / "categories.png", title=f"{lm.name} on {data.name}/{split}")
    console = Console()
    console.print(summary_table(results, title=f"{lm.name} on {data.name}/{split} ({len(results)} questions)"))
    console.print(f"wrote {out_dir}/probe.jsonl, summary.json, categories.png ({summary['wall_time_s']} s)")
    return summary


@hydra.main(version_base="1.3", config_path="conf", config_name="probe")
def main(cfg: DictConfig) -> None:
    run(cfg, Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    main()
