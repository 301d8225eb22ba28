"""A time limit on one client's work in-process (``client.timeout_s``).

In the main thread of a Unix process the limit interrupts the client: a ``SIGALRM`` timer
raises :class:`ClientTimeout` at the next Python instruction (a running torch kernel finishes
first). Elsewhere (another thread, no ``setitimer``) the client runs to its end and
:func:`over_limit` drops its late answer; either way the client is out of the round.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


class ClientTimeout(Exception):
    """The client ran past ``client.timeout_s``."""


def _can_interrupt() -> bool:
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise ``ClientTimeout`` inside the block after ``seconds`` (no limit when 0)."""
    if seconds <= 0 or not _can_interrupt():
        yield
        return

    def on_alarm(signum: int, frame: object) -> None:
        raise ClientTimeout(f"ran past client.timeout_s = {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def over_limit(elapsed: float, seconds: float) -> bool:
    return seconds > 0 and elapsed > seconds
