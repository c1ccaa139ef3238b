"""The guides' Path 1 and Path 2, registered their way, streamed through a real server process.

The server is started as the guides start theirs (`tests/guides/serve.py`: plugins
registered in code, then the server's own `main`), with the guides' flags. The
engines are the guide's mock ones: no model is loaded, so this stays light.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.settings import Settings
from bench.server import free_port, wait_ready
from clients.asr_client import ASRStreamClient, StreamError, StreamResult, read_wav

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
AUDIO = ROOT / "test_audio" / "en_16k.wav"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``http://127.0.0.1:PORT`` of a server whose default is the guide's Path 1 backend."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields}
    env["DEFAULT_LANGUAGE_CODE"] = "ar-EG"  # the --lan flag must win over it
    log_path = tmp_path_factory.mktemp("guides-server") / "server.log"
    argv = [
        sys.executable, "-m", "tests.guides.serve",
        "--model", "tiny", "--lan", "en", "--min-chunk-size", "1.0",
        "--buffer-trimming", "segment", "--buffer-trimming-sec", "10",
        "--host", "127.0.0.1", "--port", str(port), "--backend", "my_custom_backend",
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=log)
        try:
            wait_ready(port, proc)
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def http(url: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def stream(server: str, **config: object) -> StreamResult:
    pcm, rate = read_wav(AUDIO)
    url = server.replace("http", "ws", 1) + "/ws/asr-stream"
    return await ASRStreamClient(url).transcribe(
        pcm, sample_rate_hertz=rate, realtime=False, config=dict(config)
    )


def test_the_guides_flags_and_registrations_reached_the_server(server: str) -> None:
    status, body = http(server + "/backends")
    assert status == 200
    assert body["default"]["backend"] == "my_custom_backend"
    assert body["default"]["model"] == "tiny"
    assert body["default"]["language_code"] == "en"  # the flag, not the environment's ar-EG
    names = {b["name"] for b in body["backends"]}
    assert {"my_custom_backend", "my_custom_engine", "seed002"} <= names


async def test_path_1_streams_as_the_default_backend(server: str) -> None:
    result = await stream(server)
    meta = result.messages[0].message
    assert meta.type == "metadata" and meta.backend == "my_custom_backend" and meta.model == "tiny"
    assert result.close_code == 1000 and result.messages[-1].message.type == "complete"
    assert "This is a mock transcription" in result.transcript  # the guide's mock model


async def test_path_2_streams_when_a_session_names_it(server: str) -> None:
    result = await stream(server, backend="my_custom_engine")
    assert result.messages[0].message.backend == "my_custom_engine"
    assert result.close_code == 1000
    # One final per two seconds, each joined to the last with the metadata's separator
    # (the server drops the stream's leading one).
    finals = [t.text for t in result.finals]
    assert len(finals) > 1 and finals[0] == "Mock transcription from custom engine", finals
    assert all(t == " Mock transcription from custom engine" for t in finals[1:]), finals


async def test_a_failing_plugin_ends_its_session_and_the_server_stays_up(server: str) -> None:
    with pytest.raises(StreamError) as failure:
        await stream(server, backend="transcribe-raises")
    assert failure.value.code == "engine_failure"
    assert http(server + "/health") == (200, {"status": "ok"})
    assert (await stream(server, backend="seed002")).close_code == 1000


async def test_load_model_with_the_guides_body(server: str) -> None:
    status, body = http(
        server + "/load_model",
        {"backend": "my_custom_engine", "model": "/path/to/your/model", "lan": "en",
         "min_chunk_size": 1.0},
    )  # fmt: skip
    assert status == 200, body
    assert body["backend"] == "my_custom_engine" and body["model"] == "/path/to/your/model"
    result = await stream(server)  # now the default
    assert result.messages[0].message.backend == "my_custom_engine"
    assert "Mock transcription from custom engine" in result.transcript
