"""How fast this machine is right now: a short, fixed CPU workload timed before and after each cell's server.

Cells run one after another, so anything that changes the machine between them (another job, a thermal
limit, a noisy neighbour on a shared host) shows up as a difference between pins. A verdict of
"slower" or "faster" is only believed when the machine measured the same around both cells; otherwise
the verdict says "machine unstable" (see ``verdict.compare``).

The workload is sha256 over a 1 MiB buffer (one core, no allocation, no I/O), counted in short slices;
the median slice gives MB/s. It runs while no server of ours is up, so it measures the machine, not us.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from .stats import percentile

SLICES = 5
SLICE_S = 0.1
_BLOCK = bytes(range(256)) * 4096  # 1 MiB


@dataclass(frozen=True, kw_only=True)
class Stability:
    """The calibration around one cell's server, in MB/s of sha256 on one core."""

    before_mb_s: float
    after_mb_s: float | None = None

    def drift(self) -> float | None:
        """after / before - 1: how far the machine moved while the cell ran."""
        return None if self.after_mb_s is None or self.before_mb_s <= 0 else self.after_mb_s / self.before_mb_s - 1


def calibrate(slices: int = SLICES, slice_s: float = SLICE_S) -> float:
    """MB/s of sha256 on one core: the median of ``slices`` short slices (robust to one interruption)."""
    rates = []
    for _ in range(slices):
        done, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < slice_s:
            hashlib.sha256(_BLOCK).digest()
            done += len(_BLOCK)
        rates.append(done / elapsed / 1e6)
    return percentile(rates, 50)


def unstable(ours: Stability | None, theirs: Stability | None, limit: float) -> str | None:
    """Why two cells' numbers cannot be compared (the machine moved by more than ``limit``), or None."""
    for name, s in (("this pin's", ours), ("the other pin's", theirs)):
        drift = s.drift() if s is not None else None
        if drift is not None and abs(drift) > limit:
            return f"the machine's speed moved {drift:+.0%} during {name} cell"
    if ours is not None and theirs is not None and theirs.before_mb_s > 0:
        between = ours.before_mb_s / theirs.before_mb_s - 1
        if abs(between) > limit:
            return f"the machine's speed differed {between:+.0%} between the two cells"
    return None
