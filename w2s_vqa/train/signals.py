"""Stopping a run cleanly: SIGINT (Ctrl-C) and SIGTERM (preemption) end it after the step
under way, with a checkpoint.

In a multi-process run the processes agree on the step through JAX's preemption sync
point, whichever of them got the signal. A second SIGINT stops at once without saving.
"""

from __future__ import annotations

import signal
import sys
import threading

import jax

# Exit status of a run stopped by a signal, as a shell reports a process that signal ended:
# `train && export` stops, and a job controller sees an unfinished run.
STOP_EXIT_STATUS = {"SIGINT": 130, "SIGTERM": 143}


def exit_status(stopped: str | None) -> int:
    """0 for a run that was not stopped; STOP_EXIT_STATUS of its signal (143 for a stop
    another process got, or "until") otherwise."""
    return STOP_EXIT_STATUS.get(stopped, 143) if stopped else 0


class StopSignals:
    """SIGINT and SIGTERM ask the run to stop after the step under way (installed from the
    main thread only). Single process: a flag. Several processes: SIGTERM is left to JAX's
    preemption notifier, SIGINT is passed on to it, and `reached(step)` is JAX's preemption
    sync point, true at the same step on every process. A second SIGINT raises
    KeyboardInterrupt at once."""

    def __init__(self, *, multiprocess: bool):
        self.received: str | None = None
        self.sync = multiprocess and bool(jax.config.jax_enable_preemption_service)
        self._previous = {}
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGINT,) if self.sync else (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)

    def _handle(self, signum, frame):  # noqa: ARG002
        name = signal.Signals(signum).name
        if signum == signal.SIGINT and self.received == "SIGINT":
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        if self.received is None:
            self.received = name
            # Any verb that trains (train, stages, finetune, demo) prints this: no verb name.
            print(f"w2s-vqa: {name}: stopping after this step with a checkpoint"
                  f"{' (Ctrl-C again: stop at once, unsaved)' if signum == signal.SIGINT else ''}",
                  file=sys.stderr, flush=True)
        if self.sync and signum == signal.SIGINT:
            signal.raise_signal(signal.SIGTERM)  # JAX's notifier tells every process

    def reached(self, step: int) -> bool:
        if self.sync:
            from jax.experimental import multihost_utils

            return multihost_utils.reached_preemption_sync_point(step)
        return self.received is not None

    @property
    def name(self) -> str:
        return self.received or "signal to another process"

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
