"""Interrupts: Ctrl-C (SIGINT) and SIGTERM (what SLURM sends at the time limit) as one exception.

:class:`Interrupted` is a ``KeyboardInterrupt``, so every ``finally`` runs and code that treats
Ctrl-C specially (Lightning's graceful shutdown) treats SIGTERM the same way. While
:func:`sigterm_interrupts` is active, SIGTERM raises ``Interrupted(SIGTERM)`` in the main
thread; Ctrl-C raises Python's own ``KeyboardInterrupt``. :func:`exit_status` gives the shell's
status for either (128 + signal number: 130 for SIGINT, 143 for SIGTERM).

Lightning catches a ``KeyboardInterrupt`` inside ``Trainer.fit``, shuts down, ignores SIGINT
from then on and calls ``sys.exit(1)``; :func:`lightning_interrupts` turns that back into the
interrupt that caused it and restores the SIGINT handler.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

__all__ = [
    "Interrupted",
    "exit_status",
    "lightning_interrupts",
    "signal_name",
    "sigterm_interrupts",
]


class Interrupted(KeyboardInterrupt):
    """A run stopped by a signal.

    Args:
        signum: the signal (``signal.SIGINT`` or ``signal.SIGTERM``).
        where: where the run stopped, in words ("iteration 1, stage train"); empty if unknown.
    """

    def __init__(self, signum: int = signal.SIGINT, where: str = ""):
        super().__init__(signal_name(signum))
        self.signum = int(signum)
        self.where = where


def signal_name(signum: int) -> str:
    """``SIGINT (Ctrl-C)`` or ``SIGTERM`` (or the signal's own name)."""
    if signum == signal.SIGINT:
        return "SIGINT (Ctrl-C)"
    return signal.Signals(signum).name


def signal_of(err: BaseException) -> int:
    """The signal behind an interrupt: its own for :class:`Interrupted`, else SIGINT."""
    return getattr(err, "signum", int(signal.SIGINT))


def exit_status(err: BaseException) -> int:
    """128 + the signal number: 130 for Ctrl-C, 143 for SIGTERM."""
    return 128 + signal_of(err)


def _raise_interrupted(signum: int, frame) -> None:
    raise Interrupted(signum)


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """While active (main thread only; elsewhere a no-op), SIGTERM raises
    ``Interrupted(SIGTERM)``; the previous handler comes back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def lightning_interrupts(recorder) -> Iterator[None]:
    """Around ``Trainer.fit``: the ``sys.exit(1)`` Lightning makes of an interrupt becomes the
    interrupt again (the one ``recorder.exception`` holds: a
    :class:`uq_bias.training.callbacks.InterruptRecorder`), and the SIGINT handler is
    restored."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if main else None
    try:
        yield
    except SystemExit:
        if isinstance(recorder.exception, KeyboardInterrupt):
            raise recorder.exception from None
        raise
    finally:
        if main and previous is not None:
            signal.signal(signal.SIGINT, previous)
