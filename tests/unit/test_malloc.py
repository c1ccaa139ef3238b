"""`tune_malloc`: glibc's arenas and mmap threshold, unless the operator set them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from app.malloc import ARENA_MAX, MMAP_THRESHOLD_BYTES

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
def test_both_settings_are_applied_by_default() -> None:
    assert run_in_fresh_process({}) == (
        f'{{"arena_max": {ARENA_MAX}, "mmap_threshold": {MMAP_THRESHOLD_BYTES}}}'
    )


@glibc_only
def test_the_operators_environment_wins() -> None:
    assert run_in_fresh_process({"MALLOC_ARENA_MAX": "4"}) == (
        f'{{"mmap_threshold": {MMAP_THRESHOLD_BYTES}}}'
    )
    both = {"MALLOC_ARENA_MAX": "4", "MALLOC_MMAP_THRESHOLD_": "65536"}
    assert run_in_fresh_process(both) == "{}"
