"""`ASRBase` over whisper_timestamped (openai-whisper + word timestamps).

Install the extra (``pip install 'asr-stream[whisper-timestamped]'``, which
pulls PyTorch) and point ``WHISPER_TIMESTAMPED_MODEL`` at a local Whisper
checkpoint (``.pt``). Nothing is downloaded: without a local file the backend
says so instead of fetching one.
"""

from __future__ import annotations

import importlib.util
import threading
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

BACKEND_NAME = "whisper_timestamped"
EXTRA_HINT = "pip install 'asr-stream[whisper-timestamped]'"


class WhisperTimestampedASR:
    sep = " "  # whisper_timestamped words carry no leading space

    def __init__(
        self,
        lan: str,
        modelsize: str | None = None,
        cache_dir: str | None = None,
        model_dir: str | None = None,
        *,
        model: Any = None,
        task: str = "transcribe",
    ) -> None:
        self.original_language = None if lan == "auto" else lan
        self.task = task
        self.transcribe_kwargs: dict[str, Any] = {}
        self.model = (
            model if model is not None else self.load_model(modelsize, cache_dir, model_dir)
        )

    def load_model(
        self, modelsize: str | None, cache_dir: str | None, model_dir: str | None
    ) -> Any:
        if model_dir is None or not Path(model_dir).is_file():
            raise BackendUnavailable(
                "The whisper_timestamped backend needs a local Whisper checkpoint: set "
                "WHISPER_TIMESTAMPED_MODEL to the path of a .pt file (nothing is downloaded).",
                code="model_unavailable",
            )
        try:
            import whisper
        except ImportError as exc:
            raise BackendUnavailable(
                f"The whisper_timestamped backend is not installed: {EXTRA_HINT}."
            ) from exc
        return whisper.load_model(model_dir, device="cpu", download_root=cache_dir)

    def transcribe(self, audio: Audio, init_prompt: str = "") -> TranscribeResult:
        import whisper_timestamped

        raw = whisper_timestamped.transcribe_timestamped(
            self.model,
            audio,
            language=self.original_language,
            task=self.task,
            initial_prompt=init_prompt or None,
            verbose=None,
            condition_on_previous_text=True,
            **self.transcribe_kwargs,
        )
        return from_whisper_dict(raw, word_key="text", probability_key="confidence")

    def ts_words(self, result: TranscribeResult) -> Sequence[RawWord]:
        return result_words(result)

    def segments_end_ts(self, result: TranscribeResult) -> list[float]:
        return segment_ends(result)

    def use_vad(self) -> None:
        self.transcribe_kwargs["vad"] = True


class WhisperTimestampedLoader:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._model: Any = None
        self._lock = threading.Lock()

    def unusable_reason(self) -> str | None:
        if importlib.util.find_spec("whisper_timestamped") is None:
            return f"The whisper_timestamped backend is not installed: {EXTRA_HINT}."
        model = self._settings.whisper_timestamped_model
        if model is None or not model.is_file():
            return (
                "The whisper_timestamped backend needs a local Whisper checkpoint: set "
                "WHISPER_TIMESTAMPED_MODEL to the path of a .pt file (nothing is downloaded)."
            )
        return None

    def describe(self) -> dict[str, Any]:
        reason = self.unusable_reason()
        return {"usable": reason is None, "reason": reason}

    def load(self, request: EngineRequest) -> tuple[OnlineASRProcessor, EngineInfo]:
        reason = self.unusable_reason()
        if reason is not None:
            raise BackendUnavailable(reason)
        if request.language is None:
            raise ConfigError(
                f"Field 'language_code' {echo(request.language_code)} is not a Whisper language.",
                code="unsupported_language",
                field="language_code",
            )
        with self._lock:
            if self._model is None:
                path = self._settings.whisper_timestamped_model
                self._model = WhisperTimestampedASR("en", model_dir=str(path)).model
        asr = WhisperTimestampedASR(request.language, model=self._model, task=request.task)
        settings = self._settings
        processor = OnlineASRProcessor(
            asr,
            ProcessorOptions(
                buffer_trimming=settings.buffer_trimming,
                buffer_trimming_sec=settings.buffer_trimming_sec,
                max_buffer_sec=settings.max_buffer_sec,
            ),
        )
        model_name = request.model or Path(str(settings.whisper_timestamped_model)).name
        return processor, EngineInfo(BACKEND_NAME, model_name, settings.min_chunk_size)
