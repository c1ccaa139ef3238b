"""The OpenAI Realtime transcription protocol, GA and beta, through the official SDK.

A real server process on the scripted engines (conftest): every event the
server sends must validate against the SDK's own type for it.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import numpy as np
import pytest
import websockets

from tests.openai_realtime.conftest import (
    KEY,
    Event,
    Mode,
    Reader,
    append,
    connect,
    pcm,
    sdk_client,
    session,
    update,
)

pytestmark = pytest.mark.e2e

MODES = ["ga", "beta"]
COMPLETED = "conversation.item.input_audio_transcription.completed"
DELTA = "conversation.item.input_audio_transcription.delta"
ENGINE_RATE = 16_000
# A commit hands the engine every sample sent before it, the resampler's last ones too
# (app/session.py): the counts below are exact.


async def send_raw(conn: Any, data: str | bytes) -> None:
    """A frame as it is, past the SDK's own event types (str: text, bytes: binary)."""
    await conn._connection.send(data)


def created_type(mode: Mode) -> str:
    return "session.created" if mode == "ga" else "transcription_session.created"


def updated_type(mode: Mode) -> str:
    return "session.updated" if mode == "ga" else "transcription_session.updated"


def samples_heard(transcript: str) -> int:
    """The scripted engine's ``end<samples>``: every sample it was given until the flush."""
    match = re.search(r"end(\d+)$", transcript)
    assert match, transcript
    return int(match.group(1))


def turn(reader: Reader, item_id: str) -> tuple[list[Event], Event]:
    """A turn's deltas and its completed event; the deltas come first."""
    indexed = [(i, e) for i, e in enumerate(reader.events) if e.get("item_id") == item_id]
    deltas = [e for _, e in indexed if e["type"] == DELTA]
    done = [(i, e) for i, e in indexed if e["type"] == COMPLETED]
    assert len(done) == 1, reader.types()
    last_delta = max((i for i, e in indexed if e["type"] == DELTA), default=-1)
    assert last_delta < done[0][0], "a delta after its turn's completed"
    return deltas, done[0][1]


def transcription_of(mode: Mode, session_json: dict[str, Any]) -> dict[str, Any]:
    if mode == "ga":
        return dict(session_json["audio"]["input"]["transcription"])
    return dict(session_json["input_audio_transcription"])


@pytest.mark.parametrize("mode", MODES)
async def test_commits_make_turns(scripted_base: str, mode: Mode) -> None:
    """Manual commits with turn detection off: committed, deltas, then the whole turn."""
    async with session(scripted_base, mode) as (conn, reader):
        await update(conn, mode)
        updated = await reader.wait_type(updated_type(mode))
        assert reader.types()[0] == created_type(mode)  # first, before any client event
        assert transcription_of(mode, updated["session"])["model"] == "gpt-4o-transcribe"
        assert transcription_of(mode, updated["session"])["language"] == "en"
        if mode == "ga":
            audio_in = updated["session"]["audio"]["input"]
            assert audio_in["format"] == {"type": "audio/pcm", "rate": 24000}
            assert audio_in["turn_detection"] is None
        else:
            assert updated["session"]["input_audio_format"] == "pcm16"
            assert updated["session"]["turn_detection"] is None

        await append(conn, pcm(2.5))
        await conn.input_audio_buffer.commit(event_id="commit_1")
        first = await reader.wait_type(COMPLETED)
        await append(conn, pcm(1.5))
        await conn.input_audio_buffer.commit()
        second = await reader.wait_for(
            lambda e: e["type"] == COMPLETED and e["item_id"] != first["item_id"]
        )

        committed = reader.of("input_audio_buffer.committed")
        assert [c["item_id"] for c in committed] == [first["item_id"], second["item_id"]]
        assert committed[0]["previous_item_id"] is None
        assert committed[1]["previous_item_id"] == first["item_id"]
        added = "conversation.item.added" if mode == "ga" else "conversation.item.created"
        assert [a["item"]["id"] for a in reader.of(added)] == [c["item_id"] for c in committed]
        for done, seconds in ((first, 2.5), (second, 1.5)):
            deltas, completed = turn(reader, done["item_id"])
            assert deltas, "no delta before completed"
            assert "".join(d["delta"] for d in deltas) == completed["transcript"]
            assert re.fullmatch(r"(w\d+ )*end\d+", completed["transcript"]), completed
            assert completed["usage"] == {"type": "duration", "seconds": seconds}
        # Every sample of both turns reached the engine, in order.
        heard = samples_heard(second["transcript"])
        assert 4.0 * ENGINE_RATE <= heard <= 4.0 * ENGINE_RATE
        assert not reader.of("error")
        assert not reader.of("input_audio_buffer.speech_started")  # turn detection off


