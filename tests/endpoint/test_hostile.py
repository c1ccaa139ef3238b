"""Values a client chose come back, and reach the log, short and escaped."""

from __future__ import annotations

import json
import logging

import pytest
from fastapi.testclient import TestClient

from app.errors import echo
from tests.endpoint.test_ws import CONFIG, URL, start
from tests.support.ws import drain

# The reply and the log line for one hostile request stay under a kilobyte.
MAX_BYTES = 1024
HUGE = "x" * 15_000_000
# Well-formed BCP-47 at any length (subtags of 1-8 characters): the protocol fuzzer sent one
# in CI, and it was taken, echoed in `metadata` and logged whole (a 50,117-character line).
LONG_TAG = ("en-US" * 10_000)[:50_000]


@pytest.mark.parametrize(
    ("config", "code"),
    [
        ({**CONFIG, "language_code": HUGE}, "unsupported_language"),
        ({**CONFIG, "language_code": LONG_TAG}, "unsupported_language"),
        ({**CONFIG, "encoding": HUGE}, "unsupported_encoding"),
        ({**CONFIG, "backend": HUGE}, "unknown_backend"),
        ({**CONFIG, HUGE: 1}, "unknown_field"),
        (
            {**CONFIG, "language_code": "en\n\x1b[31mINFO forged line\x00\u202e"},
            "unsupported_language",
        ),
    ],
    ids=[
        "language_code",
        "long_well_formed_tag",
        "encoding",
        "backend",
        "field_name",
        "control_characters",
    ],
)
def test_a_hostile_config_gets_a_short_escaped_error_and_log_line(
    client: TestClient, caplog: pytest.LogCaptureFixture, config: dict[str, object], code: str
) -> None:
    with caplog.at_level(logging.INFO), client.websocket_connect(URL) as ws:
        ws.send_text(json.dumps(config))
        messages, close = drain(ws)
    assert [m["code"] for m in messages] == [code] and close == 1008
    reply = json.dumps(messages[0])
    assert len(reply.encode()) < MAX_BYTES, reply[:200]
    assert "(cut: " in reply or "\\\\x1b" in reply
    for record in caplog.records:
        line = record.getMessage()
        assert len(line.encode()) < MAX_BYTES, line[:200]
        assert line.isprintable(), line


def test_a_hostile_control_message_is_answered_short(client: TestClient) -> None:
    with client.websocket_connect(URL) as ws:
        start(ws)
        ws.send_text(json.dumps({"type": HUGE}))
        ws.send_text(json.dumps({"type": "stop", HUGE: 1}))
        ws.send_text('{"type": "stop"}')
        messages, close = drain(ws)
    errors = [m for m in messages if m["type"] == "error"]
    assert [e["code"] for e in errors] == ["unknown_message_type", "invalid_control_message"]
    assert all(len(json.dumps(e)) < MAX_BYTES for e in errors) and close == 1000


def test_a_long_tag_within_the_bound_is_taken_and_logged_escaped(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    tag = "en-" + "-".join(["abcdefgh"] * 6) + "-x-abcde"  # 64 characters, the bound
    assert len(tag) == 64
    with caplog.at_level(logging.INFO), client.websocket_connect(URL) as ws:
        ws.send_text(json.dumps({**CONFIG, "language_code": tag}))
        metadata = ws.receive_json()
        ws.send_text('{"type": "stop"}')
        messages, close = drain(ws)
    assert metadata["type"] == "metadata" and metadata["language_code"] == tag
    assert messages[-1]["type"] == "complete" and close == 1000
    started = [r.getMessage() for r in caplog.records if "started:" in r.getMessage()]
    assert len(started) == 1 and f"language={echo(tag)} " in started[0], started
    assert len(started[0]) < 200, started
