"""`PcmFramer` (frames → whole s16le samples) and `PcmDecoder` (→ 16 kHz float32)."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import numpy.typing as npt
import pytest

from app.audio import PcmDecoder, PcmFramer
from app.settings import ENGINE_SAMPLE_RATE


def pcm(samples: list[int] | npt.NDArray[np.int16]) -> bytes:
    return np.asarray(samples, dtype="<i2").tobytes()


def sine(rate: int, freq: float = 440.0, seconds: float = 1.0) -> bytes:
    t = np.arange(round(rate * seconds)) / rate
    return pcm(np.round(0.5 * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16))


def decode_all(decoder: PcmDecoder, frames: list[bytes]) -> npt.NDArray[np.float32]:
    """Frames as the service handles them: framed on the loop, decoded in the thread."""
    framer = PcmFramer(decoder.sample_rate)
    parts = [decoder.decode(framer.frame(f)) for f in frames] + [decoder.flush()]
    return np.concatenate(parts)


def dominant_hz(samples: npt.NDArray[np.float32], rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[np.argmax(spectrum)])


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in pairwise(bounds)]


def test_an_odd_byte_is_carried_to_the_next_frame() -> None:
    data = pcm([1000, -2000])
    framer = PcmFramer(ENGINE_SAMPLE_RATE)

    assert framer.frame(data[:3]) == data[:2]
    assert framer.pending_bytes == 1
    assert framer.frame(data[3:]) == data[2:]
    assert framer.pending_bytes == 0
    assert framer.samples_in == 2
    assert framer.seconds_in == 2 / ENGINE_SAMPLE_RATE


def test_framed_bytes_are_the_client_bytes_exactly() -> None:
    """The Google bridge sends what the framer gives: the client's own bytes, in order."""
    rng = np.random.default_rng(7)
    data = rng.integers(-32768, 32768, 4_801, dtype=np.int64).astype("<i2").tobytes()
    framer = PcmFramer(44_100)
    out = [framer.frame(data[i : i + 333]) for i in range(0, len(data), 333)]
    assert all(len(piece) % 2 == 0 for piece in out)
    assert b"".join(out) == data
    assert framer.samples_in == 4_801


def test_single_bytes_decode_to_the_same_samples() -> None:
    data = pcm([1, -1, 256, -256, 12345])
    out = decode_all(PcmDecoder(ENGINE_SAMPLE_RATE), [data[i : i + 1] for i in range(len(data))])
    np.testing.assert_array_equal(out, np.array([1, -1, 256, -256, 12345]) / 32768)


def test_the_decoder_takes_whole_samples_only() -> None:
    with pytest.raises(ValueError, match="whole 2-byte samples"):
        PcmDecoder(ENGINE_SAMPLE_RATE).decode(b"\x01\x02\x03")


def test_one_byte_frames_through_the_resampler_match_one_frame() -> None:
    data = sine(48_000, seconds=0.02)
    whole = decode_all(PcmDecoder(48_000), [data])
    framer = PcmFramer(48_000)
    assert framer.frame(data[:1]) == b""  # half a sample: nothing yet
    assert PcmDecoder(48_000).decode(b"").dtype == np.float32
    rest = decode_all(PcmDecoder(48_000), [data[i : i + 1] for i in range(len(data))])
    assert abs(len(whole) - 320) <= 2
    assert len(rest) == len(whole)
    np.testing.assert_allclose(rest, whole, atol=1e-5)


def test_values_scale_to_minus_one_up_to_one() -> None:
    out = PcmDecoder(ENGINE_SAMPLE_RATE).decode(pcm([32767, -32768, 0, 16384]))
    assert out.dtype == np.float32
    assert out[0] == pytest.approx(0.99997, abs=1e-5)
    assert out[0] < 1.0
    assert out[1] == -1.0
    assert out[2] == 0.0
    assert out[3] == 0.5


def test_engine_rate_input_passes_through_unchanged() -> None:
    values = np.arange(-32768, 32768, 97, dtype=np.int16)
    decoder = PcmDecoder(ENGINE_SAMPLE_RATE)
    out = decoder.decode(pcm(values))
    np.testing.assert_array_equal(out, values.astype(np.float32) / 32768)
    assert decoder.flush().size == 0
    assert decoder.flush().dtype == np.float32


@pytest.mark.parametrize("rate", [48_000, 8_000, 44_100])
def test_resampled_sine_keeps_its_length_and_frequency(rate: int) -> None:
    decoder = PcmDecoder(rate)
    data = sine(rate)
    frame = 2 * rate // 50  # 20 ms frames
    out = decode_all(decoder, [data[i : i + frame] for i in range(0, len(data), frame)])

    assert out.dtype == np.float32
    assert abs(len(out) - ENGINE_SAMPLE_RATE) <= 4
    assert dominant_hz(out, ENGINE_SAMPLE_RATE) == pytest.approx(440.0, abs=2.0)
    # Amplitude is kept (0.5 of full scale) away from the filter's edges.
    assert np.max(np.abs(out[1000:-1000])) == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize("rate", [16_000, 48_000, 8_000])
def test_arbitrary_frame_boundaries_give_the_same_output_as_one_frame(rate: int) -> None:
    data = sine(rate, freq=300.0, seconds=0.5)
    whole = decode_all(PcmDecoder(rate), [data])
    rng = np.random.default_rng(7)
    cuts = sorted(rng.choice(np.arange(1, len(data)), size=40, replace=False).tolist())
    assert any(c % 2 for c in cuts)  # some frames split a sample
    pieces = decode_all(PcmDecoder(rate), split_at(data, [int(c) for c in cuts]))
    assert len(pieces) == len(whole)
    np.testing.assert_allclose(pieces, whole, atol=1e-5)
