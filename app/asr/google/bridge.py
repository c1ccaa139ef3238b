"""One session's bridge to Google: `AudioHandoff` → ``streaming_recognize`` → events.

The session's recognition thread runs `GoogleRecognizer.run`, a loop of
Google streams ("generations"). Each generation is one
``SpeechClient.streaming_recognize`` call::

    recognition thread                         gRPC request thread (one per call)
    ------------------                         ----------------------------------
    call = streaming_recognize(config, ──────► _requests(gen): the replay buffer,
                               _requests(gen))   then live audio taken from the
    for response in call: emit events            AudioHandoff, ≤ 25,000 B per request
    trim the replay buffer at each final

Why a loop of streams (Google's limits page; "endless streaming" sample):

* Google ends a stream after about 305 s (``OUT_OF_RANGE: Exceeded maximum
  allowed stream duration``). A generation ends itself after
  ``GOOGLE_RESTART_SEC`` of audio or wall time, and the next one starts by
  resending the audio after the last final, so the client sees no gap.
  Google's times restart at 0 on each stream; the bridge adds the stream's
  start offset, so times stay continuous.
* ``UNAVAILABLE`` / ``DEADLINE_EXCEEDED`` mid-stream: reconnect with
  exponential backoff, resending the unfinalised audio, at most
  ``GOOGLE_MAX_RECONNECTS`` times in a row without progress.
* Google times out a stream that receives no audio for ~10 s. After
  ``GOOGLE_IDLE_RESTART_SEC`` without audio the bridge half-closes the
  stream (Google sends its last finals for everything it got) and opens the
  next one only when audio comes again. Sending silence instead would be
  billed and would add audio the client never sent.
* A client's finalize half-closes the stream after the audio before it (the
  hand-off's flush mark); once Google has answered with its last finals the
  bridge emits `FlushedEvent`. If that stream fails first, the next one
  resends what is not final and half-closes again.

Known traps of the client library, each handled here: the default retry
replays a half-consumed request generator (so ``retry=None``); the call
blocks until Google's first response and raises errors that come before it
itself; the request generator runs on a gRPC thread and must never block for
good (it polls the hand-off with a timeout and a stop flag); Google's times
are `datetime.timedelta` through proto-plus (the bridge reads the raw protobuf
``Duration``, which is ten times cheaper).
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

import grpc
from google.api_core import exceptions as google_exceptions
from google.api_core.retry import exponential_sleep_generator
from google.cloud.speech_v1 import SpeechClient
from google.cloud.speech_v1.types import cloud_speech

from app.asr.base import TextSpan, TimedWord
from app.asr.google.replay import ReplayBuffer, split_requests
from app.audio import BYTES_PER_SAMPLE
from app.errors import (
    ASRError,
    BackendFailure,
    GoogleCredentialsError,
    GoogleInvalidArgument,
    GooglePermissionDenied,
    GoogleQuotaExceeded,
    GoogleUnavailable,
)
from app.session import AudioHandoff, CompleteEvent, Emit, FlushedEvent, TranscriptEvent

logger = logging.getLogger(__name__)

POLL_SEC = 0.25
"""Longest the request generator waits on the hand-off before it looks at its stop flag
(and at the idle and restart limits). Audio and aborts wake it at once; a longer
poll means fewer wake-ups of quiet sessions, each one taking the GIL."""

FINISH_GRACE_SEC = 30.0
"""Deadline of a call past the generation's own limit: time for Google's last results."""

MAX_REPLAY_SEC = 30.0
"""A restart resends at most this much unfinalised audio (and at most half of
``GOOGLE_RESTART_SEC``); with more (long speech or noise Google never
finalises), the stream is half-closed instead, so Google finalises it."""

BACKOFF_MAX_SEC = 10.0
STABILITY_DECIMALS = 3

_RETRYABLE = (google_exceptions.ServiceUnavailable, google_exceptions.DeadlineExceeded)
_STATUS_BY_NUMBER = {status.value[0]: status for status in grpc.StatusCode}


class HelperStreaming(Protocol):
    """``SpeechClient.streaming_recognize`` as the library's helper defines it: config first.

    (The package shadows the generated client with a helper subclass; type checkers
    see the generated signature, which takes the config inside the requests.)
    """

    def streaming_recognize(
        self,
        config: cloud_speech.StreamingRecognitionConfig,
        requests: Iterator[cloud_speech.StreamingRecognizeRequest],
        *,
        retry: None,
        timeout: float,
    ) -> Iterable[cloud_speech.StreamingRecognizeResponse]: ...


class ClientSource(Protocol):
    """Where a session gets its `SpeechClient` (a pooled channel) and gives it back."""

    def acquire(self) -> tuple[SpeechClient, Callable[[], None]]: ...


@dataclass(frozen=True)
class BridgeTimings:
    """The bridge's limits (settings ``GOOGLE_*``), in seconds and attempts."""

    restart_sec: float = 290.0
    idle_sec: float = 8.0
    max_reconnects: int = 5
    backoff_sec: float = 0.5


