"""Without the `webrtc` extra the route says which extra to install; nothing imports aiortc
before an offer arrives."""

from __future__ import annotations

import subprocess
import sys

import pytest
from fastapi.testclient import TestClient

import app.webrtc
from app.main import create_app
from app.settings import Settings
from tests.e2e.test_hardening import BASE_ENV


def test_the_route_names_the_extra_when_aiortc_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(app.webrtc, "webrtc_available", lambda: False)
    settings = Settings(**{name.lower(): value for name, value in BASE_ENV.items()})
    with TestClient(create_app(settings)) as client:
        response = client.post("/webrtc/offer", json={"sdp": "v=0", "type": "offer"})
    assert response.status_code == 501
    body = response.json()
    assert body["code"] == "webrtc_unavailable"
    assert "asr-stream[webrtc]" in body["detail"]


def test_building_the_app_does_not_import_aiortc() -> None:
    code = (
        "import sys; from app.main import create_app; create_app(); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('aiortc', 'aioice')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_an_ice_server_without_urls_is_refused_at_start(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """aiortc's RTCIceServer needs ``urls``: a typo ("url") failed every offer with 500."""
    from app.cli import settings_from_command_line

    monkeypatch.setenv("WEBRTC_ICE_SERVERS", '[{"url": "stun:stun.example.com:3478"}]')
    with pytest.raises(SystemExit) as exit_:
        settings_from_command_line([], prog="run.py")
    assert exit_.value.code == 2
    assert "entry 0: an RTCIceServer has 'urls'" in capsys.readouterr().err
    monkeypatch.setenv("WEBRTC_ICE_SERVERS", "not json")  # one line, not a traceback
    with pytest.raises(SystemExit) as exit_:
        settings_from_command_line([], prog="run.py")
    assert exit_.value.code == 2 and "webrtc_ice_servers" in capsys.readouterr().err
    good = '[{"urls": ["stun:stun.example.com:3478"], "username": "u", "credential": "c"}]'
    monkeypatch.setenv("WEBRTC_ICE_SERVERS", good)
    assert settings_from_command_line([], prog="run.py").webrtc_ice_servers[0]["username"] == "u"
