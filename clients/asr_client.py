"""A small async client for `/ws/asr-stream`, shared by the CLI, the benchmarks and the tests.

    client = ASRStreamClient("ws://127.0.0.1:8001/ws/asr-stream")
    async for msg in client.stream(pcm_bytes, sample_rate_hertz=16000):
        ...

`stream` sends the config, waits for ``metadata``, sends the audio in frames
(at real-time pace unless ``realtime=False``), then ``stop``; it yields every
server message as it arrives, up to ``complete`` or an ``error`` that ends
the session. A connection that drops mid-stream is resumed on a new one
(`ASRStreamClient.stream`, `clients.resume`; ``resume=False`` turns it off).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import time
import wave
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Iterable,
    Mapping,
)
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
from clients.resume import (
    SERVER_FAILURE_RETRIES,
    Cut,
    ResumeBuffer,
    ResumePolicy,
    cut_kind,
    frames,
)

logger = logging.getLogger(__name__)

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
    resumes: list[ResumeAttempt] = field(default_factory=list)  # every reconnect, in order

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


def chunk_size(sample_rate: int, chunk_ms: int) -> int:
    """Bytes of ``chunk_ms`` of audio (at least one sample)."""
    return max(BYTES_PER_SAMPLE, sample_rate * BYTES_PER_SAMPLE * chunk_ms // 1000)


def chunked(pcm: bytes, sample_rate: int, chunk_ms: int) -> Iterable[bytes]:
    size = chunk_size(sample_rate, chunk_ms)
    for i in range(0, len(pcm), size):
        yield pcm[i : i + size]


ProgressCallback = Callable[[float], None]
"""Called with the seconds of audio sent so far, after each frame."""


class ResumeFailed(StreamError):
    """The connection ended without ``complete`` and no reconnect worked within the bound.

    ``attempts`` are every reconnect tried in a row (their ``reason``s say why each
    one was needed); ``offset_sec`` is where the finals received end: the stream
    time from which the audio was not transcribed.
    """

    def __init__(self, detail: str, attempts: list[ResumeAttempt], offset_sec: float) -> None:
        super().__init__(detail, "resume_failed")
        self.attempts = attempts
        self.offset_sec = offset_sec


@dataclass(frozen=True)
class ResumeAttempt:
    """One reconnect of a resumed stream, reported (`ResumeCallback`) before it is made.

    ``reason`` says why it is needed: how the connection ended, or how the previous
    reconnect failed. The new connection starts at ``offset_sec`` and first resends
    ``resend_sec`` of kept audio; ``lost`` is a span the keep bound dropped (see
    `clients.resume.ResumePoint`).
    """

    attempt: int
    max_attempts: int
    reason: str
    offset_sec: float
    resend_sec: float
    delay_sec: float
    lost: tuple[float, float] | None
    at: float  # time.monotonic() when it was decided

    def describe(self) -> str:
        return (
            f"{self.reason}; resuming at {self.offset_sec:.2f} s, "
            f"attempt {self.attempt}/{self.max_attempts}"
        )


ResumeCallback = Callable[[ResumeAttempt], None]
"""Called for each reconnect of a resumed stream, before waiting ``delay_sec``."""


@dataclass
class _Ending:
    """How one connection of a stream ended."""

    completed: bool = False  # `complete` after our `stop` (or a limit): the stream is over
    draining: bool = False  # `shutting_down` came: the node ended it, the stream goes on
    last: ServerMessage | None = None
    last_error: ErrorMessage | None = None
    close_code: int | None = None

    @property
    def fatal_code(self) -> str | None:
        """The code of the fatal `error` that ended the connection, if one did."""
        if self.draining:
            return "shutting_down"
        return self.last.code if isinstance(self.last, ErrorMessage) else None

    def describe(self) -> str:
        code = self.close_code or 1006
        if self.draining:
            return f"node draining ({code}, shutting_down)"
        if self.fatal_code is not None:
            return f"server error ({code}, {self.fatal_code})"
        return f"connection lost ({code})" if code in (1006, 1001, 1012) else f"closed ({code})"


# Notices that belong to a drain's cut, not to the stream: the audio they name is kept
# and resent, so they are not passed on.
_CUT_NOTICES = frozenset({"shutting_down", "audio_after_stop", "already_stopped"})


class _Feed:
    """The caller's audio across connections: read once, paced, kept until a final covers it.

    A read in progress survives the sender of a connection that ended (it is
    shielded), so a live source is never interrupted mid-read: the next
    connection's sender takes it up.
    """

    def __init__(
        self,
        audio: bytes | AsyncIterable[bytes],
        rate: int,
        chunk_ms: int,
        realtime: bool,
        kept: ResumeBuffer,
        timings: StreamResult | None,
        progress: ProgressCallback | None,
    ) -> None:
        self._source = _iterate(audio, rate, chunk_ms)
        self._reading: asyncio.Future[bytes] | None = None
        self.rate = rate
        self.frame_bytes = chunk_size(rate, chunk_ms)
        self.realtime = realtime
        self.kept = kept
        self.timings = timings
        self.progress = progress
        self.started: float | None = None
        self.read_bytes = 0
        self.ended = False  # the source is exhausted: `stop` follows the audio
        self.failure: Exception | None = None  # the source raised it

    async def _read(self) -> bytes | None:
        if self._reading is None:
            self._reading = asyncio.ensure_future(anext(self._source))
        reading = self._reading
        try:
            chunk = await asyncio.shield(reading)
        except StopAsyncIteration:
            self._reading, self.ended = None, True
            return None
        except asyncio.CancelledError:
            if reading.cancelled():
                self._reading = None
            raise  # our sender was cancelled: the read goes on for the next one
        except BaseException:
            self._reading = None
            raise
        self._reading = None
        return chunk

    async def send(self, ws: Any, resend: bytes) -> None:
        """One connection's sender: the kept audio at once, live audio at pace, ``stop``."""
        if self.started is None:
            self.started = time.monotonic()
            if self.timings is not None:
                self.timings.audio_started_at = self.started
        try:
            # Backlog, not speech: as fast as the server takes it (its backpressure).
            for frame in frames(resend, self.frame_bytes):
                await ws.send(frame)
            while not self.ended:
                try:
                    chunk = await self._read()
                except Exception as exc:
                    # The audio source failed (a decoder exited, a pipe broke): end the
                    # session rather than leave the server waiting for audio or `stop`.
                    # Recorded before the close, so `stream` sees it when the socket ends.
                    self.failure = exc
                    await ws.close()
                    return
                if chunk is None:
                    break
                self.kept.add(chunk)  # before sending: a chunk lost in flight is kept too
                self.read_bytes += len(chunk)
                sent_seconds = self.read_bytes // BYTES_PER_SAMPLE / self.rate
                if self.realtime:
                    # As a microphone would: a chunk leaves once its last sample has been
                    # spoken, not when its first one starts. After a cut, what was
                    # "spoken" meanwhile goes at once, as a microphone's buffer would.
                    ahead = self.started + sent_seconds - time.monotonic()
                    if ahead > 0:
                        await asyncio.sleep(ahead)
                await ws.send(chunk)
                if self.progress is not None:
                    self.progress(sent_seconds)
            if self.timings is not None:
                self.timings.stop_sent_at = time.monotonic()
            await ws.send(json.dumps({"type": "stop"}))
        except websockets.ConnectionClosed:
            return  # the receiving side reports why

    async def close(self) -> None:
        if self._reading is not None and not self._reading.done():
            self._reading.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reading
        await self._source.aclose()


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
        resume: bool = True,
        resume_policy: ResumePolicy | None = None,
        on_resume: ResumeCallback | None = None,
    ) -> AsyncIterator[ServerMessage]:
        """Stream ``audio`` (PCM bytes, or an async source of PCM chunks); yield replies.

        ``config`` adds fields to the config message (``language_code``,
        ``backend``…). Raises `StreamError` on an ``error`` that ends the session.
        When ``timings`` is given, arrival times are recorded in it; ``progress``
        is called with the seconds of audio sent after each frame. An exception
        raised by an async ``audio`` source ends the stream and is re-raised here.

        **Resuming** (on unless ``resume=False``; STREAMING.md "Resuming a
        stream"). Once the session has started, a connection that ends without
        ``complete`` — no close frame (1006), 1011, 1012, 1013, a drain's
        ``shutting_down``, a network error — is resumed: the client reconnects
        to the same URL (through a balancer, usually another node) with
        ``stream_offset_sec`` = the ``end`` of the last final received, resends
        the audio it kept after that end, then goes on with live audio.
        ``resume_policy`` bounds the kept audio and the reconnects (`ResumePolicy`);
        ``on_resume`` is called before each reconnect; giving up raises
        `ResumeFailed`. A refusal of the *first* connection (`ServerBusy`, an
        HTTP status, a refused config) is raised as it is, without retrying.

        What the caller sees across a cut: every final exactly once, in order,
        with times that go on (the server shifts them); then the new
        connection's ``metadata`` (a new ``session_id``: the server's logs for
        the rest of the stream are under it; interims before it are void); then
        its transcripts. The drained node's ``shutting_down`` notice and its
        ``complete`` are part of the cut and are not yielded.
        """
        policy = resume_policy or ResumePolicy()
        message: dict[str, Any] = {"sample_rate_hertz": sample_rate_hertz, "encoding": "LINEAR16"}
        message.update(config or {})
        kept = ResumeBuffer(sample_rate_hertz, policy.keep_sec if resume else 0.0)
        feed = _Feed(audio, sample_rate_hertz, chunk_ms, realtime, kept, timings, progress)
        try:
            ws, first = await self._connect(message, self.open_timeout, timings)
            yield first
            streak = 0  # reconnects since the last new final
            failures = 0  # server-reported failures since the last new final
            said = False  # a final with text was yielded: later ones continue it
            resumed = False
            while True:
                ending = _Ending()
                messages = self._converse(
                    ws, feed, ending, timings, absorb_cut=resume, continues=resumed and said
                )
                async with contextlib.aclosing(messages):
                    async for msg in messages:
                        if isinstance(msg, Transcript) and msg.is_final:
                            kept.confirm(msg.end)
                            streak = failures = 0
                            said = said or bool(msg.text)
                        yield msg
                if feed.failure is not None:
                    raise feed.failure
                if ending.completed and ending.close_code == 1000:
                    return
                kind = cut_kind(ending.close_code, ending.fatal_code)
                if ending.completed or not resume or kind is Cut.FINAL:
                    raise _ended_early(ending)
                if kind is Cut.FAILURE:
                    failures += 1
                    if failures > SERVER_FAILURE_RETRIES:
                        raise _ended_early(ending)  # the same failure twice: not the node's
                ws, first, streak = await self._resume(
                    message, kept, policy, ending.describe(), streak, on_resume, timings
                )
                resumed = True
                yield first
        finally:
            await feed.close()

    async def _connect(
        self, message: dict[str, Any], open_timeout: float, timings: StreamResult | None
    ) -> tuple[Any, Metadata]:
        """Open a connection and send the config; return it once ``metadata`` came."""
        try:
            ws = await websockets.connect(
                self.url,
                open_timeout=open_timeout,
                max_size=None,
                additional_headers=self.headers or None,
            )
        except websockets.InvalidStatus as exc:
            busy = busy_from_refusal(exc)
            if busy is None:
                raise  # 401/403 and anything else: as websockets raised it
            raise busy from exc
        try:
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
        except BaseException:
            await ws.close()
            raise
        return ws, first

    async def _converse(
        self,
        ws: Any,
        feed: _Feed,
        ending: _Ending,
        timings: StreamResult | None,
        *,
        absorb_cut: bool,
        continues: bool,
    ) -> AsyncGenerator[ServerMessage, None]:
        """One connection after its ``metadata``: send the audio, yield what comes back.

        ``continues``: the connection resumes a transcript that has text. A server
        keeps the separating space of a resumed session's first final (its
        ``stream_offset_sec`` is above 0); one that strips it, as servers before
        that did, gets the space back here (STREAMING.md: the finals concatenated
        are the transcript).
        """
        sender = asyncio.create_task(feed.send(ws, feed.kept.resume_point().audio))
        try:
            async for raw in ws:
                msg = parse_server_message(raw)
                if isinstance(msg, Transcript) and msg.is_final and continues:
                    continues = False
                    if msg.text and not msg.text[0].isspace():
                        msg = msg.model_copy(update={"text": " " + msg.text})
                ending.last = msg
                if isinstance(msg, ErrorMessage):
                    ending.last_error = msg
                    if absorb_cut and (msg.code == "shutting_down" or ending.draining):
                        ending.draining = True
                        if msg.code in _CUT_NOTICES:
                            continue
                if isinstance(msg, Complete) and absorb_cut and ending.draining:
                    continue  # the drained node's end, not the stream's: read on to the close
                if timings is not None:
                    timings.messages.append(Received(msg, time.monotonic()))
                yield msg
                if isinstance(msg, Complete):
                    ending.completed = True
                    break
            await ws.wait_closed()
        except websockets.ConnectionClosed:
            pass
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender
            await ws.close()
            ending.close_code = ws.close_code
            self.last_close_code = ws.close_code
            if timings is not None:
                timings.close_code = ws.close_code

    async def _resume(
        self,
        message: dict[str, Any],
        kept: ResumeBuffer,
        policy: ResumePolicy,
        reason: str,
        streak: int,
        on_resume: ResumeCallback | None,
        timings: StreamResult | None,
    ) -> tuple[Any, Metadata, int]:
        """Reconnect with backoff until a new session starts; (its socket, metadata, streak)."""
        attempts: list[ResumeAttempt] = []
        retry_after: float | None = None
        for attempt in range(streak + 1, policy.max_attempts + 1):
            point = kept.resume_point()
            report = ResumeAttempt(
                attempt=attempt,
                max_attempts=policy.max_attempts,
                reason=reason,
                offset_sec=point.offset_sec,
                resend_sec=len(point.audio) // BYTES_PER_SAMPLE / kept.sample_rate,
                delay_sec=policy.delay(attempt, retry_after, random.random()),
                lost=point.lost,
                at=time.monotonic(),
            )
            attempts.append(report)
            logger.info("%s (in %.2f s)", report.describe(), report.delay_sec)
            if timings is not None:
                timings.resumes.append(report)
            if on_resume is not None:
                on_resume(report)
            await asyncio.sleep(report.delay_sec)
            retry_after = None
            resumed = {**message, "stream_offset_sec": point.offset_sec}
            try:
                ws, first = await self._connect(resumed, policy.open_timeout_sec, timings)
            except ServerBusy as exc:
                retry_after = exc.retry_after
                reason = _busy_reason(exc)
            except StreamError as exc:
                if cut_kind(None, exc.code) is not Cut.NODE:
                    raise
                reason = f"server error ({exc.code})"
            except websockets.InvalidStatus as exc:
                status = exc.response.status_code
                if status < 500:
                    raise  # 401, 403, 429: retrying will not change the answer
                reason = f"HTTP {status}"
            except (OSError, TimeoutError, websockets.InvalidHandshake) as exc:
                reason = f"cannot connect ({_os_reason(exc)})"
            except websockets.ConnectionClosed as exc:
                reason = f"connection lost ({exc.rcvd.code if exc.rcvd else 1006})"
            else:
                kept.resumed()
                return ws, first, attempt
        offset = kept.confirmed_sec
        detail = (
            f"the connection was lost ({attempts[0].reason if attempts else reason}) and "
            f"could not be resumed: {len(attempts)} reconnects failed, the last: {reason}. "
            f"The finals received cover the audio up to {offset:.2f} s."
        )
        logger.info("%s", detail)
        raise ResumeFailed(detail, attempts, offset)

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


def _ended_early(ending: _Ending) -> StreamError:
    """The error for a connection that ended without the stream's ``complete``."""
    if ending.last_error is not None:
        # A fatal error is followed by its close; the error says why.
        return StreamError(ending.last_error.detail, ending.last_error.code)
    return StreamError(f"connection closed with code {ending.close_code} before complete")


def _busy_reason(exc: ServerBusy) -> str:
    where = "HTTP 503" if exc.retry_after is not None else str(TRY_AGAIN_LATER)
    return f"server busy ({where}, {exc.code})" if exc.code else f"server busy ({where})"


def _os_reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    errno = getattr(exc, "errno", None)
    return os.strerror(errno) if isinstance(errno, int) else str(exc) or type(exc).__name__


async def _iterate(
    audio: bytes | AsyncIterable[bytes], rate: int, chunk_ms: int
) -> AsyncGenerator[bytes, None]:
    if isinstance(audio, bytes | bytearray):
        for chunk in chunked(bytes(audio), rate, chunk_ms):
            yield chunk
    else:
        async for chunk in audio:
            yield chunk
