"""Quiet buffers are raised before Whisper hears them (`raise_quiet`)."""

from __future__ import annotations

import numpy as np

from app.asr import faster_whisper_backend as backend

RATE = 16_000


def _tone(dbfs: float, seconds: float = 2.0) -> np.ndarray:
    """A 440 Hz tone whose frames have an RMS of ``dbfs``."""
    t = np.arange(int(seconds * RATE)) / RATE
    return (np.sqrt(2) * 10 ** (dbfs / 20) * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def _loudest_frame_dbfs(audio: np.ndarray) -> float:
    frames = len(audio) // 512
    power = np.square(audio[: frames * 512].astype(np.float64)).reshape(frames, 512).mean(axis=1)
    return float(10 * np.log10(power.max()))


def test_a_quiet_buffer_is_raised_so_its_loudest_frame_is_at_the_target() -> None:
    quiet = np.concatenate([_tone(-50.0, 1.0), _tone(-44.0, 1.0)])  # loudest part: -44 dBFS
    raised = backend.raise_quiet(quiet)
    assert raised.dtype == np.float32 and len(raised) == len(quiet)
    assert abs(_loudest_frame_dbfs(raised) - backend.QUIET_TARGET_DBFS) < 0.1
    # One gain for the whole buffer: the quieter part keeps its 6 dB below the louder.
    gain = raised[100] / quiet[100]
    np.testing.assert_allclose(raised, quiet * gain, rtol=1e-5, atol=1e-7)
    assert abs(20 * np.log10(gain) - 24.0) < 0.1


def test_speech_at_usual_levels_is_left_as_it_is() -> None:
    for dbfs in (backend.QUIET_TARGET_DBFS, -12.0, -3.0):
        loud = _tone(dbfs)
        assert backend.raise_quiet(loud) is loud  # not even copied


def test_the_raise_is_capped_and_silence_stays_silence() -> None:
    faint = _tone(-90.0)  # 70 dB below the target; raised by the cap, 40 dB, only
    assert (
        abs(_loudest_frame_dbfs(backend.raise_quiet(faint)) - (-90.0 + backend.MAX_RAISE_DB)) < 0.1
    )
    silence = np.zeros(RATE, dtype=np.float32)
    assert not backend.raise_quiet(silence).any()
    short = _tone(-60.0, 0.01)  # under one 32 ms frame: nothing to measure
    assert backend.raise_quiet(short) is short


def test_raised_samples_never_leave_the_valid_range() -> None:
    quiet = _tone(-60.0)
    quiet[RATE // 2] = 0.05  # a click: its frame is at -52 dBFS, so the gain is 32 dB
    raised = backend.raise_quiet(quiet)
    assert raised.max() == 1.0  # the click (2.0 raised) is clipped
    assert raised.min() >= -1.0


def test_a_dc_offset_is_not_taken_for_loudness_and_is_not_raised() -> None:
    quiet = _tone(-60.0) + np.float32(0.02)  # 0.02 of DC is -34 dBFS: louder than the speech
    raised = backend.raise_quiet(quiet)
    assert abs(float(raised.mean())) < 1e-4
    assert abs(_loudest_frame_dbfs(raised) - backend.QUIET_TARGET_DBFS) < 0.1
    loud = _tone(-10.0) + np.float32(0.02)
    assert backend.raise_quiet(loud) is loud  # nothing to raise: left as it came
