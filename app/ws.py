"""`/ws/asr-stream`, the native protocol: a thin adapter over the session core.

It only translates: a JSON config text frame into a `StreamConfig`, binary
frames into `Audio`, control text frames into `Control` (or `Invalid`), and the
core's events into `metadata`, `transcript`, `error` and `complete` messages
(STREAMING.md). Limits, admission, drain and metrics are the core's
(`app.core`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Mapping

from starlette.responses import JSONResponse
from starlette.websockets import WebSocket, WebSocketState

from app.asr.base import TextSpan
from app.core import (
    Audio,
    ClientGone,
    Control,
    Inbound,
    Invalid,
    Outbound,
    OverHTTP,
    Started,
)
from app.errors import RETRY_LATER_STATUSES, ASRError, CloseCode, ProtocolError, http_status
from app.messages import (
    Complete,
    ErrorMessage,
    Metadata,
    StreamConfig,
    Transcript,
    Word,
    parse_config,
    parse_control,
)
from app.plan import SessionPlan
from app.session import CompleteEvent, ErrorEvent, FlushedEvent, SpeechEvent, TranscriptEvent

logger = logging.getLogger(__name__)

_PUNCTUATION = re.compile(r"[^\w\s'-]+", re.UNICODE)
TIME_DECIMALS = 3
# How long telling a client its fatal error may take before the close.
FAIL_SEND_TIMEOUT_SEC = 5.0


class TranscriptFormatter:
    """`TextSpan` → `Transcript` wire message, per the session's options."""

    def __init__(self, plan: SessionPlan) -> None:
        self.plan = plan
        self._finals = 0

    def __call__(self, span: TextSpan, is_final: bool) -> Transcript:
        text = span.text if self.plan.punctuation else strip_punctuation(span.text)
        if not is_final:
            text = text.strip()
        elif self._finals == 0 and not self.plan.stream_offset_sec:
            # The first final of a stream; a resumed stream's first final goes on
            # from the finals of the connection before, space and all.
            text = text.lstrip()
        elif text and not text[0].isspace():
            text = " " + text  # finals concatenated in order are the transcript
        if is_final:
            self._finals += 1
        words = None
        if self.plan.word_offsets:
            words = [
                Word(word=self._word(w.word), start=_t(w.start), end=_t(w.end)) for w in span.words
            ]
        confidence = None if span.confidence is None else round(span.confidence, 4)
        return Transcript(
            text=text,
            is_final=is_final,
            confidence=confidence,
            start=_t(span.start),
            end=_t(span.end),
            words=words,
            stability=span.stability,
        )

    def _word(self, word: str) -> str:
        return (word if self.plan.punctuation else strip_punctuation(word)).strip()


async def deny(
    websocket: WebSocket,
    error: ASRError,
    retry_after: int,
    body: Mapping[str, object] | None = None,
    headers: Mapping[str, str] | None = None,
) -> None:
    """Refuse a WebSocket handshake, for every WebSocket door: the error's HTTP status,
    a JSON body (the native `error` object unless the door has its own shape), and
    ``Retry-After`` on a 429 or 503.

    A server without the denial-response extension cannot answer with a status:
    it closes with the error's own close code after accepting.
    """
    status = http_status(error)
    if body is None:
        body = ErrorMessage(detail=error.detail, code=error.code).model_dump()
    all_headers = dict(headers or {})
    if status in RETRY_LATER_STATUSES:
        all_headers["Retry-After"] = str(retry_after)
    response = JSONResponse(dict(body), status_code=status, headers=all_headers)
    try:
        await websocket.send_denial_response(response)
    except RuntimeError:
        await websocket.close(code=int(error.close_code or CloseCode.POLICY_VIOLATION))


def strip_punctuation(text: str) -> str:
    return _PUNCTUATION.sub("", text)


def _t(seconds: float) -> float:
    return round(seconds, TIME_DECIMALS)


def native_message(event: Outbound, formatter: TranscriptFormatter | None) -> str | None:
    """The native JSON message of a core event (None: the native protocol does not carry it);
    every door that speaks the native messages (the WebSocket, WebRTC's data channel)."""
    if isinstance(event, Started):
        plan, info = event.plan, event.info
        return Metadata(
            session_id=event.session_id,
            language_code=plan.language_code,
            sample_rate_hertz=plan.sample_rate_hertz,
            encoding=plan.encoding,
            backend=info.backend,
            model=info.model,
        ).to_json()
    if isinstance(event, TranscriptEvent):
        assert formatter is not None, "a transcript before the session started"
        return formatter(event.span, event.is_final).to_json()
    if isinstance(event, ErrorEvent):
        return ErrorMessage(detail=event.error.detail, code=event.error.code).to_json()
    if isinstance(event, CompleteEvent):
        return Complete().to_json()
    assert isinstance(event, SpeechEvent | FlushedEvent)
    # Voice activity, and the end of a finalize: the native protocol does not carry them
    # (its messages are fixed, DESIGN.md §2; STREAMING.md §3: a finalize is not acknowledged).
    return None


class NativeWebSocket(OverHTTP):
    """One `/ws/asr-stream` connection as a `Transport` of the core."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = self.connection = websocket
        self._format: TranscriptFormatter | None = None

    async def refuse(self, error: ASRError, retry_after: int) -> None:
        """HTTP 400/401/403/429/503 with the `error` object as JSON."""
        await deny(self.websocket, error, retry_after)

    def check_request(self) -> StreamConfig | None:
        """Nothing to check: the config comes after the upgrade."""
        return None

    async def accept(self, subprotocol: str | None) -> None:
        await self.websocket.accept(subprotocol=subprotocol)

    async def receive_config(self) -> StreamConfig:
        message = await self.websocket.receive()
        if message["type"] == "websocket.disconnect":
            raise ClientGone
        if message.get("text") is None:
            raise ProtocolError(
                "The first message must be the JSON config (a text frame); audio comes after "
                "the 'metadata' reply.",
                code="config_required",
            )
        return parse_config(str(message["text"]))

    async def receive(self) -> Inbound:
        message = await self.websocket.receive()
        if message["type"] == "websocket.disconnect":
            raise ClientGone
        data = message.get("bytes")
        if data is not None:
            return Audio(data)
        try:
            return Control(parse_control(str(message.get("text"))).type)
        except ProtocolError as exc:
            return Invalid(exc)

    async def send(self, event: Outbound) -> None:
        if isinstance(event, Started):
            self._format = TranscriptFormatter(event.plan)
        message = native_message(event, self._format)
        if message is not None:
            await self._send_text(message)

    async def close(self, code: CloseCode) -> None:
        await self.websocket.close(code=int(code))

    async def fail(self, error: ASRError) -> None:
        if self.websocket.application_state != WebSocketState.CONNECTED:
            return
        with contextlib.suppress(Exception):
            message = ErrorMessage(detail=error.detail, code=error.code).to_json()
            await asyncio.wait_for(self.websocket.send_text(message), FAIL_SEND_TIMEOUT_SEC)
            if error.close_code is not None:
                await self.websocket.close(code=int(error.close_code))

    async def _send_text(self, text: str) -> None:
        try:
            await self.websocket.send_text(text)
        except Exception as exc:  # the transport's own error types vary (uvicorn, websockets)
            raise ClientGone from exc
