"""Backend ``google`` through the real endpoint and the real client, against the fake server.

The fake names each word after the audio it heard (`ramp` audio makes the
transcript a clock: ``s0 s5 s10…`` at 0, 0.5, 1.0… s), so an exact transcript
proves that no audio was lost or recognised twice across restarts and
reconnects, and that times stay continuous.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from typing import Any

import grpc
import pytest
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketTestSession

from app.asr.google.loader import GoogleLoader
from app.asr.google.replay import MAX_REQUEST_BYTES
from app.asr.registry import Registry
from app.main import create_app
from tests.google.conftest import (
    URL,
    ClientFactory,
    app_client,
    expected_words,
    finals,
    google_settings,
    send,
    start,
    transcript_words,
)
from tests.google.fake_speech import FakeSpeechServer, Fault, Script, StreamRecord, ramp
from tests.support.scripted import CountingLoader
from tests.support.ws import drain

STOP = json.dumps({"type": "stop"})


def send_paced(ws: WebSocketTestSession, data: bytes, frame_bytes: int, pause: float) -> None:
    for i in range(0, len(data), frame_bytes):
        ws.send_bytes(data[i : i + frame_bytes])
        time.sleep(pause)


def fail_when_idle(gate: threading.Event) -> None:
    """Let a gated fault fire once the client has stopped sending.

    A fatal error ends the session by cancelling its socket reader. On Python 3.11,
    `asyncio.wait_for` (app/ws.py's reader) swallows a cancel that coincides with an
    arriving frame, and the session then waits for the next frame; tests fail the
    stream while the client is quiet so they do not depend on that race.
    """
    time.sleep(0.2)  # the endpoint has read every frame
    gate.set()


def position(original: bytes, stream: StreamRecord) -> int:
    """Where a stream's audio sits in what the client sent (sample-aligned)."""
    audio = bytes(stream.audio)
    pos = original.find(audio)
    while pos % 2:
        pos = original.find(audio, pos + 1)
    assert pos >= 0, f"stream {stream.index} carries audio the client never sent"
    return pos


def final_ends(stream: StreamRecord) -> list[int]:
    """Byte offsets (within the stream) where the fake's finals ended."""
    rate = stream.config.sample_rate_hertz
    return [
        round(r.result_end_time.ToNanoseconds() * rate / 1e9) * 2
        for response in stream.responses
        for r in response.results
        if r.is_final
    ]


def assert_continuous(messages: list[dict[str, Any]], seconds: float) -> None:
    """Finals tile the stream's time: each starts where the previous ended."""
    spans = [(m["start"], m["end"]) for m in finals(messages)]
    assert spans[0][0] == 0.0
    for (_, end), (begin, _) in itertools.pairwise(spans):
        assert begin == pytest.approx(end, abs=1e-3)
    assert spans[-1][1] == pytest.approx(seconds, abs=1e-3)


# --------------------------------------------------------------------------- mapping


def test_results_map_to_the_local_engines_message_shapes(
    connect: ClientFactory, fake: FakeSpeechServer
) -> None:
    fake.script = Script(word_sec=0.5, words_per_final=3)
    audio = ramp(3.0, 8_000)
    with connect() as client, client.websocket_connect(URL) as ws:
        meta = start(ws, sample_rate_hertz=8_000, enable_word_time_offsets=True)
        ws.send_bytes(audio[:16_000])  # 1 s in one request: two words pending, no final yet
        interim = ws.receive_json()
        send(ws, audio[16_000:])
        ws.send_text(STOP)
        messages, code = drain(ws)

    assert meta["backend"] == "google" and meta["model"] == "latest_long"
    # Google's interim came in two parts (stable head, unstable tail): one message,
    # as stable as its least stable part, covering the audio after the last final.
    assert interim == {
        "type": "transcript",
        "text": "s0 s5",
        "is_final": False,
        "confidence": None,
        "start": 0.0,
        "end": 1.0,
        "words": [],
        "stability": 0.1,
    }
    assert finals(messages) == [
        {
            "type": "transcript",
            "text": "s0 s5 s10",
            "is_final": True,
            "confidence": 0.9,
            "start": 0.0,
            "end": 1.5,
            "words": [
                {"word": "s0", "start": 0.0, "end": 0.4},
                {"word": "s5", "start": 0.5, "end": 0.9},
                {"word": "s10", "start": 1.0, "end": 1.4},
            ],
        },
        {
            "type": "transcript",
            "text": " s15 s20 s25",
            "is_final": True,
            "confidence": 0.9,
            "start": 1.5,
            "end": 3.0,
            "words": [
                {"word": "s15", "start": 1.5, "end": 1.9},
                {"word": "s20", "start": 2.0, "end": 2.4},
                {"word": "s25", "start": 2.5, "end": 2.9},
            ],
        },
    ]
    for m in messages:
        if m["type"] == "transcript" and not m["is_final"]:
            assert m["stability"] in (0.1, 0.5) and m["confidence"] is None
    assert messages[-1] == {"type": "complete"} and code == 1000


def test_config_goes_first_with_the_sessions_language_rate_and_options(
    connect: ClientFactory, fake: FakeSpeechServer
) -> None:
    audio = ramp(2.0, 44_100)
    with connect() as client, client.websocket_connect(URL) as ws:
        meta = start(
            ws,
            sample_rate_hertz=44_100,
            language_code="ar-EG",
            model="latest_short",
            interim_results=False,
            enable_automatic_punctuation=False,
            enable_word_time_offsets=True,
        )
        send(ws, audio, frame_bytes=333)  # odd frames: samples split across frames
        ws.send_text(STOP)
        messages, code = drain(ws)

    assert code == 1000 and meta["model"] == "latest_short"
    assert len(fake.streams) == 1
    stream = fake.streams[0]
    config = stream.config
    assert (config.sample_rate_hertz, config.language_code, config.model) == (
        44_100,
        "ar-EG",
        "latest_short",
    )
    assert config.enable_word_time_offsets and not config.enable_automatic_punctuation
    assert config.audio_channel_count == 1 and not stream.interim_results
    # The client's own bytes, at its own rate: no resampling, nothing lost or changed.
    assert bytes(stream.audio) == audio
    assert not [m for m in messages if m["type"] == "transcript" and not m["is_final"]]
    assert transcript_words(messages) == expected_words(2.0)


@pytest.mark.parametrize("rate", [8_000, 48_000])
def test_default_model_and_any_rate(
    connect: ClientFactory, fake: FakeSpeechServer, rate: int
) -> None:
    with connect() as client, client.websocket_connect(URL) as ws:
        meta = start(ws, sample_rate_hertz=rate)  # model left out: GOOGLE_MODEL
        send(ws, ramp(1.0, rate), frame_bytes=rate // 5)
        ws.send_text(STOP)
        messages, code = drain(ws)
    assert meta["model"] == "latest_long" and code == 1000
    assert fake.streams[0].config.model == "latest_long"
    assert fake.streams[0].config.sample_rate_hertz == rate
    assert transcript_words(messages) == ["s0", "s5"]


def test_big_frames_are_split_into_google_sized_requests(
    connect: ClientFactory, fake: FakeSpeechServer
) -> None:
    audio = ramp(6.0, 48_000)  # 576,000 bytes
    with connect() as client, client.websocket_connect(URL) as ws:
        start(ws, sample_rate_hertz=48_000)
        send(ws, audio, frame_bytes=200_000)
        ws.send_text(STOP)
        messages, code = drain(ws)
    assert code == 1000
    sizes = fake.streams[0].chunk_sizes
    assert max(sizes) == MAX_REQUEST_BYTES and all(s % 2 == 0 for s in sizes)
    assert bytes(fake.streams[0].audio) == audio
    assert transcript_words(messages) == expected_words(6.0)


# --------------------------------------------------------------------------- endless streams


def test_restart_before_the_limit_resends_the_audio_after_the_last_final(
    connect: ClientFactory, fake: FakeSpeechServer
) -> None:
    fake.script = Script(word_sec=0.5, words_per_final=1)
    fake.limits.max_stream_sec = 3.0  # Google's 305 s, shrunk
    audio = ramp(6.0, 16_000)
    with connect(google_restart_sec=2.0) as client, client.websocket_connect(URL) as ws:
        start(ws, sample_rate_hertz=16_000, enable_word_time_offsets=True)
        send_paced(ws, audio, 3_200, 0.02)  # 100 ms frames at 5x real time
        ws.send_text(STOP)
        messages, code = drain(ws)

    assert code == 1000 and messages[-1] == {"type": "complete"}
    streams = fake.streams
    assert len(streams) >= 3
    assert all(s.status in ("cancelled", "ok") for s in streams)  # Google's limit never hit
    assert any(s.status == "cancelled" for s in streams)  # restarted by the bridge
    # Each new stream starts with the audio after a final of the previous one (it
    # resends what Google had not finalised) and nothing before it.
    for prev, nxt in itertools.pairwise(streams):
        prev_pos, next_pos = position(audio, prev), position(audio, nxt)
        assert next_pos - prev_pos in [0, *final_ends(prev)]
        assert next_pos <= prev_pos + len(prev.audio)  # no gap
        assert len(prev.audio) <= (2.0 + 0.2) * 16_000 * 2  # restarted before the limit
    assert any(
        position(audio, p) + len(p.audio) > position(audio, n)
        for p, n in itertools.pairwise(streams)
    ), "some audio was resent"
    # Google's times restart at 0 on every stream; the client's do not.
    assert transcript_words(messages) == expected_words(6.0)
    assert_continuous(messages, 6.0)
    words = [w for m in finals(messages) for w in m["words"]]
    assert [w["start"] for w in words] == [k * 0.5 for k in range(12)]


def test_restart_half_closes_when_google_has_finalised_nothing(
    connect: ClientFactory, fake: FakeSpeechServer
) -> None:
    """Speech or noise Google never finalises: resending it all would never end."""
    fake.script = Script(finals=False)
    audio = ramp(5.0, 16_000)
    with connect(google_restart_sec=2.0) as client, client.websocket_connect(URL) as ws:
        start(ws, sample_rate_hertz=16_000)
        send_paced(ws, audio, 3_200, 0.005)
        ws.send_text(STOP)
        messages, code = drain(ws)
    assert code == 1000
    streams = fake.streams
    assert len(streams) >= 3 and all(s.status == "ok" and s.half_closed for s in streams)
    # Google finalised each stream at its half-close, so nothing is resent: the
    # streams tile the audio exactly.
    assert b"".join(bytes(s.audio) for s in streams) == audio
    assert_continuous(messages, 5.0)


def test_google_ending_the_stream_out_of_range_restarts_without_a_gap(
    connect: ClientFactory, fake: FakeSpeechServer
) -> None:
    fake.limits.max_stream_sec = 1.5
    audio = ramp(4.0, 16_000)
    with connect() as client, client.websocket_connect(URL) as ws:
        start(ws, sample_rate_hertz=16_000)
        send_paced(ws, audio, 3_200, 0.005)
        ws.send_text(STOP)
        messages, code = drain(ws)
    assert code == 1000 and not [m for m in messages if m["type"] == "error"]
    assert [s.status for s in fake.streams][:2] == ["OUT_OF_RANGE", "OUT_OF_RANGE"]
    assert transcript_words(messages) == expected_words(4.0)
    assert_continuous(messages, 4.0)


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED])
def test_transient_failure_reconnects_and_resends_unfinalised_audio(
    connect: ClientFactory, fake: FakeSpeechServer, code: grpc.StatusCode
) -> None:
    fake.add_faults(Fault(code, after_chunks=13))  # 1.3 s in: one final (1.0 s) was sent
    audio = ramp(3.0, 16_000)
    with connect() as client, client.websocket_connect(URL) as ws:
        start(ws, sample_rate_hertz=16_000)
        send_paced(ws, audio, 3_200, 0.005)
        ws.send_text(STOP)
        messages, code_ = drain(ws)
    assert code_ == 1000 and not [m for m in messages if m["type"] == "error"]
    first, second = fake.streams[:2]
    assert first.status == code.name and second.status == "ok"
    # The new stream starts at the end of the last final, resending the 0.3 s after it.
    assert final_ends(first) == [32_000]
    assert position(audio, second) == 32_000
    assert bytes(second.audio) == audio[32_000 : 32_000 + len(second.audio)]
    assert transcript_words(messages) == expected_words(3.0)
    assert_continuous(messages, 3.0)


