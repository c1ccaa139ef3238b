"""The `/ws/asr-stream` endpoint: decode frames, feed the session, send its events.

One reader task takes client messages; one writer task is the only sender,
so messages never interleave. Whichever ends first ends the other:
the writer after ``complete`` or a fatal error, the reader when the client
goes away or breaks the protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from dataclasses import dataclass

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from app.asr.base import EngineInfo, Recognizer, RecognizerLoader, TextSpan
from app.asr.registry import Registry
from app.audio import PcmDecoder
from app.errors import ASRError, CloseCode, FrameTooLarge, ProtocolError
from app.messages import (
    Complete,
    ErrorMessage,
    Metadata,
    Transcript,
    Word,
    parse_config,
    parse_control,
)
from app.plan import SessionDefaults, SessionPlan, plan_session
from app.session import (
    CompleteEvent,
    ErrorEvent,
    ProcessorRecognizer,
    StreamingSession,
    TranscriptEvent,
)
from app.settings import Settings

logger = logging.getLogger(__name__)

_PUNCTUATION = re.compile(r"[^\w\s'-]+", re.UNICODE)
TIME_DECIMALS = 3


class ClientGone(Exception):
    """The client closed or dropped the connection."""


@dataclass
class StreamState:
    stopped: bool = False


class TranscriptFormatter:
    """`TextSpan` → `Transcript` wire message, per the session's options."""

    def __init__(self, plan: SessionPlan) -> None:
        self.plan = plan
        self._finals = 0

    def __call__(self, span: TextSpan, is_final: bool) -> Transcript:
        text = span.text if self.plan.punctuation else _strip_punctuation(span.text)
        if not is_final:
            text = text.strip()
        elif self._finals == 0:
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
        )

    def _word(self, word: str) -> str:
        return (word if self.plan.punctuation else _strip_punctuation(word)).strip()


def _strip_punctuation(text: str) -> str:
    return _PUNCTUATION.sub("", text)


def _t(seconds: float) -> float:
    return round(seconds, TIME_DECIMALS)