class Ending(enum.Enum):
    """Why a generation's request generator stopped sending."""

    END = "end"  # the client sent stop: half-close, last finals, complete
    FLUSH = "flush"  # the client sent finalize: half-close, then go on lazily
    IDLE = "idle"  # no audio for GOOGLE_IDLE_RESTART_SEC: half-close, reopen lazily
    DRAIN = "drain"  # restart limit, long unfinalised tail: half-close, then reopen
    RESTART = "restart"  # restart limit: cancel, resend what is not final
    ABORT = "abort"  # the session was dropped


class Outcome(enum.Enum):
    """How a generation's call ended, as the recognition loop acts on it."""

    DONE = "done"  # Google finished after our half-close: everything sent is covered
    RESTART = "restart"  # ended early on purpose or by Google: resend what is not final
    OUT_OF_RANGE = "out_of_range"  # Google's stream limit or audio timeout: resend
    RETRY = "retry"  # transient failure: back off, reconnect, resend
    ABORTED = "aborted"


class Generation:
    """One ``streaming_recognize`` call: where its audio starts, what it sent, how it ends."""

    def __init__(self, index: int, start_sample: int, replay: list[bytes]) -> None:
        self.index = index
        self.start_sample = start_sample
        self.replay = replay
        self.opened = time.monotonic()
        self.sent_samples = 0
        self.responses = 0
        self.stop = threading.Event()  # recognition thread → generator: take no more audio
        self.finished = False  # the generator handed over all it took, then half-closed
        self.ending: Ending | None = None
        self.flushes = False  # it half-closes for a finalize (with the end, or alone)
        self._lock = threading.Lock()
        self._call: Any = None
        self._cancel = False

    def attach(self, call: Any) -> None:
        """The call object, once ``streaming_recognize`` returned it; cancel if asked already."""
        with self._lock:
            self._call = call
            cancel = self._cancel
        if cancel:
            call.cancel()

    def cancel(self) -> None:
        """Cancel the call now, or as soon as it is attached (before Google's first response)."""
        with self._lock:
            self._cancel = True
            call = self._call
        if call is not None:
            call.cancel()

    @property
    def cancelled(self) -> bool:
        return self._cancel


