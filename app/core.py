"""The transport-neutral session core: every front door drives sessions through it.

A front door (the native `/ws/asr-stream`, and any protocol beside it) is a thin
adapter, a `Transport`, that only translates its wire format: it decodes what
the client sends into `Audio`, `Control` and `Invalid` inputs and the config
into a `StreamConfig`, and encodes the core's events (`Started`, transcripts,
errors, `complete`) into its own messages. Everything else lives here, once:
auth, admission (`app.admission`), the engine, limits (frame size, session
length, idle time), backpressure, the engine watchdog, drain, metrics and the
session's log lines — as python-websockets keeps its protocol apart from its
asyncio adapter.

Per session, one reader task takes the client's inputs; one writer task is
the only sender, so messages never interleave; a watchdog checks for a silent
client and a hung engine. Whichever ends first ends the others: the writer
after ``complete`` or a fatal error, the reader when the client goes away or
breaks the protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import os
import time
import uuid
from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypeVar

from starlette.datastructures import Headers, QueryParams
from starlette.requests import HTTPConnection

from app.admission import Admission, Pool
from app.asr.base import EngineInfo, Recognizer, RecognizerLoader, SupportsCheck
from app.asr.registry import Registry
from app.audio import PcmFramer
from app.auth import Authenticator
from app.capacity import CapacityEstimate, CapacityPolicy, busy_sessions
from app.errors import (
    ASRError,
    BackendFailure,
    CloseCode,
    FrameTooLarge,
    IdleTimeout,
    LimitError,
    ProtocolError,
    SessionTooLong,
    ShuttingDown,
    echo,
)
from app.malloc import Trimmer
from app.messages import StreamConfig
from app.metrics import Metrics, SessionFigures
from app.plan import SessionDefaults, SessionPlan, plan_session
from app.session import (
    CompleteEvent,
    EngineLoad,
    ErrorEvent,
    FlushedEvent,
    PassLoad,
    ProcessorRecognizer,
    SpeechEvent,
    StreamingSession,
    TranscriptEvent,
)
from app.settings import Settings

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

WATCHDOG_PERIOD_SEC = 1.0
# The reader stops reading a client while this many events wait for the writer (a
# client that floods bad messages and never reads made memory grow without bound).
MAX_UNSENT_EVENTS = 256
# A local stream with more audio than this waiting for the engine is behind (the lag
# goal is 3 s): when half the local streams are, admission refuses new ones.
BEHIND_SEC = 3.0
# At most one `engine_behind` notice per stream in this long, however its backlog swings.
ENGINE_BEHIND_REPEAT_SEC = 30.0


# --------------------------------------------------------------------------- the adapter's side


@dataclass(frozen=True)
class Audio:
    """Raw little-endian 16-bit mono PCM at the config's rate, as the client framed it."""

    data: bytes


@dataclass(frozen=True)
class Control:
    """``stop`` ends the audio, ``finalize`` makes what was heard final, ``keepalive`` nothing."""

    type: Literal["stop", "finalize", "keepalive"]


@dataclass(frozen=True)
class Invalid:
    """A client message the adapter could not take; a non-fatal error is answered, then ignored."""

    error: ASRError


Inbound = Audio | Control | Invalid


@dataclass(frozen=True)
class Started:
    """The engine is ready: the adapter says so in its own words (native: `metadata`)."""

    session_id: str
    plan: SessionPlan
    info: EngineInfo


Outbound = Started | TranscriptEvent | SpeechEvent | FlushedEvent | ErrorEvent | CompleteEvent


def client_address(connection: HTTPConnection) -> str:
    """The client's address as the ASGI server gives it.

    uvicorn puts the socket's peer there, or, when that peer is one of
    ``TRUSTED_PROXIES``, the client that proxy named in ``X-Forwarded-For``
    (`app.server` configures it; nobody is trusted by default).
    """
    return connection.client.host if connection.client else "unknown"


class OverHTTP:
    """What every door reads off the HTTP request its connection began with: the
    ``headers``, ``query_params`` and ``client`` of a `Transport`. A door sets
    ``self.connection`` (its WebSocket, or the request of a WebRTC offer)."""

    connection: HTTPConnection

    @property
    def headers(self) -> Headers:
        return self.connection.headers

    @property
    def query_params(self) -> QueryParams:
        return self.connection.query_params

    @property
    def client(self) -> str:
        return client_address(self.connection)


