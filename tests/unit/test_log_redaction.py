"""API keys sent as ?token= never reach the logs (uvicorn logs WebSocket paths with queries)."""

from __future__ import annotations

import logging

import pytest

from app.server import RedactTokens, redact_tokens_in_logs


def test_token_in_a_logged_path_is_redacted(caplog: pytest.LogCaptureFixture) -> None:
    redact_tokens_in_logs()
    with caplog.at_level(logging.INFO, logger="uvicorn.error"):
        logging.getLogger("uvicorn.error").info(
            '%s - "WebSocket %s" [accepted]', "127.0.0.1:5555", "/ws/asr-stream?token=s3cret&x=1"
        )
    assert "s3cret" not in caplog.text
    assert "token=***&x=1" in caplog.text


def test_redaction_leaves_other_records_alone() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "plain %s %d", ("text", 3), None)
    assert RedactTokens().filter(record)
    assert record.getMessage() == "plain text 3"
