"""Progress of long work as log lines: counts, percent, rate and ETA, at most one line every few seconds.

    evaluate small tier: 120/300 (40%) 2.1 docs/s, ETA 1m26s

Lines go to the `processors.progress` logger at INFO. It is under `processors`, which Prefect takes as
an extra logger (flows/settings.py), so inside a flow run the lines land in the run's logs, and through
the root logger's console handler on the terminal. Plain logging, no tqdm: the nightly install has no
training packages, and one line every few seconds reads well in a terminal, a CI log and the Prefect UI.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

LOGGER = logging.getLogger("processors.progress")
# `processors` has no level of its own (INFO only while a Beam pipeline runs, flows/settings.py), so its
# INFO lines would fall to the root's WARNING elsewhere (evaluate, finetune): progress is always wanted.
if LOGGER.level == logging.NOTSET:
    LOGGER.setLevel(logging.INFO)

INTERVAL = 10.0  # seconds between lines; the first and the last line are always written


def duration(seconds: float) -> str:
    """'45s', '1m26s', '2h05m': short enough for a progress line."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _rate(per_second: float) -> str:
    return f"{per_second:.1f}" if per_second >= 1 else f"{per_second:.2g}"


class Progress:
    """Counts work done towards a total and logs it, throttled.

    total None: not known in advance (counts and rate, no percent or ETA). done: already done before
    this run (a resumed training); the rate and ETA count only the work done here. clock: seconds, a
    fake in tests. Not thread-safe: one Progress per loop.
    """

    def __init__(self, stage: str, total: int | None, logger: logging.Logger | None = None, *,
                 unit: str = "docs", done: int = 0, interval: float = INTERVAL,
                 clock: Callable[[], float] = time.monotonic, enabled: bool = True):
        self.stage = stage
        self.total = total
        self.unit = unit
        self.done = done
        self._logger = logger or LOGGER
        self._interval = interval
        self._clock = clock
        self._enabled = enabled
        self._start = clock()
        self._start_done = done
        self._last_line: float | None = None  # clock time of the last line written
        self._last_done: int | None = None  # count in the last line written
        self._advanced = False  # the first advance always writes: it gives the first rate and ETA

    def start(self) -> None:
        """Restarts the clock and writes the opening line ('...: 0/300 (0%)'): the stage has begun,
        though its first batch may take a while."""
        self._start = self._clock()
        self._start_done = self.done
        self._write(self._start, "")

    def advance(self, n: int = 1, detail: str = "") -> None:
        """n more done; writes a line if it is the first advance, the last (done reaches total), or the
        interval has passed since the last line. detail: appended to the line (e.g. the loss)."""
        self.done += n
        now = self._clock()
        first, self._advanced = not self._advanced, True
        last = self.total is not None and self.done >= self.total
        if first or last or self._last_line is None or now - self._last_line >= self._interval:
            self._write(now, detail)

    def finish(self, detail: str = "") -> None:
        """The last line, if the final count is not written yet (a stop before the total, or no total)."""
        if self._last_done != self.done:
            self._write(self._clock(), detail)

    def line(self, now: float | None = None, detail: str = "") -> str:
        """The progress line at clock time now (default: the clock's now)."""
        now = self._clock() if now is None else now
        elapsed = now - self._start
        worked = self.done - self._start_done
        rate = worked / elapsed if elapsed > 0 and worked > 0 else None
        if self.total is None:
            text = f"{self.stage}: {self.done} {self.unit}" + ("," if rate is not None else "")
        else:
            percent = 100 * self.done // self.total if self.total else 100  # floor: 100% only when done
            text = f"{self.stage}: {self.done}/{self.total} ({percent}%)"
        if rate is not None:
            text += f" {_rate(rate)} {self.unit}/s"
        if self.total is not None and self.done >= self.total:
            text += f", done in {duration(elapsed)}"
        elif self.total is not None and rate is not None:
            text += f", ETA {duration((self.total - self.done) / rate)}"
        return f"{text}, {detail}" if detail else text

    def _write(self, now: float, detail: str) -> None:
        self._last_line, self._last_done = now, self.done
        if self._enabled:
            self._logger.info("%s", self.line(now, detail))
