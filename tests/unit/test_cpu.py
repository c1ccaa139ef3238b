"""`limit_blas_threads`, in a fresh interpreter each (it changes the process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from app.cpu import OPERATOR_VARIABLES

PROBE = """
import json
import numpy
from app.cpu import limit_blas_threads
from threadpoolctl import threadpool_info
limit = limit_blas_threads()
threads = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
print(json.dumps({"limit": limit, "threads": threads}))
"""


def probe(**env: str) -> dict[str, object]:
    clean = {k: v for k, v in os.environ.items() if k not in OPERATOR_VARIABLES}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env={**clean, **env}, check=True, capture_output=True
    )
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_the_service_runs_numpy_with_one_blas_thread() -> None:
    assert probe() == {"limit": 1, "threads": [1]}


@pytest.mark.parametrize("variable", ["OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"])
def test_an_operators_own_thread_count_is_kept(variable: str) -> None:
    assert probe(**{variable: "2"}) == {"limit": None, "threads": [2]}
