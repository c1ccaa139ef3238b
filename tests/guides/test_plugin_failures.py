"""A plugin that raises: our JSON error naming the backend, `error` + 1011, the service stays up."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.asr.registry import Registry
from app.main import create_app
from app.settings import Settings
from tests.guides.audio import words_pcm
from tests.guides.failing import (
    SECRET,
    LoadRaises,
    NativeLoadRaises,
    ProcessIterRaises,
    RefusesLanguage,
    TranscribeRaises,
)
from tests.support.scripted import CountingLoader
from tests.support.ws import drain

URL = "/ws/asr-stream"
CONFIG = {"sample_rate_hertz": 16000, "encoding": "LINEAR16"}


@pytest.fixture
def client() -> Iterator[TestClient]:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        default_backend="scripted",
        default_model="counting",
    )
    registry = Registry(settings, entries={"bad-factory": "tests.guides.failing:broken_factory"})
    registry.register_loader("scripted", CountingLoader())
    registry.register_loader("load-raises", LoadRaises())
    registry.register_loader("native-load-raises", NativeLoadRaises())  # type: ignore[arg-type]
    registry.register_loader("refuses", RefusesLanguage())
    registry.register_loader("transcribe-raises", TranscribeRaises())
    registry.register_loader("iter-raises", ProcessIterRaises())
    with TestClient(create_app(settings, registry)) as client:
        yield client


def still_up(client: TestClient) -> None:
    """The service answers and a healthy session streams to the end."""
    assert client.get("/health").json() == {"status": "ok"}
    with client.websocket_connect(URL) as ws:
        ws.send_text(json.dumps({**CONFIG, "backend": "scripted"}))
        assert ws.receive_json()["type"] == "metadata"
        ws.send_bytes(np.full(16000, 1000, "<i2").tobytes())
        ws.send_text('{"type": "stop"}')
        messages, code = drain(ws)
    assert code == 1000 and messages[-1] == {"type": "complete"}


@pytest.mark.parametrize(
    ("backend", "status", "code"),
    [
        ("load-raises", 500, "engine_failure"),
        ("native-load-raises", 500, "engine_failure"),
        ("refuses", 400, "unsupported_language"),
        ("bad-factory", 400, "backend_unavailable"),
    ],
)
def test_load_model_answers_our_json_error_naming_the_backend(
    client: TestClient, backend: str, status: int, code: str
) -> None:
    response = client.post("/load_model", json={"backend": backend, "model": "tiny", "lan": "en"})
    assert response.status_code == status
    body = response.json()
    assert body["type"] == "error" and body["code"] == code and body["backend"] == backend
    if code != "unsupported_language":  # the plugin's own sentence, as it wrote it
        assert backend in body["detail"]
    assert SECRET not in response.text and "Traceback" not in response.text
    still_up(client)


@pytest.mark.parametrize("backend", ["load-raises", "bad-factory"])
def test_a_session_on_a_backend_that_cannot_load_gets_an_error_and_a_close(
    client: TestClient, backend: str
) -> None:
    with client.websocket_connect(URL) as ws:
        ws.send_text(json.dumps({**CONFIG, "backend": backend}))
        messages, code = drain(ws)
    error = messages[-1]
    assert error["type"] == "error" and backend in error["detail"]
    assert SECRET not in json.dumps(messages)
    assert code == (1011 if backend == "load-raises" else 1008)  # failed / cannot run here
    still_up(client)


@pytest.mark.parametrize("backend", ["transcribe-raises", "iter-raises"])
def test_a_plugin_failing_mid_stream_ends_its_session_only(
    client: TestClient, backend: str
) -> None:
    with client.websocket_connect(URL) as ws:
        ws.send_text(json.dumps({**CONFIG, "backend": backend, "language_code": "en-US"}))
        meta = ws.receive_json()
        assert meta["type"] == "metadata" and meta["backend"] == backend
        ws.send_bytes(words_pcm([1, 2, 3]))
        messages, code = drain(ws)
    assert code == 1011
    assert messages[-1]["type"] == "error" and messages[-1]["code"] == "engine_failure"
    assert SECRET not in json.dumps(messages)
    still_up(client)
