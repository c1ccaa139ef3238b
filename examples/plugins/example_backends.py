"""A worked example of both plugin paths (see docs/BACKENDS.md).

Register without touching the server, e.g. in `.env`:

    ASR_PLUGINS=mywhisper=examples.plugins.example_backends:MyWhisperLoader,utterance=examples.plugins.example_backends:UtteranceLoader

* Path 1, a model: `MyWhisperASR` implements `ASRBase` with faster-whisper's
  public API; the service's `OnlineASRProcessor` makes it stream.
* Path 2, a whole engine: `UtteranceProcessor` implements `ASRProcessor` with
  its own buffering: it waits for a pause, then transcribes the utterance in
  one go (fewer, later, but never-revised finals).

Both use the `tiny.en` model that the service bundles, so the example runs
anywhere the service does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from app.asr.base import (
    ASRBase,
    Audio,
    EngineInfo,
    EngineRequest,
    RawWord,
    TextSpan,
    TranscribeResult,
)
from app.asr.models import TINY_EN, resolve_model_dir
from app.asr.online import OnlineASRProcessor, ProcessorOptions
from app.errors import ConfigError
from app.settings import ENGINE_SAMPLE_RATE, Settings

# --------------------------------------------------------------------------- Path 1: a model


class MyWhisperASR:
    """`ASRBase` over faster-whisper, written against its public API only."""

    sep = ""  # faster-whisper's words start with their space

    def __init__(self, lan: str, model_dir: str) -> None:
        self.language = lan
        self.vad = False
        self.model = self.load_model(None, None, model_dir)

    def load_model(
        self, modelsize: str | None, cache_dir: str | None, model_dir: str | None
    ) -> Any:
        from faster_whisper import WhisperModel

        return WhisperModel(model_dir or "", device="cpu", compute_type="int8")

    def transcribe(self, audio: Audio, init_prompt: str = "") -> TranscribeResult:
        segments, info = self.model.transcribe(
            audio,
            language=self.language,
            initial_prompt=init_prompt or None,
            word_timestamps=True,
            beam_size=1,
            temperature=0.0,
            vad_filter=self.vad,
        )
        out: TranscribeResult = {"text": "", "segments": [], "language": info.language}
        for seg in segments:
            words = [{"start": w.start, "end": w.end, "text": w.word} for w in seg.words or ()]
            out["segments"].append(
                {"start": seg.start, "end": seg.end, "text": seg.text, "words": words}  # type: ignore[typeddict-item]
            )
            out["text"] += seg.text
        return out

    def ts_words(self, result: TranscribeResult) -> Sequence[RawWord]:
        return [(w["start"], w["end"], w["text"]) for s in result["segments"] for w in s["words"]]

    def segments_end_ts(self, result: TranscribeResult) -> list[float]:
        return [s["end"] for s in result["segments"]]

    def use_vad(self) -> None:
        self.vad = True


def _english_only(request: EngineRequest) -> None:
    if request.language != "en":
        raise ConfigError(
            "This example backend speaks English only.",
            code="unsupported_language",
            field="language_code",
        )


class MyWhisperLoader:
    """A `ModelLoader`: one shared model, a fresh `OnlineASRProcessor` per session."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.asr: MyWhisperASR | None = None

    def load(self, request: EngineRequest) -> tuple[OnlineASRProcessor, EngineInfo]:
        _english_only(request)
        if self.asr is None:
            self.asr = MyWhisperASR(
                "en", str(resolve_model_dir(TINY_EN, self.settings.model_cache_dir))
            )
        processor = OnlineASRProcessor(self.asr, ProcessorOptions())
        return processor, EngineInfo("mywhisper", TINY_EN, min_chunk_sec=1.0)


# --------------------------------------------------------------------------- Path 2: an engine

FRAME_SEC = 0.02
PAUSE_SEC = 0.5
MAX_UTTERANCE_SEC = 20.0
SPEECH_RMS = 0.01


class UtteranceProcessor:
    """`ASRProcessor`: buffers audio, cuts at pauses, transcribes each utterance once."""

    def __init__(self, asr: ASRBase) -> None:
        self.asr = asr
        self.init()

    def init(self, offset: float = 0.0) -> None:
        self.offset = offset  # stream time of audio[0]
        self.audio: Audio = np.zeros(0, dtype=np.float32)

    def insert_audio_chunk(self, audio: Audio) -> None:
        self.audio = np.concatenate([self.audio, audio])

    def _pause_end(self) -> int | None:
        """Sample index just after the first pause that follows speech, if any."""
        frame = int(FRAME_SEC * ENGINE_SAMPLE_RATE)
        n = len(self.audio) // frame
        if n == 0:
            return None
        rms = np.sqrt(np.mean(self.audio[: n * frame].reshape(n, frame) ** 2, axis=1))
        speech = rms > SPEECH_RMS
        quiet_needed = int(PAUSE_SEC / FRAME_SEC)
        seen_speech, quiet = False, 0
        for i, is_speech in enumerate(speech):
            seen_speech |= bool(is_speech)
            quiet = 0 if is_speech else quiet + 1
            if seen_speech and quiet >= quiet_needed:
                return (i + 1) * frame
        if len(self.audio) > MAX_UTTERANCE_SEC * ENGINE_SAMPLE_RATE:
            return len(self.audio)
        return None

    def _transcribe(self, end: int) -> TextSpan | None:
        utterance, start = self.audio[:end], self.offset
        self.audio = self.audio[end:]
        self.offset += end / ENGINE_SAMPLE_RATE
        words = self.asr.ts_words(self.asr.transcribe(utterance))
        if not words:
            return None
        text = self.asr.sep.join(w[2] for w in words)
        return TextSpan(start + words[0][0], start + words[-1][1], text)

    def process_iter(self) -> TextSpan | None:
        end = self._pause_end()
        return None if end is None else self._transcribe(end)

    def finish(self) -> TextSpan | None:
        return self._transcribe(len(self.audio)) if len(self.audio) else None


class UtteranceLoader:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.asr: MyWhisperASR | None = None

    def load(self, request: EngineRequest) -> tuple[UtteranceProcessor, EngineInfo]:
        _english_only(request)
        if self.asr is None:
            self.asr = MyWhisperASR(
                "en", str(resolve_model_dir(TINY_EN, self.settings.model_cache_dir))
            )
        return UtteranceProcessor(self.asr), EngineInfo("utterance", TINY_EN, min_chunk_sec=0.5)
