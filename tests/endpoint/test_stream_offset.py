"""`stream_offset_sec`: a resumed stream's times go on from where the client says."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from tests.endpoint.test_ws import CONFIG, URL, send_audio, start
from tests.support.ws import drain


def test_every_time_continues_from_the_offset(client: TestClient) -> None:
    with client.websocket_connect(URL) as ws:
        start(ws, stream_offset_sec=100.25, enable_word_time_offsets=True)
        send_audio(ws, 2.0)
        ws.send_text('{"type": "stop"}')
        messages, code = drain(ws)
    finals = [m for m in messages if m["type"] == "transcript" and m["is_final"]]
    assert code == 1000 and finals
    # The scripted engine says w<k> over [k, k + 0.5] of this connection's audio.
    assert (finals[0]["start"], finals[0]["end"]) == (100.25, 100.75)
    assert finals[0]["words"][0] == {"word": "w0", "start": 100.25, "end": 100.75}
    assert all(m["start"] >= 100.25 for m in messages if m["type"] == "transcript")
    # The text is unchanged, and the first final keeps its separating space: it goes on
    # from the finals of the connection before.
    assert "".join(m["text"] for m in finals) == " w0 w1 end32000"


def test_an_integer_offset_is_taken_and_zero_changes_nothing(client: TestClient) -> None:
    for offset, first_start in ((7, 7.0), (0, 0.0)):
        with client.websocket_connect(URL) as ws:
            start(ws, stream_offset_sec=offset)
            send_audio(ws, 1.0)
            ws.send_text('{"type": "stop"}')
            messages, _ = drain(ws)
        finals = [m for m in messages if m["type"] == "transcript" and m["is_final"]]
        assert finals[0]["start"] == first_start


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("-1", "invalid_stream_offset"),
        ("NaN", "invalid_stream_offset"),
        ("Infinity", "invalid_stream_offset"),
        ("1e999", "invalid_stream_offset"),
        ("1e12", "invalid_stream_offset"),
        ('"12.5"', "invalid_field_type"),
        ("true", "invalid_field_type"),
        ("null", "invalid_field_type"),
    ],
)
def test_a_bad_offset_is_refused_naming_the_field(client: TestClient, raw: str, code: str) -> None:
    config = json.dumps(CONFIG)[:-1] + f', "stream_offset_sec": {raw}}}'
    with client.websocket_connect(URL) as ws:
        ws.send_text(config)
        messages, close = drain(ws)
    assert [m["code"] for m in messages] == [code] and close == 1008
    assert "stream_offset_sec" in messages[0]["detail"]