class ClientGone(Exception):
    """The client closed or dropped the connection."""


class Transport(Protocol):
    """One connection of one front door: its wire format, nothing else."""

    @property
    def headers(self) -> Headers: ...

    @property
    def query_params(self) -> QueryParams: ...

    @property
    def client(self) -> str:
        """The client's address: the socket's, or the one a trusted proxy named."""

    async def refuse(self, error: ASRError, retry_after: int) -> None:
        """Refuse before the upgrade (HTTP 400/401/403/503, with the error as a JSON body)."""

    def check_request(self) -> StreamConfig | None:
        """The door's own checks of the handshake (a query it cannot serve: raise
        `ConfigError`, answered 400 before the upgrade); after auth and admission.
        Returns the session's config when the request carries it (Deepgram's query,
        a WebRTC offer), so the core refuses what it cannot serve before the upgrade."""

    async def accept(self, subprotocol: str | None) -> None:
        """Complete the handshake."""

    async def receive_config(self) -> StreamConfig:
        """The session's config (raises `ASRError` for a bad one, `ClientGone`)."""

    async def receive(self) -> Inbound:
        """The client's next input (raises `ClientGone`, or `ASRError` for a fatal one)."""

    async def send(self, event: Outbound) -> None:
        """Send one event in the wire format (raises `ClientGone` if the client is gone)."""

    async def close(self, code: CloseCode) -> None:
        """Close after ``complete`` (or a fatal error), with this code."""

    async def fail(self, error: ASRError) -> None:
        """Tell the client a fatal error, then close; a client already gone is ignored."""


# --------------------------------------------------------------------------- the core


@dataclass
class Stream:
    """One session's state, shared by its reader, writer and watchdog."""

    session: StreamingSession
    plan: SessionPlan
    framer: PcmFramer
    pool: Pool = Pool.LOCAL
    stopped: bool = False
    close_code: CloseCode = CloseCode.NORMAL  # after `complete`
    end_reason: str | None = None  # the code of a limit or shutdown that ended the stream
    told_stopped: bool = False  # audio/control after the end is answered once, then ignored
    behind: bool = False  # warned that the engine is behind
    behind_told_at: float = -math.inf  # monotonic time of the last engine_behind notice
    # (seconds of input audio so far, when that audio arrived): for the lag of finals.
    arrivals: deque[tuple[float, float]] = field(default_factory=deque)
    figures: SessionFigures = field(default_factory=SessionFigures)  # for the closing log line
    last_heard: float = field(default_factory=time.monotonic)  # the client's last message
    held_back: bool = False  # the server is not reading (backpressure): no idle timer
    taken: asyncio.Event = field(default_factory=asyncio.Event)  # the writer took an event

    def arrival_of(self, stream_time: float) -> float | None:
        """When the audio at ``stream_time`` reached the server (finals come in order)."""
        while len(self.arrivals) > 1 and self.arrivals[0][0] < stream_time:
            self.arrivals.popleft()
        return self.arrivals[0][1] if self.arrivals else None