def test_reconnects_are_bounded_then_google_unavailable(
    connect: ClientFactory, fake: FakeSpeechServer
) -> None:
    gate = threading.Event()
    fake.add_faults(
        Fault(grpc.StatusCode.UNAVAILABLE, after_chunks=12, gate=gate),  # after a final
        *[Fault(grpc.StatusCode.UNAVAILABLE)] * 5,
    )
    with connect(google_max_reconnects=2) as client, client.websocket_connect(URL) as ws:
        start(ws, sample_rate_hertz=16_000)
        send_paced(ws, ramp(3.0, 16_000), 3_200, 0.005)
        fail_when_idle(gate)
        messages, code = drain(ws)
    # The finals so far come first, then the error, then the close.
    assert transcript_words(messages) == ["s0", "s5"]
    error = messages[-1]
    assert error["type"] == "error" and error["code"] == "google_unavailable"
    assert "2 reconnects" in error["detail"] and code == 1011
    assert len(fake.streams) == 1 + 2  # the first stream, then two reconnects


@pytest.mark.parametrize(
    ("status", "code", "close"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, "google_invalid_argument", 1008),
        (grpc.StatusCode.PERMISSION_DENIED, "google_permission_denied", 1008),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "google_quota_exceeded", 1013),
        (grpc.StatusCode.UNAUTHENTICATED, "google_credentials", 1008),
        (grpc.StatusCode.INTERNAL, "google_error", 1011),
    ],
)
def test_fatal_google_errors_have_stable_codes_and_closes(
    connect: ClientFactory,
    fake: FakeSpeechServer,
    status: grpc.StatusCode,
    code: str,
    close: int,
) -> None:
    gate = threading.Event()
    fake.add_faults(Fault(status, after_chunks=12, details="scripted refusal", gate=gate))
    with connect() as client, client.websocket_connect(URL) as ws:
        start(ws, sample_rate_hertz=16_000)
        send_paced(ws, ramp(2.0, 16_000), 3_200, 0.005)
        fail_when_idle(gate)
        messages, close_code = drain(ws)
    assert transcript_words(messages) == ["s0", "s5"]  # what Google finalised was sent
    assert messages[-1]["type"] == "error" and messages[-1]["code"] == code
    assert "Traceback" not in messages[-1]["detail"]
    assert close_code == close
    assert len(fake.streams) == 1  # no reconnect


