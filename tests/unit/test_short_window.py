"""Streaming passes: the short encoder window (WHISPER_SHORT_WINDOW) and one window per pass."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from app.asr import faster_whisper_backend as backend


def test_encoder_frames_are_at_least_10_s_with_a_margin_and_cap_at_30_s() -> None:
    assert backend.encoder_frames(1.0) == 1000  # never under 10 s: shorter windows loop
    assert backend.encoder_frames(8.0) == 1000  # 8 s + 2 s
    assert backend.encoder_frames(12.0) == 1500  # 12 s + 25 %
    assert backend.encoder_frames(27.0) == 3000  # never past Whisper's window


def test_padding_follows_the_calling_threads_window_only() -> None:
    import faster_whisper.transcribe as fw_transcribe

    backend._install_streaming_pass()
    backend._install_streaming_pass()  # idempotent: one wrapper, not two
    pad = fw_transcribe.pad_or_trim
    assert getattr(pad, "asr_stream_window", False)
    features = np.ones((80, 250), dtype=np.float32)
    backend._window.frames = 500
    try:
        assert pad(features).shape == (80, 500)
        seen: list[tuple[int, int]] = []
        other = threading.Thread(target=lambda: seen.append(pad(features).shape))
        other.start()
        other.join()
        assert seen == [(80, 3000)]  # another thread keeps Whisper's 30 s
    finally:
        backend._window.frames = None
    assert pad(features).shape == (80, 3000)


class _Segment:
    def __init__(self, text: str, compression_ratio: float) -> None:
        self.text, self.compression_ratio = text, compression_ratio
        self.start, self.end, self.no_speech_prob = 0.0, 1.0, 0.0
        self.words: list[object] = []


class _LoopingModel:
    """Loops on a short window (``loop`` is its text), reads fine on 30 s."""

    def __init__(self, loop: str = " good morning" * 20, ratio: float = 12.0) -> None:
        self.loop, self.ratio = loop, ratio
        self.windows: list[int | None] = []
        self.budgets: list[object] = []

    def transcribe(self, audio: object, **options: object) -> tuple[list[_Segment], object]:
        frames = getattr(backend._window, "frames", None)
        self.windows.append(frames)
        self.budgets.append(options.get("max_new_tokens"))
        info = type("Info", (), {"language": "en"})()
        if frames is not None:
            return [_Segment(self.loop, self.ratio)], info
        return [_Segment(" good morning", 1.1)], info


def test_a_short_window_pass_that_loops_is_redone_on_the_full_window() -> None:
    model = _LoopingModel()
    asr = backend.FasterWhisperASR("en", model=model, short_window=True)
    result = asr.transcribe(np.zeros(16_000, dtype=np.float32))
    assert result["text"] == " good morning"
    assert model.windows == [1000, None]
    # Both passes were bounded: a loop stops at the budget, not at 448 tokens.
    assert model.budgets == [backend.token_budget(1.0)] * 2


def test_a_loop_cut_short_by_the_budget_is_told_by_its_repeats() -> None:
    # Too short for the compression ratio (1.3), as on 0.5 s of JFK's first breath.
    model = _LoopingModel(loop=" S. S. S. S. S. S. S", ratio=1.3)
    asr = backend.FasterWhisperASR("en", model=model, short_window=True)
    assert asr.transcribe(np.zeros(8_000, dtype=np.float32))["text"] == " good morning"
    assert model.windows == [1000, None]


@pytest.mark.parametrize(
    ("text", "loops"),
    [
        (" S. S. S. S. S. S. S", True),
        (" Good morning. Good morning. Good morning.", True),
        (" ha ha ha ha ha ha", True),
        (" no, no, no", False),  # people say that
        (" very very very very", False),
        (" And so my fellow Americans, ask not", False),
        ("", False),
    ],
)
def test_repeats_itself(text: str, loops: bool) -> None:
    assert backend.repeats_itself(text) is loops


@pytest.mark.parametrize(
    ("text", "start"),
    [
        ("he said thick thick thick thick thick thick thick", 3),
        ("good morning good morning good morning and then", 2),
        ("a b c a b c a b c d", 3),
        ("ha ha ha ha ha ha", 1),
        ("no no no and very very very very", None),  # people say that
        ("and so my fellow americans", None),
        ("", None),
    ],
)
def test_loop_start_is_after_the_first_saying_of_the_repeated_phrase(
    text: str, start: int | None
) -> None:
    assert backend.loop_start(text.split()) == start


def _word(text: str, start: float) -> dict[str, Any]:
    return {"start": start, "end": start + 0.3, "text": text, "probability": 0.9}


def _segment(texts: list[str], start: float) -> dict[str, Any]:
    words = [_word(t, start + 0.3 * i) for i, t in enumerate(texts)]
    return {"start": start, "end": words[-1]["end"], "text": "".join(texts), "words": words}


# What BUFFER_TRIMMING_SEC=8 streamed on a held-out clip: a loop the 30 s redo repeated.
THICK = [_segment([" He", " said"], 0.0), _segment([" thick,"] * 40, 1.0)]


def test_cut_loop_keeps_the_words_before_the_loop_and_its_first_saying() -> None:
    after = _segment([" and", " then"], 14.0)
    result = backend.cut_loop({"text": "…", "segments": [*THICK, after], "language": "en"})
    assert result["text"] == " He said thick,"
    assert [[w["text"] for w in s["words"]] for s in result["segments"]] == [
        [" He", " said"],
        [" thick,"],
    ]
    assert result["segments"][1]["end"] == pytest.approx(1.3)  # the kept word's end


def test_cut_loop_leaves_a_result_without_word_for_word_repeats_alone() -> None:
    result = {"text": " He said", "segments": [THICK[0]], "language": "en"}
    assert backend.cut_loop(result) is result  # type: ignore[arg-type]


class _WordSegment(_Segment):
    def __init__(self, words: list[dict[str, Any]], compression_ratio: float) -> None:
        super().__init__("".join(w["text"] for w in words), compression_ratio)
        self.start, self.end = words[0]["start"], words[-1]["end"]
        self.words = [
            SimpleNamespace(start=w["start"], end=w["end"], word=w["text"], probability=0.9)
            for w in words
        ]


class _AlwaysLooping(_LoopingModel):
    """Loops on the short window and on the full one alike."""

    def transcribe(self, audio: object, **options: object) -> tuple[list[_Segment], object]:
        self.windows.append(getattr(backend._window, "frames", None))
        info = type("Info", (), {"language": "en"})()
        return [_WordSegment(s["words"], 1.5) for s in THICK], info


def test_a_pass_that_loops_on_both_windows_loses_the_repeats_not_the_words_before() -> None:
    model = _AlwaysLooping()
    asr = backend.FasterWhisperASR("en", model=model, short_window=True)
    result = asr.transcribe(np.zeros(8 * 16_000, dtype=np.float32))
    assert model.windows == [1000, None]  # the redo on 30 s looped too
    assert [w.word for w in asr.ts_words(result)] == [" He", " said", " thick,"]


def test_token_budget_grows_with_the_audio_and_leaves_room_for_the_longest_prompt() -> None:
    assert backend.token_budget(0.5) == 28
    assert backend.token_budget(10.0) == 170
    assert backend.token_budget(29.0) == backend.MAX_NEW_TOKENS
    # faster-whisper keeps at most 223 prompt tokens, plus the start tokens; 448 in all.
    assert backend.MAX_NEW_TOKENS + 223 + 4 <= 448


TS = 100  # a fake tokenizer: ids from 100 on are timestamps (0.02 s each), 50 ends the text
TOKENIZER = SimpleNamespace(timestamp_begin=TS, eot=50)
MODEL = SimpleNamespace(time_precision=0.02, input_stride=2)
# "<|0.00|> a b <|0.20|><|0.20|> c d": one finished segment, then one the buffer cut off.
UNFINISHED = [TS, 1, 2, TS + 10, TS + 10, 3, 4]


def _split(tokens: list[int], *, streaming: bool) -> tuple[list[dict[str, Any]], int, bool]:
    import faster_whisper.transcribe as fw_transcribe

    backend._install_streaming_pass()
    backend._window.one_window = streaming
    try:
        return fw_transcribe.WhisperModel._split_segments_by_timestamps(  # type: ignore[no-any-return]
            MODEL, TOKENIZER, tokens, 1.0, 800, 8.0, 0
        )
    finally:
        backend._window.one_window = False


def test_whisper_drops_an_unfinished_segment_and_seeks_back_to_decode_it_again() -> None:
    segments, seek, done = _split(UNFINISHED, streaming=False)
    assert [s["tokens"] for s in segments] == [[TS, 1, 2, TS + 10]]
    assert (seek, done) == (10 * MODEL.input_stride, False)  # a second window from 0.20 s


def test_a_streaming_pass_keeps_the_unfinished_segment_and_ends_the_window() -> None:
    segments, seek, done = _split(UNFINISHED, streaming=True)
    assert [s["tokens"] for s in segments] == [[TS, 1, 2, TS + 10], [TS + 10, 3, 4]]
    assert segments[1]["start"] == pytest.approx(1.2)  # the window's offset + 0.20 s
    assert segments[1]["end"] == pytest.approx(9.0)  # to the end of the audio
    assert (seek, done) == (800, True)


def test_a_streaming_pass_changes_nothing_when_whisper_finished_its_segments() -> None:
    finished = [TS, 1, 2, TS + 10, TS + 10, 3, 4, TS + 30]
    assert _split(finished, streaming=True) == _split(finished, streaming=False)
    only_timestamps_after = [TS, 1, 2, TS + 10, TS + 10]  # no words after the last pair
    segments, seek, done = _split(only_timestamps_after, streaming=True)
    assert [s["tokens"] for s in segments] == [[TS, 1, 2, TS + 10]]
    assert (seek, done) == (800, True)
