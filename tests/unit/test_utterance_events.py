"""Why a final was made (`TranscriptEvent.cause`) and the engine's voice activity (`SpeechEvent`).

What the drop-in protocols need beside the text: Deepgram's ``speech_final``,
``from_finalize`` and ``SpeechStarted``, OpenAI's turn boundaries. Speech here
is loud audio (`LoudScorer`), so a test lays out speech and silence by seconds.
"""

from __future__ import annotations

import asyncio
import math
import threading
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from app.asr.base import EngineInfo, SpeechChange, SupportsUtterances, TextSpan, TimedWord
from app.asr.online import OnlineASRProcessor, ProcessorOptions
from app.asr.vad import FRAME_SEC, SpeechTimeline
from app.session import (
    CompleteEvent,
    ProcessorRecognizer,
    SessionEvent,
    SpeechEvent,
    TranscriptEvent,
    split_span,
)
from app.ws import NativeWebSocket
from tests.unit.scripted import SR, ScriptedASR, Word, regular_words, visible
from tests.unit.test_session_recognizer import (
    WAIT_SEC,
    CountingHandoff,
    ScriptedProcessor,
    until,
)
from tests.unit.test_vad_streaming import LoudScorer, silence, speech

PAUSE_SEC = 0.3


def vad_processor(script: list[Word]) -> OnlineASRProcessor:
    asr = ScriptedASR(lambda call: visible(script, call))
    options = ProcessorOptions(pause_sec=PAUSE_SEC)
    processor = OnlineASRProcessor(asr, options, SpeechTimeline(LoudScorer()))
    asr.offset = lambda: processor.buffer_time_offset
    return processor


def kinds(changes: list[SpeechChange]) -> list[tuple[str, float]]:
    return [(c.kind, c.at) for c in changes]


# --------------------------------------------------------------------------- the processor


def test_the_processor_hears_utterances_start_and_stop_at_a_pause() -> None:
    processor = vad_processor(regular_words(4, first=0.5))
    assert isinstance(processor, SupportsUtterances)
    processor.insert_audio_chunk(np.concatenate([silence(0.5), speech(2.0)]))
    assert kinds(processor.speech_changes()) == [("started", pytest.approx(0.5, abs=FRAME_SEC))]
    assert processor.process_iter() is None and not processor.utterance_ended()
    processor.insert_audio_chunk(silence(0.7))
    (stopped,) = processor.speech_changes()
    assert stopped.kind == "stopped" and stopped.at == pytest.approx(2.5, abs=FRAME_SEC)
    span = processor.process_iter()
    assert span is not None and processor.utterance_ended()  # the pause committed it
    processor.insert_audio_chunk(silence(1.0))
    assert processor.process_iter() is None and not processor.utterance_ended()
    assert processor.speech_changes(ended=True) == []  # nobody is speaking


def test_a_dip_shorter_than_the_pause_is_one_utterance_and_the_end_stops_it() -> None:
    processor = vad_processor([])
    processor.insert_audio_chunk(np.concatenate([speech(1.0), silence(PAUSE_SEC / 2)]))
    processor.insert_audio_chunk(speech(1.0))
    assert [c.kind for c in processor.speech_changes()] == ["started"]
    (stopped,) = processor.speech_changes(ended=True)
    assert stopped.kind == "stopped"
    assert stopped.at == pytest.approx(1.0 + PAUSE_SEC / 2 + 1.0, abs=FRAME_SEC)


def test_a_flush_in_mid_speech_does_not_end_the_utterance() -> None:
    processor = vad_processor([])
    processor.insert_audio_chunk(speech(1.0))
    processor.finish()  # a client's finalize: the processor goes on
    processor.insert_audio_chunk(speech(1.0))
    assert [c.kind for c in processor.speech_changes()] == ["started"]


def test_without_voice_activity_there_are_no_changes() -> None:
    asr = ScriptedASR(lambda call: [])
    processor = OnlineASRProcessor(asr)
    processor.insert_audio_chunk(speech(2.0))
    processor.process_iter()
    assert processor.speech_changes(ended=True) == [] and not processor.utterance_ended()


