"""``/v1/listen`` through the official Deepgram SDK, against a real server process.

The server runs the scripted engine of `engine.py` (the real streaming
algorithm and voice activity over a fake model that hears each loud 0.5 s
block as the word ``w<block>``), so every message is exact and quick.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from typing import Any

import pytest
import websockets
from websockets.exceptions import InvalidStatus

from tests.deepgram.conftest import KEY, SDK_WARNINGS, listen, loud, quiet

pytestmark = [pytest.mark.e2e, SDK_WARNINGS]


async def test_interims_then_finals_speech_events_utterance_end_and_metadata(
    scripted_url: str,
) -> None:
    async with listen(
        scripted_url,
        language="en-US",
        channels=1,
        interim_results=True,
        punctuate=True,
        smart_format=True,
        endpointing=300,
        utterance_end_ms=1000,
        vad_events=True,
    ) as s:
        # Two utterances (w0-w2, w6-w7) with a pause long enough for UtteranceEnd.
        await s.send_paced(loud(1.5) + quiet(1.5) + loud(1.0) + quiet(3.0), pace=0.2)
        await s.until(lambda s: s.of("UtteranceEnd") and len(s.of("SpeechStarted")) == 2)
        await s.socket.send_close_stream()
        await s.closed()

    assert s.close_code == 1000
    assert s.types[-1] == "Metadata"
    assert s.transcript() == "w0 w1 w2 w6 w7"
    first_final = s.types.index("Results") + next(
        i for i, m in enumerate(s.of("Results")) if m["is_final"]
    )
    # Interims come before the finals that settle them; SpeechStarted before any text.
    assert any(not m["is_final"] for m in s.of("Results")[:first_final])
    assert s.types.index("SpeechStarted") < s.types.index("Results")
    assert [m["timestamp"] for m in s.of("SpeechStarted")] == [0.0, pytest.approx(3.0, abs=0.04)]
    # Each utterance ends with a final marked speech_final, before its UtteranceEnd.
    finals = s.finals()
    assert [m["speech_final"] for m in finals if m["channel"]["alternatives"][0]["words"]][
        -1
    ] is True
    ends = [i for i, m in enumerate(s.messages) if m["type"] == "UtteranceEnd"]
    speech_finals = [
        i for i, m in enumerate(s.messages) if m["type"] == "Results" and m["speech_final"]
    ]
    assert len(ends) == 2 and speech_finals[0] < ends[0] < speech_finals[1] < ends[1]
    assert s.messages[ends[0]]["last_word_end"] == pytest.approx(1.45)
    assert s.messages[ends[0]]["channel"] == [0, 1]

    # The Results shape Deepgram documents, filled in.
    final = finals[0]
    assert final["channel_index"] == [0, 1] and final["from_finalize"] is False
    alternative = final["channel"]["alternatives"][0]
    assert alternative["confidence"] == pytest.approx(0.9)
    word = alternative["words"][0]
    assert word == {
        "word": "w0",
        "start": pytest.approx(0.05),
        "end": pytest.approx(0.45),
        "confidence": pytest.approx(0.9),
        "punctuated_word": "w0",
    }
    # Finals cover the audio back to back.
    for before, after in itertools.pairwise(finals):
        assert after["start"] == pytest.approx(before["start"] + before["duration"], abs=1e-3)
    metadata = s.messages[-1]
    assert metadata["duration"] == pytest.approx(7.0)
    assert metadata["channels"] == 1 and metadata["request_id"] == final["metadata"]["request_id"]
    assert len(metadata["sha256"]) == 64


async def test_finalize_makes_what_was_heard_final_and_the_stream_goes_on(
    scripted_url: str,
) -> None:
    async with listen(scripted_url, interim_results=False) as s:
        await s.send_paced(loud(1.0))  # w0 w1, still unconfirmed: no pause yet
        await asyncio.sleep(0.5)
        await s.socket.send_finalize()
        await s.until(lambda s: any(m["from_finalize"] for m in s.finals()))
        flushed = [m for m in s.finals() if m["from_finalize"]]
        assert flushed[0]["speech_final"] is True
        assert s.transcript() == "w0 w1"
        assert not any(not m["is_final"] for m in s.of("Results"))  # interim_results=false
        await s.send_paced(loud(1.0))
        await s.socket.send_close_stream()
        await s.closed()
    assert s.close_code == 1000
    assert s.transcript() == "w0 w1 w2 w3"
    # CloseStream: the remaining finals, then Metadata, then the close.
    assert s.types[-2:] == ["Results", "Metadata"]
    assert s.finals()[-1]["from_finalize"] is False


async def test_no_punctuation_and_no_vad_events_unless_asked(scripted_url: str) -> None:
    async with listen(scripted_url, interim_results=True) as s:
        await s.send_paced(loud(1.0) + quiet(1.0))
        await s.socket.send_close_stream()
        await s.closed()
    assert "SpeechStarted" not in s.types and "UtteranceEnd" not in s.types
    words = [w for m in s.finals() for w in m["channel"]["alternatives"][0]["words"]]
    assert words and all("punctuated_word" not in w for w in words)


async def test_keepalive_and_unknown_messages_do_not_end_the_stream(scripted_url: str) -> None:
    async with listen(scripted_url) as s:
        await s.socket.send_keep_alive()
        await s.socket._send({"type": "Shout"})
        await s.socket._websocket.send("not json")
        await s.send_paced(loud(0.5))
        await s.socket.send_close_stream()
        await s.closed()
    assert s.close_code == 1000
    assert [m["variant"] for m in s.of("Error")] == ["SchemaError", "SchemaError"]
    # Deepgram's `message`: the client's message that could not be parsed.
    assert [m["message"] for m in s.of("Error")] == ['{"type": "Shout"}', "not json"]
    assert s.transcript() == "w0" and s.types[-1] == "Metadata"


async def test_a_vendor_model_name_runs_the_default_model_and_our_names_work(
    scripted_url: str,
) -> None:
    for model, expected in [
        ("nova-2-general", "talking/talking"),
        ("base-general", "talking/talking"),  # Deepgram's default name
        ("whisper-large", "talking/talking"),
        ("counting", "talking/counting"),
    ]:
        async with listen(scripted_url, model=model) as s:
            await s.send_paced(loud(0.5))
            await s.socket.send_close_stream()
            await s.closed()
        (info,) = s.messages[-1]["model_info"].values()
        assert info["name"] == expected, model


# --------------------------------------------------------------------------- keys


async def test_a_wrong_key_gets_401_and_no_key_too(scripted_url: str) -> None:
    from deepgram.core.api_error import ApiError

    with pytest.raises(ApiError) as refused:
        async with listen(scripted_url, key="not-the-key"):
            pass
    assert refused.value.status_code == 401
    status, body = await handshake(scripted_url, "encoding=linear16&sample_rate=16000", {})
    assert status == 401 and body["err_code"] == "INVALID_AUTH" and body["code"] == "unauthorized"
    assert "'Authorization: Token KEY'" in body["err_msg"]  # Deepgram's own scheme first


async def test_the_upgrade_carries_the_request_id_the_stream_reports(scripted_url: str) -> None:
    url = f"{scripted_url}/v1/listen?{BASE_QUERY}"
    async with websockets.connect(url, additional_headers={"Authorization": f"Token {KEY}"}) as ws:
        assert ws.response is not None and ws.response.status_code == 101
        request_id = ws.response.headers["dg-request-id"]
        await ws.send(loud(0.5))
        await ws.send(json.dumps({"type": "CloseStream"}))
        messages = [json.loads(m) async for m in ws]
    assert messages[-1]["type"] == "Metadata" and messages[-1]["request_id"] == request_id
    results = [m for m in messages if m["type"] == "Results"]
    assert results and {m["metadata"]["request_id"] for m in results} == {request_id}


@pytest.mark.parametrize(
    "how",
    [
        {"additional_headers": {"Authorization": f"Token {KEY}"}},
        {"additional_headers": {"Authorization": f"bearer {KEY}"}},
        {"subprotocols": ["token", KEY]},
    ],
    ids=["token", "bearer", "subprotocol"],
)
async def test_the_native_keys_work_in_each_of_deepgrams_forms(
    scripted_url: str, how: dict[str, Any]
) -> None:
    url = f"{scripted_url}/v1/listen?model=nova-3&encoding=linear16&sample_rate=16000"
    async with websockets.connect(url, **how) as ws:
        await ws.send(loud(0.5))
        await ws.send(json.dumps({"type": "CloseStream"}))
        messages = [json.loads(m) async for m in ws]
        assert ws.close_code == 1000
    assert messages[-1]["type"] == "Metadata"


# --------------------------------------------------------------------------- bad parameters

BASE_QUERY = "model=nova-3&encoding=linear16&sample_rate=16000"
BAD_QUERIES = [
    ("model=nova-3&sample_rate=16000", "unsupported_encoding"),
    ("model=nova-3&encoding=opus&sample_rate=16000", "unsupported_encoding"),
    ("model=nova-3&encoding=linear16", "unsupported_sample_rate"),
    (BASE_QUERY.replace("16000", "96000"), "unsupported_sample_rate"),
    (BASE_QUERY.replace("16000", "16k"), "invalid_query_parameter"),
    # Digits str.isdigit() takes and int() does not: 400, not a 500.
    (BASE_QUERY.replace("16000", "%C2%B2"), "invalid_query_parameter"),
    (BASE_QUERY + "&utterance_end_ms=%C2%B9", "invalid_query_parameter"),
    (BASE_QUERY + "&endpointing=%D9%A3", "invalid_query_parameter"),
    (BASE_QUERY + "&channels=2", "unsupported_channels"),
    (BASE_QUERY + "&language=multi", "unsupported_language"),
    (BASE_QUERY + "&interim_results=yes", "invalid_query_parameter"),
    (BASE_QUERY + "&punctuate=1", "invalid_query_parameter"),
    (BASE_QUERY + "&smart_format=maybe", "invalid_query_parameter"),
    (BASE_QUERY + "&vad_events=on", "invalid_query_parameter"),
    (BASE_QUERY + "&endpointing=soon", "invalid_query_parameter"),
    (BASE_QUERY + "&utterance_end_ms=-5", "invalid_query_parameter"),
    (BASE_QUERY + "&utterance_end_ms=0", "invalid_query_parameter"),
    (BASE_QUERY + "&diarize=true", "unsupported_parameter"),
    (BASE_QUERY + "&multichannel=true", "unsupported_parameter"),
    (BASE_QUERY + "&redact=pci", "unsupported_parameter"),
    (BASE_QUERY + "&callback=https://example.com", "unsupported_parameter"),
    (BASE_QUERY + "&sample_rate=8000", "invalid_query_parameter"),
    (BASE_QUERY + "&volume=11", "unknown_parameter"),
    # An echoed value is cut with "…", which no HTTP header may carry as it is.
    (BASE_QUERY + "&language=" + "x" * 200, "unsupported_language"),
    (BASE_QUERY + "&interim_results=%C3%A9%E2%80%AE", "invalid_query_parameter"),
]


async def handshake(
    base: str, query: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    """The HTTP status and JSON body of a refused handshake."""
    headers = {"Authorization": f"Token {KEY}"} if headers is None else headers
    with pytest.raises(InvalidStatus) as refused:
        async with websockets.connect(f"{base}/v1/listen?{query}", additional_headers=headers):
            pass
    response = refused.value.response
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["dg-request-id"]
    return response.status_code, json.loads(response.body)


@pytest.mark.parametrize(("query", "code"), BAD_QUERIES, ids=[c for _, c in BAD_QUERIES])
async def test_every_bad_parameter_gets_400_with_a_json_body(
    scripted_url: str, query: str, code: str
) -> None:
    status, body = await handshake(scripted_url, query)
    assert status == 400
    assert body["err_code"] == "Bad Request" and body["code"] == code
    assert "Query parameter" in body["err_msg"] and body["request_id"]


async def test_the_sdk_sees_a_refused_parameter_as_a_400(scripted_url: str) -> None:
    from deepgram.core.api_error import ApiError

    with pytest.raises(ApiError) as refused:
        async with listen(scripted_url, encoding="mulaw"):
            pass
    assert refused.value.status_code == 400


async def test_harmless_parameters_are_accepted_and_ignored(scripted_url: str) -> None:
    async with listen(scripted_url, tag="t", numerals=True, keyterm="asr", mip_opt_out=True) as s:
        await s.send_paced(loud(0.5))
        await s.socket.send_close_stream()
        await s.closed()
    assert s.close_code == 1000 and s.transcript() == "w0"


async def test_a_stream_without_audio_or_keepalive_for_10_s_closes_with_net_0001(
    scripted_url: str,
) -> None:
    url = f"{scripted_url}/v1/listen?{BASE_QUERY}"
    async with websockets.connect(url, additional_headers={"Authorization": f"Token {KEY}"}) as ws:
        await ws.send(loud(0.5))
        started = asyncio.get_running_loop().time()
        messages = []
        with contextlib.suppress(websockets.ConnectionClosedError):
            async for raw in ws:
                messages.append(json.loads(raw))
        waited = asyncio.get_running_loop().time() - started
    assert ws.close_code == 1011 and ws.close_reason == "NET-0001"
    assert 9.5 < waited < 13
    assert messages[-1]["type"] == "Error" and messages[-1]["code"] == "idle_timeout"
