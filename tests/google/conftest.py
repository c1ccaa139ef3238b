"""Fixtures: the fake Speech server and the real endpoint wired to it through the real client."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketTestSession

from app.asr.registry import Registry
from app.main import create_app
from app.settings import Settings
from tests.google.fake_speech import FakeSpeechServer
from tests.support.scripted import CountingLoader

URL = "/ws/asr-stream"
GOOGLE_ENTRY = {"google": "app.asr.google.loader:GoogleLoader"}


def google_settings(**overrides: Any) -> Settings:
    """Settings for in-process tests: a scripted default engine, fast reconnects."""
    values: dict[str, Any] = {
        "default_backend": "scripted",
        "default_model": "counting",
        "google_reconnect_backoff_sec": 0.01,
        "config_timeout_sec": 5.0,
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@contextlib.contextmanager
def app_client(settings: Settings) -> Iterator[TestClient]:
    """The real app (registry entry ``google`` → `GoogleLoader`) in-process."""
    registry = Registry(settings, entries=dict(GOOGLE_ENTRY))
    registry.register_loader("scripted", CountingLoader())
    try:
        with TestClient(create_app(settings, registry)) as client:
            yield client
    finally:
        loader = registry.get_loader("google")
        close = getattr(loader, "close", None)
        if callable(close):
            close()


@pytest.fixture
def fake() -> Iterator[FakeSpeechServer]:
    with FakeSpeechServer() as server:
        yield server


ClientFactory = Callable[..., contextlib.AbstractContextManager[TestClient]]


@pytest.fixture
def connect(fake: FakeSpeechServer) -> ClientFactory:
    """``with connect(**settings) as client``: the app talking to the ``fake`` server."""

    def factory(**overrides: Any) -> contextlib.AbstractContextManager[TestClient]:
        return app_client(google_settings(google_speech_endpoint=fake.endpoint, **overrides))

    return factory


# --------------------------------------------------------------------------- WebSocket helpers


def start(ws: WebSocketTestSession, **config: Any) -> dict[str, Any]:
    """Send the config for a Google session; return the `metadata` reply."""
    ws.send_text(json.dumps({"encoding": "LINEAR16", "backend": "google", **config}))
    reply: dict[str, Any] = ws.receive_json()
    assert reply["type"] == "metadata", reply
    return reply


def send(ws: WebSocketTestSession, data: bytes, frame_bytes: int = 3200) -> None:
    for i in range(0, len(data), frame_bytes):
        ws.send_bytes(data[i : i + frame_bytes])


def finals(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in messages if m["type"] == "transcript" and m["is_final"]]


def transcript_words(messages: list[dict[str, Any]]) -> list[str]:
    return " ".join(m["text"] for m in finals(messages)).split()


def expected_words(seconds: float, word_sec: float = 0.5) -> list[str]:
    """What the fake hears in `ramp` audio of ``seconds``: ``s0 s5 s10…`` for 0.5 s words."""
    per_word = round(word_sec / 0.1)
    return [f"s{k * per_word}" for k in range(round(seconds / word_sec))]
