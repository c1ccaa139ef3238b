"""`tune_malloc`: glibc's arena cap, unless the operator set it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from app.malloc import ARENA_MAX, Trimmer

ROOT = Path(__file__).resolve().parents[2]
glibc_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")

SCRIPT = """
import json
from app.malloc import tune_malloc
print(json.dumps(tune_malloc()))
"""


def run_in_fresh_process(env: dict[str, str]) -> str:
    """Each case in its own interpreter: mallopt changes the whole process."""
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return done.stdout.strip()


@glibc_only
def test_the_arena_cap_is_applied_by_default() -> None:
    assert run_in_fresh_process({}) == f'{{"arena_max": {ARENA_MAX}}}'


@glibc_only
def test_the_operators_environment_wins() -> None:
    assert run_in_fresh_process({"MALLOC_ARENA_MAX": "4"}) == "{}"


@glibc_only
def test_the_trimmer_trims_at_most_once_per_period() -> None:
    now = [100.0]
    trimmer = Trimmer(period=10.0, clock=lambda: now[0])
    assert not trimmer.maybe_trim()  # the period starts at creation
    now[0] = 110.0
    assert trimmer.maybe_trim()
    now[0] = 115.0
    assert not trimmer.maybe_trim()
    now[0] = 120.5
    assert trimmer.maybe_trim()
    assert trimmer.trims == 2
