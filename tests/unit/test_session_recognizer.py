"""`ProcessorRecognizer.run` in a thread over a real `AudioHandoff`, and the hand-off itself."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pytest

from app.asr.base import Audio, EngineInfo, ProcessorResult, TextSpan
from app.session import (
    TURN_POLL_SEC,
    AudioHandoff,
    Batch,
    CompleteEvent,
    EngineLoad,
    PassObserver,
    ProcessorRecognizer,
    SessionEvent,
    StreamingSession,
    TranscriptEvent,
)
from app.settings import ENGINE_SAMPLE_RATE

SR = ENGINE_SAMPLE_RATE
WAIT_SEC = 2.0


def pcm(samples: int, value: int = 0) -> bytes:
    """``samples`` LINEAR16 samples of ``value``, as the endpoint hands them over."""
    return np.full(samples, value, dtype="<i2").tobytes()


def silence(seconds: float) -> bytes:
    return pcm(round(seconds * SR))


@dataclass
class ScriptedProcessor:
    """Path 2 engine: returns ``finals[k]`` from the k-th `process_iter`; logs every call."""

    finals: Sequence[ProcessorResult] = ()
    last: ProcessorResult = None
    gate: threading.Event | None = None  # process_iter waits for it when set
    log: list[tuple[str, int]] = field(default_factory=list)
    total: int = 0
    iters: int = 0

    def init(self, offset: float = 0.0) -> None:
        self.log.append(("init", 0))

    def insert_audio_chunk(self, audio: Audio) -> None:
        self.total += len(audio)
        self.log.append(("insert", len(audio)))

    def process_iter(self) -> ProcessorResult:
        self.log.append(("iter", self.total))
        if self.gate is not None:
            assert self.gate.wait(WAIT_SEC)
        self.iters += 1
        k = self.iters - 1
        return self.finals[k] if k < len(self.finals) else None

    def finish(self) -> ProcessorResult:
        self.log.append(("finish", self.total))
        return self.last

    def calls(self, name: str) -> list[int]:
        return [n for kind, n in self.log if kind == name]


@dataclass
class InterimProcessor(ScriptedProcessor):
    """Also shows an unconfirmed guess: ``pending[k]`` after the k-th `process_iter`."""

    pending: Sequence[str | None] = ()

    def unconfirmed(self) -> TextSpan | None:
        k = self.iters - 1
        text = self.pending[k] if k < len(self.pending) else None
        return None if text is None else TextSpan(0.0, self.total / SR, text)


@dataclass
class PreviewProcessor(ScriptedProcessor):
    """Also previews: its interim is how much audio the latest pass of any kind heard."""

    heard: int = 0

    def process_iter(self) -> ProcessorResult:
        self.heard = self.total
        return super().process_iter()

    def preview_iter(self) -> ProcessorResult:
        self.log.append(("preview", self.total))
        self.heard = self.total
        return None

    def unconfirmed(self) -> TextSpan | None:
        return TextSpan(0.0, self.heard / SR, f" heard {self.heard}")


class CountingHandoff(AudioHandoff):
    """Counts `take` calls, so a test knows when the thread is back waiting for audio."""

    def __init__(
        self, capacity_samples: int, loop: asyncio.AbstractEventLoop, sample_rate: int = SR
    ) -> None:
        super().__init__(capacity_samples, loop, sample_rate)
        self.takes = 0

    def take(self, timeout: float | None = None) -> Batch:
        self.takes += 1
        return super().take(timeout)


async def until(condition: Callable[[], bool]) -> None:
    """Poll ``condition`` until it holds (at most `WAIT_SEC`)."""
    deadline = time.monotonic() + WAIT_SEC
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.001)


@dataclass
class Harness:
    handoff: CountingHandoff
    recognizer: ProcessorRecognizer
    events: list[SessionEvent] = field(default_factory=list)
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(
            target=self.recognizer.run, args=(self.handoff, self.events.append), daemon=True
        )
        self.thread.start()

    async def put_and_settle(self, audio: bytes) -> None:
        """Put one chunk and wait until the thread has handled it and waits again."""
        takes = self.handoff.takes
        assert await self.handoff.put(audio)
        await until(lambda: self.handoff.takes == takes + 1)

    def join(self) -> None:
        assert self.thread is not None
        self.thread.join(WAIT_SEC)
        assert not self.thread.is_alive()

    @property
    def finals(self) -> list[str]:
        return [e.span.text for e in self.events if isinstance(e, TranscriptEvent) and e.is_final]

    @property
    def transcripts(self) -> list[tuple[str, bool]]:
        return [(e.span.text, e.is_final) for e in self.events if isinstance(e, TranscriptEvent)]


def harness(
    processor: ScriptedProcessor,
    *,
    min_chunk_sec: float = 1.0,
    interim: bool = False,
    capacity_sec: float = 30.0,
    start: bool = True,
    light_chunk_sec: float | None = None,
    load: EngineLoad | None = None,
    client_rate: int = SR,
    observer: PassObserver | None = None,
) -> Harness:
    loop = asyncio.get_running_loop()
    info = EngineInfo("scripted", "m", min_chunk_sec, light_chunk_sec=light_chunk_sec)
    h = Harness(
        CountingHandoff(round(capacity_sec * client_rate), loop, client_rate),
        ProcessorRecognizer(processor, info, interim=interim, load=load, observer=observer),
    )
    if start:
        h.start()
    return h


async def started(h: Harness) -> Harness:
    await until(lambda: h.handoff.takes == 1)
    return h


# --------------------------------------------------------------------------- gathering


@pytest.mark.parametrize(
    ("chunk_sec", "iters_after", "heard_sec"),
    [
        # 0.25 s chunks: every 4th chunk makes 1 s of new audio.
        (0.25, [0, 0, 0, 1, 1, 1, 1, 2, 2], [1, 2]),
        # 0.6 s chunks: the pass at 1.2 s hears 1 s; the 0.2 s over waits for the next.
        (0.6, [0, 1, 1, 2, 3, 3], [1, 2, 3]),
        # A chunk of 1 s or more triggers a pass every time, up to the latest whole
        # step; at 3.6 s the pass is 0.6 s (over half a step) late and hears it all.
        (1.2, [1, 2, 3], [1, 2, 3.6]),
    ],
)
async def test_committing_passes_hear_whole_steps_however_the_audio_is_chunked(
    chunk_sec: float, iters_after: list[int], heard_sec: list[float]
) -> None:
    processor = ScriptedProcessor()
    h = await started(harness(processor, min_chunk_sec=1.0))
    seen = []
    for _ in iters_after:
        await h.put_and_settle(silence(chunk_sec))
        seen.append(len(processor.calls("iter")))
    assert seen == iters_after
    h.handoff.end()
    h.join()
    assert processor.calls("iter") == [round(SR * s) for s in heard_sec]
    # The end gives the processor everything, held audio included, and makes no extra pass.
    assert processor.calls("finish") == [round(chunk_sec * SR) * len(iters_after)]


async def test_under_heavier_load_a_committing_pass_hears_everything_queued() -> None:
    """More sessions than the light load: catching up beats whole steps."""
    load = EngineLoad(light_sessions=0)
    processor = ScriptedProcessor()
    h = await started(harness(processor, load=load))
    for _ in range(3):
        await h.put_and_settle(silence(0.6))
    assert processor.calls("iter") == [round(1.2 * SR)]
    h.handoff.end()
    h.join()
    assert processor.calls("finish") == [round(1.8 * SR)]


async def test_light_load_adds_previews_between_commits_and_a_busier_process_drops_them() -> None:
    load = EngineLoad(light_sessions=1)
    processor = PreviewProcessor()
    h = await started(harness(processor, interim=True, light_chunk_sec=0.5, load=load))
    assert load.sessions == 1  # this session, while it runs
    for _ in range(4):
        await h.put_and_settle(silence(0.5))
    # Alone: a preview half a step in, a committing pass each full step.
    assert processor.calls("preview") == [SR // 2, 3 * SR // 2]
    assert processor.calls("iter") == [SR, 2 * SR]
    with load:  # a second session starts streaming: committing passes only
        for _ in range(4):
            await h.put_and_settle(silence(0.5))
        assert len(processor.calls("preview")) == 2
        assert processor.calls("iter") == [SR, 2 * SR, 3 * SR, 4 * SR]
    await h.put_and_settle(silence(0.5))  # alone again
    assert processor.calls("preview") == [SR // 2, 3 * SR // 2, 9 * SR // 2]
    h.handoff.end()
    h.join()
    assert load.sessions == 0
    # Each preview refreshed the interim with what it heard.
    assert [t for t, final in h.transcripts if not final][:2] == [" heard 8000", " heard 16000"]


@dataclass
class BusyProcessor(ScriptedProcessor):
    """Logs what the session told it before each pass (`SupportsBusy`)."""

    def set_busy(self, busy: bool) -> None:
        self.log.append(("busy", int(busy)))


async def test_each_committing_pass_is_told_whether_the_engine_is_busy() -> None:
    load = EngineLoad(light_sessions=1, busy_sessions=2)
    processor = BusyProcessor()
    h = await started(harness(processor, load=load))
    await h.put_and_settle(silence(1.0))
    with load, load:  # two more sessions stream: three, past busy_sessions
        assert load.busy
        await h.put_and_settle(silence(1.0))
    await h.put_and_settle(silence(1.0))  # alone again
    h.handoff.end()
    h.join()
    told = [(kind, n) for kind, n in processor.log if kind in ("busy", "iter")]
    assert told == [
        ("busy", 0),
        ("iter", SR),
        ("busy", 1),
        ("iter", 2 * SR),
        ("busy", 0),
        ("iter", 3 * SR),
    ]


async def test_each_pass_is_reported_with_the_load_it_ran_at() -> None:
    """What capacity learns from: light passes (previews around) apart from steady and busy."""
    load = EngineLoad(light_sessions=1, busy_sessions=2)
    reports: list[tuple[float, str]] = []
    h = await started(
        harness(ScriptedProcessor(), load=load, observer=lambda a, _s, at: reports.append((a, at)))
    )
    await h.put_and_settle(silence(1.0))  # alone: light
    with load:
        await h.put_and_settle(silence(1.0))  # two sessions: steady
        with load:
            await h.put_and_settle(silence(1.0))  # three: busy
    h.handoff.end()
    h.join()
    assert reports == [(1.0, "light"), (1.0, "steady"), (1.0, "busy")]


def test_an_engine_load_without_busy_sessions_is_never_busy() -> None:
    load = EngineLoad(light_sessions=0)
    with load, load, load:
        assert not load.light and not load.busy


async def test_no_previews_while_a_pass_takes_longer_than_the_preview_step() -> None:
    """A slow pass (a long buffer) leaves no time for a preview before the next commit."""
    processor = PreviewProcessor()
    h = await started(harness(processor, interim=True, light_chunk_sec=0.5))
    h.recognizer.last_pass_sec = 0.6  # as if the latest pass had taken 0.6 s
    await h.put_and_settle(silence(0.5))
    assert processor.calls("preview") == []
    await h.put_and_settle(silence(0.5))
    assert processor.calls("iter") == [SR]  # this one was quick: previews resume
    await h.put_and_settle(silence(0.5))
    assert processor.calls("preview") == [3 * SR // 2]
    h.handoff.end()
    h.join()


@pytest.mark.parametrize(
    ("interim", "light_chunk_sec"),
    [(False, 0.5), (True, None), (True, 1.0)],
    ids=["no interims wanted", "client chose its step", "light step not shorter"],
)
async def test_no_previews_when_they_cannot_help(
    interim: bool, light_chunk_sec: float | None
) -> None:
    load = EngineLoad(light_sessions=1)
    processor = PreviewProcessor()
    h = await started(
        harness(processor, interim=interim, light_chunk_sec=light_chunk_sec, load=load)
    )
    for _ in range(3):
        await h.put_and_settle(silence(0.5))
    assert processor.calls("preview") == []
    assert processor.calls("iter") == [SR]
    h.handoff.end()
    h.join()


# --------------------------------------------------------------------------- turns


def test_engine_turns_run_at_most_passes_at_once_in_arrival_order() -> None:
    load = EngineLoad(light_sessions=1, passes=1)
    assert load.begin_pass()
    assert load.begin_pass(wait=False) is False  # taken: a preview would skip
    assert load.begin_pass(cancelled=lambda: True) is False  # a waiting pass, aborted
    assert load.waiting == 0
    order: list[str] = []

    def wait_turn(name: str) -> None:
        assert load.begin_pass()
        order.append(name)
        load.end_pass()

    first = threading.Thread(target=wait_turn, args=("first",))
    first.start()
    deadline = time.monotonic() + WAIT_SEC
    while not load._turns:  # first is queued before second starts
        assert time.monotonic() < deadline
        time.sleep(0.001)
    second = threading.Thread(target=wait_turn, args=("second",))
    second.start()
    while len(load._turns) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.001)
    time.sleep(3 * TURN_POLL_SEC)  # they look for an abort meanwhile, keeping their places
    assert order == []  # both wait while the turn is taken
    assert list(load._turns) and load.waiting == 2
    load.end_pass()
    first.join(WAIT_SEC)
    second.join(WAIT_SEC)
    assert order == ["first", "second"]
    assert load.running == 0 and not load._turns


async def test_a_pass_that_waited_for_its_turn_hears_the_audio_that_came_meanwhile() -> None:
    load = EngineLoad(light_sessions=0, passes=1)
    processor = ScriptedProcessor()
    h = await started(harness(processor, load=load))
    assert load.begin_pass()  # another session's pass runs
    assert await h.handoff.put(silence(1.0))
    await until(lambda: len(load._turns) == 1)  # this session waits for its turn
    assert await h.handoff.put(silence(0.7))
    assert processor.calls("iter") == []
    load.end_pass()
    await until(lambda: processor.calls("iter") == [round(1.7 * SR)])
    h.handoff.end()
    h.join()
    assert load.running == 0


async def test_abort_while_waiting_for_a_turn_stops_the_thread_without_a_pass() -> None:
    load = EngineLoad(light_sessions=0, passes=1)
    processor = ScriptedProcessor()
    h = await started(harness(processor, load=load))
    assert load.begin_pass()
    assert await h.handoff.put(silence(1.0))
    await until(lambda: len(load._turns) == 1)
    h.handoff.abort()
    h.join()  # within TURN_POLL_SEC, though the turn never came
    assert processor.calls("iter") == [] and processor.calls("finish") == []
    load.end_pass()
    assert load.running == 0 and not load._turns


async def test_an_aborted_session_never_keeps_a_turn() -> None:
    load = EngineLoad(light_sessions=0, passes=1)
    h = harness(ScriptedProcessor(), load=load, start=False)
    h.handoff.abort()
    assert h.recognizer._take_turn(h.handoff, wait=True) is False  # a turn was free
    assert h.recognizer._take_turn(h.handoff, wait=False) is False
    assert load.running == 0 and load.begin_pass(wait=False)


async def test_a_session_closed_in_a_hung_pass_gives_its_turn_to_the_others() -> None:
    load = EngineLoad(light_sessions=0, passes=1)
    gate = threading.Event()  # never set before close: the pass hangs
    info = EngineInfo("scripted", "m", 1.0)
    recognizer = ProcessorRecognizer(ScriptedProcessor(gate=gate), info, interim=False, load=load)
    session = StreamingSession("hung", recognizer, asyncio.get_running_loop(), queue_seconds=30)
    session.start()
    assert await session.put_audio(silence(1.0))
    await until(lambda: load.running == 1)
    assert await session.close(grace_sec=0.05) is False  # the thread is still in its pass
    assert load.running == 0 and load.begin_pass(wait=False)  # another session's turn
    load.end_pass()
    gate.set()  # the pass returns at last: its turn is not given back twice
    session.thread.join(WAIT_SEC + 1)
    assert not session.thread.is_alive()
    assert load.running == 0


async def test_audio_queued_together_is_taken_in_one_batch_and_one_pass() -> None:
    processor = ScriptedProcessor()
    h = harness(processor, start=False)
    for _ in range(3):
        assert await h.handoff.put(silence(1.0))
    assert h.handoff.queued_seconds == pytest.approx(3.0)
    h.start()
    await until(lambda: h.handoff.takes == 2)
    assert processor.log == [("init", 0), ("insert", 3 * SR), ("iter", 3 * SR)]
    assert h.handoff.queued_seconds == 0.0
    h.handoff.end()
    h.join()
    assert processor.log[-1] == ("finish", 3 * SR)


# --------------------------------------------------------------------------- finals


async def test_finals_are_emitted_in_order_and_complete_comes_last_after_end() -> None:
    processor = ScriptedProcessor(
        finals=[
            (0.0, 0.5, " one"),
            None,
            (0.5, 1.0, "   "),  # empty text: nothing to emit
            TextSpan(1.0, 1.5, " two"),
            (1.5, 2.0, " three"),
        ],
        last=(2.0, 2.4, " four"),
    )
    h = await started(harness(processor))
    for _ in range(5):
        await h.put_and_settle(silence(1.0))
    assert h.finals == [" one", " two", " three"]
    assert not any(isinstance(e, CompleteEvent) for e in h.events)

    # The last audio arrives with the end: finish gets it; no further pass.
    assert await h.handoff.put(silence(0.4))
    h.handoff.end()
    h.join()

    assert h.finals == [" one", " two", " three", " four"]
    assert isinstance(h.events[-1], CompleteEvent)
    assert sum(isinstance(e, CompleteEvent) for e in h.events) == 1
    assert all(e.is_final for e in h.events if isinstance(e, TranscriptEvent))
    spans = [e.span for e in h.events if isinstance(e, TranscriptEvent)]
    assert [(s.start, s.end) for s in spans] == [(0.0, 0.5), (1.0, 1.5), (1.5, 2.0), (2.0, 2.4)]
    assert processor.log[-2:] == [("insert", round(0.4 * SR)), ("finish", round(5.4 * SR))]
    assert len(processor.calls("iter")) == 5
    # The hand-off is closed: more audio is refused.
    assert await h.handoff.put(silence(0.1)) is False


async def test_end_without_audio_still_finishes_and_completes() -> None:
    processor = ScriptedProcessor(last=None)
    h = await started(harness(processor))
    h.handoff.end()
    h.join()
    assert processor.log == [("init", 0), ("finish", 0)]
    assert len(h.events) == 1
    assert isinstance(h.events[0], CompleteEvent)


async def test_audio_taken_with_the_end_goes_to_finish_without_a_pass() -> None:
    processor = ScriptedProcessor(finals=[(0.0, 1.0, " never")], last=(0.0, 1.4, " all"))
    h = harness(processor, start=False)
    assert await h.handoff.put(silence(1.4))  # more than min_chunk_sec
    h.handoff.end()
    h.start()  # one batch: the audio and the end together
    h.join()
    assert processor.log == [("init", 0), ("insert", round(1.4 * SR)), ("finish", round(1.4 * SR))]
    assert h.finals == [" all"]
    assert isinstance(h.events[-1], CompleteEvent)


async def test_the_thread_resamples_the_client_rate_to_the_engine_rate() -> None:
    """A 48 kHz stream: the hand-off holds the client's bytes, the engine gets 16 kHz."""
    processor = ScriptedProcessor(last=(0.0, 2.0, " all"))
    h = await started(harness(processor, client_rate=48_000))
    await h.put_and_settle(pcm(48_000, 1000))  # 1 s
    assert h.handoff.queued_seconds == 0.0
    # The resampler's filter holds ~20 ms back: not yet 1 s at the engine's rate.
    assert processor.calls("iter") == []
    await h.put_and_settle(pcm(24_000, 1000))  # 0.5 s
    assert processor.calls("iter") == [SR]  # one whole step at 16 kHz
    h.handoff.end()
    h.join()
    # The end flushes the resampler: 1.5 s in, exactly 1.5 s at 16 kHz out.
    assert sum(processor.calls("insert")) == round(1.5 * SR)
    assert processor.calls("finish") == [round(1.5 * SR)]
    assert h.finals == [" all"]


