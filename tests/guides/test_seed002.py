"""Seed 002's `MyCustomASR(ASRBase)` shape and its loader, through the service."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app.asr.base import EngineInfo, EngineRequest
from app.asr.registry import Registry
from app.main import create_app
from app.settings import Settings
from asr_interface.backends.whisper_online_processor import OnlineASRProcessor
from asr_interface.core.config import ASRConfig
from tests.guides.audio import words_pcm
from tests.guides.seed002.my_custom_asr import MyCustomASR
from tests.guides.seed002.my_model_loader import MyCustomASRLoader
from tests.support.ws import drain

URL = "/ws/asr-stream"
CONFIG = {"sample_rate_hertz": 16000, "encoding": "LINEAR16"}


def test_the_shape_keeps_its_model_and_takes_the_base_constructor() -> None:
    asr = MyCustomASR("tiny", "en", logfile=sys.stdout)
    assert asr.model is not None  # loaded before super().__init__, and kept
    assert asr.original_language == "en" and asr.logfile is sys.stdout
    assert asr.transcribe_kargs == {} and asr.sep == " "
    asr.use_vad()
    assert asr.vad is True


def test_its_loader_takes_an_asrconfig_and_returns_the_guides_metadata() -> None:
    processor, metadata = MyCustomASRLoader().load(ASRConfig(model="tiny", lan="en"))
    assert isinstance(processor, OnlineASRProcessor)
    assert metadata == {"separator": " "}
    assert processor.options.buffer_trimming_sec == 10.0 and processor.min_chunk_sec == 1.0


def test_served_its_metadata_becomes_our_engine_info() -> None:
    settings = Settings(_env_file=None, min_chunk_size=0.5)  # type: ignore[call-arg]
    registry = Registry(settings, entries={})
    registry.register_loader("seed002", MyCustomASRLoader())
    request = EngineRequest(backend="seed002", model="tiny", language="en")
    _, info = registry.get_loader("seed002").load(request)  # type: ignore[union-attr]
    assert info == EngineInfo("seed002", "tiny", min_chunk_sec=0.5)


@pytest.fixture
def client() -> Iterator[TestClient]:
    settings = Settings(_env_file=None, default_backend="seed002", default_model="tiny")  # type: ignore[call-arg]
    registry = Registry(settings, entries={})
    registry.register_loader("seed002", MyCustomASRLoader())
    with TestClient(create_app(settings, registry)) as client:
        yield client


def stream(client: TestClient, **config: object) -> tuple[list[dict[str, object]], int]:
    with client.websocket_connect(URL) as ws:
        ws.send_text(json.dumps({**CONFIG, **config}))
        meta = ws.receive_json()
        assert meta["type"] == "metadata" and meta["backend"] == "seed002", meta
        pcm = words_pcm([1, 2, 3, 4, 5, 6])
        for i in range(0, len(pcm), 8000):
            ws.send_bytes(pcm[i : i + 8000])
        ws.send_text('{"type": "stop"}')
        return drain(ws)


def test_it_streams_through_a_session(client: TestClient) -> None:
    messages, code = stream(client)
    finals = "".join(str(m["text"]) for m in messages if m.get("is_final"))
    assert code == 1000 and messages[-1] == {"type": "complete"}
    assert finals.strip() == "w1 w2 w3 w4 w5 w6"


def test_load_model_with_the_guides_body_then_a_session(client: TestClient) -> None:
    response = client.post(
        "/load_model",
        json={
            "model": "my_model_size",
            "lan": "en",
            "task": "transcribe",
            "backend": "seed002",
            "min_chunk_size": 1.0,
            "buffer_trimming": "segment",
            "buffer_trimming_sec": 10.0,
        },
    )
    assert response.status_code == 200, response.text
    assert response.json()["backend"] == "seed002" and response.json()["model"] == "my_model_size"
    messages, code = stream(client)
    assert code == 1000
    finals = "".join(str(m["text"]) for m in messages if m.get("is_final"))
    assert finals.strip() == "w1 w2 w3 w4 w5 w6"
