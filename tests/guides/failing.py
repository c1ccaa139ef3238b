"""Plugins that fail, each in one place: `load`, `transcribe`, `process_iter`, a factory.

Their messages hold `SECRET`, a path that must never reach a client.
"""

from __future__ import annotations

from typing import Any

from app.errors import ConfigError
from app.settings import Settings
from asr_interface.backends.whisper_online_processor import OnlineASRProcessor
from asr_interface.core.protocols import ASRBase, ModelLoader

SECRET = "/secret/plugin/path"


class Raises(RuntimeError):
    pass


class LoadRaises(ModelLoader):
    def load(self, config: Any) -> Any:
        raise Raises(f"cannot open {SECRET}")


class NativeLoadRaises:
    """Not a guide loader (no `ModelLoader` base): the route still answers."""

    def load(self, request: Any) -> Any:
        raise Raises(f"cannot open {SECRET}")


class RefusesLanguage(ModelLoader):
    def load(self, config: Any) -> Any:
        raise ConfigError(
            f"Language {config.lan!r} is not spoken here.", code="unsupported_language"
        )


class BrokenASR(ASRBase):
    def transcribe(self, audio: Any, init_prompt: str = "") -> Any:
        raise Raises(f"model crashed at {SECRET}")


class TranscribeRaises(ModelLoader):
    def load(self, config: Any) -> Any:
        asr = BrokenASR(config.lan, config.model)
        processor = OnlineASRProcessor(asr=asr, buffer_trimming=("segment", 10), min_chunk_sec=1.0)
        return processor, {"separator": asr.sep, "model_size": config.model}


class BrokenEngine:
    def init(self, offset: float = 0.0) -> None: ...

    def insert_audio_chunk(self, audio: Any) -> None: ...

    def process_iter(self) -> Any:
        raise Raises(f"engine crashed at {SECRET}")

    def finish(self) -> Any:
        return (None, None, "")


class ProcessIterRaises(ModelLoader):
    def load(self, config: Any) -> Any:
        return BrokenEngine(), {"separator": " ", "model_path": config.model}


def broken_factory(settings: Settings) -> Any:
    raise Raises(f"factory crashed at {SECRET}")
