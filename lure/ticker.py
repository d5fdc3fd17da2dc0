"""A plain progress line, for work whose output is not a terminal (DVC streams a stage's output, CI
logs): one line every `EVERY_S` seconds with the time left, and none for work shorter than that, so
that a short run's output stays short. Torch-free: prepare's decoding uses it as training does."""

from __future__ import annotations

import time

EVERY_S = 10.0


class Ticker:
    """Says `label: <unit>done/total<details>, N s left` at most every EVERY_S seconds."""

    def __init__(self, label: str, total: int, unit: str = "") -> None:
        self.label, self.total, self.unit = label, total, unit
        self.start = self.last = time.perf_counter()

    def tick(self, done: int, details: str = "") -> None:
        now = time.perf_counter()
        if now - self.last < EVERY_S or done >= self.total:
            return
        left = (now - self.start) / done * (self.total - done)
        print(f"  {self.label}: {self.unit}{done}/{self.total}{details}, {left:.0f} s left", flush=True)
        self.last = now