class StreamEndpoint:
    """Serves one WebSocket connection at a time per call; shared by all connections."""

    def __init__(self, settings: Settings, registry: Registry) -> None:
        self.settings = settings
        self.registry = registry
        self.defaults = SessionDefaults.from_settings(settings)
        self.active: set[StreamingSession] = set()

    async def __call__(self, websocket: WebSocket) -> None:
        await websocket.accept()
        session_id = uuid.uuid4().hex[:12]
        session: StreamingSession | None = None
        try:
            config = parse_config(await self._receive_config(websocket))
            plan = plan_session(config, self.settings, self.registry, self.defaults)
            session, info = await self._open_session(session_id, plan)
            await _send(
                websocket,
                Metadata(
                    session_id=session_id,
                    language_code=plan.language_code,
                    sample_rate_hertz=plan.sample_rate_hertz,
                    encoding=plan.encoding,
                    backend=info.backend,
                    model=info.model,
                ).to_json(),
            )
            logger.info(
                "[%s] started: backend=%s model=%s language=%s rate=%d",
                session_id,
                info.backend,
                info.model,
                plan.language_code,
                plan.sample_rate_hertz,
            )
            await self._stream(websocket, session, plan)
        except ASRError as exc:
            logger.info("[%s] %s: %s", session_id, exc.code, exc.detail)
            await _send_error(websocket, exc)
        except (ClientGone, WebSocketDisconnect):
            logger.info("[%s] client disconnected", session_id)
        except Exception:
            logger.exception("[%s] unexpected failure", session_id)
            await _send_error(websocket, ASRError("The server failed on this session."))
        finally:
            if session is not None:
                self.active.discard(session)
                await session.close(self.settings.session_close_timeout_sec)
            logger.info("[%s] closed", session_id)

    async def _receive_config(self, websocket: WebSocket) -> str:
        timeout = self.settings.config_timeout_sec
        try:
            message = await asyncio.wait_for(websocket.receive(), timeout)
        except TimeoutError:
            raise ProtocolError(
                f"No config message arrived within {timeout:g} s of connecting.",
                code="config_timeout",
            ) from None
        if message["type"] == "websocket.disconnect":
            raise ClientGone
        if message.get("text") is None:
            raise ProtocolError(
                "The first message must be the JSON config (a text frame); audio comes after "
                "the 'metadata' reply.",
                code="config_required",
            )
        return str(message["text"])

    async def _open_session(
        self, session_id: str, plan: SessionPlan
    ) -> tuple[StreamingSession, EngineInfo]:
        loader = self.registry.get_loader(plan.request.backend)
        recognizer: Recognizer
        if isinstance(loader, RecognizerLoader):
            recognizer, info = await asyncio.to_thread(
                loader.open_recognizer, plan.request, plan.sample_rate_hertz
            )
        else:
            processor, info = await asyncio.to_thread(loader.load, plan.request)
            recognizer = ProcessorRecognizer(processor, info, interim=plan.interim_results)
        session = StreamingSession(
            session_id,
            recognizer,
            asyncio.get_running_loop(),
            queue_seconds=self.settings.audio_queue_seconds,
            sample_rate=info.sample_rate or plan.sample_rate_hertz,
        )
        session.start()
        self.active.add(session)
        return session, info

    async def _stream(
        self, websocket: WebSocket, session: StreamingSession, plan: SessionPlan
    ) -> None:
        reader = asyncio.create_task(self._read(websocket, session, plan))
        writer = asyncio.create_task(self._write(websocket, session, plan))
        done, _ = await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
        for task in (reader, writer):
            if task not in done:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if writer in done and writer.exception() is None:
            return  # complete was sent; whatever the reader saw after that is moot
        for task in (writer, reader):
            if task in done:
                task.result()  # re-raise ClientGone / ASRError

    async def _read(
        self, websocket: WebSocket, session: StreamingSession, plan: SessionPlan
    ) -> None:
        decoder = PcmDecoder(plan.sample_rate_hertz, target_rate=session.sample_rate)
        state = StreamState()
        max_frame = self.settings.max_frame_bytes
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                raise ClientGone
            data = message.get("bytes")
            if data is not None:
                if len(data) > max_frame:
                    raise FrameTooLarge(
                        f"An audio frame of {len(data)} bytes exceeds the limit of {max_frame} "
                        "bytes; send smaller frames (100 ms of audio is typical)."
                    )
                if state.stopped:
                    self._notify(
                        session,
                        ProtocolError(
                            "Audio after 'stop' is ignored; open a new session to send more.",
                            code="audio_after_stop",
                            fatal=False,
                        ),
                    )
                elif not data:
                    self._notify(
                        session,
                        ProtocolError(
                            "An empty audio frame was ignored; frames carry at least 2 bytes.",
                            code="empty_frame",
                            fatal=False,
                        ),
                    )
                else:
                    await session.put_audio(decoder.decode(data))
                continue
            try:
                parse_control(str(message.get("text")))
            except ProtocolError as exc:
                self._notify(session, exc)
                continue
            if state.stopped:
                self._notify(
                    session,
                    ProtocolError(
                        "'stop' was already received; the session is finishing.",
                        code="already_stopped",
                        fatal=False,
                    ),
                )
                continue
            state.stopped = True
            await session.put_audio(decoder.flush())
            session.stop()

    @staticmethod
    def _notify(session: StreamingSession, error: ASRError) -> None:
        """Send a non-fatal error through the writer (the only sender)."""
        session.events.put_nowait(ErrorEvent(error))

    async def _write(
        self, websocket: WebSocket, session: StreamingSession, plan: SessionPlan
    ) -> None:
        format_transcript = TranscriptFormatter(plan)
        while True:
            event = await session.events.get()
            if isinstance(event, TranscriptEvent):
                message = format_transcript(event.span, event.is_final)
                await _send(websocket, message.to_json())
            elif isinstance(event, ErrorEvent):
                if event.error.fatal:
                    raise event.error
                error = ErrorMessage(detail=event.error.detail, code=event.error.code)
                await _send(websocket, error.to_json())
            elif isinstance(event, CompleteEvent):
                await _send(websocket, Complete().to_json())
                with contextlib.suppress(Exception):
                    await websocket.close(code=CloseCode.NORMAL)
                logger.info("[%s] complete", session.session_id)
                return


async def _send(websocket: WebSocket, text: str) -> None:
    try:
        await websocket.send_text(text)
    except Exception as exc:  # the transport's own error types vary (uvicorn, websockets)
        raise ClientGone from exc


async def _send_error(websocket: WebSocket, exc: ASRError) -> None:
    """Send an `error` message, then close if the error is fatal; ignore a gone client."""
    if websocket.application_state != WebSocketState.CONNECTED:
        return
    with contextlib.suppress(Exception):
        await websocket.send_text(ErrorMessage(detail=exc.detail, code=exc.code).to_json())
        if exc.close_code is not None:
            await websocket.close(code=int(exc.close_code))
