"""The resume bookkeeping (clients/resume.py) with plain arrays: no sockets, no clocks."""

from __future__ import annotations

import numpy as np
import pytest

from clients.resume import (
    Cut,
    ResumeBuffer,
    ResumePolicy,
    cut_kind,
    frames,
)

RATE = 16_000


def pcm(start_sample: int, samples: int) -> bytes:
    """Samples numbered from ``start_sample`` (mod 2**15), so any slice says where it was."""
    return (np.arange(start_sample, start_sample + samples) % 32_768).astype("<i2").tobytes()


def first_sample(audio: bytes) -> int:
    return int(np.frombuffer(audio[:2], "<i2")[0])


def stream_of(buffer: ResumeBuffer, seconds: float, chunk: int = 1600) -> None:
    total = int(seconds * RATE)
    for i in range(0, total, chunk):
        buffer.add(pcm(i, min(chunk, total - i)))


def test_keeps_what_follows_the_last_finals_end_and_resumes_there() -> None:
    buffer = ResumeBuffer(RATE, keep_sec=60)
    stream_of(buffer, 5.0)
    buffer.confirm(1.25)
    buffer.confirm(2.5)
    point = buffer.resume_point()
    assert point.offset_sec == 2.5 and point.lost is None
    # The resent audio starts at the sample the final ended on and runs to the last one sent.
    assert len(point.audio) == int(2.5 * RATE) * 2
    assert first_sample(point.audio) == 40_000 % 32_768
    assert point.audio == pcm(40_000, 40_000)


def test_an_older_or_equal_end_changes_nothing_and_an_end_past_the_audio_is_clipped() -> None:
    buffer = ResumeBuffer(RATE)
    stream_of(buffer, 2.0)
    buffer.confirm(1.5)
    buffer.confirm(0.75)  # an earlier final (or a rounding) never brings audio back
    assert buffer.resume_point().offset_sec == 1.5
    buffer.confirm(2.0004)  # ms-rounded on the wire: a little past what was sent
    point = buffer.resume_point()
    assert (point.offset_sec, point.audio) == (2.0, b"")


def test_nothing_confirmed_resends_everything_from_zero() -> None:
    buffer = ResumeBuffer(RATE)
    stream_of(buffer, 3.0)
    point = buffer.resume_point()
    assert point.offset_sec == 0.0 and point.audio == pcm(0, 3 * RATE)


def test_odd_chunks_keep_every_byte_and_resume_on_a_whole_sample() -> None:
    data = pcm(0, 3 * RATE)
    buffer = ResumeBuffer(RATE)
    for i in range(0, len(data), 1001):  # odd sizes: samples split across chunks
        buffer.add(data[i : i + 1001])
    buffer.confirm(1.0)
    point = buffer.resume_point()
    assert point.offset_sec == 1.0 and point.audio == data[2 * RATE :]
    # A 44.1 kHz stream: a ms-rounded end lands on the nearest sample.
    rate = 44_100
    odd = ResumeBuffer(rate)
    odd.add(b"\x01\x00" * rate)
    odd.confirm(0.501)
    assert odd.resume_point().offset_sec == round(0.501 * rate) / rate


def test_past_the_bound_the_oldest_audio_goes_and_the_resume_names_the_lost_span() -> None:
    buffer = ResumeBuffer(RATE, keep_sec=10)
    stream_of(buffer, 4.0)
    buffer.confirm(2.0)
    stream_of_from(buffer, 4.0, 11.0)  # up to 15 s; kept would be 13 s > 10 s
    assert buffer.kept_bytes == 10 * RATE * 2
    point = buffer.resume_point()
    assert point.offset_sec == 5.0 and point.lost == (2.0, 5.0)
    assert first_sample(point.audio) == 5 * RATE % 32_768
    assert buffer.confirmed_sec == 2.0  # the finals received still end there
    buffer.resumed()  # reported once: the new connection starts at 5 s
    assert buffer.resume_point().lost is None and buffer.confirmed_sec == 5.0


