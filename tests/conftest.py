"""Shared fixtures: the repo root, the composed Hydra config (as a job sees it), the tiny and the real model.

Paths are built from this file's location, never from the working directory: `pytest /abs/path/tests/x.py` works
from anywhere.
"""

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
# One torch (OpenMP) thread unless the caller says otherwise: the test machines are shared, and two threads that lose
# a core to another process slow down many times (test_training_module.py: 37 s with two threads, 8 s with one, on
# this 2-core machine). Set before any test module imports torch; subprocesses (sweeps, DDP) inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"

# The smoke preset on the tiny random model, with a few questions of one relation: every step of a job (probe ->
# select -> fit -> re-probe -> files) for mechanics that need no knowledge (sweeps, reports, launchers, entry points).
# The tiny model knows nothing (every question is Unknown), so the schedule is `natural` (train on all): a stage that
# selects MaybeKnown would select nothing and skip training. A sweep job's dir is named after the overrides
# (hydra.sweep.subdir, cut to fit the file system's 255 bytes). cfg_train shrinks the probe further.
TINY_TRAIN = ["experiment=smoke", "model=tiny_random", "schedule=natural", "data.relations=[capital]",
              "data.num_train=6", "data.num_dev=5", "data.num_test=4", "stage_cache=false"]
# probe.py on the tiny model: a few questions of each split (2 dev exemplars per relation: k_shot + 1), one prompt.
# Both setups leave out the city relations, whose fact tables take seconds to build in every process.
TINY_PROBE = ["model=tiny_random", "data.relations=[capital,country_continent]", "data.num_train=8", "data.num_dev=4",
              "data.num_test=4", "max_questions=6", "probe.num_prompts=1", "probe.num_samples=1", "probe.k_shot=1",
              "probe.max_new_tokens=4", "cache=false", "progress=false"]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def tiny_train_overrides() -> list[str]:
    return list(TINY_TRAIN)


@pytest.fixture(scope="session")
def tiny_probe_overrides() -> list[str]:
    return list(TINY_PROBE)


@pytest.fixture
def compose():
    """compose(*overrides, config_name="train", output_dir=None, **hydra) -> the real config as a job would see it:
    composed from the absolute conf/ dir with `return_hydra_config=True` and HydraConfig set, so `${hydra:...}`
    interpolations resolve. Overrides are strings or lists of strings. `hydra` sets fields of the hydra node, e.g.
    mode=RunMode.MULTIRUN, **{"sweep.dir": ...}. Hydra's global state is cleared afterwards."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, open_dict

    def _compose(*overrides, config_name="train", output_dir=None, **hydra):
        flat = []
        for item in overrides:
            if not isinstance(item, str | list | tuple):
                raise TypeError(f"compose: {item!r} is not an override or a list of them (output_dir=...?)")
            flat += [item] if isinstance(item, str) else item
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = hydra_compose(config_name, overrides=flat, return_hydra_config=True)
        if output_dir is not None:
            hydra["runtime.output_dir"] = str(output_dir)
        with open_dict(cfg):
            for key, value in hydra.items():
                OmegaConf.update(cfg.hydra, key, value)
        HydraConfig().set_config(cfg)
        return cfg

    yield _compose
    GlobalHydra.instance().clear()
    HydraConfig.instance().cfg = None  # no later test sees this test's command line


def _job_config(cfg):
    """The config a job's task function receives: Hydra's run_job sets HydraConfig from the full config, then drops
    the hydra node (`${hydra:...}` still resolves, through HydraConfig)."""
    from omegaconf import open_dict, read_write

    with read_write(cfg), open_dict(cfg):
        del cfg["hydra"]
    return cfg


@pytest.fixture
def make_cfg_train(compose, tmp_path):
    """make_cfg_train(*overrides, output_dir=tmp_path/"run"): train.yaml on the tiny model (TINY_TRAIN, an override
    of the same key replacing its entry) as train.py's run() receives it, shrunk further under open_dict for
    in-process runs: one prompt and one sample per question, short answers, no cache, no logger, CPU, no progress
    bar. `${hydra:runtime.output_dir}` is output_dir."""
    from omegaconf import open_dict

    def make(*overrides: str, output_dir=None):
        keys = {o.split("=", 1)[0] for o in overrides}
        base = [o for o in TINY_TRAIN if o.split("=", 1)[0] not in keys]
        cfg = _job_config(compose(base, list(overrides), output_dir=output_dir or tmp_path / "run"))
        with open_dict(cfg):
            cfg.probe.num_prompts, cfg.probe.num_samples, cfg.probe.max_new_tokens = 1, 1, 4
            cfg.cache, cfg.progress, cfg.logger = False, False, None
            cfg.trainer.accelerator, cfg.trainer.enable_progress_bar = "cpu", False
        return cfg

    return make


@pytest.fixture
def cfg_train(make_cfg_train):
    """make_cfg_train() with TINY_TRAIN as it is: one stage (natural) on a few questions; output dir tmp_path/run."""
    return make_cfg_train()


@pytest.fixture
def cfg_probe(compose, tmp_path):
    """probe.yaml on the tiny model (TINY_PROBE) as probe.py's run() receives it. Output dir: tmp_path/probe."""
    return _job_config(compose(TINY_PROBE, config_name="probe", output_dir=tmp_path / "probe"))


def _load(name: str):
    from omegaconf import OmegaConf

    from gradual_lightning.models import load_model

    return load_model(OmegaConf.load(CONF / "model" / f"{name}.yaml"))


@pytest.fixture(scope="session")
def smollm2():
    """The real shipped SmolLM2-135M-Instruct (converted once into the model cache): for tests where facts matter."""
    return _load("smollm2_135m")


@pytest.fixture(scope="session")
def tiny_random():
    """The two-layer random Llama with the SmolLM2 tokenizer: for mechanics only (it knows nothing)."""
    return _load("tiny_random")
