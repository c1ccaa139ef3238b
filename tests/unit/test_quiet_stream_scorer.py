"""`QuietStreamScorer`: voice activity hears a very quiet stream raised."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from app.asr import vad
from app.asr.vad import FRAME_SAMPLES, FRAME_SEC, QuietStreamScorer


class Recorder:
    """A scorer that keeps the frames it was given."""

    def __init__(self) -> None:
        self.heard: list[npt.NDArray[np.float32]] = []

    def __call__(self, frames: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        self.heard.append(frames)
        return np.zeros(len(frames), dtype=np.float32)


def frames_at(dbfs: float, n: int) -> npt.NDArray[np.float32]:
    """``n`` frames of a square wave whose RMS is ``dbfs`` (every frame the same level)."""
    wave = np.where(np.arange(FRAME_SAMPLES) % 32 < 16, 1.0, -1.0) * 10 ** (dbfs / 20)
    return np.tile(wave.astype(np.float32), (n, 1))


def dbfs(frames: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    return 10 * np.log10(np.mean(np.square(frames.astype(np.float64)), axis=1))


def test_streams_at_usual_levels_are_scored_as_they_are() -> None:
    recorder = Recorder()
    scorer = QuietStreamScorer(recorder)
    for level in (-20.0, -45.0, vad.QUIET_DBFS):
        frames = frames_at(level, 10)
        scorer(frames)
        np.testing.assert_array_equal(recorder.heard[-1], frames)
    with_dc = frames_at(-20.0, 10) + np.float32(0.05)  # DC and all
    scorer(with_dc)
    np.testing.assert_array_equal(recorder.heard[-1], with_dc)


def test_a_very_quiet_stream_is_heard_at_the_quiet_level_and_the_raise_is_capped() -> None:
    recorder = Recorder()
    scorer = QuietStreamScorer(recorder)
    scorer(frames_at(-65.0, 5))
    np.testing.assert_allclose(dbfs(recorder.heard[-1]), vad.QUIET_DBFS, atol=0.01)
    capped = QuietStreamScorer(recorder)
    capped(frames_at(-100.0, 5))
    np.testing.assert_allclose(dbfs(recorder.heard[-1]), -100.0 + vad.MAX_GAIN_DB, atol=0.01)
    silence = QuietStreamScorer(recorder)
    silence(np.zeros((3, FRAME_SAMPLES), dtype=np.float32))
    assert not recorder.heard[-1].any()


def test_the_level_follows_the_stream_a_loud_moment_then_a_slow_fall() -> None:
    recorder = Recorder()
    scorer = QuietStreamScorer(recorder)
    # Speech at -40 dBFS, then a long quiet stretch at -70 dBFS: the quiet frames are
    # heard as they are until the remembered peak has fallen under the quiet level.
    scorer(frames_at(-40.0, 1))
    per_frame = vad.LEVEL_DECAY_DB_PER_SEC * FRAME_SEC
    still_loud = int((-40.0 - vad.QUIET_DBFS) / per_frame) - 1
    scorer(frames_at(-70.0, still_loud + 200))
    heard = dbfs(recorder.heard[-1])
    np.testing.assert_allclose(heard[:still_loud], -70.0, atol=0.01)
    # Then raised by what the peak fell below the quiet level (0.5 dB a second).
    assert heard[still_loud + 199] > heard[still_loud + 1] + 2.0
    assert heard.max() <= vad.QUIET_DBFS + 0.01
    # A loud frame again: no raise at once.
    scorer(frames_at(-30.0, 1))
    np.testing.assert_allclose(dbfs(recorder.heard[-1]), -30.0, atol=0.01)


def test_a_dc_offset_is_taken_out_before_the_level_is_judged() -> None:
    # Quiet speech on a cheap input's offset: Silero heard none of JFK 45 dB down
    # with 0.002 (65 LSB) of DC under it.
    recorder = Recorder()
    scorer = QuietStreamScorer(recorder)
    quiet = frames_at(-65.0, 40)
    scorer(quiet + np.float32(0.002))
    heard = recorder.heard[-1]
    np.testing.assert_allclose(heard.mean(axis=1), 0.0, atol=1e-6)
    np.testing.assert_allclose(dbfs(heard), vad.QUIET_DBFS, atol=0.01)
    # The offset is followed as it drifts (a running mean, `DC_SEC`).
    scorer(quiet[:1] + np.float32(0.004))
    frames = int(5 * vad.DC_SEC / FRAME_SEC)
    scorer(quiet[:1].repeat(frames, axis=0) + np.float32(0.004))
    assert abs(float(recorder.heard[-2].mean())) > 1e-4  # not at once
    assert abs(float(recorder.heard[-1][-1].mean())) < 1e-4  # but within 5 time constants
