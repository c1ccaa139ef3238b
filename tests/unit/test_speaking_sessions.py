"""Only sessions with speech to transcribe make the engine busy or stop previews.

A stream of silence costs the engine next to nothing (voice activity skips its
passes). `EngineLoad` counts the sessions whose processor says its buffer holds
speech (`SupportsSpeaking`); speech here is loud audio (`LoudScorer`).
"""

from __future__ import annotations

import pytest

from app.asr.base import SupportsSpeaking
from app.asr.online import OnlineASRProcessor, ProcessorOptions
from app.asr.vad import SpeechTimeline
from app.session import EngineLoad
from tests.unit.scripted import ScriptedASR, regular_words, visible
from tests.unit.test_session_recognizer import harness, started
from tests.unit.test_utterance_events import PAUSE_SEC, pcm
from tests.unit.test_vad_streaming import LoudScorer, silence, speech


class TellingProcessor(OnlineASRProcessor):
    """A processor with voice activity that logs what each committing pass was told."""

    def __init__(self, *, vad: bool = True) -> None:
        asr = ScriptedASR(lambda call: visible(regular_words(40), call))
        options = ProcessorOptions(pause_sec=PAUSE_SEC)
        super().__init__(asr, options, SpeechTimeline(LoudScorer()) if vad else None)
        asr.offset = lambda: self.buffer_time_offset
        self.told: list[bool] = []

    def set_busy(self, busy: bool) -> None:
        self.told.append(busy)
        super().set_busy(busy)


def test_the_processor_speaks_while_its_buffer_holds_speech() -> None:
    processor = TellingProcessor()
    assert isinstance(processor, SupportsSpeaking)
    assert not processor.speaking()  # nothing heard yet
    processor.insert_audio_chunk(silence(1.0))
    assert not processor.speaking()
    processor.process_iter()  # silence skipped
    processor.insert_audio_chunk(speech(1.0))
    assert processor.speaking()
    processor.process_iter()
    assert processor.speaking()  # the utterance goes on
    processor.insert_audio_chunk(silence(1.0))
    processor.process_iter()  # the pause commits the utterance and cuts it away
    assert processor.utterance_ended() and not processor.speaking()


def test_without_voice_activity_a_processor_always_speaks() -> None:
    processor = TellingProcessor(vad=False)
    processor.insert_audio_chunk(silence(1.0))
    assert processor.speaking()


async def test_silent_sessions_neither_make_the_engine_busy_nor_stop_previews() -> None:
    load = EngineLoad(light_sessions=1, busy_sessions=1)
    talker, listener = TellingProcessor(), TellingProcessor()
    a = await started(harness(talker, load=load))  # type: ignore[arg-type]
    b = await started(harness(listener, load=load))  # type: ignore[arg-type]
    # Until its first pass a session counts as speaking.
    assert (load.sessions, load.speaking, load.busy, load.light) == (2, 2, True, False)
    await b.put_and_settle(pcm(silence(1.0)))
    assert (load.speaking, load.busy, load.light) == (1, False, True)
    await a.put_and_settle(pcm(speech(1.0)))
    await a.put_and_settle(pcm(speech(1.0)))
    assert talker.told == [False, False]  # one of two sessions speaks: not busy
    await b.put_and_settle(pcm(speech(1.0)))  # the other one starts talking
    assert (load.speaking, listener.told) == (2, [False, True])  # quiet, then busy
    await a.put_and_settle(pcm(speech(1.0)))
    assert talker.told[-1] is True and not load.light
    await b.put_and_settle(pcm(silence(1.0)))  # its pause: the utterance is committed
    assert load.speaking == 1
    await a.put_and_settle(pcm(speech(1.0)))
    assert talker.told == [False, False, True, False]
    for h in (a, b):
        h.handoff.end()
        h.join()
    assert (load.sessions, load.speaking) == (0, 0)


@pytest.mark.parametrize("quiet", [True, False])
async def test_a_session_that_ends_leaves_the_counts_whether_it_was_quiet(quiet: bool) -> None:
    load = EngineLoad(light_sessions=0, busy_sessions=0)
    h = await started(harness(TellingProcessor(), load=load))  # type: ignore[arg-type]
    await h.put_and_settle(pcm(silence(1.0) if quiet else speech(1.0)))
    assert load.speaking == (0 if quiet else 1)
    h.handoff.end()
    h.join()
    with load:  # a new session is counted as speaking again
        assert (load.sessions, load.speaking) == (1, 1)
    assert load.speaking == 0
