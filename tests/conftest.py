import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")

REPO = Path(__file__).resolve().parents[1]
ENTITY_QUESTIONS = REPO.parent / "shared" / "data" / "entity_questions"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def smollm2():
    """The real shipped SmolLM2-135M-Instruct (converted once into the model cache)."""
    from omegaconf import OmegaConf

    from gradual_lightning.models import load_model

    return load_model(OmegaConf.load(REPO / "conf/model/smollm2_135m.yaml"))


@pytest.fixture(scope="session")
def tiny_random():
    from omegaconf import OmegaConf

    from gradual_lightning.models import load_model

    return load_model(OmegaConf.load(REPO / "conf/model/tiny_random.yaml"))
