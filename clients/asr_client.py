"""A small async client for `/ws/asr-stream`, shared by the CLI, the benchmarks and the tests.

    client = ASRStreamClient("ws://127.0.0.1:8001/ws/asr-stream")
    async for msg in client.stream(pcm_bytes, sample_rate_hertz=16000):
        ...

`stream` sends the config, waits for ``metadata``, sends the audio in frames
(at real-time pace unless ``realtime=False``), then ``stop``; it yields every
server message as it arrives, up to ``complete`` or an ``error`` that ends
the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import wave
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websockets

from app.messages import (
    Complete,
    ErrorMessage,
    Metadata,
    ServerMessage,
    Transcript,
    parse_server_message,
)

DEFAULT_URL = "ws://127.0.0.1:8001/ws/asr-stream"
DEFAULT_CHUNK_MS = 100
BYTES_PER_SAMPLE = 2


class StreamError(Exception):
    """The server answered with an `error`, or closed before `complete`."""

    def __init__(self, detail: str, code: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.code = code


class ServerBusy(StreamError):
    """The server cannot take a session now (full, or draining): try again later.

    Raised for an HTTP 503 at the handshake (``retry_after`` from its
    ``Retry-After`` header) and for ``server_full``/``shutting_down`` with
    close 1013 after it (``retry_after`` None: the server gave no figure).
    """

    def __init__(self, detail: str, code: str | None, retry_after: float | None) -> None:
        super().__init__(detail, code)
        self.retry_after = retry_after


BUSY_CODES = frozenset({"server_full", "shutting_down"})
TRY_AGAIN_LATER = 1013


def busy_from_refusal(exc: websockets.InvalidStatus) -> ServerBusy | None:
    """A 503 handshake refusal as `ServerBusy`; None for any other status."""
    response = exc.response
    if response.status_code != 503:
        return None
    detail, code = "The server is busy.", None
    with contextlib.suppress(ValueError, UnicodeDecodeError):
        body = json.loads(response.body or b"")
        if isinstance(body, dict):
            detail = str(body.get("detail", detail))
            code = body.get("code") if isinstance(body.get("code"), str) else None
    retry_after: float | None = None
    with contextlib.suppress(TypeError, ValueError):
        retry_after = float(response.headers.get("Retry-After", ""))
    return ServerBusy(detail, code, retry_after)


@dataclass
class Received:
    """A server message and when it arrived (``time.monotonic()``)."""

    message: ServerMessage
    at: float


@dataclass
class StreamResult:
    """Everything a finished stream produced."""

    messages: list[Received] = field(default_factory=list)
    audio_started_at: float | None = None
    stop_sent_at: float | None = None
    close_code: int | None = None

    @property
    def finals(self) -> list[Transcript]:
        return [
            r.message
            for r in self.messages
            if isinstance(r.message, Transcript) and r.message.is_final
        ]

    @property
    def transcript(self) -> str:
        return "".join(t.text for t in self.finals).strip()


def read_wav(path: str | Path) -> tuple[bytes, int]:
    """PCM bytes and rate of a 16-bit mono WAV."""
    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != BYTES_PER_SAMPLE or wav.getnchannels() != 1:
            raise ValueError(f"{path}: need 16-bit mono WAV")
        return wav.readframes(wav.getnframes()), wav.getframerate()


def chunked(pcm: bytes, sample_rate: int, chunk_ms: int) -> Iterable[bytes]:
    size = max(BYTES_PER_SAMPLE, sample_rate * BYTES_PER_SAMPLE * chunk_ms // 1000)
    for i in range(0, len(pcm), size):
        yield pcm[i : i + size]


ProgressCallback = Callable[[float], None]
"""Called with the seconds of audio sent so far, after each frame."""


class ASRStreamClient:
    """Streams PCM to ``url``; ``api_key`` is sent as ``Authorization: Bearer KEY``."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        open_timeout: float = 30.0,
        api_key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.url = url
        self.open_timeout = open_timeout
        self.headers = dict(headers or {})
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self.last_close_code: int | None = None

    async def stream(
        self,
        audio: bytes | AsyncIterable[bytes],
        *,
        sample_rate_hertz: int,
        chunk_ms: int = DEFAULT_CHUNK_MS,
        realtime: bool = True,
        config: dict[str, Any] | None = None,
        timings: StreamResult | None = None,
        progress: ProgressCallback | None = None,
    ) -> AsyncIterator[ServerMessage]:
        """Stream ``audio`` (PCM bytes, or an async source of PCM chunks); yield replies.

        ``config`` adds fields to the config message (``language_code``,
        ``backend``…). Raises `StreamError` on an ``error`` that ends the session.
        When ``timings`` is given, arrival times are recorded in it; ``progress``
        is called with the seconds of audio sent after each frame. An exception
        raised by an async ``audio`` source ends the stream and is re-raised here.
        """
        message = {"sample_rate_hertz": sample_rate_hertz, "encoding": "LINEAR16"}
        message.update(config or {})
        try:
            connection = await websockets.connect(
                self.url,
                open_timeout=self.open_timeout,
                max_size=None,
                additional_headers=self.headers or None,
            )
        except websockets.InvalidStatus as exc:
            busy = busy_from_refusal(exc)
            if busy is None:
                raise  # 401/403 and anything else: as websockets raised it
            raise busy from exc
        async with connection as ws:
            await ws.send(json.dumps(message))
            first = parse_server_message(await ws.recv())
            if timings is not None:
                timings.messages.append(Received(first, time.monotonic()))
            if isinstance(first, ErrorMessage):
                if first.code in BUSY_CODES:
                    with contextlib.suppress(websockets.ConnectionClosed):
                        await ws.recv()  # the close that follows
                    if ws.close_code == TRY_AGAIN_LATER:
                        raise ServerBusy(first.detail, first.code, None)
                raise StreamError(first.detail, first.code)
            if not isinstance(first, Metadata):
                raise StreamError(f"expected metadata, got {first.type}")
            yield first
            source_failures: list[Exception] = []
            sender = asyncio.create_task(
                self._send(
                    ws,
                    audio,
                    sample_rate_hertz,
                    chunk_ms,
                    realtime,
                    timings,
                    progress,
                    source_failures,
                )
            )
            last_error: ErrorMessage | None = None
            try:
                async for raw in ws:
                    msg = parse_server_message(raw)
                    if timings is not None:
                        timings.messages.append(Received(msg, time.monotonic()))
                    if isinstance(msg, ErrorMessage):
                        last_error = msg
                    yield msg
                    if isinstance(msg, Complete):
                        break
                await ws.wait_closed()
            except websockets.ConnectionClosed:
                pass
            finally:
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await sender
                self.last_close_code = ws.close_code
                if timings is not None:
                    timings.close_code = ws.close_code
            if source_failures:
                raise source_failures[0]
            if ws.close_code != 1000:
                # A fatal error is followed by its close; the error says why.
                if last_error is not None:
                    raise StreamError(last_error.detail, last_error.code)
                raise StreamError(f"connection closed with code {ws.close_code} before complete")

    async def _send(
        self,
        ws: Any,
        audio: bytes | AsyncIterable[bytes],
        rate: int,
        chunk_ms: int,
        realtime: bool,
        timings: StreamResult | None,
        progress: ProgressCallback | None = None,
        source_failures: list[Exception] | None = None,
    ) -> None:
        started = time.monotonic()
        if timings is not None:
            timings.audio_started_at = started
        sent_bytes = 0
        source = _iterate(audio, rate, chunk_ms)
        try:
            async for chunk in source:
                sent_bytes += len(chunk)
                sent_seconds = sent_bytes // BYTES_PER_SAMPLE / rate
                if realtime:
                    # As a microphone would: a chunk leaves once its last sample
                    # has been spoken, not when its first one starts.
                    ahead = started + sent_seconds - time.monotonic()
                    if ahead > 0:
                        await asyncio.sleep(ahead)
                await ws.send(chunk)
                if progress is not None:
                    progress(sent_seconds)
        except websockets.ConnectionClosed:
            return  # the receiving side reports why
        except Exception as exc:
            # The audio source failed (a decoder exited, a pipe broke): end the
            # session rather than leave the server waiting for audio or `stop`.
            # Recorded before the close, so `stream` sees it when the socket ends.
            if source_failures is None:
                raise
            source_failures.append(exc)
            await ws.close()
            return
        if timings is not None:
            timings.stop_sent_at = time.monotonic()
        await ws.send(json.dumps({"type": "stop"}))

    async def transcribe(
        self, audio: bytes, *, sample_rate_hertz: int, **kwargs: Any
    ) -> StreamResult:
        """Stream ``audio`` and collect everything (messages with arrival times)."""
        result = StreamResult()
        async for _ in self.stream(
            audio, sample_rate_hertz=sample_rate_hertz, timings=result, **kwargs
        ):
            pass
        return result


async def _iterate(
    audio: bytes | AsyncIterable[bytes], rate: int, chunk_ms: int
) -> AsyncIterator[bytes]:
    if isinstance(audio, bytes | bytearray):
        for chunk in chunked(bytes(audio), rate, chunk_ms):
            yield chunk
    else:
        async for chunk in audio:
            yield chunk
