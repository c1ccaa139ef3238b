"""WHISPER_DEVICE through the app and the server's command: the real CTranslate2, no stubs.

This machine has no GPU, so ``cuda`` is refused everywhere it can be asked for:
`GET /backends`, `POST /load_model`, a session's config, and the server's start.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.asr.faster_whisper_backend import probe_cuda
from app.asr.registry import Registry
from app.errors import CloseCode
from app.main import create_app
from app.settings import Settings
from tests.support.scripted import CountingLoader

ROOT = Path(__file__).resolve().parents[2]
FW = "faster-whisper"
REFUSAL = "WHISPER_DEVICE is 'cuda', but CTranslate2 reports 0 CUDA devices"
no_gpu = pytest.mark.skipif(
    probe_cuda().devices > 0, reason="this machine has a GPU: the refusal cannot happen"
)


@pytest.fixture(autouse=True)
def _no_exported_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WHISPER_DEVICE", raising=False)
    monkeypatch.delenv("WHISPER_COMPUTE_TYPE", raising=False)


def client_for(tmp_path: Path, **values: object) -> TestClient:
    """The real app and backends; the scripted engine is the default, so start-up loads no model."""
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        model_cache_dir=tmp_path,
        default_backend="scripted",
        default_model="counting",
        **values,
    )
    registry = Registry(settings)
    registry.register_loader("scripted", CountingLoader())
    return TestClient(create_app(settings, registry))


@pytest.fixture
def cpu_client(tmp_path: Path) -> Iterator[TestClient]:
    with client_for(tmp_path) as client:
        yield client


def faster_whisper(client: TestClient) -> dict[str, object]:
    listed: list[dict[str, object]] = client.get("/backends").json()["backends"]
    return next(b for b in listed if b["name"] == FW)


def test_backends_shows_the_cpu_and_int8_by_default(cpu_client: TestClient) -> None:
    fw = faster_whisper(cpu_client)
    assert fw["usable"] is True
    assert (fw["device"], fw["compute_type"]) == ("cpu", "int8")


def test_backends_shows_the_compute_type_the_operator_set(tmp_path: Path) -> None:
    with client_for(tmp_path, whisper_compute_type="float32") as client:
        fw = faster_whisper(client)
    assert (fw["device"], fw["compute_type"]) == ("cpu", "float32")


@no_gpu
def test_auto_without_a_gpu_serves_on_the_cpu(tmp_path: Path) -> None:
    with client_for(tmp_path, whisper_device="auto") as client:
        fw = faster_whisper(client)
    assert (fw["usable"], fw["device"], fw["compute_type"]) == (True, "cpu", "int8")


@no_gpu
def test_cuda_without_a_gpu_is_refused_with_the_reason(tmp_path: Path) -> None:
    with client_for(tmp_path, whisper_device="cuda") as client:
        fw = faster_whisper(client)
        assert fw["usable"] is False
        assert REFUSAL in str(fw["reason"])

        loaded = client.post("/load_model", json={"backend": FW, "model": "tiny.en"})
        assert loaded.status_code == 400
        assert loaded.json()["code"] == "backend_unavailable"
        assert REFUSAL in loaded.json()["detail"]

        config = {"sample_rate_hertz": 16000, "encoding": "LINEAR16", "backend": FW}
        with client.websocket_connect("/ws/asr-stream") as ws:
            ws.send_text(json.dumps(config))
            error = ws.receive_json()
            closed = ws.receive()
    assert (error["type"], error["code"]) == ("error", "backend_unavailable")
    assert REFUSAL in error["detail"]
    assert closed["code"] == CloseCode.POLICY_VIOLATION


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@no_gpu
def test_the_server_will_not_start_on_cuda_without_a_gpu(tmp_path: Path) -> None:
    """``python run.py`` with WHISPER_DEVICE=cuda: exit status 2 and one line, no traceback."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields}
    env.update(WHISPER_DEVICE="cuda", HOST="127.0.0.1", PORT=str(free_port()))
    done = subprocess.run(
        [sys.executable, str(ROOT / "run.py")],
        cwd=tmp_path,  # no .env
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("run.py: error: --backend 'faster-whisper' cannot run here: ")
    assert REFUSAL in lines[0] and "Set WHISPER_DEVICE=cpu" in lines[0]
    assert "Traceback" not in done.stderr and "Uvicorn running" not in done.stderr
