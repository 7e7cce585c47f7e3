"""Stop requests: SIGTERM / SIGINT ask long work to stop at its next safe point.

Inside `StopRequest()` the first SIGTERM or SIGINT only sets `requested`; the work polls it at
a boundary where stopping loses nothing (the training loop: between steps, then it writes a
checkpoint). A second signal does what it did before the block (Ctrl-C: KeyboardInterrupt; a
background job: stop at once), so an impatient user is never stuck. Listeners registered with
`add_stop_listener` hear the first request (the job wrapper starts its kill timer there).

`request_stop(signum)` asks the same of the blocks that are active from any other signal
handler: the SLURM job wrapper turns the time-limit signal (USR2) into such a request, so
training checkpoints at its next step boundary before the job requeues itself.

Hand-written: the standard library's `signal` is all it needs.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Terminated(BaseException):  # noqa: N818 - like KeyboardInterrupt
    """Raised by SIGTERM outside a `StopRequest` block, so `finally` and `atomic_dir` clean-ups
    run (a plain SIGTERM would end the process on the spot and leave partial output)."""


def raise_terminated(_signum: int, _frame: FrameType | None) -> None:
    raise Terminated()


_listeners: list[Callable[[int], None]] = []


def add_stop_listener(listener: Callable[[int], None]) -> None:
    """Call `listener(signum)` when a stop is first requested inside any `StopRequest`."""
    _listeners.append(listener)


def notify_stop(signum: int) -> None:
    for listener in list(_listeners):
        listener(signum)


_active: list[StopRequest] = []


def request_stop(signum: int) -> bool:
    """Ask every active `StopRequest` block to stop at its next safe point, as if `signum` had
    arrived there; False when no block is active (nothing can stop gracefully)."""
    blocks = list(_active)
    for block in blocks:
        if block.requested is None:
            block.requested = signum
    if blocks:
        notify_stop(signum)
    return bool(blocks)


class StopRequest:
    """Context manager turning the first SIGTERM/SIGINT into a flag (`requested`: the signal
    number, or None). Signals can only be handled in the main thread; elsewhere it is inert."""

    def __init__(self) -> None:
        self.requested: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
            _active.append(self)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()
        if self in _active:
            _active.remove(self)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested is None:
            self.requested = signum
            notify_stop(signum)
            return
        previous = self._previous.get(signum, signal.SIG_DFL)  # a second request: stop now
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    def describe(self) -> str:
        return "" if self.requested is None else signal.Signals(self.requested).name
