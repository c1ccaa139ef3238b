"""Voice activity for the streaming engine: where speech is in the stream, frame by frame.

`SpeechTimeline` is pure: it takes audio, asks a `FrameScorer` for the speech
probability of each 32 ms frame, and answers the questions `OnlineASRProcessor`
asks: is there speech between two times, when did the last speech end, has the
speaker paused. `SileroScorer` is the real scorer: the Silero VAD model that
faster-whisper ships as ONNX (``faster_whisper/assets``; nothing is downloaded),
run incrementally with its recurrent state carried from call to call, so each
sample is scored once (about 2 ms per second of audio on one core).
`GrowingBufferVad` gives faster-whisper's own VAD filter the same saving on a
stream's buffer.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from app.asr.base import Audio
from app.settings import ENGINE_SAMPLE_RATE

FRAME_SAMPLES = 512
FRAME_SEC = FRAME_SAMPLES / ENGINE_SAMPLE_RATE
CONTEXT_SAMPLES = 64  # Silero v5+ looks at the last 64 samples of the previous frame

# Hysteresis: speech starts at THRESHOLD and goes on while the probability stays
# above NEG_THRESHOLD. Lower than Silero's usual 0.5/0.35 on purpose: audio judged
# silent is never transcribed, so a miss loses words, while a false alarm only
# costs a pass. Quiet speech from a browser scored 0.2-0.5 and was lost at 0.5;
# white noise at -30 dBFS peaks at 0.21, digital silence at 0.05.
THRESHOLD = 0.3
NEG_THRESHOLD = 0.2


# Silero hears very quiet speech less: of JFK's frames, 65 % score above THRESHOLD
# at full level and still 61 % 45 dB down (loudest frames at -53 dBFS), but 35 %
# 50 dB down, and 55-60 dB down (a nearly muted microphone) no frame did: no pass
# ran and the whole clip was lost, where Whisper (raised, see the faster-whisper
# backend) still heard it. So `QuietStreamScorer` hears a stream whose loudest
# recent frame (RMS; a peak that falls by `LEVEL_DECAY_DB_PER_SEC`) is under
# `QUIET_DBFS` raised to that level, by at most `MAX_GAIN_DB`. Louder streams are
# scored as they are; white and pink noise raised to it score under 0.1.
QUIET_DBFS = -50.0
DC_SEC = 0.5
MAX_GAIN_DB = 40.0
LEVEL_DECAY_DB_PER_SEC = 0.5


def frame_rms(frames: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """The RMS level of each frame (rows of ``frames``)."""
    rms: npt.NDArray[np.float64] = np.sqrt(np.mean(np.square(frames, dtype=np.float64), axis=1))
    return rms


class FrameScorer(Protocol):
    """Speech probabilities of consecutive frames of one stream (stateful)."""

    def __call__(self, frames: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """``frames``: shape (n, FRAME_SAMPLES); returns n probabilities in [0, 1]."""
        ...


class SileroScorer:
    """Silero VAD over one stream; the ONNX session is shared, the state is per stream."""

    def __init__(self, session: Any = None) -> None:
        if session is None:
            from faster_whisper.vad import get_vad_model  # cached: loaded once per process

            session = get_vad_model().session
        self._session: Any = session
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(CONTEXT_SAMPLES, dtype=np.float32)

    def __call__(self, frames: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        if not len(frames):
            return np.zeros(0, dtype=np.float32)
        previous = np.concatenate([self._context[None, :], frames[:-1, -CONTEXT_SAMPLES:]])
        batch = np.concatenate([previous, frames], axis=1)
        out, self._h, self._c = self._session.run(
            None, {"input": batch, "h": self._h, "c": self._c}
        )
        self._context = frames[-1, -CONTEXT_SAMPLES:].copy()
        return np.asarray(out, dtype=np.float32).reshape(-1)


class QuietStreamScorer:
    """A `FrameScorer` that hears a very quiet stream raised to `QUIET_DBFS` (see there).

    A raised frame also loses the stream's DC offset: JFK 45 dB down on 65 LSB
    of DC (a cheap input) had no frame above the threshold.

    For `SpeechTimeline`: faster-whisper's own filter hears buffers that
    `raise_quiet` already raised.
    """

    def __init__(self, scorer: FrameScorer) -> None:
        self.scorer = scorer
        self._level = 0.0  # the stream's recent loudest frame (RMS)
        self._dc: float | None = None  # the stream's DC offset, as heard so far

    def __call__(self, frames: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        centered = self._centered(frames)
        gains = self._gains(centered)
        # A frame heard at its level is heard as it came, DC and all (Silero
        # minds an offset only next to very quiet speech).
        raised = (gains > 1.0)[:, None]
        return self.scorer(np.where(raised, centered * gains[:, None], frames))

    def _centered(self, frames: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """``frames`` less the stream's DC offset (a running mean of frame means)."""
        means = frames.mean(axis=1, dtype=np.float64)
        rate = 1 - math.exp(-FRAME_SEC / DC_SEC)
        dc = float(means[0]) if self._dc is None else self._dc
        offsets = np.empty(len(frames), dtype=np.float32)
        for i, mean in enumerate(means):
            dc += rate * (float(mean) - dc)
            offsets[i] = dc
        self._dc = dc
        return frames - offsets[:, None]

    def _gains(self, frames: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Each frame's gain: 1 unless the stream is quiet; carries the level on."""
        rms = frame_rms(frames)
        decay = 10 ** (-LEVEL_DECAY_DB_PER_SEC * FRAME_SEC / 20)
        quiet, most = 10 ** (QUIET_DBFS / 20), 10 ** (MAX_GAIN_DB / 20)
        level = self._level
        gains = np.ones(len(frames), dtype=np.float32)
        for i, frame_level in enumerate(rms):
            level = max(float(frame_level), level * decay)
            if 0.0 < level < quiet:
                gains[i] = min(quiet / level, most)
        self._level = level
        return gains


class GrowingBufferVad:
    """faster-whisper's VAD-filter model for one stream's buffer: old frames are not scored again.

    faster-whisper's filter scores the whole buffer, from a fresh state, on every
    pass (18 ms for 10 s of audio, 7 % of a pass). Between two cuts a stream's
    buffer only grows at its end, so the frames scored on the previous pass keep
    their probabilities: only the new frames are scored, the state carried on
    from the old ones. The probabilities are the same, bit for bit. A buffer that
    is not the old one grown (after a cut) is scored afresh.

    Called as faster-whisper calls its `SileroVADModel`: the buffer padded with
    1 to `FRAME_SAMPLES` zeros to whole frames, so only the last frame holds padding.
    """

    def __init__(self, scorer: Callable[[], SileroScorer]) -> None:
        self._new_scorer = scorer
        self.frames_scored = 0  # over the stream: how much work the cache saved
        self._reset()

    def _reset(self) -> None:
        self._scorer = self._new_scorer()  # state after the frames in `_audio`
        self._audio = np.zeros(0, dtype=np.float32)
        self._probs = np.zeros(0, dtype=np.float32)

    def __call__(self, padded: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        frames = padded.reshape(-1, FRAME_SAMPLES)
        whole = len(frames) - 1  # frames of audio only; the last one holds the padding
        known = len(self._probs)
        if known > whole or not np.array_equal(padded[: len(self._audio)], self._audio):
            self._reset()
            known = 0
        if whole > known:
            new = frames[known:whole]
            self._probs = np.concatenate([self._probs, self._scorer(new)])
            self._audio = np.concatenate([self._audio, new.reshape(-1)])
        # The padded frame is scored on a copy: its state is not the stream's.
        last = copy.copy(self._scorer)(frames[whole:])
        self.frames_scored += whole - known + 1
        return np.concatenate([self._probs[:whole], last])


class SpeechTimeline:
    """Which frames of the stream are speech, from ``offset`` on (stream seconds)."""

    def __init__(self, scorer: FrameScorer, offset: float = 0.0) -> None:
        self.scorer = scorer
        self.origin = offset  # stream time of frame 0 of `self.speech`
        self.speech = np.zeros(0, dtype=bool)
        self._pending = np.zeros(0, dtype=np.float32)
        self._in_speech = False

    @property
    def end(self) -> float:
        """Stream time up to which frames have been scored."""
        return self.origin + len(self.speech) * FRAME_SEC

    def accept(self, audio: Audio) -> None:
        """Score the whole frames of ``audio`` (a remainder waits for the next call)."""
        samples = np.concatenate([self._pending, audio.astype(np.float32, copy=False)])
        whole = len(samples) // FRAME_SAMPLES * FRAME_SAMPLES
        self._pending = samples[whole:]
        if not whole:
            return
        probs = self.scorer(samples[:whole].reshape(-1, FRAME_SAMPLES))
        labels = np.empty(len(probs), dtype=bool)
        in_speech = self._in_speech
        for i, p in enumerate(probs):
            in_speech = p >= THRESHOLD or (in_speech and p >= NEG_THRESHOLD)
            labels[i] = in_speech
        self._in_speech = in_speech
        self.speech = np.concatenate([self.speech, labels])

    def _frame(self, time: float, rounding: Callable[[float], int] = math.floor) -> int:
        """The frame holding ``time`` (`math.ceil`: the first frame after it)."""
        index = int(rounding((time - self.origin) / FRAME_SEC + 1e-9))
        return min(max(index, 0), len(self.speech))

    def has_speech(self, start: float, end: float) -> bool:
        """Any speech frame overlapping ``[start, end)``."""
        return bool(self.speech[self._frame(start) : self._frame(end, math.ceil)].any())

    def speech_seconds(self, start: float, end: float) -> float:
        """Seconds of speech frames inside ``[start, end)``."""
        frames = self.speech[self._frame(start, math.ceil) : self._frame(end)]
        return float(frames.sum()) * FRAME_SEC

    def first_speech_start(self, start: float) -> float | None:
        """When the first speech frame at or after ``start`` begins, or None."""
        first = self._frame(start)
        hits = np.flatnonzero(self.speech[first:])
        return None if not len(hits) else self.origin + (first + hits[0]) * FRAME_SEC

    def last_speech_end(self) -> float | None:
        """When the last speech frame ends, or None if nothing scored is speech."""
        hits = np.flatnonzero(self.speech)
        return None if not len(hits) else self.origin + (hits[-1] + 1) * FRAME_SEC

    def trailing_silence(self) -> float:
        """Seconds of non-speech at the end of what has been scored."""
        last = self.last_speech_end()
        return self.end - (self.origin if last is None else last)

    def longest_pause(self, start: float, end: float) -> tuple[float, float] | None:
        """The longest run of non-speech frames between speech inside ``[start, end)``.

        A run that touches ``start`` is not a pause the window holds (it may be the
        rest of one the buffer was already cut in); None when there is no pause.
        """
        first, last = self._frame(start, math.ceil), self._frame(end)
        best: tuple[int, int] | None = None
        run_start: int | None = None
        for i in range(first, last + 1):
            silent = i < last and not self.speech[i]
            if silent and run_start is None:
                run_start = i
            elif not silent and run_start is not None:
                inside = run_start > first or (first > 0 and self.speech[first - 1])
                if inside and (best is None or i - run_start > best[1] - best[0]):
                    best = (run_start, i)
                run_start = None
        if best is None:
            return None
        return self.origin + best[0] * FRAME_SEC, self.origin + best[1] * FRAME_SEC

    def forget_before(self, time: float) -> None:
        """Drop frames before ``time`` (the engine will not look there again)."""
        cut = self._frame(time)
        if cut:
            self.speech = self.speech[cut:]
            self.origin += cut * FRAME_SEC
