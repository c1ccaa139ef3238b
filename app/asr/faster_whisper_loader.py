"""The ``faster-whisper`` backend's loader: one shared model, one processor per session."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np

from app.asr.base import EngineInfo, EngineRequest
from app.asr.faster_whisper_backend import FasterWhisperASR, bundled_tiny_en
from app.asr.online import OnlineASRProcessor, ProcessorOptions
from app.errors import ConfigError
from app.settings import ENGINE_SAMPLE_RATE, Settings

logger = logging.getLogger(__name__)

BACKEND_NAME = "faster-whisper"
TINY_EN = "tiny.en"
WARMUP_SECONDS = 1.0


class FasterWhisperLoader:
    """Loads each model once (thread-safe) and wraps it per session in `OnlineASRProcessor`."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._models: dict[str, object] = {}  # model name → shared WhisperModel
        self._lock = threading.Lock()
        self._options = ProcessorOptions(
            buffer_trimming=settings.buffer_trimming,
            buffer_trimming_sec=settings.buffer_trimming_sec,
            max_buffer_sec=settings.max_buffer_sec,
        )

    def known_models(self) -> list[str]:
        return [TINY_EN]

    def check(self, request: EngineRequest) -> None:
        """Refuse, naming the config field, what this backend cannot serve."""
        if request.model not in self.known_models():
            known = ", ".join(self.known_models())
            raise ConfigError(
                f"Unknown model '{request.model}' for backend '{BACKEND_NAME}'; "
                f"available: {known}.",
                code="unknown_model",
                field="model",
            )
        if request.language is None:
            raise ConfigError(
                f"Field 'language_code' {request.language_code!r} is not a language Whisper "
                "recognises.",
                code="unsupported_language",
                field="language_code",
            )
        if request.model.endswith(".en") and request.language != "en":
            raise ConfigError(
                f"Model '{request.model}' understands English only; field 'language_code' "
                f"{request.language_code!r} needs a multilingual model.",
                code="unsupported_language",
                field="language_code",
            )

    def _model_dir(self, model: str) -> Path:
        if self._settings.whisper_model_dir is not None:
            return self._settings.whisper_model_dir
        return bundled_tiny_en()

    def asr(self, request: EngineRequest) -> FasterWhisperASR:
        """A per-session wrapper around the shared model (loaded and warmed on first use)."""
        self.check(request)
        settings = self._settings
        with self._lock:
            model = self._models.get(request.model)
            if model is None:
                started = time.perf_counter()
                model = FasterWhisperASR(
                    "en",
                    model_dir=self._model_dir(request.model),
                    compute_type=settings.whisper_compute_type,
                    cpu_threads=settings.whisper_cpu_threads,
                ).model
                self._warm_up(model)
                logger.info(
                    "loaded model %s in %.2f s", request.model, time.perf_counter() - started
                )
                self._models[request.model] = model
        return FasterWhisperASR(
            request.language or "en",  # `check` refused None
            model=model,
            beam_size=settings.whisper_beam_size,
            vad_filter=settings.whisper_vad_filter,
        )

    @staticmethod
    def _warm_up(model: object) -> None:
        # The first inference allocates CTranslate2's buffers; pay for it at
        # start-up, not in the first user's session.
        rng = np.random.default_rng(0)
        noise = rng.normal(0.0, 0.01, int(WARMUP_SECONDS * ENGINE_SAMPLE_RATE)).astype(np.float32)
        FasterWhisperASR("en", model=model, vad_filter=False).transcribe(noise)

    def load(self, request: EngineRequest) -> tuple[OnlineASRProcessor, EngineInfo]:
        processor = OnlineASRProcessor(self.asr(request), self._options)
        info = EngineInfo(
            backend=BACKEND_NAME, model=request.model, min_chunk_sec=self._settings.min_chunk_size
        )
        return processor, info
