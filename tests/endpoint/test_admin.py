"""`GET /backends`, `POST /load_model` and backend choice, through the real app and real models."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings

URL = "/ws/asr-stream"
CONFIG = {"sample_rate_hertz": 16000, "encoding": "LINEAR16"}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture
def client(cache_dir: Path) -> Iterator[TestClient]:
    settings = Settings(_env_file=None, model_cache_dir=cache_dir)  # type: ignore[call-arg]
    with TestClient(create_app(settings)) as client:
        yield client


def open_session(client: TestClient, **config: object) -> dict[str, object]:
    with client.websocket_connect(URL) as ws:
        ws.send_text(json.dumps({**CONFIG, **config}))
        first: dict[str, object] = ws.receive_json()
        if first["type"] == "metadata":
            ws.send_text('{"type": "stop"}')
            while ws.receive()["type"] != "websocket.close":
                pass
        else:
            close = ws.receive()
            first["close"] = close["code"]
    return first


def test_backends_lists_what_is_usable_here(client: TestClient) -> None:
    body = client.get("/backends").json()
    assert body["default"] == {
        "backend": "faster-whisper",
        "model": "tiny.en",
        "language_code": "en-US",
        "task": "transcribe",
    }
    by_name = {b["name"]: b for b in body["backends"]}
    fw = by_name["faster-whisper"]
    assert fw["usable"] is True and fw["reason"] is None
    assert fw["models"] == {"tiny.en": "installed", "base": "installed"}
    assert by_name["mlx-whisper"]["usable"] is False
    assert "Apple Silicon" in by_name["mlx-whisper"]["reason"]
    wt = by_name["whisper_timestamped"]
    assert wt["usable"] is False and "pip install" in wt["reason"]


def test_load_model_base_becomes_the_default(client: TestClient) -> None:
    response = client.post("/load_model", json={"model": "base", "lan": "ar"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "loaded" and body["model"] == "base"
    assert body["language_code"] == "ar" and body["load_seconds"] > 0
    meta = open_session(client)
    assert (meta["type"], meta["model"], meta["language_code"]) == ("metadata", "base", "ar")
    # A session may still choose another model.
    meta = open_session(client, model="tiny.en", language_code="en-US")
    assert (meta["model"], meta["language_code"]) == ("tiny.en", "en-US")
    assert client.get("/backends").json()["default"]["model"] == "base"


def test_load_model_applies_streaming_options(client: TestClient) -> None:
    body = client.post(
        "/load_model",
        json={"model": "tiny.en", "min_chunk_size": 0.5, "buffer_trimming": "sentence"},
    ).json()
    assert body["min_chunk_size"] == 0.5


@pytest.mark.parametrize(
    ("payload", "code", "says"),
    [
        ({"backend": "nope"}, "unknown_backend", "not registered"),
        ({"model": "tiny.en", "lan": "ar"}, "unsupported_language", "'base'"),
        # The sessions' default language after it: what they would refuse is refused here.
        ({"lan": "auto"}, "unsupported_language", "no language detection"),
        ({"lan": "en_US"}, "unsupported_language", "BCP-47"),
        ({"model": "tiny.en", "task": "translate"}, "unsupported_task", "base"),
        ({"model": "/no/such/folder"}, "unknown_model", "CTranslate2"),
        ({"backend": "whisper_timestamped"}, "backend_unavailable", "pip install"),
        ({"backend": "mlx-whisper"}, "backend_unavailable", "Apple Silicon"),
    ],
)
def test_load_model_errors_are_clear(
    client: TestClient, payload: dict[str, object], code: str, says: str
) -> None:
    response = client.post("/load_model", json=payload)
    assert response.status_code == 400
    body = response.json()
    assert body["type"] == "error" and body["code"] == code
    assert says in body["detail"]
    assert "Traceback" not in body["detail"]
    # The default did not change.
    assert client.get("/backends").json()["default"]["model"] == "tiny.en"


def test_load_model_refuses_unknown_fields(client: TestClient) -> None:
    assert client.post("/load_model", json={"modle": "base"}).status_code == 422


@pytest.mark.parametrize("value", ["NaN", "Infinity", "1e999"])
def test_load_model_refuses_non_finite_numbers_with_json(client: TestClient, value: str) -> None:
    """The 422 body echoed the input, and NaN cannot be JSON: it was a plain-text 500."""
    reply = client.post(
        "/load_model",
        content='{"min_chunk_size": ' + value + "}",
        headers={"content-type": "application/json"},
    )
    assert reply.status_code == 422
    assert reply.json()["detail"][0]["loc"] == ["body", "min_chunk_size"]


@pytest.mark.parametrize(
    ("config", "code", "says"),
    [
        ({"backend": "whisper_timestamped"}, "backend_unavailable", "pip install"),
        ({"backend": "mlx-whisper"}, "backend_unavailable", "Apple Silicon"),
        ({"language_code": "ar-EG"}, "unsupported_language", "'base'"),
        ({"model": "large-v9"}, "unknown_model", "tiny.en"),
    ],
)
def test_session_config_errors_for_backends(
    client: TestClient, config: dict[str, object], code: str, says: str
) -> None:
    error = open_session(client, **config)
    assert (error["type"], error["code"], error["close"]) == ("error", code, 1008)
    assert says in str(error["detail"])
