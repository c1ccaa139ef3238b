"""`StreamingSession`: audio from the event loop to a recognition thread, events back.

    event loop                         recognition thread
    ----------                         ------------------
    put(pcm) ──► AudioHandoff ──►      Recognizer.run(handoff, emit)
    events  ◄── call_soon_threadsafe ◄─ emit(TranscriptEvent | SpeechEvent
                                             | FlushedEvent | ErrorEvent
                                             | CompleteEvent)

The hand-off carries the client's LINEAR16 bytes at the client's rate, as
they came; each recognizer decodes what it needs in its own thread (the
event loop does no numpy work per frame, see `app.audio`).

The hand-off is bounded in seconds of audio. When it is full, `put` waits
(asynchronously: the loop serves every other session meanwhile) until the
thread takes what is queued, so a client that sends faster than the engine
works is slowed down instead of dropped, and memory stays bounded.

A client's finalize is a mark in the queue where it was asked: the batch that
flushes holds exactly the audio queued before the mark, and audio the client
sent after its finalize waits for the next batch, however late the thread
takes it. The recognizer answers every flush with a `FlushedEvent`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from app.asr.base import (
    ASRProcessor,
    Audio,
    EngineInfo,
    ProcessorResult,
    Recognizer,
    SpeechChange,
    SupportsBusy,
    SupportsInterim,
    SupportsPreview,
    SupportsSpeaking,
    SupportsUtterances,
    TextSpan,
    TimedWord,
    as_text_span,
)
from app.audio import BYTES_PER_SAMPLE, PcmDecoder
from app.errors import ASRError, BackendFailure
from app.settings import ENGINE_SAMPLE_RATE

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- events


FinalCause = Literal["agreement", "pause", "finalize", "end"]
"""Why a final was made: two passes agreed on it in mid-utterance (``agreement``),
voice activity heard the speaker pause (``pause``), the client asked for what
was heard to be made final (``finalize``), or the stream ended (``end``)."""

UTTERANCE_ENDS: frozenset[FinalCause] = frozenset({"pause", "finalize", "end"})


@dataclass(frozen=True)
class TranscriptEvent:
    span: TextSpan
    is_final: bool
    cause: FinalCause | None = None
    """For a final, why it was made; None for an interim, or an engine that does not say."""

    @property
    def from_finalize(self) -> bool:
        """Made by a client's ``finalize`` (Deepgram ``from_finalize``, an OpenAI commit)."""
        return self.cause == "finalize"

    @property
    def ends_utterance(self) -> bool:
        """The last final of an utterance (Deepgram ``speech_final``, an OpenAI turn's end)."""
        return self.cause in UTTERANCE_ENDS


@dataclass(frozen=True)
class SpeechEvent:
    """The engine's voice activity: an utterance ``started``, or ``stopped`` at a pause.

    ``at`` is in seconds of stream time (where the speech began, or where the
    silence after it began). A ``stopped`` comes after the utterance's finals,
    so a door can close a turn on it; at the end of the stream, speech still
    going on stops before `CompleteEvent`. Only engines with voice activity
    (`SupportsUtterances`) emit these.
    """

    kind: Literal["started", "stopped"]
    at: float
    settled: bool = False
    """For ``stopped``: every word spoken before ``at`` has been emitted as final (the
    pass that heard the pause committed the utterance whole), so a door can close the
    turn at once. False when the engine cannot say: speech that resumed right at the
    pause leaves the utterance's last words to a later pass."""


@dataclass(frozen=True)
class FlushedEvent:
    """A finalize is done: every word of the audio before ``at`` has been emitted as final.

    ``at`` is the stream time (seconds) of the flush mark, the end of the audio the
    finalize covered. It comes after the flush's final (if it made one) and voice
    activity, also when the flush found nothing to say, so a door can close a turn
    on it at once (an OpenAI commit) instead of waiting to see whether words come.
    Engines with their own loop (`Recognizer`) should emit it too; a door falls
    back to timers for one that does not.
    """

    at: float


@dataclass(frozen=True)
class ErrorEvent:
    error: ASRError


@dataclass(frozen=True)
class CompleteEvent:
    pass


