"""Saving a step that has no evaluation, with a best metric tracked, says nothing: Orbax's
absl warning for it is dropped at the Checkpointer, and only that one."""

import logging

import numpy as np

from w2s_vqa.train import checkpoint


def test_a_save_without_metrics_logs_no_absl_warning_and_other_warnings_pass(tmp_path, caplog):
    from absl import logging as absl_logging

    keeper = checkpoint.Checkpointer(str(tmp_path / "ckpt"), best_metric="val/all/direction_accuracy",
                                     async_save=False)
    state = {"w": np.arange(4, dtype=np.float32)}
    with caplog.at_level(logging.WARNING, logger="absl"):
        assert keeper.save(1, state, {"epoch": 0}, {"seed": 0})  # not evaluated: no metrics
        assert keeper.save(2, state, {"epoch": 0}, {"seed": 0}, metrics={"val/all/direction_accuracy": 0.5})
        keeper.manager.wait_until_finished()
        absl_logging.warning("another warning")
    messages = [r.getMessage() for r in caplog.records if r.name == "absl"]
    assert checkpoint.UNSCORED_SAVE_WARNING not in messages and "another warning" in messages
    assert keeper.all_steps() == [1, 2] and keeper.best_step() == 2