def stream_of_from(buffer: ResumeBuffer, start_sec: float, seconds: float) -> None:
    start, total = int(start_sec * RATE), int(seconds * RATE)
    for i in range(0, total, 1600):
        buffer.add(pcm(start + i, min(1600, total - i)))


def test_a_final_after_the_drop_still_frees_the_audio_it_covers() -> None:
    buffer = ResumeBuffer(RATE, keep_sec=1)
    stream_of(buffer, 3.0)
    buffer.confirm(2.5)  # beyond the dropped head: the kept audio shrinks to 0.5 s
    point = buffer.resume_point()
    assert point.offset_sec == 2.5 and point.lost is None and len(point.audio) == RATE


def test_keep_zero_keeps_nothing_whole() -> None:
    buffer = ResumeBuffer(RATE, keep_sec=0)
    buffer.add(b"\x01\x02\x03")  # one sample and an odd byte
    assert buffer.kept_bytes == 1 and buffer.sent_bytes == 3


def test_frames_split_the_resend_on_samples() -> None:
    audio = pcm(0, 5000)
    pieces = frames(audio, 3201)  # an odd frame size is made even
    assert b"".join(pieces) == audio
    assert all(len(p) == 3200 for p in pieces[:-1]) and len(pieces[-1]) == 10_000 - 3 * 3200
    assert frames(b"", 3200) == []


@pytest.mark.parametrize(
    ("close_code", "error_code", "kind"),
    [
        (1006, None, Cut.NODE),  # kill -9, a dropped network
        (None, None, Cut.NODE),
        (1012, "shutting_down", Cut.NODE),  # a drain's grace ran out
        (1012, None, Cut.NODE),  # uvicorn's own restart
        (1013, "server_full", Cut.NODE),
        (1011, None, Cut.NODE),
        (1001, None, Cut.NODE),
        (1000, None, Cut.NODE),  # closed without `complete`
        (1011, "engine_failure", Cut.FAILURE),
        (1011, "engine_timeout", Cut.FAILURE),
        (1008, "idle_timeout", Cut.FINAL),  # the server's limits are not worked around
        (1008, "max_duration_exceeded", Cut.FINAL),
        (1008, "invalid_stream_offset", Cut.FINAL),
        (1009, None, Cut.FINAL),
        (1008, None, Cut.FINAL),
    ],
)
def test_which_cuts_are_resumed(close_code: int | None, error_code: str | None, kind: Cut) -> None:
    assert cut_kind(close_code, error_code) is kind


def test_backoff_doubles_with_jitter_down_to_half_and_stops_growing() -> None:
    policy = ResumePolicy(first_delay_sec=0.25, max_delay_sec=8.0)
    for attempt, step in [(1, 0.25), (2, 0.5), (3, 1.0), (4, 2.0), (6, 8.0), (9, 8.0)]:
        low, high = policy.delay(attempt, None, 0.0), policy.delay(attempt, None, 0.999999)
        assert low == step / 2 and step / 2 < high < step
    # The default budget: five reconnects over at most 7.75 s (without Retry-After).
    default = ResumePolicy()
    assert sum(default.delay(n, None, 0.999999) for n in range(1, 6)) < 7.75


def test_retry_after_is_honoured_and_spread() -> None:
    policy = ResumePolicy()
    assert policy.delay(1, 5.0, 0.0) == 5.0
    assert 5.0 < policy.delay(1, 5.0, 0.5) <= 6.25
    assert policy.delay(6, 1.0, 0.0) == 4.0  # the backoff is longer: it wins


def test_a_policy_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        ResumePolicy(max_attempts=0)
    with pytest.raises(ValueError):
        ResumePolicy(keep_sec=-1)
    with pytest.raises(ValueError):
        ResumePolicy(keep_sec=float("nan"))
