"""Library noise, silenced at its source and nothing else: a run's log shows what the user needs.

Each filter names the exact message it drops and why; our own warnings and every other library message pass.
"""

from __future__ import annotations

import logging
import warnings

# Lightning logs these at INFO from every Trainer, i.e. once per stage; none says anything about this run.
_LIGHTNING_LINES = (
    "GPU available:",  # device lines: the run prints where it trains itself
    "TPU available:",
    "HPU available:",
    "💡 Tip:",  # an advertisement for a cloud logger
    "`Trainer.fit` stopped: `max_epochs=",  # every stage stops at its epochs, by design
    "Loading `train_dataloader` to estimate number of stepping batches",  # the lr schedule's length, every stage
)


class _DropLines(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefixes)


_FILTER = _DropLines(_LIGHTNING_LINES)


def quiet_libraries() -> None:
    """Install the filters (idempotent)."""
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
    # peft's get_peft_model reads `model.is_gradient_checkpointing`, deprecated in transformers 5: peft's to fix.
    warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
    # Lightning's own pytree helper uses a torch API torch deprecated: Lightning's to fix, nothing a user can do.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
