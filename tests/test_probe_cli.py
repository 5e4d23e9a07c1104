"""probe.py, the probe entry point, on the tiny random model: probe.jsonl, summary.json and categories.png.

The tiny model knows nothing, which is all these tests need: they check what the entry point writes, not what a
model knows (tests/test_engine.py and tests/test_models.py do that on the real model).
"""

import json
import runpy
import sys
from collections import Counter
from pathlib import Path

import pytest
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

import probe
from gradual_lightning.categories import CATEGORIES
from gradual_lightning.data import load_data
from gradual_lightning.probing.config import ProbeConfig

PNG = b"\x89PNG\r\n\x1a\n"


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "probe.jsonl").read_text().splitlines()]


def _questions(cfg, split="train"):
    data_cfg = OmegaConf.to_container(cfg.data, resolve=True)
    data_cfg.pop("split")
    data = load_data(data_cfg)
    return data, data[split][: cfg.max_questions]


def _out_dir() -> Path:
    return Path(HydraConfig.get().runtime.output_dir)


def test_run_writes_probe_jsonl_summary_and_categories_png(cfg_probe, tiny_random):
    out = _out_dir()
    returned = probe.run(cfg_probe, out)

    data, questions = _questions(cfg_probe)
    rows = _rows(out)
    assert [r["id"] for r in rows] == [q.id for q in questions] and len(rows) == cfg_probe.max_questions
    assert all(r["category"] in CATEGORIES and len(r["greedy"]) == cfg_probe.probe.num_prompts for r in rows)

    summary = json.loads((out / "summary.json").read_text())
    assert summary == json.loads(json.dumps(returned, default=str))  # what run() returns is what it wrote
    assert (summary["split"], summary["num_questions"], summary["model"]) == ("train", len(rows), "tiny_random")
    # counts for all four categories (zeros included), in category order, and they are the rows' categories
    assert list(summary["counts"]) == list(CATEGORIES)
    assert summary["counts"] == {c: Counter(r["category"] for r in rows)[c] for c in CATEGORIES}
    by_relation = Counter((r["relation"], r["category"]) for r in rows)
    assert summary["counts_by_relation"] == {
        rel: {c: by_relation[rel, c] for c in CATEGORIES} for rel in sorted({r["relation"] for r in rows})}
    # the probe config that produced it, the thresholds, and the fingerprints of model and data
    assert summary["probe"] == ProbeConfig.from_config(cfg_probe.probe).cache_key()
    assert summary["probe"]["num_prompts"] == 1 and summary["probe"]["k_shot"] == 1
    assert summary["mastery"] == OmegaConf.to_container(cfg_probe.mastery, resolve=True)
    assert summary["model_fingerprint"] == tiny_random.fingerprint
    assert summary["data_fingerprint"] == data.fingerprint()
    assert summary["seed"] == 0 and summary["config"]["max_questions"] == cfg_probe.max_questions
    assert summary["from_cache"] is False

    assert (out / "categories.png").read_bytes()[:8] == PNG
    assert sorted(p.name for p in out.iterdir()) == ["categories.png", "probe.jsonl", "summary.json"]


def test_identical_probe_comes_from_the_cache_other_split_does_not(cfg_probe, tmp_path, monkeypatch):
    monkeypatch.setenv("GL_PROBE_CACHE", str(tmp_path / "cache"))
    cfg_probe.cache = True
    first, second = tmp_path / "first", tmp_path / "second"
    assert probe.run(cfg_probe, first)["from_cache"] is False
    assert len(list((tmp_path / "cache").glob("*.jsonl"))) == 1
    assert probe.run(cfg_probe, second)["from_cache"] is True
    assert _rows(second) == _rows(first)

    cfg_probe.data.split = "dev"
    dev = probe.run(cfg_probe, tmp_path / "dev")
    assert dev["split"] == "dev" and dev["from_cache"] is False
    _, questions = _questions(cfg_probe, "dev")
    assert [r["id"] for r in _rows(tmp_path / "dev")] == [q.id for q in questions]


def test_unknown_split_fails_before_the_model_is_loaded(cfg_probe, monkeypatch):
    monkeypatch.setattr(probe, "load_model", lambda *a, **k: pytest.fail("model loaded before validation"))
    cfg_probe.data.split = "valid"
    with pytest.raises(ValueError, match="data.split='valid' is not one of"):
        probe.run(cfg_probe, _out_dir())


def test_command_line_writes_the_files_into_the_hydra_run_dir(repo_root, tiny_probe_overrides, tmp_path,
                                                               monkeypatch):
    """`python probe.py ...` from another working directory: the script run as __main__, in this process."""
    from hydra.core.global_hydra import GlobalHydra

    out = tmp_path / "run"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["probe.py", *tiny_probe_overrides, "max_questions=3", "data.split=test",
                                      f"hydra.run.dir={out}", "hydra/job_logging=none", "hydra/hydra_logging=none"])
    try:
        runpy.run_path(str(repo_root / "probe.py"), run_name="__main__")
    finally:
        GlobalHydra.instance().clear()
        HydraConfig.instance().cfg = None
    summary = json.loads((out / "summary.json").read_text())
    assert summary["split"] == "test" and summary["num_questions"] == 3 == len(_rows(out))
    assert sum(summary["counts"].values()) == 3 and "hydra" not in summary["config"]
    assert (out / "categories.png").read_bytes()[:8] == PNG
    assert (out / ".hydra" / "overrides.yaml").is_file()
