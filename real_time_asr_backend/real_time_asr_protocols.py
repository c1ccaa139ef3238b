"""Guide 002's ``real_time_asr_backend.real_time_asr_protocols``: the loader and
processor protocols (see the package docstring)."""

from app.asr.base import ASRModelBase as ASRBase
from app.asr.base import ASRProcessor, ModelLoader

__all__ = ["ASRBase", "ASRProcessor", "ModelLoader"]
