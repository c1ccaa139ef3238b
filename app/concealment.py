"""Packet-loss concealment for WebRTC audio: a lost 20 ms is not a hole of digital silence.

aiortc's Opus decoder has no concealment (FEC or PLC): a packet the jitter buffer
gave up on (`app.jitter`) is simply missing, and the session filled its time with
zeros. Whisper, streamed, reads such holes badly: JFK with 5 % of its 20 ms frames
zeroed (three loss patterns) streamed at WER 0.14-0.23, where offline it read them
all at 0.00. Waveform substitution, the oldest concealment there is (G.711
Appendix I does it with pitch periods), streamed the same three at 0.00: the
audio just before the hole is played again, mirrored first so both joins are
continuous (`conceal`).

Only the start of a long gap is made up: `CONCEAL_MAX_SEC`, then the rest is
silence, faded in `FADE_SEC` so its edge is no click. A muted track or a sender
that paused (DTX) is real silence, and the stream's times stay the audio's.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

# The audio one lost packet's worth before the hole is what fills it (Opus: 20 ms).
TAIL_SEC = 0.02
# At most this much of a gap is made up from the audio before it; the rest is silence.
CONCEAL_MAX_SEC = 0.06
FADE_SEC = 0.01

Pcm = npt.NDArray[np.int16]


def tail_samples(rate: int) -> int:
    """How much audio before a hole `conceal` wants: `TAIL_SEC` at ``rate``."""
    return max(1, round(TAIL_SEC * rate))


def conceal(tail: Pcm, samples: int, rate: int) -> tuple[Pcm, int]:
    """What fills a hole of ``samples`` after ``tail``: (made-up audio, silence samples after it).

    The audio is ``tail`` mirrored, then forward, then mirrored again…, so each join
    meets the sample next to it; at most `CONCEAL_MAX_SEC` of it, faded out when
    silence follows. No tail (the stream's start) makes the whole hole silence.
    """
    if samples <= 0:
        return np.zeros(0, dtype=np.int16), 0
    made_up = min(samples, round(CONCEAL_MAX_SEC * rate)) if len(tail) else 0
    if not made_up:
        return np.zeros(0, dtype=np.int16), samples
    back_and_forth = np.concatenate([tail[::-1], tail])
    audio = np.tile(back_and_forth, math.ceil(made_up / len(back_and_forth)))[:made_up]
    silence = samples - made_up
    if silence:
        fade = min(made_up, max(1, round(FADE_SEC * rate)))
        ramp = np.ones(made_up, dtype=np.float32)
        ramp[-fade:] = np.linspace(1.0, 0.0, fade, dtype=np.float32)
        audio = np.round(audio.astype(np.float32) * ramp).astype(np.int16)
    return audio.astype(np.int16, copy=False), silence