# --------------------------------------------------------------------------- the session


def pcm(audio: npt.NDArray[np.float32]) -> bytes:
    return (audio * 32767).astype("<i2").tobytes()


class Run:
    """A `ProcessorRecognizer` in its thread over a real hand-off; events in a list."""

    def __init__(self, processor: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.handoff = CountingHandoff(30 * SR, loop)
        info = EngineInfo("scripted", "m", min_chunk_sec=1.0)
        self.recognizer = ProcessorRecognizer(processor, info, interim=False)
        self.events: list[SessionEvent] = []
        self.thread = threading.Thread(
            target=self.recognizer.run, args=(self.handoff, self.events.append), daemon=True
        )
        self.thread.start()

    async def settle(self, action: Any) -> None:
        """Do ``action`` (put audio, flush) and wait until the thread handled it and waits again."""
        await until(lambda: self.handoff.takes >= 1)  # the thread waits for its first batch
        takes = self.handoff.takes
        await action
        await until(lambda: self.handoff.takes == takes + 1)

    async def put(self, audio: bytes) -> None:
        async def put() -> None:
            assert await self.handoff.put(audio)

        await self.settle(put())

    async def flush(self) -> None:
        async def flush() -> None:
            self.handoff.flush()

        await self.settle(flush())

    def end(self) -> None:
        self.handoff.end()
        self.thread.join(WAIT_SEC)
        assert not self.thread.is_alive()

    def story(self) -> list[tuple[str, ...]]:
        """Finals as (text, cause), voice activity as (kind, time), complete."""
        out: list[tuple[str, ...]] = []
        for e in self.events:
            if isinstance(e, TranscriptEvent):
                assert e.is_final
                out.append((e.span.text, str(e.cause)))
            elif isinstance(e, SpeechEvent):
                out.append((e.kind, f"{e.at:.3f}"))
            elif isinstance(e, CompleteEvent):
                out.append(("complete",))
        return out


def frame_start(seconds: float) -> str:
    """Where the 32 ms frame holding ``seconds`` starts, as `Run.story` shows it."""
    return f"{math.floor(seconds / FRAME_SEC) * FRAME_SEC:.3f}"


async def test_finals_say_why_they_were_made_and_speech_events_frame_them() -> None:
    # Speech at 0.5-2.5 s (w0..w3) and 4.0-4.5 s (w9), given a second at a time.
    script = [*regular_words(4, first=0.5), Word(4.05, 4.4, " w9")]
    run = Run(vad_processor(script), asyncio.get_running_loop())
    await run.put(pcm(np.concatenate([silence(0.5), speech(0.5)])))
    await run.put(pcm(speech(1.0)))  # two passes agree on w0
    await run.put(pcm(np.concatenate([speech(0.5), silence(0.5)])))  # the pause
    await run.put(pcm(silence(1.0)))
    await run.put(pcm(speech(0.5)))  # under a step: no pass
    await run.flush()  # finalize
    run.end()
    # Speech starts with the frame holding its first sample; the silence after it
    # with the frame after its last one.
    assert run.story() == [
        ("started", frame_start(0.5)),
        (" w0", "agreement"),
        (" w1 w2 w3", "pause"),  # the utterance's finals, then its stop
        ("stopped", frame_start(2.5 + FRAME_SEC)),
        ("started", frame_start(4.0)),
        (" w9", "finalize"),
        ("stopped", frame_start(4.5)),  # the stream ended while speaking: its last frame
        ("complete",),
    ]
    finals = [e for e in run.events if isinstance(e, TranscriptEvent)]
    assert [(e.from_finalize, e.ends_utterance) for e in finals] == [
        (False, False),
        (False, True),
        (True, True),
    ]
    # Each stop came from the pass that committed its utterance whole (a pause, the end):
    # a door may close the turn on it at once (`SpeechEvent.settled`).
    speech_events = [e for e in run.events if isinstance(e, SpeechEvent)]
    assert [(e.kind, e.settled) for e in speech_events] == [
        ("started", False),
        ("stopped", True),
        ("started", False),
        ("stopped", True),
    ]


async def test_a_pass_over_several_utterances_emits_each_with_its_own_stop() -> None:
    """Audio sent faster than real time (a file at once): one pass commits two
    utterances. Each still comes before its stop and after its start, so a door that
    closes a turn on a stop (OpenAI's server VAD) gives each turn its own words."""
    script = [*regular_words(4, first=0.5), Word(4.05, 4.4, " w9"), Word(4.5, 4.9, " w10")]
    run = Run(vad_processor(script), asyncio.get_running_loop())
    audio = [silence(0.5), speech(2.0), silence(1.5), speech(1.0), silence(1.0)]
    await run.put(pcm(np.concatenate(audio)))
    run.end()
    assert run.story() == [
        ("started", frame_start(0.5)),
        (" w0 w1 w2 w3", "pause"),
        ("stopped", frame_start(2.5 + FRAME_SEC)),
        ("started", frame_start(4.0)),
        (" w9 w10", "pause"),
        ("stopped", frame_start(5.0 + FRAME_SEC)),
        ("complete",),
    ]
    speech_events = [e for e in run.events if isinstance(e, SpeechEvent)]
    assert [e.settled for e in speech_events if e.kind == "stopped"] == [True, True]


async def test_an_engine_without_voice_activity_says_agreement_finalize_and_end() -> None:
    processor = ScriptedProcessor(finals=[(0.0, 0.5, " one")], last=(1.0, 1.5, " two"))
    run = Run(processor, asyncio.get_running_loop())
    await run.put(pcm(silence(1.0)))
    await run.flush()
    processor.last = (1.5, 2.0, " three")
    run.end()
    assert run.story() == [
        (" one", "agreement"),
        (" two", "finalize"),
        (" three", "end"),
        ("complete",),
    ]


async def test_the_native_protocol_does_not_carry_voice_activity() -> None:
    sent: list[str] = []

    class Socket:
        async def send_text(self, text: str) -> None:
            sent.append(text)

    await NativeWebSocket(Socket()).send(SpeechEvent("started", 1.0))  # type: ignore[arg-type]
    assert sent == []


def test_a_span_splits_before_the_first_word_that_starts_at_the_pause() -> None:
    words = (
        TimedWord(0.5, 0.9, " Ask", 0.9),
        TimedWord(1.0, 1.4, " not.", 0.7),
        TimedWord(3.0, 3.4, " What", 0.5),
    )
    span = TextSpan(0.4, 3.6, " Ask not. What", words, confidence=0.7)
    head, rest = split_span(span, 2.0)
    assert head == TextSpan(0.4, 1.4, " Ask not.", words[:2], pytest.approx(0.8))
    assert rest == TextSpan(3.0, 3.6, " What", words[2:], 0.5)
    assert split_span(span, 5.0) == (span, None)  # no words after the pause
    assert split_span(span, 0.1) == (None, span)  # none before it
    spaced = TextSpan(0.4, 3.6, "Ask not. What", tuple(w._replace(word=w.word[1:]) for w in words))
    assert [part.text for part in split_span(spaced, 2.0) if part] == ["Ask not.", "What"]
    # Words that do not make up the text (an engine that rewrote it): never split.
    rewritten = TextSpan(0.4, 3.6, " Ask not, what", words)
    assert split_span(rewritten, 2.0) == (rewritten, None)


async def test_a_processor_is_initialised_when_its_stream_begins() -> None:
    """The guides: ``init(offset)`` is "called when a new audio stream begins"; a
    processor that builds its state there (not in ``__init__``) must work."""

    class BuiltInInit:
        def init(self, offset: float = 0.0) -> None:
            self.heard = 0  # no such attribute until init()
            self.offset = offset

        def insert_audio_chunk(self, audio: Any) -> None:
            self.heard += len(audio)

        def process_iter(self) -> tuple[float, float, str] | None:
            return None

        def finish(self) -> tuple[float, float, str]:
            return (self.offset, self.heard / SR, f" heard{self.heard}")

    run = Run(BuiltInInit(), asyncio.get_running_loop())
    await run.put(pcm(silence(0.5)))
    run.end()
    assert run.story() == [(" heard8000", "end"), ("complete",)]
