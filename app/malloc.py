"""glibc's allocator, tuned for a long-running process with a thread per session.

Two glibc defaults made the service's RSS grow in steps over an hour of
streaming while Python's own heap stayed flat:

* every thread that allocates may get its own arena (up to 8 per core), and
  memory freed in one arena is not reused by threads of another;
* freeing a large block raises the mmap threshold to its size, so later
  buffers of that size (audio windows, encoder outputs) come from the heap
  instead of mmap, and the heap fragments instead of giving pages back.

The service caps the arenas at `ARENA_MAX` and fixes the mmap threshold at
glibc's starting value (which also turns off its dynamic raise), unless the
environment sets glibc's own ``MALLOC_ARENA_MAX`` / ``MALLOC_MMAP_THRESHOLD_``.
Elsewhere (musl, macOS) it does nothing.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

logger = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # <malloc.h>
M_ARENA_MAX = -8
ARENA_MAX = 2
MMAP_THRESHOLD_BYTES = 128 * 1024

_OPTIONS = (
    # (name in the result, mallopt parameter, glibc's environment variable, value)
    ("arena_max", M_ARENA_MAX, "MALLOC_ARENA_MAX", ARENA_MAX),
    ("mmap_threshold", M_MMAP_THRESHOLD, "MALLOC_MMAP_THRESHOLD_", MMAP_THRESHOLD_BYTES),
)


def tune_malloc() -> dict[str, int]:
    """Apply the settings above; returns what was set (empty if not glibc)."""
    if not sys.platform.startswith("linux"):
        return {}
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return {}
    applied = {}
    for name, parameter, variable, value in _OPTIONS:
        if variable in os.environ:
            continue  # the operator's choice, already read by glibc at start
        if mallopt(parameter, value) == 1:
            applied[name] = value
    if applied:
        logger.debug("glibc malloc: %s", applied)
    return applied