SessionEvent = TranscriptEvent | SpeechEvent | FlushedEvent | ErrorEvent | CompleteEvent
Emit = Callable[[SessionEvent], None]


# --------------------------------------------------------------------------- hand-off


@dataclass
class Batch:
    """What the recognition thread takes in one go: the queued audio, and what follows it."""

    pcm: bytes = b""  # LINEAR16 (s16le) at the hand-off's rate, whole samples
    ended: bool = False  # nothing follows: the stream ends after this audio
    aborted: bool = False
    # A finalize follows this audio: make everything heard until its end final, then go on.
    flush: bool = False

    @property
    def samples(self) -> int:
        return len(self.pcm) // BYTES_PER_SAMPLE


class AudioHandoff:
    """Bounded, thread-safe PCM queue: the loop puts, the recognition thread takes.

    Holds whole LINEAR16 samples at ``sample_rate`` (the client's rate), and the
    flush marks of finalizes between them, in the order they were asked.
    """

    def __init__(
        self,
        capacity_samples: int,
        loop: asyncio.AbstractEventLoop,
        sample_rate: int = ENGINE_SAMPLE_RATE,
    ) -> None:
        self._capacity = capacity_samples
        self.sample_rate = sample_rate
        self._loop = loop
        self._items: deque[bytes] = deque()
        self._samples = 0
        self._ended = False
        self._aborted = False
        # Pending flush marks, oldest first: each is the number of chunks put before it
        # (counted since the start, like `_chunks_put` and `_chunks_taken`).
        self._marks: deque[int] = deque()
        self._chunks_put = 0
        self._chunks_taken = 0
        self._cond = threading.Condition()
        self._space = asyncio.Event()
        self._put_waiting = False  # a `put` waits for space: the next take wakes it

    # -- event loop side --------------------------------------------------------

    async def put(self, pcm: bytes) -> bool:
        """Queue whole samples, waiting while the queue is full. False if aborted or ended."""
        if len(pcm) % BYTES_PER_SAMPLE:
            raise ValueError("the hand-off takes whole 2-byte samples")
        samples = len(pcm) // BYTES_PER_SAMPLE
        if not samples:
            return True
        while True:
            with self._cond:
                if self._aborted or self._ended:
                    return False
                # An empty queue always takes a chunk, however large, so a
                # chunk bigger than the capacity cannot wait forever.
                if self._samples == 0 or self._samples + samples <= self._capacity:
                    self._items.append(pcm)
                    self._chunks_put += 1
                    self._samples += samples
                    self._cond.notify()
                    return True
                self._space.clear()
                self._put_waiting = True
            await self._space.wait()

    def end(self) -> None:
        """No more audio: the thread finishes what is queued, then ends the stream."""
        with self._cond:
            self._ended = True
            self._cond.notify()

    def flush(self) -> None:
        """Ask the recognizer to finalize the audio queued until now (the stream goes on).

        A mark at this point of the queue: audio put after it is not part of this flush.
        """
        with self._cond:
            self._marks.append(self._chunks_put)
            self._cond.notify()

    def abort(self) -> None:
        """Drop the session: the thread stops at its next look at the queue."""
        with self._cond:
            self._aborted = True
            self._items.clear()
            self._marks.clear()
            self._samples = 0
            self._cond.notify()
        self._space.set()

    @property
    def queued_seconds(self) -> float:
        return self._samples / self.sample_rate

    # -- recognition thread side -------------------------------------------------

    def take(self, timeout: float | None = None) -> Batch:
        """Block until audio, a flush, the end or an abort; take everything queued up to
        the first flush mark (all of it if there is none), and that mark."""
        with self._cond:
            self._cond.wait_for(
                lambda: self._items or self._marks or self._ended or self._aborted,
                timeout=timeout,
            )
            if self._aborted:
                return Batch(aborted=True)
            pcm, wake = self._drain()
            flush = bool(self._marks)  # `_drain` stopped at it
            if flush:
                self._marks.popleft()
            ended = self._ended and not self._items and not self._marks
            batch = Batch(pcm, ended=ended, flush=flush)
        self._wake_put(wake)
        return batch

    def take_audio(self) -> bytes:
        """Take the audio queued now up to the first flush mark, without waiting; the mark,
        the audio after it, the end or an abort stay for `take`."""
        with self._cond:
            pcm, wake = self._drain()
        self._wake_put(wake)
        return pcm

    def _drain(self) -> tuple[bytes, bool]:
        """The audio queued before the first flush mark (all of it without one), out of
        the queue, and whether a `put` waits for space.

        Hold ``_cond``. Only a waiting `put` is woken: one wake-up per frame
        taken was a self-pipe write and a loop iteration per frame, per session.
        """
        count = len(self._items)
        if self._marks:
            count = self._marks[0] - self._chunks_taken
        if count == len(self._items):
            pcm = b"".join(self._items)
            self._items.clear()
        else:
            pcm = b"".join([self._items.popleft() for _ in range(count)])
        self._chunks_taken += count
        if not pcm:  # nothing taken: a waiting `put` still waits for space
            return pcm, False
        self._samples -= len(pcm) // BYTES_PER_SAMPLE
        wake, self._put_waiting = self._put_waiting, False
        return pcm, wake

    def _wake_put(self, wake: bool) -> None:
        """Wake the waiting `put` (outside ``_cond``: the loop may be closed)."""
        if wake:
            with contextlib.suppress(RuntimeError):  # loop already closed
                self._loop.call_soon_threadsafe(self._space.set)

    @property
    def aborted(self) -> bool:
        return self._aborted


