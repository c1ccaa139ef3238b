"""What reaches the logs: no API key (uvicorn logs paths with queries), no client flood."""

from __future__ import annotations

import logging
import sys

import pytest

from app.errors import MAX_DETAIL_CHARS, MAX_ECHO_CHARS, ASRError, echo
from app.server import ClientFaultsInOneLine, RedactTokens, redact_tokens_in_logs


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


# --------------------------------------------------------------------------- echoed values


def test_a_client_value_is_echoed_escaped_and_cut() -> None:
    assert echo("en-XX") == "'en-XX'"
    long = echo("x" * 15_000_000)
    assert len(long) < MAX_ECHO_CHARS + 40 and long.endswith("…(cut: 15000000 characters)")
    hostile = echo("a\nb\x1b[31mc\x00d\u202ee")
    assert (
        hostile.isprintable() and "\\n" in hostile and "\\x1b" in hostile and "\\u202e" in hostile
    )


def test_every_error_detail_is_bounded_and_printable_whatever_built_it() -> None:
    error = ASRError("bad \n\x1b[2J value " + "y" * 10_000)
    assert error.detail.isprintable() and "\\x1b" in error.detail
    assert len(error.detail) <= MAX_DETAIL_CHARS + len("…(cut)")


def test_a_clients_bad_frame_is_one_line_without_a_traceback() -> None:
    try:
        b"\xff".decode()
    except UnicodeDecodeError:
        record = logging.LogRecord(
            "uvicorn.error",
            logging.ERROR,
            __file__,
            1,
            "Invalid UTF-8 sequence.",
            (),
            sys.exc_info(),
        )
    assert ClientFaultsInOneLine().filter(record)
    line = logging.Formatter().format(record)
    assert "Traceback" not in line and line.startswith("Invalid UTF-8 sequence.")
    assert len(line) < 200
