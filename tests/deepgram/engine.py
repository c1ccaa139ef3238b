"""A scripted engine that hears loud audio as words, with voice activity: for protocol tests.

The real streaming algorithm (`OnlineASRProcessor`, `SpeechTimeline`) over a
fake model: every 0.5 s block of stream time holding loud samples (peak over
`LOUD`) is the word ``w<block>``, and loud frames are speech. So a test lays
out words, pauses and utterances by seconds of loud and quiet PCM, and gets
interims, finals at pauses, and speech events as the real engine gives them.
Loaded in a real server as ``ASR_PLUGINS=talking=tests.deepgram.engine:talking``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from app.asr.base import (
    Audio,
    EngineInfo,
    EngineRequest,
    RawWord,
    TimedWord,
    TranscribeResult,
    result_words,
    segment_ends,
)
from app.asr.online import OnlineASRProcessor, ProcessorOptions
from app.asr.vad import SpeechTimeline
from app.settings import ENGINE_SAMPLE_RATE

LOUD = 0.05
BLOCK_SEC = 0.5
PAUSE_SEC = 0.3


def loud_frames(frames: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """A `FrameScorer`: a frame is speech when its peak is loud."""
    return (np.abs(frames).max(axis=1) > LOUD).astype(np.float32)


class BlockWords:
    """`ASRBase`: the word ``w<k>`` for each loud 0.5 s block ``k`` of stream time."""

    sep = " "

    def __init__(self) -> None:
        self.offset = 0.0  # stream time of the buffer's first sample (the processor's)

    def load_model(
        self, modelsize: str | None, cache_dir: str | None, model_dir: str | None
    ) -> Any:
        return None

    def transcribe(self, audio: Audio, init_prompt: str = "") -> TranscribeResult:
        block = round(BLOCK_SEC * ENGINE_SAMPLE_RATE)
        first = int(np.ceil(self.offset / BLOCK_SEC - 1e-9))
        words = []
        k = first
        while True:
            start = round((k * BLOCK_SEC - self.offset) * ENGINE_SAMPLE_RATE)
            if start + block > len(audio):
                break
            if np.abs(audio[start : start + block]).max() > LOUD:
                t = k * BLOCK_SEC - self.offset
                words.append(
                    {
                        "start": t + 0.05,
                        "end": t + BLOCK_SEC - 0.05,
                        "text": f"w{k}",
                        "probability": 0.9,
                    }
                )
            k += 1
        text = " ".join(str(w["text"]) for w in words)
        end = float(words[-1]["end"]) if words else 0.0
        return {
            "text": text,
            "segments": [{"start": 0.0, "end": end, "text": text, "words": words}] if words else [],  # type: ignore[list-item]
            "language": "en",
        }

    def ts_words(self, result: TranscribeResult) -> Sequence[RawWord]:
        return [TimedWord(s, e, w, 0.9) for s, e, w in result_words(result)]  # type: ignore[misc]

    def segments_end_ts(self, result: TranscribeResult) -> list[float]:
        return segment_ends(result)

    def use_vad(self) -> None:
        pass


class TalkingLoader:
    def load(self, request: EngineRequest) -> tuple[OnlineASRProcessor, EngineInfo]:
        asr = BlockWords()
        options = ProcessorOptions(pause_sec=PAUSE_SEC)
        processor = OnlineASRProcessor(asr, options, SpeechTimeline(loud_frames))
        original = asr.transcribe

        def transcribe(audio: Audio, init_prompt: str = "") -> TranscribeResult:
            asr.offset = processor.buffer_time_offset
            return original(audio, init_prompt)

        asr.transcribe = transcribe  # type: ignore[method-assign]
        return processor, EngineInfo(request.backend, request.model or "talking", 0.5)


def talking(settings: object) -> TalkingLoader:
    return TalkingLoader()
