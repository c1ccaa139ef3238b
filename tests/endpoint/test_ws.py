"""`/ws/asr-stream` in-process: the wire contract with a scripted engine."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketTestSession

from app.asr.registry import Registry
from app.main import create_app
from app.settings import ENGINE_SAMPLE_RATE, Settings
from tests.support.scripted import CountingLoader
from tests.support.ws import drain

URL = "/ws/asr-stream"
CONFIG = {"sample_rate_hertz": 16000, "encoding": "LINEAR16"}


def pcm(seconds: float, rate: int = ENGINE_SAMPLE_RATE, value: int = 1000) -> bytes:
    return np.full(int(seconds * rate), value, dtype="<i2").tobytes()


def send_audio(ws: WebSocketTestSession, seconds: float, rate: int = ENGINE_SAMPLE_RATE) -> None:
    """``seconds`` of PCM in 250 ms frames (under the test's frame limit)."""
    data = pcm(seconds, rate)
    step = rate // 4 * 2
    for i in range(0, len(data), step):
        ws.send_bytes(data[i : i + step])


def start(ws: WebSocketTestSession, **config: Any) -> dict[str, Any]:
    ws.send_text(json.dumps({**CONFIG, **config}))
    meta: dict[str, Any] = ws.receive_json()
    assert meta["type"] == "metadata", meta
    return meta


def asr_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("asr-") and t.is_alive()]