def test_language_google_refuses_is_an_error_right_after_metadata(
    connect: ClientFactory, fake: FakeSpeechServer
) -> None:
    with connect() as client, client.websocket_connect(URL) as ws:
        start(ws, sample_rate_hertz=16_000, language_code="xx-XX")  # BCP-47, but not Google's
        messages, code = drain(ws)  # no audio sent: the first stream opens at once
    assert messages == [
        {
            "type": "error",
            "code": "google_invalid_argument",
            "detail": "Google Speech-to-Text refused the stream's settings (Invalid recognition "
            "'config': bad language code). Check 'language_code', 'model' and "
            "'sample_rate_hertz'.",
        }
    ]
    assert code == 1008


# --------------------------------------------------------------------------- quiet clients, control


def test_idle_client_half_closes_the_google_stream_and_reopens_on_audio(
    connect: ClientFactory, fake: FakeSpeechServer
) -> None:
    fake.limits.idle_timeout_sec = 1.0  # Google's ~10 s, shrunk
    audio = ramp(2.0, 16_000)
    with connect(google_idle_restart_sec=0.3) as client, client.websocket_connect(URL) as ws:
        start(ws, sample_rate_hertz=16_000, enable_word_time_offsets=True)
        send(ws, audio[:32_000])
        assert fake.wait_for(lambda: [s.status for s in fake.streams] == ["ok"], 3.0)
        time.sleep(1.2)  # longer than Google's idle timeout
        assert len(fake.streams) == 1  # reopened only when audio comes
        send(ws, audio[32_000:])
        ws.send_text(STOP)
        messages, code = drain(ws)
    assert code == 1000 and not [m for m in messages if m["type"] == "error"]
    assert [(s.status, s.half_closed) for s in fake.streams] == [("ok", True), ("ok", True)]
    assert b"".join(bytes(s.audio) for s in fake.streams) == audio
    assert transcript_words(messages) == expected_words(2.0)
    assert_continuous(messages, 2.0)  # the pause is not in the stream's time


