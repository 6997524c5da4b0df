"""Stopping training cleanly on SIGINT / SIGTERM (no torch import: the CLI catches TrainingStopped)."""
from __future__ import annotations

import signal
import threading
from pathlib import Path


class StopRequests:
    """SIGINT / SIGTERM ask the loop to stop after the step it is in (it then writes a checkpoint);
    a second SIGINT stops at once. Handlers are installed only in the main thread."""

    def __init__(self):
        self.signum: int | None = None
        self._old: dict = {}

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def restore(self) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        self._old = {}


class TrainingStopped(Exception):
    """Training stopped on a signal after writing its checkpoint; ``exit_code`` is 128 + signal."""

    def __init__(self, signum: int, step: int, path: Path):
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step}; checkpoint {path} written; "
                         "continue with --resume")
        self.exit_code = 128 + signum
