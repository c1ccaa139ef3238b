from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.server import running_server


@pytest.fixture(scope="session")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `run.py` process with the real faster-whisper tiny.en model."""
    log = Path(tmp_path_factory.mktemp("server")) / "server.log"
    cache = tmp_path_factory.mktemp("models")
    # These tests stream up to 4 clips at once to test streaming, not admission: on a
    # slow backend (MKL on an AMD CPU runs 5x slower) the measured capacity is 1.
    env = {"MODEL_CACHE_DIR": str(cache), "LOCAL_CAPACITY": "4"}
    with running_server(env=env, log_path=log) as url:
        yield url