# --------------------------------------------------------------------------- abort


async def test_abort_stops_a_waiting_thread_promptly_without_finishing() -> None:
    processor = ScriptedProcessor(finals=[(0.0, 1.0, " one")], last=(1.0, 2.0, " never"))
    h = await started(harness(processor))
    await h.put_and_settle(silence(1.0))
    assert h.finals == [" one"]

    began = time.monotonic()
    h.handoff.abort()
    h.join()
    assert time.monotonic() - began < 0.5
    assert processor.calls("finish") == []
    assert not any(isinstance(e, CompleteEvent) for e in h.events)
    assert await h.handoff.put(silence(0.5)) is False


async def test_abort_during_a_pass_drops_queued_audio_and_stops_after_the_pass() -> None:
    gate = threading.Event()
    processor = ScriptedProcessor(finals=[(0.0, 1.0, " one")], gate=gate)
    h = await started(harness(processor))
    assert await h.handoff.put(silence(1.0))
    await until(lambda: processor.calls("iter") == [SR])  # the pass is under way
    assert await h.handoff.put(silence(2.0))  # queued behind it
    assert h.handoff.queued_seconds == pytest.approx(2.0)

    h.handoff.abort()
    assert h.handoff.queued_seconds == 0.0
    gate.set()
    h.join()
    assert processor.log == [("init", 0), ("insert", SR), ("iter", SR)]  # the queued 2 s never arrived
    assert not any(isinstance(e, CompleteEvent) for e in h.events)


