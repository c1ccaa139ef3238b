"""`ASRBase` over mlx-whisper: Apple Silicon only (``pip install 'asr-stream[mlx]'``).

On any other platform the backend is listed as unusable with that reason.
``model`` is the path of a local MLX Whisper model folder; nothing is downloaded.
"""

from __future__ import annotations

import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from app.asr.base import (
    Audio,
    EngineInfo,
    EngineRequest,
    RawWord,
    TranscribeResult,
    from_whisper_dict,
    result_words,
    segment_ends,
)
from app.asr.online import OnlineASRProcessor, ProcessorOptions
from app.errors import BackendUnavailable, ConfigError, echo
from app.settings import Settings

BACKEND_NAME = "mlx-whisper"


def is_apple_silicon() -> bool:
    return sys.platform == "darwin" and platform.machine() == "arm64"


class MLXWhisperASR:
    sep = ""

    def __init__(self, lan: str, model_dir: str, *, task: str = "transcribe") -> None:
        self.original_language = None if lan == "auto" else lan
        self.task = task
        self.model_dir = model_dir
        self.load_model(None, None, model_dir)

    def load_model(
        self, modelsize: str | None, cache_dir: str | None, model_dir: str | None
    ) -> Any:
        if model_dir is None or not Path(model_dir).is_dir():
            raise BackendUnavailable(
                "mlx-whisper needs 'model' to be the path of a local MLX Whisper model folder.",
                code="model_unavailable",
            )
        import mlx_whisper

        return mlx_whisper

    def transcribe(self, audio: Audio, init_prompt: str = "") -> TranscribeResult:
        import mlx_whisper

        raw = mlx_whisper.transcribe(
            audio,
            path_or_hf_repo=self.model_dir,
            language=self.original_language,
            task=self.task,
            initial_prompt=init_prompt or None,
            word_timestamps=True,
            condition_on_previous_text=True,
            temperature=0.0,
        )
        return from_whisper_dict(raw, word_key="word", probability_key="probability")

    def ts_words(self, result: TranscribeResult) -> Sequence[RawWord]:
        return result_words(result)

    def segments_end_ts(self, result: TranscribeResult) -> list[float]:
        return segment_ends(result)

    def use_vad(self) -> None:
        """mlx-whisper has no voice activity filter of its own."""


class MLXWhisperLoader:
    def __init__(self, settings: Settings) -> None:
        if not is_apple_silicon():
            raise BackendUnavailable(
                f"mlx-whisper runs only on Apple Silicon (macOS on arm64); this machine is "
                f"{sys.platform}/{platform.machine()}."
            )
        try:
            import mlx_whisper  # noqa: F401
        except ImportError as exc:
            raise BackendUnavailable(
                "The mlx-whisper backend is not installed: pip install 'asr-stream[mlx]'."
            ) from exc
        self._settings = settings

    def load(self, request: EngineRequest) -> tuple[OnlineASRProcessor, EngineInfo]:
        if request.language is None:
            raise ConfigError(
                f"Field 'language_code' {echo(request.language_code)} is not a Whisper language.",
                code="unsupported_language",
                field="language_code",
            )
        asr = MLXWhisperASR(request.language, request.model, task=request.task)
        s = self._settings
        options = ProcessorOptions(s.buffer_trimming, s.buffer_trimming_sec, s.max_buffer_sec)
        return OnlineASRProcessor(asr, options), EngineInfo(
            BACKEND_NAME, request.model, s.min_chunk_size
        )