# --------------------------------------------------------------------------- recognizers


# How often a session waiting for its turn at the engine looks whether it was aborted.
TURN_POLL_SEC = 0.1


PassLoad = Literal["light", "steady", "busy"]
"""The engine's load at a pass (`EngineLoad.state`): light (previews run between the
committing passes), steady, or busy (buffers are trimmed sooner)."""


class EngineLoad:
    """How many processor sessions are streaming in this process: it sets their step.

    Each pass re-transcribes the whole buffer, so a shorter step shows words
    sooner and costs CPU in proportion. While at most ``light_sessions`` sessions
    stream, each adds preview passes (`SupportsPreview`) every
    `EngineInfo.light_chunk_sec` between its committing passes; beyond that,
    only the committing passes run, so latency degrades gracefully instead of
    every session falling behind. Commits keep their step either way: two
    passes half a step apart agree on half-heard words, which cost accuracy.

    It also hands out turns at the engine: at most ``passes`` passes run at
    once (one per model worker), the others wait in arrival order, and a pass
    that waited hears the audio that came meanwhile. Without turns, six
    sessions on 2 cores interleaved their model calls, so every pass took
    about three times as long and heard audio that old by its end; with turns,
    p95 lag went 3.5-3.7 -> 2.5-2.7 s and p50 2.1-2.3 -> 1.5-1.6 s.
    A preview pass only runs if a turn is free at once.

    Past ``busy_sessions`` sessions the engine is busy: processors that can
    (`SupportsBusy`) do less per pass. `OnlineASRProcessor` trims its buffer
    sooner (BUSY_BUFFER_TRIMMING_SEC), which doubled the streams a 2-core node
    keeps at p95 lag of finals under 3 s (6 to 12; bench/results/README.md).

    Both counts are of the sessions *speaking*: a session whose processor says
    its buffer holds no speech (`SupportsSpeaking`, told before and after each
    committing pass with `set_speaking`) costs next to nothing, so twenty open
    lines of which two talk neither trim those two's buffers nor stop their
    previews. A session counts as speaking until its processor says otherwise.
    """

    def __init__(
        self, light_sessions: int, passes: int | None = None, busy_sessions: int | None = None
    ) -> None:
        self.light_sessions = light_sessions
        self.busy_sessions = busy_sessions  # None: never busy
        self.sessions = 0
        self._lock = threading.Lock()
        self._quiet: set[object] = set()  # sessions whose buffer holds no speech
        # Engine passes at once (None: no limit); the others wait in arrival order.
        self.passes = passes
        self.running = 0
        self._turns: deque[object] = deque()
        self._turn_changed = threading.Condition(self._lock)

    def begin_pass(
        self, *, wait: bool = True, cancelled: Callable[[], bool] = lambda: False
    ) -> bool:
        """Take a turn to run a pass; False if ``cancelled`` before one came.

        ``wait``: queue for a turn in arrival order (looking at ``cancelled``
        every `TURN_POLL_SEC`); else take one only if it is free now and
        nobody is queued.
        """
        if self.passes is None:
            return True
        with self._lock:
            if not wait:
                if self._turns or self.running >= self.passes:
                    return False
                self.running += 1
                return True
            me = object()
            self._turns.append(me)
            try:
                while self.running >= self.passes or self._turns[0] is not me:
                    if cancelled():
                        return False
                    self._turn_changed.wait(TURN_POLL_SEC)
                self.running += 1
                return True
            finally:
                self._turns.remove(me)
                self._turn_changed.notify_all()

    @property
    def waiting(self) -> int:
        """Sessions waiting for a turn now."""
        return len(self._turns)

    def end_pass(self) -> None:
        if self.passes is None:
            return
        with self._lock:
            self.running -= 1
            self._turn_changed.notify_all()

    def __enter__(self) -> EngineLoad:
        with self._lock:
            self.sessions += 1
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self.sessions -= 1

    def set_speaking(self, session: object, speaking: bool) -> None:
        """Whether ``session``'s buffer holds speech now; a session that ends must say True."""
        with self._lock:
            if speaking:
                self._quiet.discard(session)
            else:
                self._quiet.add(session)

    @property
    def speaking(self) -> int:
        """Sessions streaming with speech to transcribe (or that cannot tell)."""
        return self.sessions - len(self._quiet)

    @property
    def light(self) -> bool:
        return self.speaking <= self.light_sessions

    @property
    def state(self) -> PassLoad:
        """The load a pass starting now runs at."""
        return "light" if self.light else "busy" if self.busy else "steady"

    @property
    def busy(self) -> bool:
        return self.busy_sessions is not None and self.speaking > self.busy_sessions


