"""Stop signals (train.signals): a flag per signal, a second Ctrl-C at once, the exit status."""

import signal

import pytest

from w2s_vqa.train import signals


def test_stop_signals_are_flags_and_a_second_ctrl_c_is_at_once():
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    stop = signals.StopSignals(multiprocess=False)
    try:
        assert not stop.reached(1)
        signal.raise_signal(signal.SIGTERM)
        assert stop.received == "SIGTERM" and stop.reached(2)
        stop.received = "SIGINT"
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    finally:
        stop.restore()
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before

def test_a_stopped_run_exits_as_a_shell_reports_its_signal():
    assert signals.exit_status(None) == 0
    assert (signals.exit_status("SIGINT"), signals.exit_status("SIGTERM")) == (130, 143)
    # A peer's signal and `until` stop the run unfinished: a job controller sees SIGTERM's status.
    assert signals.exit_status("signal to another process") == 143 == signals.exit_status("until")
