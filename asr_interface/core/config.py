"""The guides' ``asr_interface.core.config``: `ASRConfig` (`app.asr.base.ASRConfig`).

A loader registered here is handed an `app.asr.base.EngineRequest`, which
answers to every `ASRConfig` name (``model``, ``lan``, ``task``, ``backend``,
``min_chunk_size``, ``buffer_trimming``, ``buffer_trimming_sec``,
``model_cache_dir``, ``model_dir``, ``vac``, ``vad``).
"""

from app.asr.base import ASRConfig

__all__ = ["ASRConfig"]
