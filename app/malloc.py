"""glibc's allocator, tuned for a long-running process with a thread per session.

With glibc's defaults the service's RSS grew in steps over an hour of
streaming while Python's own heap stayed flat: every thread that allocates
may get its own arena (up to 8 per core), and the big buffers of engine
passes, once freed, stay in the heap as free but resident pages. So:

* `tune_malloc` caps the arenas at `ARENA_MAX` at start, unless the
  environment sets glibc's own ``MALLOC_ARENA_MAX``;
* `Trimmer` calls ``malloc_trim(0)`` after engine passes, at most once per
  `TRIM_PERIOD_SEC` in the process, which hands free pages back to the system.

Elsewhere (musl, macOS) both do nothing.

Measured and not done: fixing the mmap threshold (``M_MMAP_THRESHOLD``) as
well kept RSS flat over an hour, but made every engine pass slower (en_long
replay: real-time factor 0.55 with glibc's defaults, 1.02 with a 128 KiB
threshold, 0.65–0.68 with 4–32 MiB; 0.59 with the arena cap alone).
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import threading
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)

M_ARENA_MAX = -8  # <malloc.h>
ARENA_MAX = 2
TRIM_PERIOD_SEC = 10.0


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def tune_malloc() -> dict[str, int]:
    """Cap glibc's arenas; returns what was set (empty if not glibc or set by the operator)."""
    libc = _glibc()
    if libc is None or "MALLOC_ARENA_MAX" in os.environ:
        return {}
    if libc.mallopt(M_ARENA_MAX, ARENA_MAX) != 1:
        return {}
    logger.debug("glibc malloc: at most %d arenas", ARENA_MAX)
    return {"arena_max": ARENA_MAX}


class Trimmer:
    """``malloc_trim(0)`` at most once per ``period`` seconds, from any thread."""

    def __init__(
        self, period: float = TRIM_PERIOD_SEC, clock: Callable[[], float] = time.monotonic
    ) -> None:
        libc = _glibc()
        self._trim: Callable[[int], int] | None = libc.malloc_trim if libc is not None else None
        self._period = period
        self._clock = clock
        self._lock = threading.Lock()
        self._last = clock()
        self.trims = 0

    def maybe_trim(self) -> bool:
        """Trim if the period has passed since the last trim; True if this call trimmed."""
        if self._trim is None or self._clock() - self._last < self._period:
            return False
        if not self._lock.acquire(blocking=False):
            return False  # another thread is trimming right now
        try:
            if self._clock() - self._last < self._period:
                return False
            self._trim(0)
            self._last = self._clock()
            self.trims += 1
            return True
        finally:
            self._lock.release()
