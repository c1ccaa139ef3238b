"""A client's `StreamConfig` checked against the settings: what the session will run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from app.asr.base import EngineRequest, StreamingOptions
from app.asr.registry import Registry
from app.errors import ConfigError, echo
from app.languages import MAX_TAG_CHARS, is_bcp47, to_whisper_language
from app.messages import StreamConfig
from app.settings import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, Settings

SUPPORTED_ENCODINGS = ("LINEAR16",)


@dataclass(frozen=True)
class SessionDefaults:
    """What a session gets when its config leaves a field out; `/load_model` replaces it."""

    backend: str
    model: str
    language_code: str
    task: Literal["transcribe", "translate"] = "transcribe"
    options: StreamingOptions = field(default_factory=StreamingOptions)

    @classmethod
    def from_settings(cls, settings: Settings) -> SessionDefaults:
        return cls(
            backend=settings.default_backend,
            model=settings.default_model,
            language_code=settings.default_language_code,
        )

    def engine_request(self) -> EngineRequest:
        """What the engine is asked for by a session that leaves every field out: what
        start-up loads and warms, and what the command line checks."""
        return EngineRequest(
            backend=self.backend,
            model=self.model,
            language=to_whisper_language(self.language_code),
            language_code=self.language_code,
            task=self.task,
            options=self.options,
        )


@dataclass(frozen=True)
class SessionPlan:
    """Everything a session needs, every field already validated."""

    request: EngineRequest
    language_code: str
    sample_rate_hertz: int
    encoding: str
    interim_results: bool
    punctuation: bool
    word_offsets: bool
    stream_offset_sec: float = 0.0  # added to every time the session reports


def plan_session(
    config: StreamConfig,
    settings: Settings,
    registry: Registry,
    defaults: SessionDefaults | None = None,
) -> SessionPlan:
    """Validate a config's values (its types are already checked); name the field at fault."""
    defaults = defaults or SessionDefaults.from_settings(settings)
    # ASCII only: str.upper() turns a dotless "ı" into "I", so "lınear16" passed.
    encoding = config.encoding.upper() if config.encoding.isascii() else config.encoding
    if encoding not in SUPPORTED_ENCODINGS:
        raise ConfigError(
            f"Field 'encoding' is {echo(config.encoding)}; the supported encoding is "
            "'LINEAR16' (raw little-endian 16-bit mono PCM).",
            code="unsupported_encoding",
            field="encoding",
        )
    rate = config.sample_rate_hertz
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise ConfigError(
            f"Field 'sample_rate_hertz' is {rate}; send audio between {MIN_SAMPLE_RATE} "
            f"and {MAX_SAMPLE_RATE} Hz.",
            code="unsupported_sample_rate",
            field="sample_rate_hertz",
        )
    language_code = config.language_code or defaults.language_code
    if not is_bcp47(language_code):
        raise ConfigError(
            f"Field 'language_code' {echo(language_code)} is not a BCP-47 language tag "
            f"of at most {MAX_TAG_CHARS} characters (examples: 'en-US', 'ar-EG').",
            code="unsupported_language",
            field="language_code",
        )
    backend = config.backend or defaults.backend
    if backend not in registry:
        known = ", ".join(registry.list_loaders())
        raise ConfigError(
            f"Field 'backend' names {echo(backend)}, which is not registered; available: {known}.",
            code="unknown_backend",
            field="backend",
        )
    # The default model belongs to the default backend; another backend picks its own.
    model = config.model or (defaults.model if backend == defaults.backend else "")
    punctuation = (
        settings.enable_automatic_punctuation
        if config.enable_automatic_punctuation is None
        else config.enable_automatic_punctuation
    )
    interim = (
        settings.streaming_interim_results
        if config.interim_results is None
        else config.interim_results
    )
    return SessionPlan(
        request=EngineRequest(
            backend=backend,
            model=model,
            language=to_whisper_language(language_code),
            language_code=language_code,
            punctuation=punctuation,
            word_offsets=config.enable_word_time_offsets,
            interim_results=interim,
            task=defaults.task if backend == defaults.backend else "transcribe",
            options=defaults.options if backend == defaults.backend else StreamingOptions(),
        ),
        language_code=language_code,
        sample_rate_hertz=rate,
        encoding=encoding,
        interim_results=interim,
        punctuation=punctuation,
        word_offsets=config.enable_word_time_offsets,
        stream_offset_sec=config.stream_offset_sec,
    )
