"""checkpoints/last.pt: atomic saves, and resume errors that say what is wrong (corrupt, empty, another version,
other settings) instead of a bare EOFError or a tensor-size error."""

import pytest
import torch

from gradual_lightning.training import KnowledgeLedger
from gradual_lightning.training.checkpoint import CheckpointError, restore, run_identity, save
from gradual_lightning.training.schedules import from_config

SCHEDULE = from_config({"name": "one", "stages": [{"select": "all"}]})
IDENTITY = run_identity({"probe": {"num_prompts": 10}, "finetune": {"r": 16}, "seed": 0}, SCHEDULE, "data1", "model1")


def _ledger():
    ledger = KnowledgeLedger(["q1", "q2"])
    ledger.record_base({"q1": "HighlyKnown", "q2": "Unknown"}, {}, {})
    return ledger


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", b"PK\x03\x04truncated"])
def test_a_corrupt_or_empty_checkpoint_is_named_with_a_remedy(tmp_path, content):
    path = tmp_path / "last.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="is not a readable checkpoint .* truncated"):
        restore(path, None, _ledger(), SCHEDULE, IDENTITY)


def test_a_missing_checkpoint_and_another_version(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        restore(tmp_path / "nope.pt", None, _ledger(), SCHEDULE, IDENTITY)
    torch.save({"version": 1, "schedule": {}}, tmp_path / "old.pt")
    with pytest.raises(CheckpointError, match="another version of gradual-lightning"):
        restore(tmp_path / "old.pt", None, _ledger(), SCHEDULE, IDENTITY)


def test_other_settings_are_named_key_by_key(tmp_path):
    path = tmp_path / "last.pt"
    save(path, _ledger(), [], IDENTITY)
    other = run_identity({"probe": {"num_prompts": 3}, "finetune": {"r": 8}, "seed": 0}, SCHEDULE, "data1", "model1")
    with pytest.raises(CheckpointError, match=r"other settings of \['finetune', 'probe'\]") as err:
        restore(path, None, _ledger(), SCHEDULE, other)
    assert "probe.num_prompts: checkpoint 10, now 3" in str(err.value)
    assert "finetune.r: checkpoint 16, now 8" in str(err.value)
    ledger = _ledger()
    assert restore(path, None, ledger, SCHEDULE, IDENTITY) == [] and ledger.has_base  # same settings: resumes


def test_a_failed_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    import gradual_lightning.training.checkpoint as ckpt

    path = tmp_path / "last.pt"
    save(path, _ledger(), [], IDENTITY)
    before = path.read_bytes()

    def disk_full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt, "atomic_write_bytes", disk_full)
    with pytest.raises(OSError, match="could not write the checkpoint .* previous checkpoint is unchanged"):
        save(path, _ledger(), [{"w": torch.zeros(2)}], IDENTITY)
    assert path.read_bytes() == before
