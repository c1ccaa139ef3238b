"""LocalAgreement-2 (`OnlineASRProcessor`) driven by a scripted model (see `scripted.py`)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from app.asr.base import TimedWord
from app.asr.online import (
    FORCED_CUT_KEEP_SEC,
    MAX_WORD_SEC,
    PROMPT_CHARS,
    STRETCHED_WORD_SEC,
    HypothesisBuffer,
    ProcessorOptions,
    normalize_word,
    span_of,
    to_timed_words,
    unstretch,
)
from tests.unit.scripted import (
    EPS,
    SR,
    Call,
    Driver,
    Hypothesis,
    Word,
    make_processor,
    regular_words,
    text_of,
    visible,
)


def by_call(*hypotheses: Sequence[Word]) -> Hypothesis:
    """The k-th call hears ``hypotheses[k]`` (the last one from then on), clipped to the audio."""

    def hyp(call: Call) -> list[Word]:
        return visible(hypotheses[min(call.index, len(hypotheses) - 1)], call)

    return hyp


def index_of(word: TimedWord) -> int:
    match = re.fullmatch(r" w(\d+)\.?(?:v\d+)?", word.word)
    assert match, word.word
    return int(match.group(1))


def times(words: Sequence[TimedWord]) -> list[tuple[float, float]]:
    return [(round(w.start, 6), round(w.end, 6)) for w in words]


# --------------------------------------------------------------------------- agreement


def test_first_pass_commits_nothing_and_words_commit_after_two_agreeing_passes() -> None:
    script = regular_words(8)  # w0 [0.05, 0.45], w1 [0.55, 0.95], ...
    d = make_processor(script)

    assert d.step() is None
    pending = d.processor.unconfirmed()
    assert pending is not None
    assert pending.text == " w0 w1"
    assert (pending.start, pending.end) == pytest.approx((0.05, 0.95))

    first = d.step()
    assert first is not None
    assert first.text == " w0 w1"
    assert (first.start, first.end) == pytest.approx((0.05, 0.95))
    assert [w.word for w in first.words] == [" w0", " w1"]
    unconfirmed = d.processor.unconfirmed()
    assert unconfirmed is not None
    assert unconfirmed.text == " w2 w3"

    second = d.step()
    assert second is not None
    assert second.text == " w2 w3"
    third = d.step()
    assert third is not None
    assert third.text == " w4 w5"

    last = d.finish()
    assert last is not None
    assert last.text == " w6 w7"
    assert d.text == text_of(script)
    assert len(d.asr.calls) == 4  # finish had no new audio to transcribe


@pytest.mark.parametrize("chunks", [[1.0] * 25, [0.3, 0.7, 1.3, 0.45] * 8])
def test_commits_follow_stream_order_and_reproduce_the_script_exactly(
    chunks: list[float],
) -> None:
    duration = sum(chunks)
    script = [w for w in regular_words(80, per_segment=4) if w.end <= duration]
    d = make_processor(script)
    for seconds in chunks:
        d.step(seconds)
    d.finish()

    assert d.text == text_of(script)
    assert [index_of(w) for w in d.words] == list(range(len(script)))
    assert times(d.words) == [(w.start, w.end) for w in script]
    starts = [s.start for s in d.finals]
    assert starts == sorted(starts)
    # Segment trimming was active: the buffer did get cut on the way.
    assert max(c.offset for c in d.asr.calls) > 0


@pytest.mark.parametrize(
    "echo",
    [
        [Word(0.92, 0.98, " one"), Word(0.98, 1.04, " two")],  # a repeated 2-gram
        [Word(0.95, 1.05, " Two,")],  # a repeated 1-gram, other spelling
    ],
)
def test_repeated_committed_words_at_the_seam_are_not_committed_again(
    echo: list[Word],
) -> None:
    one, two = Word(0.1, 0.4, " one"), Word(0.6, 0.9, " two")
    three, four, five = Word(1.1, 1.4, " three"), Word(1.6, 1.9, " four"), Word(2.1, 2.4, " five")
    d = make_processor(
        by_call(
            [one, two],
            [one, two, three, four],
            [*echo, three, four, five],  # the model repeats what was committed
        )
    )

    assert d.step() is None
    committed = d.step()
    assert committed is not None
    assert committed.text == " one two"
    after_echo = d.step()
    assert after_echo is not None
    assert after_echo.text == " three four"
    tail = d.finish()
    assert tail is not None
    assert tail.text == " five"
    assert d.text == " one two three four five"


def test_agreement_ignores_case_and_punctuation_and_commits_the_newer_spelling() -> None:
    d = make_processor(
        by_call(
            [Word(0.1, 0.4, " the"), Word(0.6, 0.9, " dog")],
            [Word(0.1, 0.4, " The"), Word(0.6, 0.9, " Dog."), Word(1.1, 1.4, " ran")],
            [
                Word(0.1, 0.4, " The"),
                Word(0.6, 0.9, " Dog."),
                Word(1.1, 1.4, " ran."),
                Word(1.6, 1.9, " Home"),
            ],
        )
    )
    assert d.step(1.0) is None
    first = d.step(1.0)
    assert first is not None
    assert [w.word for w in first.words] == [" The", " Dog."]
    assert first.text == " The Dog."
    second = d.step(1.0)
    assert second is not None
    assert second.text == " ran."
    assert d.finish() is not None
    assert d.text == " The Dog. ran. Home"


def test_a_changing_hypothesis_is_committed_only_once_it_is_stable() -> None:
    the = Word(0.1, 0.3, " the")
    d = make_processor(
        by_call(
            [the, Word(0.4, 0.6, " round"), Word(0.7, 0.9, " fork")],
            [the, Word(0.4, 0.6, " brown"), Word(0.7, 0.9, " fox")],
            [the, Word(0.4, 0.6, " brown"), Word(0.7, 0.9, " fox"), Word(1.1, 1.4, " jumps")],
            [the, Word(0.4, 0.6, " brown"), Word(0.7, 0.9, " fox"), Word(1.1, 1.4, " jumps")],
        )
    )
    assert d.step() is None
    unconfirmed = d.processor.unconfirmed()
    assert unconfirmed is not None
    assert unconfirmed.text == " the round fork"

    only_the = d.step()  # "the" agrees; "round" vs "brown" does not
    assert only_the is not None
    assert only_the.text == " the"
    unconfirmed = d.processor.unconfirmed()
    assert unconfirmed is not None
    assert unconfirmed.text == " brown fox"

    stable = d.step()
    assert stable is not None
    assert stable.text == " brown fox"
    assert d.step() is not None  # " jumps"
    assert d.text == " the brown fox jumps"
    assert "round" not in d.text and "fork" not in d.text


def test_a_word_the_older_pass_heard_cut_off_is_not_agreed_on_until_both_heard_it_whole() -> None:
    the, during = Word(0.1, 0.4, " the"), Word(1.4, 1.8, " during")
    d = make_processor(
        by_call(
            [the, Word(0.6, 1.0, " by")],  # "twi-" cut off at the end of 1 s of audio
            [the, Word(0.6, 1.3, " by"), during],  # the same wrong word, now heard whole
            [the, Word(0.6, 1.3, " twice"), during],
        )
    )
    assert d.step() is None
    only_the = d.step()  # "by" agrees in text, but it ends after the first pass's audio
    assert only_the is not None
    assert only_the.text == " the"
    assert d.step() is None  # "by" (whole) and "twice" disagree
    assert d.step() is not None
    assert d.text == " the twice during"


@pytest.mark.parametrize("first_commit_sec", [0.0, 4.0])
def test_the_first_words_of_a_stream_wait_for_first_commit_sec_of_audio(
    first_commit_sec: float,
) -> None:
    script = regular_words(24)  # w0 [0.05, 0.45], w1 [0.55, 0.95], ...
    d = make_processor(script, ProcessorOptions(first_commit_sec=first_commit_sec))
    first = next(k for k in range(1, 8) if d.step() is not None)
    # With 4 s, the passes at 4 s and 5 s are the first two that both heard 4 s.
    assert first == (2 if not first_commit_sec else 5)
    # What the previous pass heard whole is committed: w0-w1 after 2 s, w0-w7 after 5 s.
    assert d.text == text_of(script[: 2 * (first - 1)])
    d.finish()
    # Once there is committed text (the prompt), a new buffer commits from its second pass.
    assert d.step() is None
    assert d.step() is not None
    assert d.processor.buffer_duration < first_commit_sec or not first_commit_sec


def test_an_opening_word_only_passes_over_first_commit_sec_hear_is_not_lost() -> None:
    # Recorded speech (LibriVox): passes up to 4 s dropped the opening "And",
    # passes from 5 s on heard it. A 3 s and a 4 s pass agreeing must not commit.
    script = [Word(0.5, 0.7, " And"), *regular_words(12, first=1.0)]
    short, whole = script[1:], script
    d = make_processor(
        by_call(short, short, short, short, whole), ProcessorOptions(first_commit_sec=4.0)
    )
    for _ in range(5):  # 1-5 s: the 4 s and 5 s passes disagree on the first word
        assert d.step() is None
    assert d.step() is not None  # 5 s and 6 s agree, "And" first
    assert d.text.startswith(" And w0 w1")


def test_unconfirmed_is_the_uncommitted_tail_and_none_after_finish() -> None:
    d = make_processor([Word(0.1, 0.4, " a", prob=0.5), Word(0.6, 0.9, " b", prob=0.9)])
    assert d.processor.unconfirmed() is None  # nothing heard yet
    d.step(1.0)
    pending = d.processor.unconfirmed()
    assert pending is not None
    assert pending.text == " a b"
    assert (pending.start, pending.end) == pytest.approx((0.1, 0.9))
    assert pending.confidence == pytest.approx(0.7)

    d.step(0.5)  # a and b agree and are committed; nothing new heard
    assert d.text == " a b"
    assert d.processor.unconfirmed() is None

    d.finish()
    assert d.processor.unconfirmed() is None


# --------------------------------------------------------------------------- finish


def test_finish_transcribes_audio_that_came_after_the_last_pass() -> None:
    script = regular_words(10)  # w4 = [2.05, 2.45] is only in the last 0.5 s
    d = make_processor(script)
    d.step(1.0)
    first = d.step(1.0)
    assert first is not None
    assert first.text == " w0 w1"
    d.feed(0.5)  # no process_iter after this

    tail = d.finish()
    assert len(d.asr.calls) == 3
    assert d.asr.calls[-1].samples == round(2.5 * SR)
    assert tail is not None
    assert tail.text == " w2 w3 w4"
    assert (tail.start, tail.end) == pytest.approx((1.05, 2.45))
    assert d.processor.finish() is None  # nothing left
    assert len(d.asr.calls) == 3


def test_finish_without_new_audio_commits_the_last_hypothesis_without_transcribing() -> None:
    d = make_processor(regular_words(4))
    d.step(1.0)
    d.step(1.0)
    calls = len(d.asr.calls)
    tail = d.finish()
    assert tail is not None
    assert tail.text == " w2 w3"
    assert len(d.asr.calls) == calls


def test_after_finish_the_stream_goes_on_at_the_end_offset_with_absolute_times() -> None:
    script = regular_words(12)
    d = make_processor(script)
    d.step(1.0)
    d.step(1.0)
    d.feed(0.5)
    d.finish()
    assert d.text == " w0 w1 w2 w3 w4"
    assert d.processor.buffer_time_offset == pytest.approx(2.5)
    assert len(d.processor.audio_buffer) == 0
    assert d.processor.buffer_end == pytest.approx(2.5)

    assert d.step(1.0) is None  # a fresh hypothesis: nothing agreed yet
    assert d.asr.calls[-1].offset == pytest.approx(2.5)
    resumed = d.step(1.0)
    assert resumed is not None
    assert resumed.text == " w5 w6"
    assert (resumed.start, resumed.end) == pytest.approx((2.55, 3.45))
    d.finish()
    assert d.text == text_of(script[:9])  # w8 ends at 4.45 <= 4.5, w9 is past the end
    assert times(d.words) == [(w.start, w.end) for w in script[:9]]
    assert d.processor.buffer_time_offset == pytest.approx(4.5)


# --------------------------------------------------------------------------- trimming


def test_segment_trimming_cuts_at_a_committed_segment_end() -> None:
    # Segments of 4 words: seg0 = w0..w3 ends 1.95, seg1 = w4..w7 ends 3.95, ...
    script = regular_words(40, per_segment=4)
    options = ProcessorOptions(
        buffer_trimming="segment", buffer_trimming_sec=3.0, max_buffer_sec=10
    )
    d = make_processor(script, options)
    p = d.processor

    for _ in range(3):
        d.step(1.0)
    # 3 s is not more than buffer_trimming_sec: no cut yet.
    assert p.buffer_time_offset == 0.0
    assert len(p.audio_buffer) == 3 * SR
    assert d.text == " w0 w1 w2 w3"

    d.step(1.0)  # commits w4 w5 (to 2.95); seg0's end 1.95 is committed, seg1's is not
    assert d.text == " w0 w1 w2 w3 w4 w5"
    assert p.buffer_time_offset == pytest.approx(1.95)
    assert len(p.audio_buffer) == 4 * SR - round(1.95 * SR)
    assert [w.word for w in p.hypothesis.committed_in_buffer] == [" w4", " w5"]

    d.step(1.0)  # commits w6 w7: seg1 ends at 3.95
    assert d.asr.calls[-1].offset == pytest.approx(1.95)
    assert d.asr.calls[-1].prompt == "w0 w1 w2 w3"
    assert p.buffer_time_offset == pytest.approx(3.95)
    assert len(p.audio_buffer) == round((5.0 - 3.95) * SR)

    for _ in range(10):
        d.step(1.0)
    d.finish()
    assert d.text == text_of([w for w in script if w.end <= 15.0])


@pytest.mark.parametrize(("trim_keep_sec", "cut"), [(0.0, 5.95), (3.0, 3.95), (6.5, 1.95)])
def test_segment_trimming_keeps_trim_keep_sec_of_audio_when_a_segment_end_allows(
    trim_keep_sec: float, cut: float
) -> None:
    # Segments end at 1.95, 3.95, 5.95, ...; the 7 s pass has committed w0..w11 (to 5.95).
    script = regular_words(40, per_segment=4)
    options = ProcessorOptions(
        buffer_trimming_sec=6.0, max_buffer_sec=12.0, trim_keep_sec=trim_keep_sec
    )
    d = make_processor(script, options)
    for _ in range(7):
        d.step(1.0)
    assert d.processor.hypothesis.last_committed_time == pytest.approx(5.95)
    # 0: the latest committed segment end; 3 s: the latest that leaves 3 s;
    # 6.5 s: none leaves that much, so the earliest, which leaves the most.
    assert d.processor.buffer_time_offset == pytest.approx(cut)
    for _ in range(13):
        d.step(1.0)
    d.finish()
    assert d.text == text_of([w for w in script if w.end <= 20.0])


@pytest.mark.parametrize(("busy", "cut"), [(False, 0.0), (True, 3.95)])
def test_a_busy_processor_trims_at_the_busy_length_and_keeps_the_busy_tail(
    busy: bool, cut: float
) -> None:
    # As above: the 7 s pass has committed w0..w11 (to 5.95), under the 10 s idle trimming.
    script = regular_words(40, per_segment=4)
    options = ProcessorOptions(
        buffer_trimming_sec=10.0,
        max_buffer_sec=20.0,
        trim_keep_sec=5.0,
        busy_trimming_sec=6.0,
        busy_keep_sec=3.0,
    )
    d = make_processor(script, options)
    d.processor.set_busy(busy)
    for _ in range(7):
        d.step(1.0)
    # Busy: past 6 s, cut at the latest committed segment end that leaves 3 s.
    assert d.processor.buffer_time_offset == pytest.approx(cut)
    d.processor.set_busy(False)  # no longer busy: the buffer grows to the idle length again
    for _ in range(3):
        d.step(1.0)
    assert d.processor.buffer_duration > 6.0
    for _ in range(10):
        d.step(1.0)
    d.finish()
    assert d.text == text_of([w for w in script if w.end <= 20.0])


def test_a_busy_processor_without_a_busy_length_trims_as_when_idle() -> None:
    script = regular_words(40, per_segment=4)
    options = ProcessorOptions(buffer_trimming_sec=10.0, max_buffer_sec=20.0)
    d = make_processor(script, options)
    d.processor.set_busy(True)
    for _ in range(7):
        d.step(1.0)
    assert d.processor.buffer_time_offset == 0.0


def test_segment_trimming_never_cuts_at_the_last_segment_end() -> None:
    # Two segments of speech (w0..w3 to 1.95, w4..w7 to 3.95), then silence.
    script = regular_words(8, per_segment=4)
    options = ProcessorOptions(buffer_trimming_sec=3.0, max_buffer_sec=10.0)
    d = make_processor(script, options)
    for _ in range(4):
        d.step(1.0)
    assert d.processor.buffer_time_offset == pytest.approx(1.95)
    for _ in range(3):
        d.step(1.0)
    # w4..w7 are all committed, but their segment is the last one the model
    # returned (it may still grow): the buffer is not cut at its end.
    assert d.text == text_of(script)
    assert d.processor.hypothesis.last_committed_time == pytest.approx(3.95)
    assert d.processor.buffer_time_offset == pytest.approx(1.95)
    assert len(d.processor.audio_buffer) == 7 * SR - round(1.95 * SR)


def test_segment_trimming_never_cuts_an_uncommitted_segment() -> None:
    # Every word disagrees with the last pass, so nothing is committed by agreement.
    script = regular_words(20, per_segment=2)
    options = ProcessorOptions(buffer_trimming_sec=2.0, max_buffer_sec=8.0)
    d = make_processor(
        lambda call: [replace(w, text=f"{w.text}v{call.index}") for w in visible(script, call)],
        options,
    )
    for _ in range(8):
        assert d.step(1.0) is None
    assert d.processor.buffer_time_offset == 0.0
    assert len(d.processor.audio_buffer) == 8 * SR


def test_sentence_trimming_cuts_after_the_second_to_last_committed_sentence() -> None:
    # One segment; sentences end at w2. (1.45), w5. (2.95), w8. (4.45), ...
    script = regular_words(40, sentence_every=3)
    options = ProcessorOptions(
        buffer_trimming="sentence", buffer_trimming_sec=3.0, max_buffer_sec=10
    )
    d = make_processor(script, options)
    p = d.processor

    for _ in range(3):
        d.step(1.0)
    assert p.buffer_time_offset == 0.0

    d.step(1.0)  # commits w4 w5.: committed sentence ends 1.45 and 2.95
    assert d.text == " w0 w1 w2. w3 w4 w5."
    assert p.buffer_time_offset == pytest.approx(1.45)
    assert len(p.audio_buffer) == 4 * SR - round(1.45 * SR)

    d.step(1.0)  # commits w6 w7: still only one committed sentence end (2.95) in the buffer
    assert d.text.endswith(" w6 w7")
    assert p.buffer_time_offset == pytest.approx(1.45)

    d.step(1.0)  # commits w8. w9: sentence ends 2.95 and 4.45 -> cut at 2.95
    assert d.text.endswith(" w8. w9")
    assert p.buffer_time_offset == pytest.approx(2.95)
    assert len(p.audio_buffer) == 6 * SR - round(2.95 * SR)

    for _ in range(10):
        d.step(1.0)
    d.finish()
    assert d.text == text_of([w for w in script if w.end <= 16.0])


# --------------------------------------------------------------------------- the hard cap


def run_capped(d: Driver, seconds: int) -> list[float]:
    """Feed 1 s chunks; check the cap after every pass; return the offsets after each pass."""
    cap = d.processor.options.max_buffer_sec
    offsets = []
    for _ in range(seconds):
        d.step(1.0)
        assert d.asr.calls[-1].seconds <= cap + 1.0 + EPS
        assert d.processor.buffer_duration <= cap + EPS
        offsets.append(d.processor.buffer_time_offset)
    return offsets


def test_hard_cap_drops_audio_that_yields_no_words() -> None:
    d = make_processor(lambda call: [])
    offsets = run_capped(d, 60)

    durations = [round(c.seconds, 6) for c in d.asr.calls]
    # Grows to 26 s (> 25), is cut to the last FORCED_CUT_KEEP_SEC, grows again.
    expected = list(range(1, 27)) + list(range(6, 27)) + list(range(6, 19))
    assert durations == expected
    assert offsets[25] == pytest.approx(26 - FORCED_CUT_KEEP_SEC)
    assert offsets[46] == pytest.approx(47 - FORCED_CUT_KEEP_SEC)
    assert d.finals == []
    assert d.finish() is None


@pytest.mark.parametrize("first", [0.0, 0.3])
def test_hard_cap_force_commits_a_never_agreeing_single_segment(first: float) -> None:
    # One long segment whose spelling changes on every pass, so nothing ever agrees.
    script = regular_words(130, first=first)
    d = make_processor(
        lambda call: [replace(w, text=f"{w.text}v{call.index}") for w in visible(script, call)]
    )
    p = d.processor
    forced_passes = []
    for _ in range(60):
        before = p.buffer_time_offset
        span = d.step(1.0)
        call = d.asr.calls[-1]
        assert call.seconds <= p.options.max_buffer_sec + 1.0 + EPS
        assert p.buffer_duration <= p.options.max_buffer_sec + EPS
        if p.buffer_time_offset != before:
            # A forced cut: every word older than the kept tail is committed.
            keep_from = call.end - FORCED_CUT_KEEP_SEC
            assert span is not None
            assert all(w.end <= keep_from + EPS for w in span.words)
            committed = {index_of(w) for w in d.words}
            old = {k for k, w in enumerate(script) if w.end <= keep_from + EPS}
            assert old <= committed
            assert p.buffer_end - p.buffer_time_offset <= FORCED_CUT_KEEP_SEC + 0.5
            forced_passes.append(call.index)
        else:
            assert span is None

    if first == 0.3:
        # w41 = [20.85, 21.25] straddles keep_from = 21: the cut goes before it,
        # so 5.15 s are kept and the buffer passes the cap one pass sooner.
        assert d.asr.calls[26].offset == pytest.approx(20.85)
        assert forced_passes == [25, 45]
    else:
        assert d.asr.calls[26].offset == pytest.approx(21.0)
        assert forced_passes == [25, 46]

    d.finish()
    expected = [k for k, w in enumerate(script) if w.end <= 60.0]
    assert [index_of(w) for w in d.words] == expected  # nothing lost, nothing twice
    assert times(d.words) == [(script[k].start, script[k].end) for k in expected]


def test_hard_cap_cuts_a_stable_single_segment_without_losing_or_repeating_words() -> None:
    script = regular_words(140)  # one segment: segment trimming can never cut
    d = make_processor(script)
    offsets = run_capped(d, 65)
    # The cap cut the buffer at the last committed word: at 26 s (24.95) and, the
    # buffer then holding 1.05 s, again when it reached 25.05 s (48.95).
    cuts = sorted(set(offsets) - {0.0})
    assert cuts == pytest.approx([24.95, 48.95])
    assert max(c.seconds for c in d.asr.calls) == pytest.approx(26.0)
    d.finish()
    expected = [w for w in script if w.end <= 65.0]
    assert d.text == text_of(expected)
    assert [index_of(w) for w in d.words] == list(range(len(expected)))


def test_processor_options_reject_a_cap_not_above_the_forced_keep() -> None:
    with pytest.raises(ValueError, match="max_buffer_sec"):
        ProcessorOptions(max_buffer_sec=FORCED_CUT_KEEP_SEC)
    with pytest.raises(ValueError, match="max_buffer_sec"):
        ProcessorOptions(max_buffer_sec=1.0)
    assert ProcessorOptions(max_buffer_sec=FORCED_CUT_KEEP_SEC + 0.5).max_buffer_sec == 5.5


# --------------------------------------------------------------------------- the prompt


def test_prompt_is_the_committed_text_that_left_the_buffer_last_200_chars() -> None:
    script = regular_words(140, per_segment=4)
    options = ProcessorOptions(buffer_trimming_sec=3.0, max_buffer_sec=10.0)
    d = make_processor(script, options)
    for _ in range(70):
        d.step(1.0)

    assert d.asr.calls[0].prompt == ""
    for call in d.asr.calls:
        gone = [w for w in script if w.end <= call.offset + EPS]
        assert call.prompt == text_of(gone).strip()[-PROMPT_CHARS:]
    assert len(d.asr.calls[-1].prompt) == PROMPT_CHARS
    last = d.asr.calls[-1]
    assert last.offset == pytest.approx(67.95)  # the end of seg 33 = w132..w135
    assert last.prompt.endswith(" w132 w133 w134 w135")


# --------------------------------------------------------------------------- HypothesisBuffer


def test_hypothesis_buffer_drops_words_before_the_last_committed_time() -> None:
    hb = HypothesisBuffer(last_committed_time=2.0)
    hb.insert([TimedWord(1.0, 1.5, " old"), TimedWord(1.95, 2.4, " jitter"), TimedWord(3, 4, " x")])
    assert [w.word for w in hb.new] == [" jitter", " x"]  # within the 0.1 s tolerance


def test_a_word_that_ends_well_after_the_committed_audio_is_new_whatever_its_start() -> None:
    # heldout_train: "north," committed up to 46.31 s, then the buffer was cut at
    # 46.10 s and the next pass put its first word at the cut.
    hb = HypothesisBuffer()
    hb.commit_all([TimedWord(45.58, 46.31, " north,")])
    hb.insert([TimedWord(46.15, 47.11, " tickets"), TimedWord(47.11, 47.63, " can")])
    assert [w.word for w in hb.new] == [" tickets", " can"]
    # Inside the committed audio, or past it by less than the slack: already committed.
    hb.insert([TimedWord(45.9, 46.5, " north"), TimedWord(46.9, 47.6, " tickets")])
    assert [w.word for w in hb.new] == [" tickets"]
    # The last committed word heard again with a late end: a repeat, not a new word.
    hb.insert([TimedWord(45.6, 46.8, " North."), TimedWord(46.9, 47.6, " tickets")])
    assert [w.word for w in hb.new] == [" tickets"]


# --------------------------------------------------------------------------- helpers


def test_unstretch_keeps_a_stretched_word_at_its_trusted_side() -> None:
    long = MAX_WORD_SEC + 0.5
    words = [
        TimedWord(10.0, 10.0 + long, " the", 0.4),  # first: pulled back to the buffer's start
        TimedWord(13.0, 13.4, " same"),
        TimedWord(13.4, 13.4 + long, " as"),  # later: stretched over what was not decoded
        TimedWord(20.0, 20.0 + MAX_WORD_SEC, " long"),  # at the limit: kept as it is
    ]
    assert unstretch(words) == [
        TimedWord(10.0 + long - STRETCHED_WORD_SEC, 10.0 + long, " the", 0.4),
        words[1],
        TimedWord(13.4, 13.4 + STRETCHED_WORD_SEC, " as"),
        words[3],
    ]
    assert unstretch([]) == []


def test_to_timed_words_accepts_3_and_4_tuples_and_shifts_by_offset() -> None:
    # A plugin's 4-tuple (start, end, word, probability); ints are taken as floats.
    raw: list[Any] = [(0, 0.5, " a"), (0.5, 1, " b", 0.25), TimedWord(1.0, 1.5, " c", 0.5)]
    words = to_timed_words(raw, offset=10.0)
    assert words == [
        TimedWord(10.0, 10.5, " a", None),
        TimedWord(10.5, 11.0, " b", 0.25),
        TimedWord(11.0, 11.5, " c", 0.5),
    ]
    assert all(isinstance(w, TimedWord) for w in words)
    assert all(type(t) is float for w in words for t in (w.start, w.end))
    assert to_timed_words([], offset=3.0) == []


def test_span_of_joins_words_and_averages_probabilities() -> None:
    assert span_of([], "") is None
    words = [
        TimedWord(1.0, 1.5, " a", 0.5),
        TimedWord(1.5, 2.0, " b", None),
        TimedWord(2.0, 2.5, " c", 1.0),
    ]
    span = span_of(words, "")
    assert span is not None
    assert (span.start, span.end, span.text) == (1.0, 2.5, " a b c")
    assert span.words == tuple(words)
    assert span.confidence == pytest.approx(0.75)  # None is left out of the mean
    assert isinstance(span.confidence, float)

    spaced = span_of([TimedWord(0, 1, "x"), TimedWord(1, 2, "y")], " ")
    assert spaced is not None
    assert spaced.text == " x y"  # text starts with the separator
    assert spaced.confidence is None


@pytest.mark.parametrize(
    ("word", "normal"),
    [
        (" Dog.", "dog"),
        ("dog", "dog"),
        (" HELLO,", "hello"),
        ("don't", "don't"),
        ("¿Qué?", "qué"),
        ("Straße", "strasse"),
        ("...", ""),
        ("  ", ""),
    ],
)
def test_normalize_word(word: str, normal: str) -> None:
    assert normalize_word(word) == normal


def test_audio_of_any_float_dtype_is_buffered_as_float32() -> None:
    d = make_processor([])
    d.processor.insert_audio_chunk(np.zeros(SR, dtype=np.float64))
    assert d.processor.audio_buffer.dtype == np.float32
    assert d.processor.process_iter() is None
    assert d.asr.calls[0].samples == SR


def test_committed_words_never_overlap_when_timestamps_jitter() -> None:
    from app.asr.online import HypothesisBuffer

    hyp = HypothesisBuffer()
    first = [TimedWord(0.0, 1.0, " a"), TimedWord(1.0, 2.0, " b")]
    hyp.insert(first)
    hyp.flush()
    hyp.insert(first)
    assert [w.word for w in hyp.flush()] == [" a", " b"]
    # The next pass puts " c" 0.05 s before " b" ended: inside the tolerance.
    jittered = [TimedWord(1.95, 2.5, " c"), TimedWord(2.5, 3.0, " d")]
    hyp.insert(jittered)
    hyp.flush()
    hyp.insert(jittered)
    committed = hyp.flush()
    assert [(w.start, w.end, w.word) for w in committed] == [(2.0, 2.5, " c"), (2.5, 3.0, " d")]


def test_finish_keeps_the_prompt_context_for_a_continuing_stream() -> None:
    processor = make_processor(regular_words(6)).processor
    for _ in range(3):
        processor.insert_audio_chunk(np.zeros(16_000, dtype=np.float32))
        processor.process_iter()
    processor.finish()
    assert processor._prompt().endswith("w5")


def test_committed_history_stays_bounded_on_an_endless_stream() -> None:
    from app.asr.online import HISTORY_WORDS

    script = regular_words(3000, step=0.25, per_segment=8)
    d = make_processor(script)
    for _ in range(700):
        d.step(1.0)
    assert len(d.words) > 2000  # everything was delivered…
    assert len(d.processor.committed) <= 2 * HISTORY_WORDS  # …but not kept forever
    # The prompt still carries the words just before the buffer.
    last = d.asr.calls[-1]
    before = [w for w in script if w.end <= last.offset + EPS]
    assert last.prompt.endswith(text_of(before[-3:]).strip())


# --------------------------------------------------------------------------- preview passes


def test_preview_passes_show_newer_words_and_change_no_commit() -> None:
    """Half steps of previews between full passes: the same finals, fresher interims."""
    script = regular_words(24, per_segment=4)  # 12 s of words
    plain, previewed = make_processor(script), make_processor(script)
    fresher = 0
    for _ in range(12):
        plain.step(1.0)
        previewed.feed(0.5)
        before = previewed.processor.unconfirmed()
        assert previewed.processor.preview_iter() is None  # nothing commits without agreement
        after = previewed.processor.unconfirmed()
        assert after is not None
        fresher += before is None or after.end > before.end
        previewed.step(0.5)
    assert fresher >= 10  # the preview heard words the last full pass had not
    plain.finish()
    previewed.finish()
    assert [(s.text, s.start, s.end) for s in previewed.finals] == [
        (s.text, s.start, s.end) for s in plain.finals
    ]
    assert previewed.text == text_of(script)


def test_finish_after_a_preview_transcribes_what_only_the_preview_heard() -> None:
    script = regular_words(6)  # w5 ends at 2.95 s
    d = make_processor(script)
    d.step(1.0)
    d.step(1.0)
    d.feed(1.0)
    d.processor.preview_iter()  # the only pass that heard w4 and w5
    unconfirmed = d.processor.unconfirmed()
    assert unconfirmed is not None and unconfirmed.text.endswith(" w5")
    d.finish()
    assert d.text == text_of(script)
