"""Audio that a model without weights can hear: one "word" per second, encoded in its level.

Second ``k`` of the audio holds the constant level ``WORD_LEVEL * n`` for word
``w<n>``; `WordModel` reads the levels back. Passes over overlapping buffers
hear the same words at the same stream times, as a real model would, so
LocalAgreement commits them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from app.settings import ENGINE_SAMPLE_RATE

WORD_LEVEL = 0.01  # float level per word number: w1 = 0.01, w2 = 0.02…
WORD_SEC = 1.0
HEARD_SEC = 0.8  # a word takes the first 0.8 s of its second; then a short pause
INT16_FULL_SCALE = 32768


def words_audio(numbers: Sequence[int]) -> npt.NDArray[np.float32]:
    """Float audio: one second per word number."""
    per_word = int(WORD_SEC * ENGINE_SAMPLE_RATE)
    return np.concatenate([np.full(per_word, n * WORD_LEVEL, dtype=np.float32) for n in numbers])


def words_pcm(numbers: Sequence[int]) -> bytes:
    """The same as LINEAR16 bytes, as a client sends it."""
    audio = words_audio(numbers)
    return np.round(audio * INT16_FULL_SCALE).astype("<i2").tobytes()


class WordModel:
    """Hears each whole second of a buffer as the word its level encodes."""

    def process(self, audio: npt.NDArray[Any], prompt: str = "") -> list[dict[str, Any]]:
        per_word = int(WORD_SEC * ENGINE_SAMPLE_RATE)
        words = []
        for i in range(len(audio) // per_word):
            block = np.asarray(audio[i * per_word : (i + 1) * per_word], dtype=np.float64)
            number = round(float(block.mean()) / WORD_LEVEL)
            if number > 0:
                words.append({"start": float(i), "end": i + HEARD_SEC, "word": f"w{number}"})
        return words