# --------------------------------------------------------------------------- interim


INTERIM_FINALS: list[ProcessorResult] = [
    None,
    None,
    None,
    None,
    None,
    (0.0, 1.0, " a b"),
    (1.0, 2.0, " c"),
    None,
]
INTERIM_PENDING: list[str | None] = [
    " a",  # new -> interim
    " a ",  # same text once stripped -> nothing
    " a b",  # changed -> interim
    None,  # nothing pending -> nothing
    " a b",  # same as the last interim -> nothing
    " c",  # after the final " a b" -> interim
    None,  # after the final " c"
    " d",  # -> interim
]


async def test_interim_results_are_emitted_only_when_the_unconfirmed_text_changes() -> None:
    processor = InterimProcessor(
        finals=INTERIM_FINALS, last=(2.0, 3.0, " d"), pending=INTERIM_PENDING
    )
    h = await started(harness(processor, interim=True))
    assert h.recognizer.interim
    for _ in INTERIM_PENDING:
        await h.put_and_settle(silence(1.0))
    h.handoff.end()
    h.join()

    assert h.transcripts == [
        (" a", False),
        (" a b", False),
        (" a b", True),
        (" c", False),
        (" c", True),
        (" d", False),
        (" d", True),
    ]
    assert isinstance(h.events[-1], CompleteEvent)
    interim = [e.span for e in h.events if isinstance(e, TranscriptEvent) and not e.is_final]
    assert interim[0].end == pytest.approx(1.0)  # the span the processor gave


