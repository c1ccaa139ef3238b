from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.asr.registry import Registry
from app.main import create_app
from app.settings import Settings
from tests.support.scripted import CountingLoader


@pytest.fixture
def loader() -> CountingLoader:
    return CountingLoader()


@pytest.fixture
def app(loader: CountingLoader) -> FastAPI:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        default_backend="scripted",
        default_model="counting",
        max_frame_bytes=64_000,
        config_timeout_sec=2.0,
    )
    registry = Registry(settings, entries={})
    registry.register_loader("scripted", loader)
    registry.register_loader("broken", CountingLoader(fail_on_iter=True))
    registry.register_loader("slow", CountingLoader(iter_delay=1.5))
    return create_app(settings, registry)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as client:
        yield client
