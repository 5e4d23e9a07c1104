"""Data loaders: plain functions returning `QASplits`, chosen from config through Hydra `_target_`.

    conf/data/world_facts.yaml       built-in default, real geography facts (no download)
    conf/data/entity_questions.yaml  EntityQuestions directory (the published SliCK data)
    conf/data/jsonl.yaml             your own questions, one JSON object per line
"""

from __future__ import annotations

from collections import Counter

from gradual_lightning.data._sampling import positive_int
from gradual_lightning.data.entity_questions import load_entity_questions
from gradual_lightning.data.jsonl import load_jsonl
from gradual_lightning.data.world_facts import load_world_facts
from gradual_lightning.records import SPLITS, DataError, QASplits

__all__ = ["load_data", "load_entity_questions", "load_jsonl", "load_world_facts"]

# Integer options (>= 1) of the loaders, checked before the call so that errors name the config key.
_POSITIVE_INT_OPTIONS = {load_world_facts: ("num_train", "num_dev", "num_test")}


def load_data(cfg) -> QASplits:
    """Instantiate a data config (a DictConfig or dict with `_target_`) and check what it returns: a QASplits
    with a non-empty train split and ids unique across all splits (stages key caches and results by id)."""
    from hydra.utils import instantiate  # noqa: PLC0415 (keeps `import gradual_lightning.data` light)

    target = cfg.get("_target_") if hasattr(cfg, "get") else None
    if not target:
        raise DataError(f"data config has no '_target_' naming a loader function: {cfg!r}")
    _check_int_options(target, cfg)
    try:
        data = instantiate(cfg)
    except Exception as e:  # Hydra wraps the loader's error: surface the DataError with its own message
        cause = e.__cause__
        if isinstance(cause, DataError):
            raise cause from None
        raise
    if not isinstance(data, QASplits):
        raise DataError(f"data loader {target} returned {type(data).__name__}, expected QASplits")
    if not data.train:
        raise DataError(f"data loader {target} ({data.name!r}) returned an empty train split")
    counts = Counter(r.id for s in SPLITS for r in data[s])
    repeated = [i for i, n in counts.items() if n > 1]
    if repeated:
        raise DataError(f"data loader {target} ({data.name!r}) returned repeated ids, e.g. {repeated[:5]}")
    return data


def _check_int_options(target: str, cfg) -> None:
    """The integer options of a known loader that the config sets: each must be an integer >= 1."""
    from hydra.utils import get_method  # noqa: PLC0415

    try:
        loader = get_method(target)
    except Exception:  # instantiate reports a target that does not resolve
        return
    for key in _POSITIVE_INT_OPTIONS.get(loader, ()):
        if key in cfg:
            positive_int(cfg[key], f"data.{key}")