async def test_a_final_resets_the_interim_so_the_same_guess_is_shown_again() -> None:
    processor = InterimProcessor(finals=[None, (0.0, 0.5, " x")], pending=[" y", " y"], last=None)
    h = await started(harness(processor, interim=True))
    await h.put_and_settle(silence(1.0))
    await h.put_and_settle(silence(1.0))
    h.handoff.end()
    h.join()
    assert h.transcripts == [(" y", False), (" x", True), (" y", False)]


async def test_no_interim_results_when_turned_off_or_unsupported() -> None:
    off = InterimProcessor(finals=INTERIM_FINALS, pending=INTERIM_PENDING)
    h = await started(harness(off, interim=False))
    assert not h.recognizer.interim
    for _ in INTERIM_PENDING:
        await h.put_and_settle(silence(1.0))
    h.handoff.end()
    h.join()
    assert h.transcripts == [(" a b", True), (" c", True)]

    unsupported = ScriptedProcessor()  # no unconfirmed()
    recognizer = ProcessorRecognizer(unsupported, EngineInfo("s", "m"), interim=True)
    assert not recognizer.interim


# --------------------------------------------------------------------------- backpressure


async def test_put_waits_while_the_queue_is_full_and_resumes_after_take() -> None:
    handoff = AudioHandoff(capacity_samples=100, loop=asyncio.get_running_loop())
    assert await handoff.put(pcm(60)) is True
    assert await handoff.put(pcm(0)) is True  # empty audio: nothing to queue
    assert handoff.queued_seconds == 60 / SR

    blocked = asyncio.create_task(handoff.put(pcm(50, 16384)))
    await asyncio.sleep(0.05)
    assert not blocked.done()  # 60 + 50 > 100
    assert handoff.queued_seconds == 60 / SR

    batch = await asyncio.to_thread(handoff.take)  # the recognition thread takes
    assert batch.samples == 60
    assert not batch.ended and not batch.aborted
    assert await asyncio.wait_for(blocked, WAIT_SEC) is True
    assert handoff.queued_seconds == 50 / SR
    assert handoff.take().pcm == pcm(50, 16384)

    # An empty queue takes a chunk however large, so it cannot wait forever.
    assert await asyncio.wait_for(handoff.put(pcm(500)), WAIT_SEC) is True
    assert handoff.queued_seconds == 500 / SR


