"""``GET /ready`` with Google configured: ready only when a channel to it connects."""

from __future__ import annotations

import time
from pathlib import Path

from bench.server import free_port
from tests.google.conftest import ClientFactory, app_client, google_settings


def test_ready_when_the_emulator_answers(connect: ClientFactory) -> None:
    with connect() as client:
        response = client.get("/ready")
    assert response.status_code == 200
    assert response.json()["checks"] == {"google": {"ok": True, "detail": None}}


def test_not_ready_when_the_endpoint_is_unreachable() -> None:
    settings = google_settings(
        google_speech_endpoint=f"127.0.0.1:{free_port()}", ready_check_timeout_sec=0.3
    )
    with app_client(settings) as client:
        first = client.get("/ready")
        started = time.monotonic()
        second = client.get("/ready")  # cached: no second 0.3 s probe
        cached_in = time.monotonic() - started
        # Local sessions still work: readiness reports, it does not refuse them.
        assert client.get("/health").json() == {"status": "ok"}
    assert first.status_code == 503 and second.status_code == 503
    body = first.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["google"]["ok"] is False
    assert "not reachable" in body["checks"]["google"]["detail"]
    assert cached_in < 0.25


def test_not_ready_without_usable_credentials(tmp_path: Path) -> None:
    key = tmp_path / "secret-dir" / "key.json"
    with app_client(google_settings(google_application_credentials=key)) as client:
        response = client.get("/ready")
    assert response.status_code == 503
    detail = response.json()["checks"]["google"]["detail"]
    assert "GOOGLE_APPLICATION_CREDENTIALS" in detail and str(tmp_path) not in detail


def test_google_not_configured_is_not_checked() -> None:
    with app_client(google_settings()) as client:
        response = client.get("/ready")
    assert response.status_code == 200 and response.json()["checks"] == {}
