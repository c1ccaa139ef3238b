"""Start the real service (`run.py`) in a child process on a free port, for benchmarks and tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT_SEC = 120.0
PIDS: dict[str, int] = {}  # WebSocket URL → server process id, while it runs


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running_server(
    env: dict[str, str] | None = None, log_path: Path | None = None
) -> Iterator[str]:
    """Yield the WebSocket URL of a ready server; stop it (SIGTERM, then SIGKILL) after."""
    port = free_port()
    child_env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(port), **(env or {})}
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "run.py")], cwd=ROOT, env=child_env, stdout=log, stderr=log
    )
    try:
        wait_ready(port, proc)
        url = f"ws://127.0.0.1:{port}/ws/asr-stream"
        PIDS[url] = proc.pid
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if log_path:
            log.close()  # type: ignore[union-attr]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_ready(port: int, proc: subprocess.Popen[bytes]) -> None:
    """Poll ``/ready`` until it answers 200; raise if the process exits or time runs out."""
    deadline = time.monotonic() + READY_TIMEOUT_SEC
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before it was ready")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1) as resp,
        ):
            if resp.status == 200:
                return
        time.sleep(0.2)
    raise RuntimeError("server was not ready in time")