PassObserver = Callable[[float, float, PassLoad], None]
"""Called after each engine pass with (seconds of new audio, seconds the pass took, the
load it ran at)."""


class ProcessorRecognizer:
    """Drives an `ASRProcessor`: gather `min_chunk_sec` of audio, `process_iter`, emit.

    While the process is lightly loaded (`EngineLoad`), committing passes
    hear the stream up to whole steps of `min_chunk_sec` (1 s, 2 s, 3 s, …),
    however the client's frames and the thread's wake-ups split it: audio past
    the latest step waits for the next pass. So the same audio gives the same
    passes and the same finals on every run, as in ``bench.replay``. A pass
    that starts late (half a step or more past a step: the engine is slow),
    or any pass under heavier load, hears everything queued instead, so an
    engine that falls behind takes bigger steps and catches up instead of
    queueing more passes. Under light load, preview passes refresh the interim
    between the committing ones; they hear everything queued (they change no
    finals).
    """

    def __init__(
        self,
        processor: ASRProcessor,
        info: EngineInfo,
        *,
        interim: bool,
        observer: PassObserver | None = None,
        load: EngineLoad | None = None,
    ) -> None:
        self.processor = processor
        self.info = info
        self.load = load
        self.interim = interim and isinstance(processor, SupportsInterim)
        self.observer = observer
        self.busy_since: float | None = None  # monotonic start of the running pass
        self.last_pass_sec = 0.0  # how long the latest pass took
        self._last_interim = ""
        self._utterances = processor if isinstance(processor, SupportsUtterances) else None
        self._speech: list[SpeechChange] = []  # voice activity not emitted yet
        self._has_turn = False  # holds one of `load`'s turns
        self._turn_lock = threading.Lock()

    def run(self, handoff: AudioHandoff, emit: Emit) -> None:
        with self.load or contextlib.nullcontext():
            try:
                self._run(handoff, emit)
            finally:
                if self.load is not None:
                    self.load.set_speaking(self, True)  # out of the load's quiet sessions

    def _tell_speaking(self) -> None:
        """Tell the load whether this session has speech to transcribe (`SupportsSpeaking`)."""
        if self.load is not None and isinstance(self.processor, SupportsSpeaking):
            self.load.set_speaking(self, self.processor.speaking())

    def preview_step_sec(self) -> float | None:
        """The step of preview passes now, if the load is light enough for them."""
        light = self.info.light_chunk_sec
        if (
            light is None
            or light >= self.info.min_chunk_sec
            or not self.interim  # a preview only refreshes interims
            or not isinstance(self.processor, SupportsPreview)
            or (self.load is not None and not self.load.light)
            # A preview must end before the next committing pass is due, or it delays finals.
            or self.last_pass_sec > light
        ):
            return None
        return light

    def _run(self, handoff: AudioHandoff, emit: Emit) -> None:
        # The integration guides' contract: `init` is "called when a new audio stream
        # begins" (a processor may build its state there rather than in __init__).
        self.processor.init()
        decoder = PcmDecoder(handoff.sample_rate, ENGINE_SAMPLE_RATE)
        held: Audio = np.zeros(0, dtype=np.float32)  # decoded, not yet given to the processor
        pending = 0  # samples given since the last committing pass
        unheard = 0  # samples given since the last pass of any kind
        taken = 0  # samples taken from the hand-off (the client's rate): the stream's time
        step = max(1, int(self.info.min_chunk_sec * ENGINE_SAMPLE_RATE))

        def give(samples: int) -> None:
            nonlocal held, pending, unheard
            if samples:
                self.processor.insert_audio_chunk(held[:samples])
                held = held[samples:]
                pending += samples
                unheard += samples

        while True:
            batch = handoff.take()
            if batch.aborted:
                return
            taken += batch.samples
            audio = decoder.decode(batch.pcm)
            if batch.ended or batch.flush:
                # The resampler's last samples: a finalize covers all the audio before it
                # (then a new resampler for the audio after it).
                audio = np.concatenate((audio, decoder.flush()))
                decoder = PcmDecoder(handoff.sample_rate, ENGINE_SAMPLE_RATE)
            if len(audio):
                held = np.concatenate((held, audio)) if len(held) else audio
            if batch.ended or batch.flush:
                if not self._take_turn(handoff, wait=True):
                    return
                try:
                    give(len(held))
                    result = self._timed(self.processor.finish, unheard)
                finally:
                    self._end_pass()
                self._tell_speaking()
                cause: FinalCause = "finalize" if batch.flush else "end"
                self._emit_pass(emit, result, cause, ended=batch.ended)
                if batch.flush:
                    emit(FlushedEvent(taken / handoff.sample_rate))
                if batch.ended:
                    emit(CompleteEvent())
                    return
                pending = unheard = 0
                continue
            preview = self.preview_step_sec()
            if pending + len(held) >= step:
                waits = not self._take_turn(handoff, wait=False)
                if waits and not self._take_turn(handoff, wait=True):
                    return
                try:
                    if waits:  # audio that came while this pass waited for its turn joins it
                        more = handoff.take_audio()  # (not past a finalize's mark)
                        taken += len(more) // BYTES_PER_SAMPLE
                        if more:
                            held = np.concatenate((held, decoder.decode(more)))
                    ready = pending + len(held)
                    late = ready % step >= step // 2 or (
                        self.load is not None and not self.load.light
                    )
                    # Up to the latest whole step; a pass that is late hears everything.
                    give(len(held) if late else ready // step * step - pending)
                    self._tell_speaking()
                    if self.load is not None and isinstance(self.processor, SupportsBusy):
                        self.processor.set_busy(self.load.busy)
                    result = self._timed(self.processor.process_iter, unheard)
                finally:
                    self._end_pass()
                self._tell_speaking()  # a pause committed, or silence skipped: quiet now
                paused = self._utterances is not None and self._utterances.utterance_ended()
                self._emit_pass(emit, result, "pause" if paused else "agreement")
                pending = unheard = 0
                self._emit_interim(emit)
            elif (
                preview is not None
                and unheard + len(held) >= int(preview * ENGINE_SAMPLE_RATE)
                and self._take_turn(handoff, wait=False)
            ):
                assert isinstance(self.processor, SupportsPreview)
                try:
                    give(len(held))  # all of it: still short of the next step
                    self._timed(self.processor.preview_iter, unheard)
                finally:
                    self._end_pass()
                self._emit_speech(emit, until_stop=True)
                unheard = 0
                self._emit_interim(emit)

    def _take_turn(self, handoff: AudioHandoff, *, wait: bool) -> bool:
        """This session's turn at the engine (`EngineLoad`); False if none or aborted.

        ``wait``: until a turn comes; else only if one is free now.
        """
        if self.load is None:
            return not handoff.aborted
        if not self.load.begin_pass(wait=wait, cancelled=lambda: handoff.aborted):
            return False
        with self._turn_lock:
            self._has_turn = True
        if handoff.aborted:
            self._end_pass()
            return False
        return True

    def _end_pass(self) -> None:
        """Give the turn back (once, whoever calls)."""
        with self._turn_lock:
            if self._has_turn and self.load is not None:
                self.load.end_pass()
            self._has_turn = False

    def forfeit_turn(self) -> None:
        """The session gave up on a pass that does not return: its turn goes to others."""
        self._end_pass()

    def _timed(self, step: Callable[[], ProcessorResult], samples: int) -> ProcessorResult:
        load: PassLoad = "steady" if self.load is None else self.load.state
        started = time.perf_counter()
        self.busy_since = time.monotonic()
        try:
            result = step()
        finally:
            self.busy_since = None
        self.last_pass_sec = time.perf_counter() - started
        if self.observer is not None and samples:
            self.observer(samples / ENGINE_SAMPLE_RATE, self.last_pass_sec, load)
        return result

    def _emit_pass(
        self, emit: Emit, result: ProcessorResult, cause: FinalCause, *, ended: bool = False
    ) -> None:
        """After a committing pass: speech that started, its final, then speech that stopped.

        A ``stopped`` waits for a committing pass (the one that commits the
        utterance at its pause), so the utterance's finals come before it; a
        preview pass in the pause commits nothing.
        """
        self._emit_speech(emit, until_stop=True, ended=ended)
        span = as_text_span(result)
        if span is not None:
            span = self._emit_utterances_within(emit, span)
            emit(TranscriptEvent(span, is_final=True, cause=cause))
            self._last_interim = ""
        # A pass that ended an utterance (a pause, a finalize, the end) committed it whole.
        self._emit_speech(emit, until_stop=False, settled=cause in UTTERANCE_ENDS)

    def _emit_utterances_within(self, emit: Emit, span: TextSpan) -> TextSpan:
        """Emit the utterances a final holds whole, each with the pause that ended it;
        return the rest of the final.

        A pass over audio that came faster than real time (a file sent at once) commits
        several utterances together: split at each pause with words after it, so that
        every ``stopped`` still comes after its utterance's finals and before the next
        one's. Such a pause is settled: the words after it were committed, so all
        before it were. A final whose words do not make up its text is not split.
        """
        held = self._speech
        while held:
            change = held[0]
            if change.kind == "stopped":
                head, rest = split_span(span, change.at)
                if rest is None:
                    break  # no words after this pause: the rest of the pass's events
                if head is not None:
                    emit(TranscriptEvent(head, is_final=True, cause="pause"))
                span = rest
            emit(SpeechEvent(change.kind, change.at, settled=change.kind == "stopped"))
            del held[0]
        return span

    def _emit_speech(
        self, emit: Emit, *, until_stop: bool, ended: bool = False, settled: bool = False
    ) -> None:
        """Emit the voice activity heard so far (``until_stop``: up to its next ``stopped``).

        ``settled``: the pass just run committed everything heard, so each ``stopped``
        emitted now is `SpeechEvent.settled`.
        """
        if self._utterances is not None:
            self._speech += self._utterances.speech_changes(ended=ended)
        held = self._speech
        count = len(held)
        if until_stop:
            count = next((i for i, c in enumerate(held) if c.kind == "stopped"), count)
        for change in held[:count]:
            emit(SpeechEvent(change.kind, change.at, settled and change.kind == "stopped"))
        del held[:count]

    def _emit_interim(self, emit: Emit) -> None:
        if not self.interim:
            return
        assert isinstance(self.processor, SupportsInterim)
        span = self.processor.unconfirmed()
        text = span.text.strip() if span else ""
        if span is not None and text != self._last_interim:
            self._last_interim = text
            emit(TranscriptEvent(span, is_final=False))


def split_span(span: TextSpan, at: float) -> tuple[TextSpan | None, TextSpan | None]:
    """The words of ``span`` that start before ``at``, and the rest (None when empty).

    Only a span whose words make up its text (joined as they are, as faster-whisper's
    words with their leading spaces, or with spaces) can be split; any other comes
    back whole as the head.
    """
    words = span.words
    if not words:
        return span, None
    if "".join(w.word for w in words) == span.text:
        sep = ""
    elif " ".join(w.word for w in words) == span.text:
        sep = " "
    else:
        return span, None
    cut = next((i for i, w in enumerate(words) if w.start >= at), len(words))
    if cut == len(words):
        return span, None
    if cut == 0:
        return None, span

    def part(chosen: tuple[TimedWord, ...], start: float, end: float) -> TextSpan:
        probabilities = [w.probability for w in chosen]
        confidence = span.confidence
        if all(p is not None for p in probabilities):
            confidence = sum(p for p in probabilities if p is not None) / len(chosen)
        return TextSpan(start, end, sep.join(w.word for w in chosen), chosen, confidence)

    head, rest = words[:cut], words[cut:]
    return part(head, span.start, head[-1].end), part(rest, rest[0].start, span.end)


# --------------------------------------------------------------------------- session


class StreamingSession:
    """One client's stream: a hand-off, a recognition thread, and an event queue."""

    def __init__(
        self,
        session_id: str,
        recognizer: Recognizer,
        loop: asyncio.AbstractEventLoop,
        *,
        queue_seconds: float,
        sample_rate: int = ENGINE_SAMPLE_RATE,
    ) -> None:
        self.session_id = session_id
        self.recognizer = recognizer
        self.events: asyncio.Queue[SessionEvent] = asyncio.Queue()
        self._loop = loop
        # The client's rate: the hand-off carries its audio as sent.
        self.handoff = AudioHandoff(int(queue_seconds * sample_rate), loop, sample_rate)
        self.thread = threading.Thread(target=self._run, name=f"asr-{session_id}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def busy_for(self) -> float:
        """Seconds the engine has been inside its current pass (0 when idle)."""
        since = getattr(self.recognizer, "busy_since", None)
        return 0.0 if since is None else time.monotonic() - since

    async def put_audio(self, pcm: bytes) -> bool:
        """Queue whole LINEAR16 samples at the session's rate (see `AudioHandoff.put`)."""
        return await self.handoff.put(pcm)

    def stop(self) -> None:
        """End of audio: finish, emit the last finals and `CompleteEvent`."""
        self.handoff.end()

    async def close(self, grace_sec: float) -> bool:
        """Abort and wait for the thread to end; True if it did within ``grace_sec``."""
        self.handoff.abort()
        if self.thread.is_alive():
            await asyncio.to_thread(self.thread.join, grace_sec)
        if self.thread.is_alive():
            logger.warning(
                "[%s] recognition thread still busy after %.1f s", self.session_id, grace_sec
            )
            # A pass that hangs must not keep other sessions from the engine.
            forfeit = getattr(self.recognizer, "forfeit_turn", None)
            if forfeit is not None:
                forfeit()
            return False
        return True

    def _emit(self, event: SessionEvent) -> None:
        if self.handoff.aborted:
            return
        with contextlib.suppress(RuntimeError):  # loop closed during shutdown
            self._loop.call_soon_threadsafe(self.events.put_nowait, event)

    def _run(self) -> None:
        try:
            self.recognizer.run(self.handoff, self._emit)
        except ASRError as exc:
            logger.warning("[%s] engine error: %s", self.session_id, exc.detail)
            # The recognizer has stopped, so whatever it raised ends the session.
            error = exc if exc.fatal else BackendFailure(exc.detail, code=exc.code)
            self._emit(ErrorEvent(error))
        except Exception:
            logger.exception("[%s] recognition thread failed", self.session_id)
            self._emit(
                ErrorEvent(
                    BackendFailure(
                        "The recognition engine failed on this stream; the session was closed. "
                        "Other sessions are not affected; please reconnect."
                    )
                )
            )
