"""The one deadline a test (or an install) shares across its phases: every wait, retry and probe of it takes what is
left of it, never a budget of its own."""
from __future__ import annotations

import time


class Deadline:
    """One overall deadline shared by the phases of a test (or of an install)."""

    def __init__(self, seconds: float, what: str = ""):
        self.seconds, self.what = seconds, what
        self.start = time.monotonic()

    def remaining(self) -> float:
        return max(0.0, self.start + self.seconds - time.monotonic())

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def expired(self) -> bool:
        return self.remaining() <= 0