async def test_an_append_past_the_frame_limit_is_taken_whole(scripted_base: str) -> None:
    """OpenAI takes appends of up to 15 MiB: 30 s in one event (1.4 MB, past the 1 MiB
    frame limit) reaches the engine whole, and the session goes on."""
    async with session(scripted_base, "ga") as (conn, reader):
        await update(conn, "ga")
        await append(conn, pcm(30.0), chunk_ms=30_000)
        await conn.input_audio_buffer.commit()
        first = await reader.wait_type(COMPLETED, within=30.0)
        await append(conn, pcm(1.0))
        await conn.input_audio_buffer.commit()
        second = await reader.wait_for(
            lambda e: e["type"] == COMPLETED and e["item_id"] != first["item_id"]
        )
        assert not reader.of("error"), reader.of("error")
        assert first["usage"] == {"type": "duration", "seconds": 30.0}
        assert samples_heard(second["transcript"]) == 31 * ENGINE_RATE
        # conversation.item.done names the item before it, as committed and added do.
        done = {e["item"]["id"]: e["previous_item_id"] for e in reader.of("conversation.item.done")}
        assert done == {first["item_id"]: None, second["item_id"]: first["item_id"]}


@pytest.mark.parametrize("mode", MODES)
async def test_server_vad_turns(scripted_base: str, mode: Mode) -> None:
    """With server VAD, the engine's voice activity ends turns: started, stopped,
    committed, completed, each turn with its own item chained to the one before."""
    loud, quiet = pcm(1.2), pcm(1.0, value=0)
    async with session(scripted_base, mode) as (conn, reader):
        await update(conn, mode, vad=True)
        # Voice activity is reported at the engine's passes, one per second of audio:
        # the last second of quiet lets a pass hear the whole pause after the speech.
        await append(conn, loud + quiet + loud + quiet + quiet)
        await reader.wait_for(lambda e: len(reader.of(COMPLETED)) == 2)
        started = reader.of("input_audio_buffer.speech_started")
        stopped = reader.of("input_audio_buffer.speech_stopped")
        committed = reader.of("input_audio_buffer.committed")
        items = [e["item_id"] for e in reader.of(COMPLETED)]
        assert [e["item_id"] for e in started] == items
        assert [e["item_id"] for e in stopped] == items
        # Stream times of the speech the engine heard (10 ms frames).
        assert [e["audio_start_ms"] for e in started] == [0, 2200]
        assert [e["audio_end_ms"] for e in stopped] == [1200, 3400]
        # Each turn's audio is OpenAI's buffer: from the turn before it to its stop.
        seconds = [e["usage"]["seconds"] for e in reader.of(COMPLETED)]
        assert seconds == [1.2, 2.2]
        assert [(c["item_id"], c["previous_item_id"]) for c in committed] == [
            (items[0], None),
            (items[1], items[0]),
        ]
        for item in items:
            kinds = [e["type"] for e in reader.events if e.get("item_id") == item]
            assert kinds[0] == "input_audio_buffer.speech_started"
            assert kinds.index("input_audio_buffer.speech_stopped") < kinds.index(COMPLETED)
            # The engine made the utterance final at its pause: completed comes at once.
            when = {
                e["type"]: at
                for e, at in zip(reader.events, reader.arrivals, strict=True)
                if e.get("item_id") == item
            }
            assert when[COMPLETED] - when["input_audio_buffer.speech_stopped"] < 0.5
            deltas, completed = turn(reader, item)
            assert "".join(d["delta"] for d in deltas) == completed["transcript"]
        # The scripted engine's words count seconds of audio: each turn has the words its
        # passes committed while it lasted, in order (how passes split them varies).
        said = " ".join(e["transcript"] for e in reader.of(COMPLETED)).split()
        assert said == [f"w{k}" for k in range(len(said))]
        assert said[:2] == ["w0", "w1"]