def test_finalize_makes_everything_final_and_the_stream_goes_on(
    connect: ClientFactory, fake: FakeSpeechServer
) -> None:
    audio = ramp(1.5, 16_000)
    with connect() as client, client.websocket_connect(URL) as ws:
        start(ws, sample_rate_hertz=16_000)
        send(ws, audio[:24_000])  # 0.75 s: one word and a half
        ws.send_text(json.dumps({"type": "finalize"}))
        last: dict[str, Any] = {}
        while not (last.get("is_final") and last["end"] == 0.75):
            last = ws.receive_json()
        send(ws, audio[24_000:])
        ws.send_text(STOP)
        messages, code = drain(ws)
    assert last["text"] == "s0 s5"  # the half word was finalised too
    assert code == 1000
    assert [m["text"].strip() for m in finals(messages)] == ["s7 s12"]
    assert finals(messages)[0]["start"] == 0.75 and finals(messages)[0]["end"] == 1.5


def test_client_leaving_ends_the_google_stream_and_the_thread(
    connect: ClientFactory, fake: FakeSpeechServer
) -> None:
    with connect() as client:
        with client.websocket_connect(URL) as ws:
            start(ws, sample_rate_hertz=16_000)
            send(ws, ramp(1.0, 16_000))
            assert fake.wait_for(lambda: sum(len(s.audio) for s in fake.streams) == 32_000)
        # Left without `stop`.
        assert fake.wait_for(lambda: all(s.status != "open" for s in fake.streams), 3.0)
        assert fake.wait_for(lambda: not _asr_threads(), 3.0)
    assert fake.active == 0


