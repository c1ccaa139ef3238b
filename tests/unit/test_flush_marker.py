"""A finalize is a mark in the hand-off's queue, and the recognizer says when it is done.

The hand-off (`AudioHandoff`) with bytes alone: a flush covers the audio queued
before it, never audio put after it, however late the thread takes it. Then
`ProcessorRecognizer` over a real hand-off with scripted processors: every
flush pass ends with a `FlushedEvent` at the mark's stream time, after the
pass's final and voice activity.
"""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from app.core import resumed
from app.session import (
    AudioHandoff,
    Batch,
    CompleteEvent,
    EngineLoad,
    FlushedEvent,
    SessionEvent,
    SpeechEvent,
    TranscriptEvent,
)
from app.ws import native_message
from tests.unit.scripted import SR, Word
from tests.unit.test_session_recognizer import (
    ScriptedProcessor,
    harness,
    pcm,
    silence,
    started,
    until,
)
from tests.unit.test_utterance_events import Run, vad_processor
from tests.unit.test_utterance_events import pcm as loud_pcm
from tests.unit.test_vad_streaming import silence as quiet
from tests.unit.test_vad_streaming import speech


def handoff(capacity: int = 10_000) -> AudioHandoff:
    return AudioHandoff(capacity_samples=capacity, loop=asyncio.get_running_loop())


def shape(batch: Batch) -> tuple[bytes, bool, bool]:
    return batch.pcm, batch.flush, batch.ended


# --------------------------------------------------------------------------- the hand-off


async def test_a_flush_takes_only_the_audio_queued_before_it() -> None:
    h = handoff()
    a, b = pcm(10, 1), pcm(20, 2)
    assert await h.put(a)
    h.flush()
    assert await h.put(b)  # the client's next audio, before the thread looked
    assert shape(h.take()) == (a, True, False)
    assert h.queued_seconds == 20 / SR
    assert shape(h.take()) == (b, False, False)
    assert h.queued_seconds == 0.0


async def test_audio_taken_while_a_pass_waits_stops_at_a_pending_flush() -> None:
    h = handoff()
    a, b, c = pcm(10, 1), pcm(20, 2), pcm(30, 3)
    assert await h.put(a)
    assert await h.put(b)
    h.flush()
    assert await h.put(c)
    assert h.take_audio() == a + b
    assert h.take_audio() == b""  # the mark holds the rest back
    assert shape(h.take()) == (b"", True, False)  # the flush, with nothing more
    assert h.take_audio() == c


async def test_flushes_queue_in_order_and_the_end_comes_after_the_last() -> None:
    h = handoff()
    a, b, c = pcm(10, 1), pcm(20, 2), pcm(30, 3)
    assert await h.put(a)
    h.flush()
    h.flush()  # twice in a row: two flushes, the second finds nothing
    assert await h.put(b)
    h.flush()
    assert await h.put(c)
    h.end()
    assert [shape(h.take()) for _ in range(4)] == [
        (a, True, False),
        (b"", True, False),
        (b, True, False),
        (c, False, True),
    ]


async def test_a_flush_just_before_the_end_comes_with_it() -> None:
    h = handoff()
    assert await h.put(pcm(10, 1))
    h.flush()
    h.end()
    assert shape(h.take()) == (pcm(10, 1), True, True)


async def test_a_flush_on_an_empty_queue_wakes_the_thread() -> None:
    h = handoff()
    h.flush()
    batch = await asyncio.to_thread(h.take, 2.0)
    assert shape(batch) == (b"", True, False)
    assert shape(h.take(timeout=0.01)) == (b"", False, False)  # nothing left: a timeout


async def test_a_put_waiting_for_space_is_woken_by_a_take_up_to_the_mark() -> None:
    h = handoff(capacity=100)
    assert await h.put(pcm(60, 1))
    h.flush()
    assert await h.put(pcm(40, 2))  # full
    blocked = asyncio.create_task(h.put(pcm(50, 3)))
    await asyncio.sleep(0.02)
    assert not blocked.done()
    assert shape(await asyncio.to_thread(h.take)) == (pcm(60, 1), True, False)
    assert await asyncio.wait_for(blocked, 2.0)  # 40 + 50 fit now
    assert shape(h.take()) == (pcm(40, 2) + pcm(50, 3), False, False)


async def test_abort_drops_pending_flushes() -> None:
    h = handoff()
    assert await h.put(pcm(10))
    h.flush()
    h.abort()
    assert h.take().aborted


# --------------------------------------------------------------------------- the recognizer


def flushed(events: list[SessionEvent]) -> list[float]:
    return [e.at for e in events if isinstance(e, FlushedEvent)]


async def test_a_flush_that_finds_nothing_still_says_it_is_done() -> None:
    processor = ScriptedProcessor(last=None)
    h = await started(harness(processor))
    await h.put_and_settle(silence(0.5))
    h.handoff.flush()
    await until(lambda: bool(h.events))
    assert h.events == [FlushedEvent(0.5)]
    h.handoff.end()
    h.join()
    assert isinstance(h.events[-1], CompleteEvent) and flushed(h.events) == [0.5]