def wait_for(predicate: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


# --------------------------------------------------------------------------- happy path


def test_metadata_echoes_the_session(client: TestClient) -> None:
    with client.websocket_connect(URL) as ws:
        meta = start(ws, language_code="en-GB")
        assert meta == {
            "type": "metadata",
            "status": "ready",
            "session_id": meta["session_id"],
            "language_code": "en-GB",
            "sample_rate_hertz": 16000,
            "encoding": "LINEAR16",
            "backend": "scripted",
            "model": "counting",
        }
        assert len(meta["session_id"]) >= 8
        ws.send_text('{"type": "stop"}')
        messages, code = drain(ws)
    assert code == 1000
    assert messages[-1] == {"type": "complete"}


def test_stop_finalises_then_complete_then_1000(client: TestClient, loader: CountingLoader) -> None:
    with client.websocket_connect(URL) as ws:
        start(ws)
        send_audio(ws, 1.0)
        # The first whole second makes a pass (and its final) before the rest comes;
        # under load the thread could otherwise take everything with the stop at once.
        first_final = ws.receive_json()
        assert first_final["type"] == "transcript" and first_final["is_final"], first_final
        send_audio(ws, 1.5)
        ws.send_text('{"type": "stop"}')
        rest, code = drain(ws)
    messages = [first_final, *rest]
    assert code == 1000
    finals = [m for m in messages if m["type"] == "transcript" and m["is_final"]]
    assert "".join(m["text"] for m in finals) == "w0 w1 end40000"
    assert messages[-1] == {"type": "complete"}
    assert [m["type"] for m in messages].index("complete") == len(messages) - 1
    first = finals[0]
    assert set(first) == {"type", "text", "is_final", "confidence", "start", "end"}
    assert first["start"] == 0.0 and first["end"] == 0.5 and first["confidence"] == 0.9


def test_each_session_logs_its_lag_and_real_time_factor(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app.core")
    with client.websocket_connect(URL) as ws:
        session_id = start(ws)["session_id"]
        send_audio(ws, 2.5)
        ws.send_text('{"type": "stop"}')
        messages, _ = drain(ws)
    finals = [m for m in messages if m["type"] == "transcript" and m["is_final"]]
    assert wait_for(lambda: any("closed (completed)" in r.message for r in caplog.records))
    line = next(r.message for r in caplog.records if "closed (completed)" in r.message)
    match = re.search(
        r"audio ([\d.]+) s, engine real-time factor ([\d.]+), (\d+) finals, lag mean", line
    )
    assert line.startswith(f"[{session_id}]") and match, line
    # How many passes the audio took depends on how the thread batched it; the log
    # counts the finals the client got.
    assert float(match.group(1)) == pytest.approx(2.5)
    assert int(match.group(3)) == len(finals) >= 2


def test_interim_results_arrive_and_can_be_turned_off(client: TestClient) -> None:
    for interim in (True, False):
        with client.websocket_connect(URL) as ws:
            start(ws, interim_results=interim)
            send_audio(ws, 1.2)
            first = ws.receive_json()  # the pass over the first second
            ws.send_text('{"type": "stop"}')
            messages, _ = drain(ws)
        messages.insert(0, first)
        interims = [m for m in messages if m["type"] == "transcript" and not m["is_final"]]
        assert [m["text"] for m in interims] == (["pending"] if interim else [])


def test_word_time_offsets_when_asked(client: TestClient) -> None:
    with client.websocket_connect(URL) as ws:
        start(ws, enable_word_time_offsets=True)
        send_audio(ws, 2.0)
        ws.send_text('{"type": "stop"}')
        messages, _ = drain(ws)
    words = [w for m in messages if m["type"] == "transcript" and m["is_final"] for w in m["words"]]
    assert words[:2] == [
        {"word": "w0", "start": 0.0, "end": 0.5},
        {"word": "w1", "start": 1.0, "end": 1.5},
    ]


def test_odd_byte_frames_are_carried_over(client: TestClient, loader: CountingLoader) -> None:
    samples = np.arange(-800, 800, dtype="<i2") * 37
    data = samples.tobytes()
    with client.websocket_connect(URL) as ws:
        start(ws)
        # 3-, 1-, 5-, 7-byte frames... every sample split across frames somewhere.
        pos, size = 0, 1
        while pos < len(data):
            ws.send_bytes(data[pos : pos + size])
            pos += size
            size = size % 9 + 2 if size % 2 == 0 else size + 2
        ws.send_text('{"type": "stop"}')
        messages, code = drain(ws)
    assert code == 1000
    got = loader.processors[-1].audio
    np.testing.assert_array_equal(got, samples.astype(np.float32) / 32768.0)
    assert messages[-2]["text"].strip() == f"end{len(samples)}"


def test_48k_input_is_resampled_to_16k(client: TestClient, loader: CountingLoader) -> None:
    with client.websocket_connect(URL) as ws:
        start(ws, sample_rate_hertz=48000)
        for _ in range(10):
            ws.send_bytes(pcm(0.1, rate=48000))
        ws.send_text('{"type": "stop"}')
        _, code = drain(ws)
    assert code == 1000
    assert abs(len(loader.processors[-1].audio) - ENGINE_SAMPLE_RATE) <= 2


# --------------------------------------------------------------------------- config errors


@pytest.mark.parametrize(
    ("first", "code", "field"),
    [
        ("not json", "invalid_json", None),
        ("[1, 2]", "invalid_json", None),
        # Python refuses integers over 4,300 digits with a ValueError, not JSONDecodeError.
        ('{"sample_rate_hertz": 1' + "0" * 5000 + "}", "invalid_json", None),
        (json.dumps({**CONFIG, "colour": "red"}), "unknown_field", "colour"),
        # A key with an unpaired surrogate escape: pydantic names no field for it.
        (json.dumps(CONFIG)[:-1] + ', "x\\udc00y": "z"}', "unknown_field", "x\\udc00y"),
        (json.dumps({"encoding": "LINEAR16"}), "missing_field", "sample_rate_hertz"),
        (json.dumps({"sample_rate_hertz": 16000}), "missing_field", "encoding"),
        (
            json.dumps({**CONFIG, "sample_rate_hertz": "16000"}),
            "invalid_field_type",
            "sample_rate_hertz",
        ),
        (
            json.dumps({**CONFIG, "sample_rate_hertz": 16000.5}),
            "invalid_field_type",
            "sample_rate_hertz",
        ),
        (json.dumps({**CONFIG, "interim_results": "yes"}), "invalid_field_type", "interim_results"),
        (json.dumps({**CONFIG, "language_code": 5}), "invalid_field_type", "language_code"),
        (json.dumps({**CONFIG, "encoding": "FLAC"}), "unsupported_encoding", "encoding"),
        # A dotless ı upper-cases to I: "lınear16" must not pass for LINEAR16.
        (json.dumps({**CONFIG, "encoding": "l\u0131near16"}), "unsupported_encoding", "encoding"),
        (
            json.dumps({**CONFIG, "sample_rate_hertz": 96000}),
            "unsupported_sample_rate",
            "sample_rate_hertz",
        ),
        (
            json.dumps({**CONFIG, "sample_rate_hertz": 7999}),
            "unsupported_sample_rate",
            "sample_rate_hertz",
        ),
        (
            json.dumps({**CONFIG, "language_code": "klingon"}),
            "unsupported_language",
            "language_code",
        ),
        (json.dumps({**CONFIG, "language_code": "en_US"}), "unsupported_language", "language_code"),
        (json.dumps({**CONFIG, "backend": "nope"}), "unknown_backend", "backend"),
    ],
)
def test_bad_config_is_refused_with_1008(
    client: TestClient, loader: CountingLoader, first: str, code: str, field: str | None
) -> None:
    sessions_before = len(loader.processors)
    with client.websocket_connect(URL) as ws:
        ws.send_text(first)
        messages, close = drain(ws)
    assert close == 1008
    assert len(messages) == 1
    error = messages[0]
    assert error["type"] == "error" and error["code"] == code
    if field is not None:
        assert f"'{field}'" in error["detail"]
    assert "Traceback" not in error["detail"]
    assert len(loader.processors) == sessions_before  # no session was started


def test_binary_before_config_is_a_protocol_error(client: TestClient) -> None:
    with client.websocket_connect(URL) as ws:
        send_audio(ws, 0.1)
        messages, close = drain(ws)
    assert close == 1008
    assert messages == [
        {
            "type": "error",
            "code": "config_required",
            "detail": messages[0]["detail"],
        }
    ]


def test_no_config_times_out(client: TestClient) -> None:
    with client.websocket_connect(URL) as ws:
        messages, close = drain(ws)
    assert close == 1008
    assert messages[0]["code"] == "config_timeout"


# --------------------------------------------------------------------------- mid-stream


def test_non_fatal_errors_keep_the_session(client: TestClient) -> None:
    with client.websocket_connect(URL) as ws:
        start(ws)
        send_audio(ws, 0.5)
        ws.send_text("garbage")
        ws.send_text('{"type": "keepalive", "n": 1' + "0" * 5000 + "}")
        ws.send_text('{"type": "dance"}')
        ws.send_text(json.dumps(CONFIG))
        ws.send_bytes(b"")
        send_audio(ws, 0.6)
        ws.send_text('{"type": "stop"}')
        ws.send_text('{"type": "stop"}')
        messages, close = drain(ws)
    assert close == 1000
    codes = [m["code"] for m in messages if m["type"] == "error"]
    assert codes[:5] == [
        "invalid_json",
        "invalid_json",
        "unknown_message_type",
        "config_already_sent",
        "empty_frame",
    ]
    finals = "".join(m["text"] for m in messages if m["type"] == "transcript" and m["is_final"])
    assert finals == "w0 end17600"  # 0.5 s + 0.6 s, nothing lost around the errors
    assert messages[-1] == {"type": "complete"}


def test_a_control_message_without_a_type_is_told_what_type_is(client: TestClient) -> None:
    with client.websocket_connect(URL) as ws:
        start(ws)
        ws.send_text("{}")
        reply = ws.receive_json()
        ws.send_text('{"type": "stop"}')
        drain(ws)
    assert reply["code"] == "unknown_message_type"
    assert "needs a 'type'" in reply["detail"] and "None" not in reply["detail"]


@pytest.mark.parametrize("path", [URL, "/v1/listen", "/v1/realtime"])
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_plain_http_to_a_websocket_path_is_426_not_404(
    client: TestClient, path: str, method: str
) -> None:
    answer = client.request(method, path)
    assert answer.status_code == 426 and answer.headers["upgrade"] == "websocket"
    body = answer.json()
    assert body["type"] == "error" and body["code"] == "websocket_required"
    assert path in body["detail"]


def test_oversize_frame_closes_1009(client: TestClient) -> None:
    with client.websocket_connect(URL) as ws:
        start(ws)
        ws.send_bytes(b"\x00" * 64_002)
        messages, close = drain(ws)
    assert close == 1009
    assert messages[-1]["code"] == "frame_too_large"
    assert "64000" in messages[-1]["detail"]


def test_engine_failure_is_1011_without_internals(client: TestClient) -> None:
    with client.websocket_connect(URL) as ws:
        start(ws, backend="broken")
        send_audio(ws, 1.5)
        messages, close = drain(ws)
    assert close == 1011
    assert messages[-1]["code"] == "engine_failure"
    assert "/secret/path" not in messages[-1]["detail"]
    # ... and the service still serves the next session.
    with client.websocket_connect(URL) as ws:
        start(ws)
        ws.send_text('{"type": "stop"}')
        _, close = drain(ws)
    assert close == 1000


def test_a_slow_engine_does_not_block_reading(client: TestClient) -> None:
    """While the engine sits in a 1.5 s pass, the socket is still read and answered."""
    with client.websocket_connect(URL) as ws:
        start(ws, backend="slow", interim_results=False)
        send_audio(ws, 1.0)
        time.sleep(0.2)  # the engine is now inside its slow pass
        send_audio(ws, 3.0)
        sent = time.monotonic()
        ws.send_text("not json")
        reply = ws.receive_json()
        answered_in = time.monotonic() - sent
        ws.send_text('{"type": "stop"}')
        messages, close = drain(ws)
    assert reply["code"] == "invalid_json"
    assert answered_in < 1.0
    assert close == 1000
    finals = "".join(m["text"] for m in messages if m["type"] == "transcript" and m["is_final"])
    assert finals.endswith("end64000")  # all 4 s arrived


def slow_engine_client(**limits: float) -> TestClient:
    """A client of an app whose default engine takes 1 s per pass, with these settings."""
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        default_backend="slow",
        default_model="counting",
        **limits,  # type: ignore[arg-type]
    )
    registry = Registry(settings, entries={})
    registry.register_loader("slow", CountingLoader(iter_delay=1.0))
    return TestClient(create_app(settings, registry))


def test_after_a_limit_ends_the_session_no_interim_comes(loader: CountingLoader) -> None:
    """The error comes first, then the last finals and `complete` (STREAMING.md §4):
    a pass that was running when the limit struck shows no interim after the error."""
    with slow_engine_client(max_session_sec=1.5) as client, client.websocket_connect(URL) as ws:
        start(ws)
        send_audio(ws, 1.0)
        time.sleep(0.3)  # the engine is inside its pass
        send_audio(ws, 1.0)  # past the limit while that pass runs
        messages, close = drain(ws)
    kinds = [m["type"] if m["type"] != "transcript" else m["is_final"] for m in messages]
    after = kinds[kinds.index("error") :]
    assert messages[kinds.index("error")]["code"] == "max_duration_exceeded"
    assert False not in after, kinds  # no interim after the error
    assert after[-1] == "complete" and True in after and close == 1008


def test_engine_behind_is_told_once_however_a_burst_swings_the_backlog() -> None:
    """A pass takes the whole queue, so a client sending in bursts empties the backlog
    at every pass: each burst was a new "episode" and a new notice (10 in 36 s)."""
    limits = {"max_backlog_sec": 1.0, "audio_queue_seconds": 10.0}
    with slow_engine_client(**limits) as client, client.websocket_connect(URL) as ws:
        start(ws, interim_results=False)
        for _ in range(3):  # bursts of 4 s: past the 1 s backlog during a pass, drained after
            send_audio(ws, 4.0)
            time.sleep(2.5)
        ws.send_text('{"type": "stop"}')
        messages, close = drain(ws)
    notices = [m for m in messages if m["type"] == "error" and m["code"] == "engine_behind"]
    assert len(notices) == 1, [m.get("code") for m in messages]
    finals = "".join(m["text"] for m in messages if m["type"] == "transcript" and m["is_final"])
    assert finals.endswith("end192000") and close == 1000  # every sample, nothing dropped


def test_disconnect_tears_the_session_down(client: TestClient, app: FastAPI) -> None:
    baseline = len(asr_threads())
    with client.websocket_connect(URL) as ws:
        start(ws)
        send_audio(ws, 0.7)
        assert len(asr_threads()) == baseline + 1
    assert wait_for(lambda: len(asr_threads()) == baseline)
    assert wait_for(lambda: not app.state.endpoint.active)


def test_concurrent_sessions_are_independent(client: TestClient) -> None:
    with client.websocket_connect(URL) as a, client.websocket_connect(URL) as b:
        start(a)
        start(b)
        send_audio(a, 1.0)
        send_audio(b, 2.0)
        b.send_text('{"type": "stop"}')
        a.send_text('{"type": "stop"}')
        ma, ca = drain(a)
        mb, cb = drain(b)
    assert (ca, cb) == (1000, 1000)
    text = lambda ms: "".join(m["text"] for m in ms if m["type"] == "transcript" and m["is_final"])  # noqa: E731
    assert text(ma) == "w0 end16000"
    assert text(mb) == "w0 w1 end32000"


def test_health_and_ready(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