def _asr_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("asr-") and t.is_alive()]


# --------------------------------------------------------------------------- channels


def test_sessions_spread_over_channels_past_the_per_connection_stream_limit() -> None:
    """Google's front ends cap concurrent streams per connection; a full channel gets a sibling."""
    with FakeSpeechServer(max_concurrent_streams=2) as fake:
        settings = google_settings(google_speech_endpoint=fake.endpoint)
        loader = GoogleLoader(settings, streams_per_channel=2)
        registry = Registry(settings, entries={})
        registry.register_loader("scripted", CountingLoader())
        registry.register_loader("google", loader)
        try:
            with TestClient(create_app(settings, registry)) as client:
                sockets = [client.websocket_connect(URL) for _ in range(5)]
                sessions = [s.__enter__() for s in sockets]
                for ws in sessions:
                    start(ws, sample_rate_hertz=16_000)
                    send(ws, ramp(0.5, 16_000))
                # All five streams run at once, on three connections.
                assert fake.wait_for(lambda: fake.active == 5, 5.0), fake.active
                assert loader.describe()["channels"] == 3
                for ws, sock in zip(sessions, sockets, strict=True):
                    ws.send_text(STOP)
                    messages, code = drain(ws)
                    assert code == 1000 and transcript_words(messages) == ["s0"]
                    sock.__exit__(None, None, None)
        finally:
            loader.close()


def test_describe_and_missing_google_speech_endpoint_are_reported(fake: FakeSpeechServer) -> None:
    settings = google_settings(google_speech_endpoint=fake.endpoint)
    with app_client(settings) as client:
        listed = {b["name"]: b for b in client.get("/backends").json()["backends"]}
    google = listed["google"]
    assert google["usable"] is True and google["endpoint"] == "emulator"
    assert google["default_model"] == "latest_long" and "latest_long" in google["models"]
