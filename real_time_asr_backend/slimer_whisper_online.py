"""Guide 002's ``real_time_asr_backend.slimer_whisper_online``: the model base class and
the streaming processor (see the package docstring)."""

from app.asr.base import ASRModelBase as ASRBase
from app.asr.online import OnlineASRProcessor

__all__ = ["ASRBase", "OnlineASRProcessor"]
