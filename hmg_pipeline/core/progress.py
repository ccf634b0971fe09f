"""Progress reporting for long loops: items done, items/s and ETA, at most every N seconds."""

from __future__ import annotations

import time
from collections.abc import Callable


class Progress:
    """Call ``advance`` as work completes; ``report`` receives a line every ``every_s`` seconds."""

    def __init__(
        self,
        total: int,
        what: str,
        report: Callable[[str], None],
        every_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self.what = what
        self.done = 0
        self._report = report
        self._every_s = every_s
        self._clock = clock
        self.started = clock()
        self._last = self.started

    def advance(self, count: int = 1) -> None:
        self.done += count
        now = self._clock()
        if now - self._last >= self._every_s or self.done == self.total:
            self._last = now
            self._report(self.line(now))

    def line(self, now: float | None = None) -> str:
        elapsed = (self._clock() if now is None else now) - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = max(self.total - self.done, 0)
        remaining = 0.0 if not left else left / rate if rate > 0 else float("nan")
        return (
            f"{self.what}: {self.done:,}/{self.total:,} "
            f"({100 * self.done / max(self.total, 1):.1f}%), {rate:.1f}/s, ETA {remaining:.0f}s"
        )