@pytest.mark.parametrize("mode", MODES)
async def test_a_commit_with_nothing_left_to_say_completes(scripted_base: str, mode: Mode) -> None:
    """A commit whose flush finds no words (quiet, or words already final) still gets
    ``completed``: at once when later audio shows the engine past it, else after
    `FLUSH_QUIET_SEC` without engine events."""
    from app.openai_realtime import FLUSH_QUIET_SEC

    async with session(scripted_base, mode) as (conn, reader):
        await update(conn, mode)
        await append(conn, pcm(1.2))
        await conn.input_audio_buffer.commit()
        first = await reader.wait_type(COMPLETED)
        await append(conn, pcm(0.6, value=0))
        await conn.input_audio_buffer.commit()
        committed = await reader.wait_for(
            lambda e: len(reader.of("input_audio_buffer.committed")) == 2
        )
        loop = asyncio.get_running_loop()
        asked = loop.time()
        quiet = await reader.wait_for(lambda e: len(reader.of(COMPLETED)) == 2)
        quiet = reader.of(COMPLETED)[1]
        assert quiet["item_id"] == reader.of("input_audio_buffer.committed")[1]["item_id"]
        assert quiet["transcript"] == ""
        assert loop.time() - asked < FLUSH_QUIET_SEC + 1.0
        assert first["transcript"].startswith("w0")
        # Another quiet commit, then speech: the engine's voice activity about audio
        # after the commit shows the flush is done, long before the timer.
        await append(conn, pcm(0.6, value=0))
        await conn.input_audio_buffer.commit()
        await asyncio.sleep(0.3)  # the engine flushes the quiet: nothing to say
        asked = loop.time()
        await append(conn, pcm(0.2, value=0) + pcm(1.2))
        await reader.wait_for(lambda e: len(reader.of(COMPLETED)) == 3)
        assert loop.time() - asked < FLUSH_QUIET_SEC / 2
        assert reader.of(COMPLETED)[2]["transcript"] == ""
        await conn.input_audio_buffer.commit()
        await reader.wait_for(lambda e: len(reader.of(COMPLETED)) == 4)
        last = reader.of(COMPLETED)[3]
        assert re.fullmatch(r"(w\d+ )*end\d+", last["transcript"]), last
        # Text only in the turns that had speech.
        assert {d["item_id"] for d in reader.of(DELTA)} == {first["item_id"], last["item_id"]}
        assert committed


@pytest.mark.parametrize("mode", MODES)
async def test_empty_commit(scripted_base: str, mode: Mode) -> None:
    """Under 100 ms in the buffer: OpenAI's `input_audio_buffer_commit_empty`; the session goes on."""
    async with session(scripted_base, mode) as (conn, reader):
        await update(conn, mode)
        await conn.input_audio_buffer.commit(event_id="empty_1")
        error = await reader.wait_type("error")
        assert error["error"]["type"] == "invalid_request_error"
        assert error["error"]["code"] == "input_audio_buffer_commit_empty"
        assert error["error"]["event_id"] == "empty_1"
        assert "0.00ms" in error["error"]["message"]
        await append(conn, pcm(0.05))
        await conn.input_audio_buffer.commit(event_id="empty_2")
        second = await reader.wait_for(
            lambda e: e["type"] == "error" and e["error"]["event_id"] == "empty_2"
        )
        assert second["error"]["code"] == "input_audio_buffer_commit_empty"
        assert "50.00ms" in second["error"]["message"]
        await append(conn, pcm(1.0))
        await conn.input_audio_buffer.commit()
        completed = await reader.wait_type(COMPLETED)
        assert samples_heard(completed["transcript"]) >= 1.05 * ENGINE_RATE
        assert len(reader.of("input_audio_buffer.committed")) == 1