class GoogleRecognizer:
    """A session's `Recognizer` for the ``google`` backend (see the module docstring)."""

    def __init__(
        self,
        clients: ClientSource,
        config: cloud_speech.StreamingRecognitionConfig,
        sample_rate: int,
        timings: BridgeTimings,
    ) -> None:
        self._clients = clients
        self._config = config
        self._rate = sample_rate
        self._timings = timings
        self._restart_samples = int(timings.restart_sec * sample_rate)
        self._max_replay_samples = int(min(MAX_REPLAY_SEC, timings.restart_sec / 2) * sample_rate)
        self._call_timeout = timings.restart_sec + FINISH_GRACE_SEC
        self._poll_sec = min(POLL_SEC, timings.idle_sec / 4)
        self._buffer = ReplayBuffer()
        # The hand-off has one consumer at a time: the running generation's request
        # generator, or this thread between generations. Whoever takes holds this lock
        # and records the audio in the replay buffer before letting go.
        self._take_lock = threading.Lock()
        self._ended = False
        self._flush_pending = False
        self._last_final_end = 0.0
        self._last_interim = ""
        self._sid = "-"
        self.generations = 0
        self.reconnects = 0

    # -- recognition thread --------------------------------------------------------

    def run(self, handoff: AudioHandoff, emit: Emit) -> None:
        self._sid = threading.current_thread().name.removeprefix("asr-")
        client, release = self._clients.acquire()
        try:
            self._loop(client, handoff, emit)
        finally:
            release()

    def _loop(self, client: SpeechClient, handoff: AudioHandoff, emit: Emit) -> None:
        failures = 0
        backoff = self._backoff()
        # The first stream opens at once, audio or not, so that Google's verdict on
        # the config (language, model, rate) reaches the client right after `metadata`.
        eager = True
        while not handoff.aborted:
            if not self._buffer.samples and not eager:
                if self._ended:
                    emit(CompleteEvent())
                    return
                self._wait_for_audio(handoff, emit)  # a new Google stream opens only with audio
                continue
            eager = False
            gen = self._open_generation()
            outcome, error = self._stream(client, gen, handoff, emit)
            if gen.flushes and outcome is not Outcome.ABORTED:
                self._after_flush(outcome, emit)
            logger.debug(
                "[%s] google stream %d ended: %s (%s)",
                self._sid,
                gen.index,
                outcome.value,
                gen.ending.value if gen.ending else "-",
            )
            if outcome is Outcome.ABORTED:
                return
            if gen.responses:  # Google answered: the stream made progress
                failures = 0
                backoff = self._backoff()
            if outcome is Outcome.OUT_OF_RANGE:
                logger.info("[%s] google ended stream %d (%s)", self._sid, gen.index, error)
                if gen.responses:
                    continue
            if outcome in (Outcome.RETRY, Outcome.OUT_OF_RANGE):
                failures += 1
                if failures > self._timings.max_reconnects:
                    raise GoogleUnavailable(
                        f"Google Speech-to-Text could not be reached after "
                        f"{self._timings.max_reconnects} reconnects ({error}); the finals so "
                        "far were sent. Try again later."
                    )
                delay = next(backoff)
                logger.info(
                    "[%s] google stream %d failed (%s); reconnect %d in %.2f s, resending %.2f s",
                    self._sid,
                    gen.index,
                    error,
                    failures,
                    delay,
                    self._buffer.samples / self._rate,
                )
                self.reconnects += 1
                self._sleep(delay, handoff)

    def _backoff(self) -> Iterator[float]:
        backoff: Iterator[float] = exponential_sleep_generator(
            self._timings.backoff_sec, BACKOFF_MAX_SEC, 2.0
        )
        return backoff

    def _wait_for_audio(self, handoff: AudioHandoff, emit: Emit) -> None:
        with self._take_lock:
            batch = handoff.take(timeout=self._poll_sec)
            if batch.aborted:
                return
            self._buffer.append(batch.pcm)
            self._ended = self._ended or batch.ended
        if batch.flush:
            if batch.pcm:
                self._flush_pending = True  # the next stream sends it, then half-closes
            else:  # Google has made everything before it final already
                emit(FlushedEvent(self._buffer.end / self._rate))

    def _after_flush(self, outcome: Outcome, emit: Emit) -> None:
        """A stream that half-closed for a finalize has ended."""
        if outcome is Outcome.DONE or not self._buffer.samples:
            # Google's last finals cover every sample up to the finalize's mark.
            emit(FlushedEvent(self._buffer.end / self._rate))
        else:  # it failed first: the next stream resends what is not final, then half-closes
            self._flush_pending = True

    def _open_generation(self) -> Generation:
        # Under the take lock: the previous generator can take nothing more, and
        # whatever it took is already in the buffer, so the snapshot is complete.
        with self._take_lock:
            start, replay = self._buffer.snapshot()
        self.generations += 1
        return Generation(self.generations - 1, start, replay)

    def _stream(
        self, client: SpeechClient, gen: Generation, handoff: AudioHandoff, emit: Emit
    ) -> tuple[Outcome, str]:
        try:
            # Blocks until Google's first response; errors before it are raised here.
            call = cast(HelperStreaming, client).streaming_recognize(
                self._config,
                self._requests(gen, handoff),
                retry=None,
                timeout=self._call_timeout,
            )
            gen.attach(call)
            for response in call:
                if handoff.aborted:
                    gen.cancel()
                    return Outcome.ABORTED, ""
                self._on_response(gen, response, emit)
        except google_exceptions.GoogleAPICallError as exc:
            return self._classify(gen, exc, handoff)
        finally:
            gen.stop.set()
        if handoff.aborted:
            return Outcome.ABORTED, ""
        if gen.finished:
            # Google answered our half-close: it has recognised all we sent.
            self._buffer.trim(gen.start_sample + gen.sent_samples)
            return Outcome.DONE, ""
        return Outcome.RESTART, "ended before the audio did"

    def _classify(
        self, gen: Generation, exc: google_exceptions.GoogleAPICallError, handoff: AudioHandoff
    ) -> tuple[Outcome, str]:
        status = _status_name(exc)
        if handoff.aborted or gen.ending is Ending.ABORT:
            return Outcome.ABORTED, status
        if isinstance(exc, google_exceptions.Cancelled) and gen.cancelled:
            return Outcome.RESTART, status  # we cancelled it to restart
        if isinstance(exc, google_exceptions.OutOfRange):
            return Outcome.OUT_OF_RANGE, f"{status}: {_google_message(exc)}"
        if isinstance(exc, _RETRYABLE):
            if "metadata from plugin" in str(exc.message):
                # google-auth could not get a token: grpc reports it as UNAVAILABLE.
                logger.warning("[%s] google credentials failed: %s", self._sid, exc.message)
                raise _credentials_rejected() from None
            return Outcome.RETRY, status
        raise _fatal(exc, self._sid) from None

    # -- responses (recognition thread) ---------------------------------------------

    def _on_response(
        self, gen: Generation, response: cloud_speech.StreamingRecognizeResponse, emit: Emit
    ) -> None:
        gen.responses += 1
        # Read the raw protobuf: proto-plus wrappers cost ~10x more per field read
        # (55 µs against 5 µs for a two-word final), time the recognition thread
        # holds the GIL that every other session is waiting for.
        raw: Any = cloud_speech.StreamingRecognizeResponse.pb(response)
        if raw.error.code:
            status = _STATUS_BY_NUMBER.get(raw.error.code, grpc.StatusCode.UNKNOWN)
            error: google_exceptions.GoogleAPICallError = google_exceptions.from_grpc_status(  # type: ignore[no-untyped-call]
                status, raw.error.message
            )
            raise error
        offset = gen.start_sample / self._rate
        interims = []
        for result in raw.results:
            if result.is_final:
                self._on_final(gen, offset, result, emit)
            elif result.alternatives:
                interims.append(result)
        if interims:
            self._on_interim(offset, interims, emit)

    def _on_final(self, gen: Generation, offset: float, result: Any, emit: Emit) -> None:
        """A final ``StreamingRecognitionResult`` (raw protobuf)."""
        best = result.alternatives[0] if result.alternatives else None
        result_end = _seconds(result.result_end_time)
        if best is not None and best.words:
            result_end = max(result_end, _seconds(best.words[-1].end_time))
        # Everything up to the end of a final is recognised for good: never resend it.
        self._buffer.trim(gen.start_sample + round(result_end * self._rate))
        end = max(offset + result_end, self._last_final_end)
        start = self._last_final_end
        self._last_final_end = end
        self._last_interim = ""
        if best is None or not best.transcript.strip():
            return
        words = tuple(
            TimedWord(
                offset + _seconds(w.start_time),
                offset + _seconds(w.end_time),
                w.word,
                w.confidence or None,
            )
            for w in best.words
        )
        if words:
            start = min(words[0].start, end)
        # Google's 0.0 confidence is its sentinel for "not set".
        span = TextSpan(start, end, best.transcript, words, best.confidence or None)
        emit(TranscriptEvent(span, is_final=True))

    def _on_interim(self, offset: float, results: Sequence[Any], emit: Emit) -> None:
        """Interim ``StreamingRecognitionResult``s of one response (raw protobuf)."""
        # Google may split its guess into a stable part and an unstable one; the
        # wire interim is the whole guess, as stable as its least stable part.
        text = "".join(r.alternatives[0].transcript for r in results)
        if not text.strip() or text == self._last_interim:
            return
        self._last_interim = text
        stabilities = [r.stability for r in results if r.stability > 0]  # 0.0: not set
        stability = round(min(stabilities), STABILITY_DECIMALS) if stabilities else None
        end = offset + max(_seconds(r.result_end_time) for r in results)
        start = self._last_final_end
        span = TextSpan(start, max(end, start), text, stability=stability)
        emit(TranscriptEvent(span, is_final=False))

    # -- request generator (gRPC thread) ---------------------------------------------

    def _requests(
        self, gen: Generation, handoff: AudioHandoff
    ) -> Iterator[cloud_speech.StreamingRecognizeRequest]:
        """Audio requests of one generation; the client library sends the config first.

        Runs on gRPC's request thread. It must never block for good: it waits on
        the hand-off at most `POLL_SEC` at a time and stops when ``gen.stop`` is
        set. Returning half-closes the stream; Google then sends its last finals.
        """
        for data in gen.replay:
            for piece in split_requests(data):
                if gen.stop.is_set():
                    return
                gen.sent_samples += len(piece) // BYTES_PER_SAMPLE
                yield cloud_speech.StreamingRecognizeRequest(audio_content=piece)
        if self._flush_pending:  # a finalize that came while no stream was open
            self._flush_pending = False
            gen.ending = Ending.FLUSH
            gen.flushes = gen.finished = True
            return
        last_audio = time.monotonic()
        while True:
            with self._take_lock:
                if gen.stop.is_set():
                    return
                batch = handoff.take(timeout=self._poll_sec)
                if batch.aborted:
                    gen.ending = Ending.ABORT
                    gen.cancel()
                    return
                data = batch.pcm
                self._buffer.append(data)
                self._ended = self._ended or batch.ended
                gen.flushes = batch.flush
            now = time.monotonic()
            if data:
                last_audio = now
                for piece in split_requests(data):
                    gen.sent_samples += len(piece) // BYTES_PER_SAMPLE
                    yield cloud_speech.StreamingRecognizeRequest(audio_content=piece)
            ending = self._ending(gen, batch.ended, batch.flush, now, last_audio)
            if ending is not None:
                gen.ending = ending
                # Everything taken was handed over: if Google still completes the
                # call normally after this half-close, it has recognised all of it.
                gen.finished = True
                if ending is Ending.RESTART:
                    gen.cancel()  # abandon: the next generation resends what is not final
                return

    def _ending(
        self, gen: Generation, ended: bool, flush: bool, now: float, last_audio: float
    ) -> Ending | None:
        if ended:
            return Ending.END
        if flush:
            return Ending.FLUSH
        timings = self._timings
        if gen.sent_samples >= self._restart_samples or now - gen.opened >= timings.restart_sec:
            if self._buffer.samples <= self._max_replay_samples:
                return Ending.RESTART
            return Ending.DRAIN
        if now - last_audio >= timings.idle_sec:
            return Ending.IDLE
        return None

    @staticmethod
    def _sleep(seconds: float, handoff: AudioHandoff) -> None:
        """Back off, waking early if the session is dropped."""
        deadline = time.monotonic() + seconds
        while not handoff.aborted:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, POLL_SEC))


