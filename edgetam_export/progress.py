"""Progress of long work (parity, benchmarks, tracking) as 'what done/total, elapsed, ETA' lines."""

from __future__ import annotations

import time
from collections.abc import Callable


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Progress:
    """Counts finished work items out of a known total and reports them, at most every `interval` s.

    The ETA assumes the remaining items take as long on average as the finished ones.
    """

    def __init__(self, what: str, total: int, sink: Callable[[str], None] | None, interval: float = 2.0) -> None:
        self.what, self.total, self.sink, self.interval = what, max(total, 0), sink, interval
        self.done = 0
        self.started = time.perf_counter()
        self._last = float("-inf")

    def advance(self, count: int = 1, note: str = "") -> None:
        self.done += count
        now = time.perf_counter()
        if self.sink is None or (now - self._last < self.interval and self.done < self.total):
            return
        self._last = now
        elapsed = now - self.started
        eta = elapsed / self.done * (self.total - self.done) if self.done else 0.0
        suffix = f", {note}" if note else ""
        self.sink(f"{self.what} {self.done}/{self.total}, {_duration(elapsed)} elapsed, ETA {_duration(eta)}{suffix}")

    @property
    def rate(self) -> float:
        """Items per second so far."""
        return self.done / max(time.perf_counter() - self.started, 1e-9)
