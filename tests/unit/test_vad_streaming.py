"""Voice activity: `SpeechTimeline` and how `OnlineASRProcessor` uses it (scripted model).

Speech here is audio whose frames are loud: `LoudScorer` calls a frame speech
when its peak passes 0.05, so a test lays out speech and silence by seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from app.asr.online import (
    END_PAD_SEC,
    LEAD_IN_SEC,
    STRETCHED_WORD_SEC,
    OnlineASRProcessor,
    ProcessorOptions,
)
from app.asr.vad import FRAME_SAMPLES, FRAME_SEC, GrowingBufferVad, SileroScorer, SpeechTimeline
from tests.unit.scripted import SR, Call, Hypothesis, ScriptedASR, Word, regular_words, visible

ROOT = Path(__file__).resolve().parents[2]


class LoudScorer:
    def __init__(self) -> None:
        self.frames_scored = 0

    def __call__(self, frames: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        self.frames_scored += len(frames)
        return (np.abs(frames).max(axis=1) > 0.05).astype(np.float32)


def speech(seconds: float) -> npt.NDArray[np.float32]:
    return np.full(round(seconds * SR), 0.2, dtype=np.float32)


def silence(seconds: float) -> npt.NDArray[np.float32]:
    return np.zeros(round(seconds * SR), dtype=np.float32)


# --------------------------------------------------------------------------- timeline


def test_timeline_scores_whole_frames_and_carries_the_rest() -> None:
    scorer = LoudScorer()
    timeline = SpeechTimeline(scorer)
    timeline.accept(speech(0.01))  # under a frame: nothing scored yet
    assert scorer.frames_scored == 0 and timeline.end == 0.0
    timeline.accept(speech(1.0)[: FRAME_SAMPLES * 10])
    assert scorer.frames_scored == 10
    assert timeline.end == pytest.approx(10 * FRAME_SEC)


def test_timeline_answers_where_speech_is() -> None:
    timeline = SpeechTimeline(LoudScorer(), offset=5.0)
    timeline.accept(np.concatenate([silence(1.024), speech(1.024), silence(0.512)]))
    assert not timeline.has_speech(5.0, 6.0)
    assert timeline.has_speech(6.0, 6.1)
    assert timeline.last_speech_end() == pytest.approx(7.048)
    assert timeline.trailing_silence() == pytest.approx(0.512)
    assert timeline.first_speech_start(5.0) == pytest.approx(6.024)
    assert timeline.first_speech_start(6.5) == pytest.approx(6.5, abs=FRAME_SEC)
    assert timeline.first_speech_start(7.1) is None  # only silence after the speech
    timeline.forget_before(6.5)
    assert timeline.origin == pytest.approx(6.472) and timeline.has_speech(6.5, 7.0)
    assert timeline.last_speech_end() == pytest.approx(7.048)


def test_timeline_hysteresis_keeps_speech_through_a_dip() -> None:
    probs = iter([np.array([0.9, 0.25, 0.25, 0.1, 0.25], dtype=np.float32)])
    timeline = SpeechTimeline(lambda frames: next(probs))
    timeline.accept(silence(5 * FRAME_SEC))
    # 0.25 continues speech (above NEG_THRESHOLD) but does not start it again after 0.1.
    assert timeline.speech.tolist() == [True, True, True, False, False]


def test_silero_incremental_equals_one_call_and_finds_the_speech() -> None:
    from clients.asr_client import read_wav

    pcm, rate = read_wav(ROOT / "test_audio" / "en_16k.wav")
    assert rate == SR
    audio = np.frombuffer(pcm, dtype="<i2").astype(np.float32)[: 5 * SR] / 32768
    whole = SileroScorer()(audio[: len(audio) // FRAME_SAMPLES * FRAME_SAMPLES].reshape(-1, 512))
    scorer = SileroScorer()
    seen: list[npt.NDArray[np.float32]] = []

    def recording(frames: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        seen.append(scorer(frames))
        return seen[-1]

    timeline = SpeechTimeline(recording)
    for at in range(0, len(audio), 3_000):  # frames straddle the chunks
        timeline.accept(audio[at : at + 3_000])
    np.testing.assert_allclose(np.concatenate(seen), whole, atol=1e-5)
    assert not timeline.has_speech(0.0, 0.4)  # the clip opens with 0.5 s of silence
    assert timeline.has_speech(0.6, 2.0)


def test_growing_buffer_vad_gives_faster_whispers_probabilities_scoring_only_new_frames() -> None:
    from faster_whisper.utils import get_assets_path
    from faster_whisper.vad import SileroVADModel

    from clients.asr_client import read_wav

    pcm, _ = read_wav(ROOT / "test_audio" / "en_16k.wav")
    stream = np.frombuffer(pcm, dtype="<i2").astype(np.float32)[: 9 * SR] / 32768
    silero = SileroVADModel(str(Path(get_assets_path()) / "silero_vad_v6.onnx"))
    vad = GrowingBufferVad(lambda: SileroScorer(silero.session))
    # (start, end) of the buffer in seconds, and whether it is the last buffer grown.
    # It grows by whole frames and not, is cut at its start, grows again, and is
    # cut short at its end (a pass without its trailing silence).
    buffers = [
        (0.0, 2.0, False),
        (0.0, 3.0, True),
        (0.0, 3.7, True),
        (0.0, 3.7, True),
        (1.5, 4.7, False),
        (1.5, 5.5, True),
        (1.5, 4.0, False),
    ]
    whole_before = 0  # frames of audio only in the last buffer
    for start, end, grown in buffers:
        audio = stream[int(start * SR) : int(end * SR)]
        # Padded as faster-whisper's filter pads: 1 to FRAME_SAMPLES zeros.
        padded = np.pad(audio, (0, FRAME_SAMPLES - len(audio) % FRAME_SAMPLES))
        scored_before = vad.frames_scored
        np.testing.assert_array_equal(vad(padded), silero(padded).reshape(-1))
        frames = len(padded) // FRAME_SAMPLES
        # The padded frame is always scored; the frames of the old buffer are not.
        expected = frames - whole_before if grown else frames
        assert vad.frames_scored - scored_before == expected, (start, end)
        whole_before = frames - 1


# --------------------------------------------------------------------------- processor


def vad_processor(
    script: Sequence[Word], options: ProcessorOptions | None = None
) -> tuple[OnlineASRProcessor, ScriptedASR]:
    asr = ScriptedASR(lambda call: visible(script, call))
    processor = OnlineASRProcessor(asr, options, SpeechTimeline(LoudScorer()))
    asr.offset = lambda: processor.buffer_time_offset
    return processor, asr


def run(processor: OnlineASRProcessor, chunks: Sequence[npt.NDArray[np.float32]]) -> str:
    text = ""
    for chunk in chunks:
        processor.insert_audio_chunk(chunk)
        span = processor.process_iter()
        text += span.text if span else ""
    span = processor.finish()
    return text + (span.text if span else "")


def test_silence_is_never_transcribed_and_the_buffer_stays_short() -> None:
    processor, asr = vad_processor(regular_words(100))  # a model that would hear words
    for _ in range(60):
        processor.insert_audio_chunk(silence(1.0))
        assert processor.process_iter() is None
        assert processor.buffer_duration <= 1.0 + 1e-6
    assert processor.finish() is None
    assert asr.calls == []


def test_a_pause_commits_the_utterance_in_one_pass() -> None:
    script = regular_words(4, first=0.5)  # w0..w3 inside [0.5, 2.5]
    processor, asr = vad_processor(script)
    processor.insert_audio_chunk(np.concatenate([silence(0.5), speech(2.0)]))
    assert processor.process_iter() is None  # one hypothesis: nothing agreed yet
    processor.insert_audio_chunk(silence(0.7))  # the speaker pauses
    span = processor.process_iter()
    assert span is not None and span.text == " w0 w1 w2 w3"  # no second agreeing pass needed
    assert len(asr.calls) == 2
    # The model heard the utterance and END_PAD_SEC of its silence, not the whole pause.
    assert asr.calls[1].end == pytest.approx(2.5 + END_PAD_SEC, abs=FRAME_SEC)
    assert processor.buffer_time_offset >= 2.5 - FRAME_SEC
    processor.insert_audio_chunk(silence(1.0))
    assert processor.process_iter() is None and len(asr.calls) == 2


def test_words_after_the_speech_are_dropped() -> None:
    # The "model" invents a word in the silence after the speech ends at 2.0 s.
    script = [*regular_words(3, first=0.5), Word(2.3, 2.6, " Thank"), Word(2.6, 2.9, " you.")]
    processor, _ = vad_processor(script)
    text = run(processor, [np.concatenate([silence(0.5), speech(1.5)]), silence(1.5)])
    assert text == " w0 w1 w2"


def test_speech_to_the_end_is_committed_by_finish() -> None:
    script = regular_words(6, first=0.5)
    processor, _ = vad_processor(script)
    text = run(processor, [np.concatenate([silence(0.5), speech(1.0)]), speech(2.0)])
    assert text == " w0 w1 w2 w3 w4 w5"


def test_one_long_segment_is_cut_between_committed_words() -> None:
    # 40 s of speech without a pause, one segment: the buffer must still stay short.
    script = regular_words(80, per_segment=None)
    options = ProcessorOptions(buffer_trimming_sec=10.0, max_buffer_sec=25.0)
    processor, _ = vad_processor(script, options)
    longest = 0.0
    text = ""
    for _ in range(40):
        processor.insert_audio_chunk(speech(1.0))
        span = processor.process_iter()
        text += span.text if span else ""
        longest = max(longest, processor.buffer_duration)
    assert longest <= 11.0 + 1e-6
    span = processor.finish()
    text += span.text if span else ""
    assert text == "".join(f" w{k}" for k in range(80))


def test_the_next_utterance_is_transcribed_without_the_committed_one() -> None:
    script = [
        Word(0.55, 0.95, " a"),
        Word(1.05, 1.45, " b"),
        Word(3.05, 3.45, " c"),
        Word(3.55, 3.95, " d"),
    ]
    processor, asr = vad_processor(script)
    chunks = [
        np.concatenate([silence(0.5), speech(1.0)]),
        silence(1.0),
        np.concatenate([silence(0.5), speech(1.0)]),
        silence(1.0),
    ]
    assert run(processor, chunks) == " a b c d"
    later = [c for c in asr.calls if c.end > 3.0]
    assert later and all(c.offset >= 1.5 - FRAME_SEC for c in later)
    assert all(c.prompt == "a b" for c in later)  # the first utterance is the prompt


def test_the_next_utterance_is_heard_with_at_most_lead_in_sec_of_silence_before_it() -> None:
    script = [Word(0.55, 0.95, " a"), Word(3.05, 3.45, " b")]  # 2 s of silence between
    processor, asr = vad_processor(script)
    chunks = [
        np.concatenate([silence(0.5), speech(0.5)]),
        silence(1.0),  # a pause: " a" is committed, the buffer restarts at its end
        np.concatenate([silence(1.0), speech(0.5)]),  # speech again from 3.0 s
        silence(1.0),
    ]
    assert run(processor, chunks) == " a b"
    later = [c for c in asr.calls if c.end > 3.0]
    assert later
    assert all(c.offset == pytest.approx(3.0 - LEAD_IN_SEC, abs=FRAME_SEC) for c in later)


def test_stop_after_silence_needs_no_extra_pass() -> None:
    processor, asr = vad_processor(regular_words(4, first=0.5))
    processor.insert_audio_chunk(np.concatenate([silence(0.5), speech(2.0)]))
    assert processor.process_iter() is None  # heard w0..w3, not yet agreed
    processor.insert_audio_chunk(silence(0.3))  # shorter than a pause; then the client stops
    span = processor.finish()
    assert span is not None and span.text == " w0 w1 w2 w3"
    assert len(asr.calls) == 1  # the silence after the last pass was not transcribed


def test_stop_right_after_new_speech_transcribes_it() -> None:
    processor, asr = vad_processor(regular_words(6, first=0.5))
    processor.insert_audio_chunk(np.concatenate([silence(0.5), speech(2.0)]))
    processor.process_iter()
    processor.insert_audio_chunk(speech(1.0))  # w4, w5: never heard by a pass
    span = processor.finish()
    assert span is not None and span.text == " w0 w1 w2 w3 w4 w5"
    assert len(asr.calls) == 2


def test_longest_pause_is_found_between_speech() -> None:
    timeline = SpeechTimeline(LoudScorer())
    timeline.accept(
        np.concatenate(
            [speech(1.024), silence(0.128), speech(1.024), silence(0.256), speech(0.512)]
        )
    )
    pause = timeline.longest_pause(0.0, 2.9)
    assert pause == (pytest.approx(2.176), pytest.approx(2.432))
    assert timeline.longest_pause(0.0, 1.0) is None
    assert timeline.longest_pause(1.1, 2.9) == (pytest.approx(2.176), pytest.approx(2.432))


def test_a_long_utterance_is_cut_in_a_pause_voice_activity_heard() -> None:
    # Continuous speech with short (0.256 s) breaths every 4 s, under VAD_PAUSE_SEC.
    script = regular_words(60, step=0.5)
    processor, _ = vad_processor(script, ProcessorOptions(buffer_trimming_sec=6.0))
    cuts: list[float] = []
    longest = 0.0
    for k in range(30):
        chunk = speech(1.0) if k % 4 != 3 else np.concatenate([speech(0.744), silence(0.256)])
        processor.insert_audio_chunk(chunk)
        processor.process_iter()
        longest = max(longest, processor.buffer_duration)
        if processor.buffer_time_offset not in cuts and processor.buffer_time_offset > 0:
            cuts.append(processor.buffer_time_offset)
    assert cuts and longest <= 7.0 + 1e-6
    # Every cut lies inside a pause: [k*4 + 3.744, k*4 + 4.0).
    assert all(3.744 - 1e-6 <= cut % 4.0 < 4.0 for cut in cuts), cuts


def stops_short_from_start(script: Sequence[Word], keep: int, before: float) -> Hypothesis:
    """A model whose passes from before ``before`` s stop after ``keep`` words.

    As tiny.en did on Sonnet 1 ("But as the", and no more of the line), the
    alignment then stretches the last word it gave over the audio it left out.
    """

    def hear(call: Call) -> list[Word]:
        words = visible(script, call)
        if call.offset >= before or len(words) <= keep:
            return words
        last = words[keep - 1]
        return [*words[: keep - 1], replace(last, end=call.end - 0.05)]

    return hear


def test_a_pause_pass_that_stops_short_is_followed_by_a_pass_over_the_rest() -> None:
    script = regular_words(8, first=0.5)  # w0..w7 over [0.55, 4.45]
    asr = ScriptedASR(stops_short_from_start(script, keep=3, before=1.0))
    processor = OnlineASRProcessor(asr, None, SpeechTimeline(LoudScorer()))
    asr.offset = lambda: processor.buffer_time_offset
    chunks = [np.concatenate([silence(0.5), speech(4.0)]), silence(0.7), silence(0.5)]
    assert run(processor, chunks) == "".join(f" w{k}" for k in range(8))
    # The pause pass gave w0 w1 and w2 timed to the end of the speech; the buffer
    # was cut after w2's start, not at the end of the utterance, and heard again.
    pause_pass, again = asr.calls[1], asr.calls[2]
    assert pause_pass.offset == 0.0
    assert again.offset == pytest.approx(1.55 + STRETCHED_WORD_SEC)
    assert len(asr.calls) == 3


def test_speech_the_model_hears_as_nothing_is_heard_again_once() -> None:
    # w0 w1, then 2 s of loud audio the model transcribes as nothing (a laugh).
    script = regular_words(2, first=0.5)
    processor, asr = vad_processor(script)
    chunks = [np.concatenate([silence(0.5), speech(3.0)]), silence(0.7), silence(0.5)]
    assert run(processor, chunks) == " w0 w1"
    assert asr.calls[2].offset == pytest.approx(1.45)  # from the last word, once
    assert len(asr.calls) == 3
    assert processor.buffer_time_offset >= 3.5 - FRAME_SEC  # then the laugh was cut


def test_finish_hears_the_rest_when_its_pass_stops_short() -> None:
    script = regular_words(8, first=0.5)
    asr = ScriptedASR(stops_short_from_start(script, keep=3, before=1.0))
    processor = OnlineASRProcessor(asr, None, SpeechTimeline(LoudScorer()))
    asr.offset = lambda: processor.buffer_time_offset
    processor.insert_audio_chunk(np.concatenate([silence(0.5), speech(4.0), silence(0.4)]))
    span = processor.finish()  # the client stops before any pass
    assert span is not None and span.text == "".join(f" w{k}" for k in range(8))
    assert [c.offset for c in asr.calls] == [0.0, pytest.approx(1.55 + STRETCHED_WORD_SEC)]


def skips_start_of_long_buffers(
    script: Sequence[Word], longer_than: float, skip: float
) -> Hypothesis:
    """A model that, on buffers over ``longer_than`` s, hears nothing in their first ``skip`` s.

    As tiny.en did on a 30 s backlog that began in mid-sentence after `finish`.
    """

    def hear(call: Call) -> list[Word]:
        words = visible(script, call)
        if call.seconds <= longer_than:
            return words
        return [w for w in words if w.start >= call.offset + skip]

    return hear


def test_finish_hears_speech_the_pass_skipped_at_the_buffers_start() -> None:
    script = regular_words(24)  # w0..w23 over [0.05, 11.95]
    asr = ScriptedASR(skips_start_of_long_buffers(script, longer_than=10.0, skip=2.5))
    processor = OnlineASRProcessor(asr, None, SpeechTimeline(LoudScorer()))
    asr.offset = lambda: processor.buffer_time_offset
    processor.insert_audio_chunk(np.concatenate([speech(12.0), silence(0.5)]))  # a backlog
    span = processor.finish()
    assert span is not None and span.text == "".join(f" w{k}" for k in range(24))
    # The pass over the buffer began at w5; the speech before it got a pass of its own.
    assert [c.seconds for c in asr.calls[1:]] == [pytest.approx(2.55 + END_PAD_SEC)]


def test_agreement_commits_speech_both_passes_skipped_at_the_start() -> None:
    script = regular_words(26)
    asr = ScriptedASR(skips_start_of_long_buffers(script, longer_than=10.0, skip=2.5))
    processor = OnlineASRProcessor(asr, None, SpeechTimeline(LoudScorer()))
    asr.offset = lambda: processor.buffer_time_offset
    processor.insert_audio_chunk(speech(12.0))
    assert processor.process_iter() is None  # one pass: nothing agreed yet
    processor.insert_audio_chunk(speech(1.0))
    span = processor.process_iter()
    assert span is not None and span.text.startswith(" w0 w1 w2 w3 w4 w5")