class SessionCore:
    """The node's sessions, whatever door they came in by; one instance per app."""

    def __init__(
        self, settings: Settings, registry: Registry, metrics: Metrics | None = None
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.metrics = metrics or Metrics()
        self.auth = Authenticator(settings)
        self.defaults = SessionDefaults.from_settings(settings)
        self.streams: dict[str, Stream] = {}
        self._no_streams = asyncio.Event()
        self._no_streams.set()
        self._drain_task: asyncio.Task[None] | None = None
        self.trimmer = Trimmer()
        # Local engines add preview passes while at most one session per two cores streams.
        cores = len(os.sched_getaffinity(0))
        workers = settings.whisper_num_workers or cores
        policy = CapacityPolicy(
            workers=workers,
            ceiling=settings.max_sessions,
            override=settings.local_capacity or None,
        )
        self.engine_load = EngineLoad(
            light_sessions=max(1, cores // 2),
            passes=workers,
            # Until the start-up pass is timed (`app.main`), or as the operator set it.
            busy_sessions=settings.busy_sessions or busy_sessions(policy, None),
        )
        load = self.engine_load
        self.metrics.watch_engine_turns(
            lambda: load.waiting, lambda: load.running, lambda: load.busy, lambda: load.speaking
        )
        self.admission = Admission(
            settings, CapacityEstimate(policy, busy_sessions=lambda: load.busy_sessions)
        )
        self.admission.behind = self.local_streams_behind
        self.metrics.watch_admission(self.admission)

    @property
    def active(self) -> list[StreamingSession]:
        """The sessions streaming now."""
        return [stream.session for stream in self.streams.values()]

    @property
    def draining(self) -> bool:
        return self.admission.draining

    def local_streams_behind(self) -> bool:
        """Half or more of the local-engine streams (two at least) have over `BEHIND_SEC`
        of audio waiting for the engine: it does not keep up, whatever the estimate
        says. One stream behind is a client sending faster than real time."""
        local = [s for s in self.streams.values() if s.pool is Pool.LOCAL and not s.stopped]
        behind = sum(s.session.handoff.queued_seconds > BEHIND_SEC for s in local)
        return behind >= 2 and 2 * behind >= len(local)

    @property
    def default_pool(self) -> Pool:
        """The pool of the default backend: what the door checks (most sessions use it)."""
        return self.pool_of(self.defaults.backend)

    def pool_of(self, backend: str) -> Pool:
        """Local engines spend this node's cores; an engine with its own loop (Google) not."""
        loader = self.registry.get_loader(backend)
        return Pool.REMOTE if isinstance(loader, RecognizerLoader) else Pool.LOCAL

    # -- connection ------------------------------------------------------------

    async def serve(self, transport: Transport) -> None:
        """One connection, from its handshake to its close."""
        try:
            creds = self.auth.check(transport.headers, transport.query_params)
            # Before the upgrade: a full or draining node answers 503, so a balancer
            # can send the connection to another node (DESIGN.md §2).
            client = transport.client
            self.admission.check_door(self.default_pool, client)
            early = transport.check_request()
            plan = None if early is None else await self._preflight(early)
        except ASRError as exc:
            self.metrics.errors.labels(exc.code).inc()
            logger.info("refused a connection: %s", exc.code)
            await transport.refuse(exc, self.admission.retry_after)
            return
        session_id = uuid.uuid4().hex[:12]
        session: StreamingSession | None = None
        pool: Pool | None = None  # the pool whose slot this session holds
        outcome = "error"
        figures = SessionFigures()
        try:
            with self.admission.pending_connection(client):
                await transport.accept(creds.subprotocol)
                if plan is None:
                    config = await self._receive_config(transport)
                    plan = plan_session(config, self.settings, self.registry, self.defaults)
                # The engine is known now: its pool must have room (else 1013, the fallback).
                wanted = self.pool_of(plan.request.backend)
                self.admission.admit(wanted, client)
                pool = wanted
            session, info = await self._open_session(session_id, plan, figures)
            await self._send(transport, Started(session_id, plan, info))
            logger.info(
                "[%s] started: backend=%s model=%s language=%s rate=%d",
                session_id,
                info.backend,
                echo(info.model),  # an engine may take any name a client sends
                echo(plan.language_code),  # well-formed and bounded, yet the client's text
                plan.sample_rate_hertz,
            )
            framer = PcmFramer(plan.sample_rate_hertz)
            stream = Stream(session, plan, framer, pool=wanted, figures=figures)
            self.streams[session_id] = stream
            self._no_streams.clear()
            outcome = await self._stream(transport, stream)
        except ASRError as exc:
            logger.info("[%s] %s: %s", session_id, exc.code, exc.detail)
            self.metrics.errors.labels(exc.code).inc()
            await transport.fail(exc)
        except ClientGone:
            logger.info("[%s] client disconnected", session_id)
            outcome = "disconnected"
        except Exception:
            logger.exception("[%s] unexpected failure", session_id)
            self.metrics.errors.labels("internal_error").inc()
            await transport.fail(ASRError("The server failed on this session."))
        finally:
            if pool is not None:
                self.admission.release(pool, client)
            if session is not None:
                self.streams.pop(session_id, None)
                if not self.streams:
                    self._no_streams.set()
                self.metrics.active_sessions.dec()
                self.metrics.sessions.labels(outcome).inc()
                await session.close(self.settings.session_close_timeout_sec)
                logger.info("[%s] closed (%s): %s", session_id, outcome, figures.summary())
            if session is None:
                logger.info("[%s] closed (%s)", session_id, outcome)

    async def _preflight(self, config: StreamConfig) -> SessionPlan:
        """Plan a config the request carried, and let its engine refuse what it cannot
        serve (a language its model lacks, a model it does not have) without loading a
        model: a 400 before the upgrade, which a vendor's SDK reports as one."""
        plan = plan_session(config, self.settings, self.registry, self.defaults)
        loader = self.registry.get_loader(plan.request.backend)
        if isinstance(loader, SupportsCheck):
            # Resolving a model may touch the disk (the `base` parts are joined once).
            await asyncio.to_thread(loader.check, plan.request)
        return plan

    async def _receive_config(self, transport: Transport) -> StreamConfig:
        timeout = self.settings.config_timeout_sec
        try:
            return await asyncio.wait_for(transport.receive_config(), timeout)
        except TimeoutError:
            raise ProtocolError(
                f"No config message arrived within {timeout:g} s of connecting.",
                code="config_timeout",
            ) from None

    async def _open_session(
        self, session_id: str, plan: SessionPlan, figures: SessionFigures
    ) -> tuple[StreamingSession, EngineInfo]:
        loader = self.registry.get_loader(plan.request.backend)
        recognizer: Recognizer
        if isinstance(loader, RecognizerLoader):
            recognizer, info = await asyncio.to_thread(
                loader.open_recognizer, plan.request, plan.sample_rate_hertz
            )
        else:
            processor, info = await asyncio.to_thread(loader.load, plan.request)

            def observe(audio_sec: float, spent_sec: float, load: PassLoad) -> None:
                self._observe_pass(audio_sec, spent_sec, load)
                figures.add_pass(audio_sec, spent_sec)

            recognizer = ProcessorRecognizer(
                processor,
                info,
                interim=plan.interim_results,
                observer=observe,
                load=self.engine_load,
            )
        session = StreamingSession(
            session_id,
            recognizer,
            asyncio.get_running_loop(),
            queue_seconds=self.settings.audio_queue_seconds,
            sample_rate=plan.sample_rate_hertz,
        )
        session.start()
        self.metrics.active_sessions.inc()
        return session, info

    def _observe_pass(self, audio_sec: float, spent_sec: float, load: PassLoad) -> None:
        """Recognition thread: one engine pass done (prometheus_client is thread-safe)."""
        self.metrics.audio_transcribed.inc(audio_sec)
        self.metrics.engine_rtf.observe(spent_sec / audio_sec)
        if load != "light":  # a light engine's previews stop as streams are added
            self.admission.estimate.observe(audio_sec, spent_sec, busy=load == "busy")
        self.trimmer.maybe_trim()  # hand the pass's freed buffers back (app/malloc.py)

    # -- streaming ---------------------------------------------------------------

    async def _stream(self, transport: Transport, stream: Stream) -> str:
        reader = asyncio.create_task(self._read(transport, stream))
        writer = asyncio.create_task(self._write(transport, stream))
        watchdog = asyncio.create_task(self._watch(stream))
        tasks = (writer, reader, watchdog)
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            if task not in done:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        # Read every failure here, so none is logged as "never retrieved": when the writer
        # sent `complete`, whatever the reader saw is moot (the client closing as
        # `complete` arrives ends both at once); else the first one found is raised below.
        for task in done:
            if not task.cancelled():
                task.exception()
        if writer in done and writer.exception() is None:
            return stream.end_reason or "completed"
        for task in tasks:
            if task in done:
                task.result()  # re-raise ClientGone / ASRError
        return "error"

    async def _read(self, transport: Transport, stream: Stream) -> None:
        # No timer per message (the watchdog task checks for silence): rescheduling
        # one on every frame was a tenth of the event loop's time with 100 sessions.
        while True:
            if stream.session.events.qsize() > MAX_UNSENT_EVENTS:
                await _held_back(stream, _writer_catches_up(stream))
            message = await transport.receive()
            stream.last_heard = time.monotonic()
            if isinstance(message, Audio):
                await self._on_audio(stream, message.data)
                continue
            if isinstance(message, Invalid):
                self._notify(stream, message.error)
                continue
            control = message
            if control.type == "keepalive":
                continue  # receiving it reset the idle timer
            if stream.stopped:
                self._tell_stopped(stream, "already_stopped")
            elif control.type == "finalize":
                stream.session.handoff.flush()
            else:
                self._end(stream, None)

    async def _on_audio(self, stream: Stream, data: bytes) -> None:
        settings, metrics = self.settings, self.metrics
        if len(data) > settings.max_frame_bytes:
            raise FrameTooLarge(
                f"An audio frame of {len(data)} bytes exceeds the limit of "
                f"{settings.max_frame_bytes} bytes; send smaller frames (100 ms is typical)."
            )
        if stream.stopped:
            self._tell_stopped(stream, "audio_after_stop")
            return
        if not data:
            self._notify(
                stream,
                ProtocolError(
                    "An empty audio frame was ignored; frames carry at least 2 bytes.",
                    code="empty_frame",
                    fatal=False,
                ),
            )
            return
        framer = stream.framer
        before = framer.seconds_in
        pcm = framer.frame(data)
        metrics.audio_received.inc(framer.seconds_in - before)
        stream.arrivals.append((framer.seconds_in, time.monotonic()))
        backlog = stream.session.handoff.queued_seconds
        now = time.monotonic()
        if (
            backlog > settings.max_backlog_sec
            and not stream.behind
            # A pass takes the whole queue, so a client sending in a burst empties it at
            # every pass: without a pause, each pass started an "episode" (10 in 36 s).
            and now - stream.behind_told_at >= ENGINE_BEHIND_REPEAT_SEC
        ):
            stream.behind = True
            stream.behind_told_at = now
            self._notify(
                stream,
                LimitError(
                    f"The engine is {backlog:.0f} s behind this stream. Audio is queued, not "
                    "dropped; if the queue fills, the server reads this socket more slowly "
                    "until the engine catches up.",
                    code="engine_behind",
                    fatal=False,
                ),
            )
        elif backlog < settings.max_backlog_sec / 2:
            stream.behind = False
        await _held_back(stream, stream.session.put_audio(pcm))
        if framer.seconds_in > settings.max_session_sec:
            self._end(
                stream,
                SessionTooLong(
                    f"The session reached its limit of {settings.max_session_sec:g} s of audio; "
                    "what was heard is final below, later audio was not taken. Open a new session "
                    "to go on."
                ),
            )

    def _end(self, stream: Stream, reason: ASRError | None) -> None:
        """Finish the stream: last finals, `complete`, then close (1000, or the reason's code)."""
        if stream.stopped:
            return
        stream.stopped = True
        if reason is not None:
            logger.info("[%s] ending: %s", stream.session.session_id, reason.code)
            stream.end_reason = reason.code
            stream.close_code = reason.close_code or CloseCode.NORMAL
            stream.session.events.put_nowait(ErrorEvent(_as_notice(reason)))
        stream.session.stop()

    def _tell_stopped(self, stream: Stream, code: str) -> None:
        """Answer the first message after the end, once; ignore the rest (not one per frame)."""
        if stream.told_stopped:
            return
        stream.told_stopped = True
        why = (
            f"the server ended it ({stream.end_reason})"
            if stream.end_reason
            else "'stop' was received"
        )
        self._notify(
            stream,
            ProtocolError(
                f"The session is finishing because {why}; later audio and messages are "
                "ignored. Open a new session to send more.",
                code=code,
                fatal=False,
            ),
        )

    def _notify(self, stream: Stream, error: ASRError) -> None:
        """Send a non-fatal error through the writer (the only sender)."""
        stream.session.events.put_nowait(ErrorEvent(error))

    async def _write(self, transport: Transport, stream: Stream) -> None:
        session = stream.session
        while True:
            event = await session.events.get()
            stream.taken.set()
            if isinstance(event, TranscriptEvent):
                if not event.is_final and stream.stopped:
                    continue  # finishing (stop, a limit): only the last finals and complete follow
                if event.is_final:
                    arrived = stream.arrival_of(event.span.end)
                    if arrived is not None:
                        lag = time.monotonic() - arrived
                        self.metrics.final_lag.observe(lag)
                        stream.figures.add_lag(lag)
                await self._send(transport, resumed(event, stream.plan.stream_offset_sec))
            elif isinstance(event, SpeechEvent | FlushedEvent):
                await self._send(transport, resumed(event, stream.plan.stream_offset_sec))
            elif isinstance(event, ErrorEvent):
                if event.error.fatal:
                    raise event.error
                self.metrics.errors.labels(event.error.code).inc()
                await self._send(transport, event)
            elif isinstance(event, CompleteEvent):
                await self._send(transport, event)
                with contextlib.suppress(Exception):
                    await transport.close(stream.close_code)
                logger.info("[%s] complete", session.session_id)
                return

    async def _send(self, transport: Transport, event: Outbound) -> None:
        """One event to the client, within ``SEND_TIMEOUT_SEC``: a client that stops reading
        longer is dropped."""
        within = self.settings.send_timeout_sec
        try:
            # asyncio.timeout, not wait_for: no task per message.
            async with asyncio.timeout(within):
                await transport.send(event)
        except TimeoutError:
            logger.info("a client stopped reading for %s s; dropping the connection", within)
            raise ClientGone from None

    async def _watch(self, stream: Stream) -> None:
        """Every second (or quarter of the idle limit): a silent client, a hung engine.

        Its own task, so the writer waits on events without a timer per event.
        """
        period = min(WATCHDOG_PERIOD_SEC, self.settings.idle_timeout_sec / 4)
        while True:
            await asyncio.sleep(period)
            self._check_engine(stream.session)
            self._check_idle(stream)

    def _check_idle(self, stream: Stream) -> None:
        """End a stream whose client has sent nothing for ``IDLE_TIMEOUT_SEC``."""
        limit = self.settings.idle_timeout_sec
        if stream.held_back:  # the client may be sending: the server is not reading
            return
        if not stream.stopped and time.monotonic() - stream.last_heard > limit:
            self._end(
                stream,
                IdleTimeout(
                    f"No audio or message for {limit:g} s; the session was ended. "
                    'Send {"type": "keepalive"} to keep a quiet stream open.'
                ),
            )

    def _check_engine(self, session: StreamingSession) -> None:
        limit = self.settings.engine_pass_timeout_sec
        if session.busy_for() > limit:
            logger.error("[%s] engine pass hung for over %.0f s", session.session_id, limit)
            raise BackendFailure(
                f"The recognition engine did not answer within {limit:g} s; the session was "
                "closed. Other sessions are not affected; please reconnect.",
                code="engine_timeout",
            )

    # -- shutdown ------------------------------------------------------------------

    def start_drain(self, grace_sec: float) -> asyncio.Task[None]:
        """Begin draining (once; later calls get the same task): see `drain`."""
        if self._drain_task is None:
            logger.info("draining %d sessions (grace %.0f s)", len(self.streams), grace_sec)
            self._drain_task = asyncio.get_running_loop().create_task(self.drain(grace_sec))
        return self._drain_task

    async def drain(self, grace_sec: float) -> None:
        """Refuse new sessions; let running ones finish for ``grace_sec``; then end them (1012)."""
        self.admission.draining = True
        await self._until_no_streams(grace_sec)
        for stream in list(self.streams.values()):
            self._end(
                stream,
                ShuttingDown(
                    "The server is restarting; what was heard is final, please reconnect."
                ),
            )
        await self._until_no_streams(self.settings.session_close_timeout_sec)

    async def _until_no_streams(self, limit_sec: float) -> None:
        if self.streams:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._no_streams.wait(), limit_sec)


def _as_notice(error: ASRError) -> ASRError:
    """The same error as a message that does not end the session by itself."""
    return ASRError(error.detail, code=error.code, fatal=False)


async def _held_back(stream: Stream, waiting: Awaitable[_T]) -> _T:
    """Await backpressure: the server does not read the client meanwhile.

    The idle timer does not run then, and starts again from when reading resumes.
    """
    stream.held_back = True
    try:
        return await waiting
    finally:
        stream.held_back = False
        stream.last_heard = time.monotonic()


TimedEvent = TranscriptEvent | SpeechEvent | FlushedEvent


def resumed(event: TimedEvent, offset: float) -> TimedEvent:
    """The event in the client's stream time: a resumed stream's times go on from its
    ``stream_offset_sec`` (the engine counts from this connection's first sample)."""
    if not offset:
        return event
    if isinstance(event, SpeechEvent | FlushedEvent):
        return dataclasses.replace(event, at=event.at + offset)
    span = event.span
    words = tuple(w._replace(start=w.start + offset, end=w.end + offset) for w in span.words)
    moved = dataclasses.replace(span, start=span.start + offset, end=span.end + offset, words=words)
    return dataclasses.replace(event, span=moved)


async def _writer_catches_up(stream: Stream) -> None:
    """Until at most `MAX_UNSENT_EVENTS` wait for the writer (a slow or stuck client)."""
    while stream.session.events.qsize() > MAX_UNSENT_EVENTS:
        stream.taken.clear()
        await stream.taken.wait()
