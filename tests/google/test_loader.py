"""Backend ``google`` at session start: the extra, credentials, model choice, `/load_model`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from app.asr.base import EngineRequest
from app.asr.google.loader import EXTRA_HINT, GoogleLoader
from app.errors import BackendUnavailable, ConfigError
from app.settings import Settings
from tests.google.conftest import URL, app_client, google_settings, send
from tests.google.fake_speech import FakeSpeechServer, ramp
from tests.support.ws import drain

SECRET = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC-not-a-real-key-SECRET"


def request(model: str = "", task: str = "transcribe") -> EngineRequest:
    return EngineRequest(
        backend="google",
        model=model,
        language=None,
        language_code="ar-EG",
        task=task,  # type: ignore[arg-type]
    )


# --------------------------------------------------------------------------- credentials


def _refused_at_start(settings: Settings) -> tuple[list[dict[str, str]], int]:
    with app_client(settings) as client, client.websocket_connect(URL) as ws:
        ws.send_text(
            json.dumps({"sample_rate_hertz": 16_000, "encoding": "LINEAR16", "backend": "google"})
        )
        return drain(ws)


def test_missing_key_file_is_an_error_at_session_start(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "key.json"
    messages, code = _refused_at_start(google_settings(google_application_credentials=path))
    assert [m["code"] for m in messages] == ["google_credentials"]  # no metadata first
    detail = messages[0]["detail"]
    assert "GOOGLE_APPLICATION_CREDENTIALS" in detail and "readable file" in detail
    assert str(tmp_path) not in detail and code == 1008


@pytest.mark.parametrize(
    "content",
    [
        f'{{"type": "service_account", "private_key": "{SECRET}"',  # not JSON
        json.dumps(  # JSON, but a key that is not a key
            {
                "type": "service_account",
                "project_id": "p",
                "private_key_id": "1",
                "private_key": f"-----BEGIN PRIVATE KEY-----\n{SECRET}\n-----END PRIVATE KEY-----\n",
                "client_email": "asr@p.iam.gserviceaccount.com",
                "client_id": "1",
                "token_uri": "https://oauth2.googleapis.com/token",
            }
        ),
        json.dumps({"type": "no_such_type", "secret": SECRET}),
    ],
    ids=["invalid-json", "bad-private-key", "unknown-type"],
)
def test_bad_key_file_is_an_error_that_never_shows_the_key(tmp_path: Path, content: str) -> None:
    path = tmp_path / "key.json"
    path.write_text(content)
    messages, code = _refused_at_start(google_settings(google_application_credentials=path))
    assert [m["code"] for m in messages] == ["google_credentials"]
    detail = messages[0]["detail"]
    assert "not a valid Google service-account key" in detail
    assert SECRET not in detail and str(tmp_path) not in detail and code == 1008


def test_the_env_variable_is_the_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "k.json"))
    monkeypatch.setenv("GOOGLE_SPEECH_ENDPOINT", "127.0.0.1:1")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.google_application_credentials == tmp_path / "k.json"
    assert settings.google_speech_endpoint == "127.0.0.1:1"


# --------------------------------------------------------------------------- the extra


def test_missing_extra_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "google.cloud.speech_v1", None)  # import fails
    loader = GoogleLoader(google_settings())
    with pytest.raises(BackendUnavailable) as err:
        loader.open_recognizer(request(), 16_000)
    assert EXTRA_HINT in err.value.detail and err.value.code == "backend_unavailable"
    assert loader.describe() == {"usable": False, "reason": err.value.detail}


def test_missing_extra_through_the_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "google.cloud.speech_v1", None)
    messages, code = _refused_at_start(google_settings(google_speech_endpoint="127.0.0.1:1"))
    assert messages[0]["code"] == "backend_unavailable" and EXTRA_HINT in messages[0]["detail"]
    assert code == 1008


# --------------------------------------------------------------------------- models, tasks


def test_model_choice() -> None:
    loader = GoogleLoader(google_settings(default_model="tiny.en", google_model="latest_long"))
    assert loader.model_for("") == "latest_long"  # a config without model
    assert (
        loader.model_for("tiny.en") == "latest_long"
    )  # the local default, with DEFAULT_BACKEND=google
    assert loader.model_for("latest_short") == "latest_short"  # Google decides on the rest


def test_translate_is_refused() -> None:
    loader = GoogleLoader(google_settings(google_speech_endpoint="127.0.0.1:1"))
    with pytest.raises(ConfigError) as err:
        loader.open_recognizer(request(task="translate"), 16_000)
    assert err.value.code == "unsupported_task"
    loader.close()


def test_google_as_the_default_backend(fake: FakeSpeechServer) -> None:
    settings = google_settings(
        google_speech_endpoint=fake.endpoint, default_backend="google", default_model="tiny.en"
    )
    with app_client(settings) as client, client.websocket_connect(URL) as ws:
        ws.send_text(json.dumps({"sample_rate_hertz": 16_000, "encoding": "LINEAR16"}))
        meta = ws.receive_json()
        send(ws, ramp(1.0, 16_000))
        ws.send_text(json.dumps({"type": "stop"}))
        _, code = drain(ws)
    assert (meta["backend"], meta["model"]) == ("google", "latest_long")
    assert fake.streams[0].config.model == "latest_long" and code == 1000


def test_load_model_makes_google_the_default(fake: FakeSpeechServer) -> None:
    with app_client(google_settings(google_speech_endpoint=fake.endpoint)) as client:
        reply = client.post("/load_model", json={"backend": "google", "lan": "ar-EG"})
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert (body["backend"], body["model"], body["language_code"]) == (
            "google",
            "latest_long",
            "ar-EG",
        )
        with client.websocket_connect(URL) as ws:
            ws.send_text(json.dumps({"sample_rate_hertz": 16_000, "encoding": "LINEAR16"}))
            meta = ws.receive_json()
            ws.send_text(json.dumps({"type": "stop"}))
            _, code = drain(ws)
    assert (meta["backend"], meta["language_code"]) == ("google", "ar-EG") and code == 1000
    # /load_model opened no Google stream; the session's first stream did.
    assert fake.wait_for(lambda: len(fake.streams) == 1)
    assert fake.streams[0].config.language_code == "ar-EG"
