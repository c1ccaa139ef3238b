"""`tune_malloc`: glibc's arena cap, unless the operator set it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from app.malloc import ARENA_MAX

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
