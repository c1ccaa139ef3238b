"""Start the service with uvicorn (`python run.py` or `asr-stream-server`).

On SIGTERM/SIGINT the server first drains (as `POST /drain` does): new sessions
are refused (HTTP 503 before the upgrade),
running ones may finish for SHUTDOWN_GRACE_SEC, then each gets its last finals,
`complete` and a 1012 close; only then does uvicorn stop. A second signal
stops at once.
"""

from __future__ import annotations

import asyncio
import logging
import re
from types import FrameType

import uvicorn

from app.cli import settings_from_command_line
from app.core import SessionCore
from app.cpu import limit_blas_threads
from app.main import create_app
from app.malloc import tune_malloc

logger = logging.getLogger(__name__)

# uvicorn refuses bigger WebSocket messages itself (close 1009, no `error`
# message); keep its limit well above ours so the service answers first.
TRANSPORT_SIZE_FACTOR = 16
MIN_TRANSPORT_LIMIT = 16 * 1024 * 1024


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, endpoint: SessionCore, grace_sec: float) -> None:
        super().__init__(config)
        self.endpoint = endpoint
        self.grace_sec = grace_sec
        self._draining: asyncio.Task[None] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._draining is not None or not self.endpoint.streams:
            super().handle_exit(sig, frame)  # nothing to drain, or a second signal
            return
        self._draining = asyncio.get_event_loop().create_task(self._drain_then_exit(sig, frame))

    async def _drain_then_exit(self, sig: int, frame: FrameType | None) -> None:
        try:
            # The same drain as `POST /drain` (a preStop hook may have begun it already).
            await self.endpoint.start_drain(self.grace_sec)
        finally:
            super().handle_exit(sig, frame)


class RedactTokens(logging.Filter):
    """Keep `?token=KEY` out of the logs (uvicorn logs WebSocket paths with their query)."""

    PATTERN = re.compile(r"(token=)[^&\s\"']+")

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.PATTERN.sub(r"\1***", str(record.msg))
        if isinstance(record.args, tuple):
            record.args = tuple(
                self.PATTERN.sub(r"\1***", a) if isinstance(a, str) else a for a in record.args
            )
        return True


class ClientFaultsInOneLine(logging.Filter):
    """A client's malformed frame is the client's fault: one line, no traceback.

    uvicorn logs a text frame that is not UTF-8 with the decoder's traceback (and,
    when more frames follow, the transport's: about 2 KB a request); a hostile
    client repeating it would fill the log. The client gets close 1007 all the same.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, UnicodeDecodeError) or (
            record.name == "asyncio" and str(record.msg).startswith("Fatal error on transport")
        ):
            record.msg = f"{record.getMessage()} ({type(exc).__name__}: a client's bad frame)"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        return True


def redact_tokens_in_logs() -> None:
    redact, faults = RedactTokens(), ClientFaultsInOneLine()
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "asyncio"):
        logger_ = logging.getLogger(name)
        logger_.addFilter(redact)
        logger_.addFilter(faults)
        for handler in logger_.handlers:
            handler.addFilter(redact)


def main() -> None:
    tune_malloc()  # before any thread allocates (see app/malloc.py)
    limit_blas_threads()  # the cores belong to the model calls (see app/cpu.py)
    settings = settings_from_command_line()  # flags, then the environment, then .env
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        ws_max_size=max(MIN_TRANSPORT_LIMIT, settings.max_frame_bytes * TRANSPORT_SIZE_FACTOR),
        # h11 bounds a request's head (16 KiB: `h11_max_incomplete_event_size`); httptools,
        # uvicorn's default when installed, took endless header lines (an outside audit:
        # 400 MiB of headers on one connection, 660 MB of memory, no answer).
        http="h11",
        # X-Forwarded-For names the client only when the peer is a trusted proxy (uvicorn
        # trusts 127.0.0.1 by default: any local process could then pose as anyone).
        proxy_headers=bool(settings.trusted_proxies.strip()),
        forwarded_allow_ips=settings.trusted_proxies.strip() or None,
    )
    redact_tokens_in_logs()  # after uvicorn.Config, which sets up its loggers
    DrainingServer(config, app.state.endpoint, settings.shutdown_grace_sec).run()


if __name__ == "__main__":
    main()