@pytest.mark.parametrize("mode", MODES)
async def test_audio_before_the_session_update(scripted_base: str, mode: Mode) -> None:
    """The SDK does not wait for session.created: audio sent first starts the session with
    the defaults, nothing of it is lost, and the update that follows is answered."""
    async with session(scripted_base, mode) as (conn, reader):
        await append(conn, pcm(1.5))
        await update(conn, mode)
        updated = await reader.wait_type(updated_type(mode))
        assert transcription_of(mode, updated["session"])["language"] == "en"
        await append(conn, pcm(1.0))
        await conn.input_audio_buffer.commit()
        completed = await reader.wait_type(COMPLETED)
        heard = samples_heard(completed["transcript"])
        assert 2.5 * ENGINE_RATE <= heard <= 2.5 * ENGINE_RATE
        assert not reader.of("error")


@pytest.mark.parametrize("mode", MODES)
async def test_clear_drops_the_uncommitted_turn(scripted_base: str, mode: Mode) -> None:
    async with session(scripted_base, mode) as (conn, reader):
        await update(conn, mode)
        await append(conn, pcm(0.8))  # under one engine step: no final before the clear
        await conn.input_audio_buffer.clear(event_id="clear_1")
        await reader.wait_type("input_audio_buffer.cleared")
        # The engine flushes what it holds when it next looks: audio appended before
        # then joins the cleared turn (a frame, at a microphone's pace; here, instant).
        await asyncio.sleep(0.3)
        await append(conn, pcm(1.2))
        await conn.input_audio_buffer.commit()
        completed = await reader.wait_type(COMPLETED)
        # Only the turn after the clear has text; the engine heard both (no sample lost).
        assert {e["item_id"] for e in reader.of(DELTA)} == {completed["item_id"]}
        assert len(reader.of("input_audio_buffer.committed")) == 1
        assert completed["usage"]["seconds"] == 1.2
        assert samples_heard(completed["transcript"]) >= 2.0 * ENGINE_RATE


