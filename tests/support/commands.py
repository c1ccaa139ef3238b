"""Run the clients the way a user does: as commands in a child process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
AUDIO = ROOT / "test_audio"
COMMAND_TIMEOUT_SEC = 150.0
# Settings a developer may have exported must not change what the tests run.
CLIENT_ENV_VARS = ("ASR_STREAM_URL", "ASR_STREAM_API_KEY")


def asr_stream() -> list[str]:
    """The installed console script (``pip install -e .`` puts it beside python)."""
    script = Path(sys.executable).with_name("asr-stream")
    assert script.exists(), f"{script} is missing: run pip install -e . again"
    return [str(script)]


def module(name: str) -> list[str]:
    return [sys.executable, "-m", name]


def client_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CLIENT_ENV_VARS}
    env["PYTHONWARNINGS"] = "error"  # a client that warns is a client that fails
    return env


def run(
    argv: list[str], *, stdin: bytes | None = None, timeout: float = COMMAND_TIMEOUT_SEC
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        argv,
        input=stdin,
        capture_output=True,
        cwd=ROOT,
        env=client_env(),
        timeout=timeout,
        check=False,
    )
    return subprocess.CompletedProcess(
        proc.args,
        proc.returncode,
        proc.stdout.decode(errors="replace"),
        proc.stderr.decode(errors="replace"),
    )


def transcript_of(stdout: str) -> str:
    """The last line of a client's plain output is the whole transcript."""
    lines = stdout.rstrip("\n").splitlines()
    assert len(lines) >= 2 and lines[-2] == "", f"no transcript after a blank line: {stdout!r}"
    return lines[-1]


def finals_of(stdout: str) -> list[str]:
    """The lines before the blank line: one per final, as they arrived."""
    lines = stdout.rstrip("\n").splitlines()
    return lines[: len(lines) - 2]


def require_program(name: str, install: str) -> str:
    """The path of ``name``; skipped outside CI when missing, a failure in CI."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed ({install}; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path