async def test_abort_releases_a_waiting_put_and_end_refuses_more_audio() -> None:
    handoff = AudioHandoff(capacity_samples=100, loop=asyncio.get_running_loop())
    assert await handoff.put(pcm(100))
    waiting = asyncio.create_task(handoff.put(pcm(1)))
    await asyncio.sleep(0.02)
    assert not waiting.done()
    handoff.abort()
    assert await asyncio.wait_for(waiting, WAIT_SEC) is False
    assert handoff.take().aborted

    ended = AudioHandoff(capacity_samples=100, loop=asyncio.get_running_loop())
    assert await ended.put(pcm(10))
    ended.end()
    assert await ended.put(pcm(10)) is False
    batch = ended.take()
    assert batch.ended and batch.samples == 10


async def test_a_slow_recognizer_holds_back_the_sender() -> None:
    gate = threading.Event()
    processor = ScriptedProcessor(gate=gate)
    h = await started(harness(processor, capacity_sec=1.0))
    assert await h.handoff.put(silence(1.0))
    await until(lambda: processor.calls("iter") == [SR])  # busy in a pass
    assert await h.handoff.put(silence(1.0))  # fills the queue
    third = asyncio.create_task(h.handoff.put(silence(0.5)))
    await asyncio.sleep(0.05)
    assert not third.done()
    assert h.handoff.queued_seconds == pytest.approx(1.0)

    gate.set()  # the pass ends; the thread takes the queued second
    assert await asyncio.wait_for(third, WAIT_SEC) is True
    await until(lambda: processor.calls("iter") == [SR, 2 * SR])
    await until(lambda: h.handoff.queued_seconds == 0.0)  # the last 0.5 s, short of a step
    h.handoff.end()
    h.join()
    assert processor.calls("insert") == [SR, SR, round(0.5 * SR)]
    assert processor.calls("finish") == [round(2.5 * SR)]
    assert isinstance(h.events[-1], CompleteEvent)