@pytest.mark.parametrize(("mode", "fmt"), [("ga", "audio/pcmu"), ("beta", "g711_alaw")])
async def test_g711(scripted_base: str, mode: Mode, fmt: str) -> None:
    """G.711 μ-law and A-law at 8 kHz, as OpenAI takes them."""
    async with connect(sdk_client(scripted_base), mode) as conn:
        reader = Reader(conn, mode)
        if mode == "ga":
            audio_in: dict[str, Any] = {"format": {"type": fmt}, "turn_detection": None}
            await conn.session.update(
                session={"type": "transcription", "audio": {"input": audio_in}}
            )
        else:
            await conn.transcription_session.update(
                session={"input_audio_format": fmt, "turn_detection": None}
            )
        updated = await reader.wait_type(updated_type(mode))
        echoed = (
            updated["session"]["audio"]["input"]["format"]["type"]
            if mode == "ga"
            else updated["session"]["input_audio_format"]
        )
        assert echoed == fmt
        await append(conn, bytes([0xAA]) * 8000 * 2, rate=8000 // 2)  # 2 s, one byte per sample
        await conn.input_audio_buffer.commit()
        completed = await reader.wait_type(COMPLETED)
        assert completed["usage"]["seconds"] == 2.0
        heard = samples_heard(completed["transcript"])
        assert 2.0 * ENGINE_RATE <= heard <= 2.0 * ENGINE_RATE
        await reader.stop()


@pytest.mark.parametrize("mode", MODES)
async def test_keys(scripted_base: str, mode: Mode) -> None:
    """The native endpoint's keys: a wrong one is refused with 401 before the upgrade."""
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with connect(sdk_client(scripted_base, key="not-the-key"), mode):
            pass
    assert refused.value.response.status_code == 401
    body = json.loads(refused.value.response.body or b"{}")
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["code"] == "unauthorized"
    # No key at all (the SDK always sends one; a hand-written client may not).
    ws_url = scripted_base.replace("http://", "ws://") + "/v1/realtime?intent=transcription"
    with pytest.raises(websockets.InvalidStatus) as bare:
        async with websockets.connect(ws_url):
            pass
    assert bare.value.response.status_code == 401
    async with session(scripted_base, mode, key=KEY) as (_, reader):
        await reader.wait_type(created_type(mode))


async def test_only_transcription_sessions(scripted_base: str) -> None:
    """A conversation (speech-to-speech) session cannot be served: 400 before the upgrade."""
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with connect(sdk_client(scripted_base), "ga", intent="conversation"):
            pass
    assert refused.value.response.status_code == 400
    assert json.loads(refused.value.response.body)["error"]["code"] == "unsupported_intent"


# Each malformed client event, and the error OpenAI answers it with: (event, code, param).
COMMON_BAD: list[tuple[Any, str, str | None]] = [
    ("not json", "invalid_json", None),
    (b"\xff\xfe", "invalid_json", None),
    ([1, 2], "invalid_json", None),
    ({"event_id": "e1"}, "missing_required_parameter", "type"),
    ({"type": "bogus", "event_id": "e2"}, "invalid_value", "type"),
    ({"type": "response.create", "event_id": "e3"}, "invalid_value", "type"),
    (
        {"type": "input_audio_buffer.append", "event_id": "e4"},
        "missing_required_parameter",
        "audio",
    ),
    ({"type": "input_audio_buffer.append", "audio": 5}, "invalid_type", "audio"),
    ({"type": "input_audio_buffer.append", "audio": "@@@"}, "invalid_value", "audio"),
    ({"type": "input_audio_buffer.append", "audio": "AAAA", "x": 1}, "unknown_parameter", "x"),
    (
        {"type": "input_audio_buffer.append", "audio": "AAAA", "event_id": 7},
        "invalid_type",
        "event_id",
    ),
    ({"type": "input_audio_buffer.commit", "foo": 1}, "unknown_parameter", "foo"),
    ({"type": "input_audio_buffer.clear", "foo": 1}, "unknown_parameter", "foo"),
]
GA_BAD: list[tuple[Any, str, str | None]] = [
    ({"type": "session.update"}, "missing_required_parameter", "session"),
    ({"type": "session.update", "session": {"type": "realtime"}}, "invalid_value", "session.type"),
    ({"type": "session.update", "session": {}}, "missing_required_parameter", "session.type"),
    (
        {"type": "session.update", "session": {"type": "transcription", "voice": "alloy"}},
        "unknown_parameter",
        "session.voice",
    ),
    (
        {
            "type": "session.update",
            "session": {
                "type": "transcription",
                "audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}},
            },
        },
        "invalid_value",
        "session.audio.input.format.rate",
    ),
    (
        {
            "type": "session.update",
            "session": {
                "type": "transcription",
                "audio": {"input": {"turn_detection": {"type": "magic"}}},
            },
        },
        "invalid_value",
        "session.audio.input.turn_detection",
    ),
    (
        {
            "type": "session.update",
            "session": {
                "type": "transcription",
                "audio": {"input": {"turn_detection": {"type": "server_vad", "threshold": "high"}}},
            },
        },
        "invalid_type",
        "session.audio.input.turn_detection.threshold",
    ),
    (
        {
            "type": "session.update",
            "session": {
                "type": "transcription",
                "audio": {"input": {"transcription": {"language": "xx"}}},
            },
        },
        "invalid_value",
        "session.audio.input.transcription.language",
    ),
    (
        {
            "type": "session.update",
            "session": {
                "type": "transcription",
                "audio": {"input": {"transcription": {"language": "fr"}}},
            },
        },
        "invalid_value",
        "session.audio.input.transcription.language",
    ),
    (
        {
            "type": "session.update",
            "session": {
                "type": "transcription",
                "audio": {"input": {"format": {"type": "audio/pcmu"}}},
            },
        },
        "invalid_value",
        "session.audio.input.format",
    ),
    ({"type": "transcription_session.update", "session": {}}, "invalid_value", "type"),
]
BETA_BAD: list[tuple[Any, str, str | None]] = [
    (
        {"type": "transcription_session.update", "session": {"input_audio_format": "mp3"}},
        "invalid_value",
        "session.input_audio_format",
    ),
    (
        {"type": "transcription_session.update", "session": {"voice": "alloy"}},
        "unknown_parameter",
        "session.voice",
    ),
    (
        {
            "type": "transcription_session.update",
            "session": {"turn_detection": {"silence_duration_ms": 1.5}},
        },
        "invalid_type",
        "session.turn_detection.silence_duration_ms",
    ),
    (
        {
            "type": "transcription_session.update",
            "session": {"input_audio_transcription": {"model": 3}},
        },
        "invalid_type",
        "session.input_audio_transcription.model",
    ),
    ({"type": "session.update", "session": {"type": "transcription"}}, "invalid_value", "type"),
]


@pytest.mark.parametrize("mode", MODES)
async def test_every_malformed_event_is_answered_and_the_session_goes_on(
    scripted_base: str, mode: Mode
) -> None:
    cases = COMMON_BAD + (GA_BAD if mode == "ga" else BETA_BAD)
    async with session(scripted_base, mode) as (conn, reader):
        # The session runs the default English engine: "fr" is a change it cannot follow.
        await update(conn, mode)
        await reader.wait_type(updated_type(mode))
        for i, (event, code, param) in enumerate(cases):
            raw = event if isinstance(event, str | bytes) else json.dumps(event)
            await send_raw(conn, raw)
            await reader.wait_for(lambda e, n=i + 1: len(reader.of("error")) == n)
            body = reader.of("error")[i]["error"]
            assert (body["code"], body["param"]) == (code, param), (event, body)
            assert body["type"] == "invalid_request_error"
            assert body["message"]
            if isinstance(event, dict) and isinstance(event.get("event_id"), str):
                assert body["event_id"] == event["event_id"]
        # Still the same session, and it still transcribes.
        await append(conn, pcm(1.2))
        await conn.input_audio_buffer.commit()
        completed = await reader.wait_type(COMPLETED)
        assert samples_heard(completed["transcript"]) >= 1.2 * ENGINE_RATE
        assert len(reader.of("error")) == len(cases)
        assert len(reader.of(updated_type(mode))) == 1


@pytest.mark.parametrize("mode", MODES)
async def test_bad_first_update_then_a_good_one(scripted_base: str, mode: Mode) -> None:
    """A first update that is wrong is answered; the session starts with the next one."""
    async with session(scripted_base, mode) as (conn, reader):
        bad = (
            {"type": "session.update", "session": {"type": "transcription", "voice": "x"}}
            if mode == "ga"
            else {"type": "transcription_session.update", "session": {"voice": "x"}}
        )
        await send_raw(conn, json.dumps(bad))
        error = await reader.wait_type("error")
        assert error["error"]["code"] == "unknown_parameter"
        await update(conn, mode, vad=False)
        await reader.wait_type(updated_type(mode))
        await append(conn, pcm(1.0))
        await conn.input_audio_buffer.commit()
        completed = await reader.wait_type(COMPLETED)
        assert samples_heard(completed["transcript"]) > 0.9 * ENGINE_RATE


def test_g711_tables() -> None:
    """The G.711 code words OpenAI's ``g711_ulaw``/``g711_alaw`` send (ITU-T G.711)."""
    from app.openai_realtime import to_pcm16

    def decode(codes: list[int], fmt: Any) -> list[int]:
        return np.frombuffer(to_pcm16(bytes(codes), fmt), dtype="<i2").tolist()

    assert decode([0x00, 0x80, 0xFF, 0x7F, 0xFE], "g711_ulaw") == [-32124, 32124, 0, 0, 8]
    assert decode([0xD5, 0x55, 0xAA, 0x2A], "g711_alaw") == [8, -8, 32256, -32256]