async def test_audio_sent_after_a_finalize_is_not_in_it_however_late_the_thread_looks() -> None:
    gate = threading.Event()
    processor = ScriptedProcessor(finals=[(0.0, 1.0, " one")], last=(1.0, 1.4, " two"), gate=gate)
    h = await started(harness(processor))
    assert await h.handoff.put(silence(1.0))
    await until(lambda: processor.calls("iter") == [SR])  # the thread is busy in a pass
    assert await h.handoff.put(silence(0.4))
    h.handoff.flush()
    assert await h.handoff.put(silence(0.6))  # sent right after the finalize
    gate.set()
    await until(lambda: len(flushed(h.events)) == 1)
    assert processor.calls("finish") == [round(1.4 * SR)]  # not the 0.6 s after it
    processor.last = (1.4, 2.0, " three")
    h.handoff.end()
    h.join()
    assert processor.calls("finish") == [round(1.4 * SR), 2 * SR]
    kinds = [(type(e).__name__, getattr(e, "cause", None)) for e in h.events]
    assert kinds == [
        ("TranscriptEvent", "agreement"),
        ("TranscriptEvent", "finalize"),
        ("FlushedEvent", None),  # after the flush's final
        ("TranscriptEvent", "end"),
        ("CompleteEvent", None),
    ]
    assert flushed(h.events) == [pytest.approx(1.4)]


async def test_a_pass_waiting_for_its_turn_does_not_take_audio_past_a_finalize() -> None:
    load = EngineLoad(light_sessions=0, passes=1)
    processor = ScriptedProcessor()
    h = await started(harness(processor, load=load))
    assert load.begin_pass()  # another session's pass runs
    assert await h.handoff.put(silence(1.0))
    await until(lambda: len(load._turns) == 1)  # this session waits for its turn
    assert await h.handoff.put(silence(0.3))
    h.handoff.flush()
    assert await h.handoff.put(silence(0.5))
    load.end_pass()
    await until(lambda: len(flushed(h.events)) == 1)
    # The waiting pass heard what came before the finalize, and the flush ended there.
    assert processor.calls("iter") == [round(1.3 * SR)]
    assert processor.calls("finish") == [round(1.3 * SR)]
    h.handoff.end()
    h.join()
    assert processor.calls("finish")[-1] == round(1.8 * SR)
    assert flushed(h.events) == [pytest.approx(1.3)]
    assert load.running == 0


async def test_several_finalizes_each_get_their_own_pass_and_event_in_order() -> None:
    processor = ScriptedProcessor(last=None)
    h = harness(processor, start=False)
    assert await h.handoff.put(silence(0.2))
    h.handoff.flush()
    h.handoff.flush()
    assert await h.handoff.put(silence(0.3))
    h.handoff.flush()
    h.handoff.end()  # the end right after the last flush: one pass for both
    h.start()
    h.join()
    assert processor.calls("finish") == [round(0.2 * SR), round(0.2 * SR), round(0.5 * SR)]
    assert flushed(h.events) == [pytest.approx(0.2), pytest.approx(0.2), pytest.approx(0.5)]
    assert isinstance(h.events[-1], CompleteEvent)  # after the last flush's event


async def test_a_finalize_at_another_rate_covers_the_resamplers_last_samples_too() -> None:
    """At 24 kHz the resampler holds ~20 ms back: a finalize flushes them, so the engine
    hears exactly the audio before it, and the audio after it starts the next turn."""
    processor = ScriptedProcessor(last=None)
    h = await started(harness(processor, client_rate=24_000))
    await h.put_and_settle(pcm(18_000, 1000))  # 0.75 s
    h.handoff.flush()
    await until(lambda: len(flushed(h.events)) == 1)
    assert processor.calls("finish") == [round(0.75 * SR)]
    assert flushed(h.events) == [0.75]
    await h.put_and_settle(pcm(12_000, 1000))  # 0.5 s
    h.handoff.end()
    h.join()
    assert processor.calls("finish") == [round(0.75 * SR), round(1.25 * SR)]


async def test_the_flush_event_comes_after_the_flush_passs_final_and_voice_activity() -> None:
    # A second of quiet (one pass), then 0.3 s of speech and a pause, under a step:
    # only the flush's pass hears them.
    script = [Word(1.05, 1.25, " w")]
    run = Run(vad_processor(script), asyncio.get_running_loop())
    await run.put(loud_pcm(quiet(1.0)))
    await run.put(loud_pcm(np.concatenate([speech(0.3), quiet(0.5)])))
    await run.flush()
    run.end()
    kinds = [type(e).__name__ for e in run.events]
    assert kinds == [
        "SpeechEvent",  # started
        "TranscriptEvent",  # " w", cause finalize
        "SpeechEvent",  # stopped at the pause
        "FlushedEvent",
        "CompleteEvent",
    ]
    started_, final, stopped, done = run.events[:4]
    assert isinstance(started_, SpeechEvent) and started_.kind == "started"
    assert isinstance(final, TranscriptEvent) and final.cause == "finalize"
    assert isinstance(stopped, SpeechEvent) and stopped.kind == "stopped"
    assert isinstance(done, FlushedEvent) and done.at == pytest.approx(1.8)


# --------------------------------------------------------------------------- the doors


def test_a_resumed_stream_shifts_the_flush_time_like_the_others() -> None:
    assert resumed(FlushedEvent(1.5), 10.0) == FlushedEvent(11.5)
    assert resumed(FlushedEvent(1.5), 0.0) == FlushedEvent(1.5)


def test_the_native_protocol_does_not_carry_the_end_of_a_finalize() -> None:
    assert native_message(FlushedEvent(1.0), None) is None
