"""The CPU threads of numerical libraries, next to the engine's own.

The engine's model calls (CTranslate2) already use every core: one worker of
one thread per core (``WHISPER_NUM_WORKERS``, ``WHISPER_CPU_THREADS``). numpy's
OpenBLAS starts a thread per core of its own for the small matrix products of
each pass (faster-whisper's mel features), and its threads spin while they
wait for work: CPU taken from the model calls. With one BLAS thread, six
concurrent streams on 2 cores went from p95 lag 3.8 / 3.7 s to 3.3 / 3.3 s
(two runs each; bench/results/README.md).

An operator's own ``OPENBLAS_NUM_THREADS`` / ``OMP_NUM_THREADS`` is kept.
"""

from __future__ import annotations

import os

BLAS_THREADS = 1
OPERATOR_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def limit_blas_threads() -> int | None:
    """Limit BLAS to `BLAS_THREADS` in this process; returns the limit, or None if left alone."""
    if any(os.environ.get(name) for name in OPERATOR_VARIABLES):
        return None
    import numpy  # noqa: F401  (loads OpenBLAS, so that threadpoolctl finds it)
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=BLAS_THREADS, user_api="blas")
    return BLAS_THREADS
