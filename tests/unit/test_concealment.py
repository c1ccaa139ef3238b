"""Packet-loss concealment (app/concealment.py) and the WebRTC handler's use of it."""

from __future__ import annotations

import asyncio
from fractions import Fraction

import numpy as np
import pytest

from app.concealment import CONCEAL_MAX_SEC, FADE_SEC, conceal, tail_samples

RATE = 16000


def sine(samples: int, hz: float = 220.0, start: int = 0) -> np.ndarray:
    t = np.arange(start, start + samples) / RATE
    return np.round(8000 * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def test_a_short_hole_is_filled_with_the_audio_before_it_mirrored() -> None:
    tail = sine(tail_samples(RATE))
    audio, silence = conceal(tail, 320, RATE)  # one lost 20 ms packet
    assert silence == 0 and len(audio) == 320
    assert audio[0] == tail[-1]  # the join: the sample next to the hole's edge
    assert np.array_equal(audio, tail[::-1])


def test_a_longer_hole_goes_back_and_forth_without_a_jump() -> None:
    tail = sine(tail_samples(RATE))
    audio, silence = conceal(tail, 900, RATE)
    assert silence == 0 and len(audio) == 900
    joined = np.concatenate([tail, audio]).astype(np.int32)
    # No step between neighbours is bigger than the sine's own (220 Hz at 8000: ~691 per sample).
    assert np.abs(np.diff(joined)).max() <= np.abs(np.diff(tail.astype(np.int32))).max()


def test_only_the_start_of_a_long_gap_is_made_up_and_it_fades_out() -> None:
    tail = sine(tail_samples(RATE))
    audio, silence = conceal(tail, RATE * 2, RATE)  # a muted track: 2 s
    assert len(audio) == round(CONCEAL_MAX_SEC * RATE)
    assert silence == RATE * 2 - len(audio)
    fade = round(FADE_SEC * RATE)
    assert audio[-1] == 0 and np.abs(audio[-fade:]).max() < np.abs(tail).max()


def test_no_audio_before_the_hole_means_silence() -> None:
    audio, silence = conceal(np.zeros(0, dtype=np.int16), 480, RATE)
    assert len(audio) == 0 and silence == 480
    assert conceal(sine(320), 0, RATE)[1] == 0


class Inbox:
    """What `RealTimeASRHandler` puts: audio bytes and silence counts, in order."""

    rate = RATE
    chunk_samples = 1600

    def __init__(self) -> None:
        self.items: list[bytes | int] = []

    def put_audio(self, pcm: bytes) -> None:
        self.items.append(pcm)

    def put_silence(self, samples: int) -> None:
        self.items.append(samples)


def test_the_handler_conceals_a_lost_packet_and_keeps_stream_time() -> None:
    """Real PyAV frames at 48 kHz with one 20 ms frame missing: 16 kHz out, nothing silent."""
    pytest.importorskip("av", reason="the 'webrtc' extra")
    import av

    from app.webrtc import RealTimeASRHandler

    def frame(index: int) -> av.AudioFrame:
        samples = sine(960, start=index * 960)  # 20 ms at 48 kHz (the sine's phase per frame)
        out = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        out.sample_rate = 48000
        out.pts = index * 960
        out.time_base = Fraction(1, 48000)
        return out

    async def main() -> tuple[Inbox, RealTimeASRHandler]:
        inbox = Inbox()
        handler = RealTimeASRHandler(object(), inbox)  # type: ignore[arg-type]
        for index in range(50):
            if index != 20:  # packet 20 was lost
                handler.take(frame(index))
        handler._flush()
        return inbox, handler

    inbox, handler = asyncio.run(main())
    assert all(isinstance(item, bytes) for item in inbox.items)  # no silence: concealed
    pcm = np.frombuffer(b"".join(item for item in inbox.items if isinstance(item, bytes)), "<i2")
    # One second of stream time, as sent (the resampler keeps a few samples back).
    assert abs(len(pcm) - RATE) <= 64
    assert handler.gap_seconds == pytest.approx(0.02)
    assert handler.concealed_seconds == pytest.approx(0.02)
    hole = pcm[20 * 320 : 21 * 320]
    assert np.abs(hole).max() > 4000  # audio, not zeros
