from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.server import running_server
from tests.e2e.test_hardening import BASE_ENV
from tests.webrtc.netns import Link, veth_namespace

KEY = "webrtc-test-key"
ORIGIN = "http://allowed.example"
AUTH = {"Authorization": f"Bearer {KEY}"}


def http_base(ws_url: str) -> str:
    return ws_url.replace("ws://", "http://").rsplit("/ws/", 1)[0]


@pytest.fixture(scope="module")
def scripted_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real server process with the scripted engine, an API key and one allowed origin."""
    log = Path(tmp_path_factory.mktemp("webrtc")) / "server.log"
    env = {**BASE_ENV, "API_KEYS": KEY, "ALLOWED_ORIGINS": ORIGIN}
    with running_server(env=env, log_path=log) as url:
        yield url


@pytest.fixture(scope="package")
def model_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real server process with the real default model (as tests/e2e's ``server_url``).

    Bound to every address (0.0.0.0): the loopback for the host's clients, and the
    host end of `veth`, for the client in the namespace (test_netns.py). One for
    the package: the model loads once.
    """
    log = Path(tmp_path_factory.mktemp("webrtc-model")) / "server.log"
    cache = tmp_path_factory.mktemp("models")
    # Two sessions at once (WebRTC beside the WebSocket), whatever the backend's speed.
    env = {"MODEL_CACHE_DIR": str(cache), "LOCAL_CAPACITY": "4", "HOST": "0.0.0.0"}
    with running_server(env=env, log_path=log) as url:
        yield url


@pytest.fixture(scope="package")
def veth() -> Iterator[Link]:
    """A namespace and a veth pair to it (tests/webrtc/netns.py), removed after, always."""
    with veth_namespace() as link:
        yield link