def _seconds(duration: Any) -> float:
    """A protobuf ``Duration`` in seconds (proto-plus would give a `datetime.timedelta`)."""
    return float(duration.seconds + duration.nanos / 1e9)


# --------------------------------------------------------------------------- errors


def _status_name(exc: google_exceptions.GoogleAPICallError) -> str:
    status = exc.grpc_status_code
    return status.name if status is not None else type(exc).__name__


def _google_message(exc: google_exceptions.GoogleAPICallError, limit: int = 200) -> str:
    """Google's own explanation, one line, bounded (it never holds a credential)."""
    message = " ".join(str(exc.message or "").split())
    return message[:limit].rstrip(". ") or "no details"


def _credentials_rejected() -> GoogleCredentialsError:
    return GoogleCredentialsError(
        "Google rejected the credentials; set GOOGLE_APPLICATION_CREDENTIALS to a valid "
        "service-account key file that may use Speech-to-Text."
    )


def _fatal(exc: google_exceptions.GoogleAPICallError, sid: str) -> ASRError:
    """A Google status the client has to act on, as the service's error."""
    logger.warning("[%s] google refused the stream: %s %s", sid, _status_name(exc), exc.message)
    if isinstance(exc, google_exceptions.InvalidArgument):
        return GoogleInvalidArgument(
            f"Google Speech-to-Text refused the stream's settings ({_google_message(exc)}). "
            "Check 'language_code', 'model' and 'sample_rate_hertz'."
        )
    if isinstance(exc, google_exceptions.PermissionDenied):
        return GooglePermissionDenied(
            "The Google credentials may not use Speech-to-Text (PERMISSION_DENIED): enable the "
            "Speech-to-Text API for the project and give the service account access to it."
        )
    if isinstance(exc, google_exceptions.Unauthenticated):
        return _credentials_rejected()
    if isinstance(exc, google_exceptions.ResourceExhausted):
        return GoogleQuotaExceeded(
            "Google Speech-to-Text quota is used up for now (RESOURCE_EXHAUSTED); try again "
            "later or raise the project's quota."
        )
    return BackendFailure(
        f"Google Speech-to-Text failed on this stream ({_status_name(exc)}); the finals so far "
        "were sent. Reconnect to go on.",
        code="google_error",
    )
