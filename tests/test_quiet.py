"""quiet_libraries drops the named library noise and nothing else."""

import logging
import warnings

from gradual_lightning.quiet import quiet_libraries


def test_lightning_device_lines_and_tip_are_dropped_other_lines_pass(caplog):
    quiet_libraries()
    quiet_libraries()  # idempotent: one filter
    logger = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    assert len(logger.filters) == 1
    with caplog.at_level(logging.INFO, logger=logger.name):
        logger.info("GPU available: False, used: False")
        logger.info("💡 Tip: For seamless cloud logging ...")
        logger.info("Restoring states from the checkpoint path")
    assert [r.getMessage() for r in caplog.records] == ["Restoring states from the checkpoint path"]


def test_only_the_named_deprecation_is_ignored():
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quiet_libraries()
        warnings.warn("`is_gradient_checkpointing` is deprecated and will be removed in v6.", FutureWarning,
                      stacklevel=1)
        warnings.warn("something else is deprecated", FutureWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["something else is deprecated"]
