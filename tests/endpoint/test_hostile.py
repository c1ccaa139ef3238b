"""Values a client chose come back, and reach the log, short and escaped."""

from __future__ import annotations

import json
import logging

import pytest
from fastapi.testclient import TestClient

from tests.endpoint.test_ws import CONFIG, URL, start
from tests.support.ws import drain

# The reply and the log line for one hostile request stay under a kilobyte.
MAX_BYTES = 1024
HUGE = "x" * 15_000_000


@pytest.mark.parametrize(
    ("config", "code"),
    [
        ({**CONFIG, "language_code": HUGE}, "unsupported_language"),
        ({**CONFIG, "encoding": HUGE}, "unsupported_encoding"),
        ({**CONFIG, "backend": HUGE}, "unknown_backend"),
        ({**CONFIG, HUGE: 1}, "unknown_field"),
        (
            {**CONFIG, "language_code": "en\n\x1b[31mINFO forged line\x00\u202e"},
            "unsupported_language",
        ),
    ],
    ids=["language_code", "encoding", "backend", "field_name", "control_characters"],
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
