"""The guides' ``asr_interface.core.protocols``.

``ASRBase`` here is a base class, as in the guides and whisper_streaming:
``class MyCustomASR(ASRBase)`` gets its constructor
(``__init__(lan, modelsize=None, cache_dir=None, model_dir=None,
logfile=sys.stderr)``), ``sep``, ``original_language``, ``transcribe_kargs``
and ``use_vad()``. It is `app.asr.base.ASRModelBase`, which satisfies the
service's `app.asr.base.ASRBase` protocol; a model that does not inherit from
it only needs that protocol's members.

``ASRProcessor`` and ``ModelLoader`` are the service's protocols; inherit from
them as the guides do. A loader that inherits from ``ModelLoader`` may return
the guides' metadata dict instead of an `app.asr.base.EngineInfo`.
"""

from app.asr.base import ASRModelBase as ASRBase
from app.asr.base import ASRProcessor, ModelLoader

__all__ = ["ASRBase", "ASRProcessor", "ModelLoader"]
