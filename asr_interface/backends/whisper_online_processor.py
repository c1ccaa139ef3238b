"""The guides' ``asr_interface.backends.whisper_online_processor``.

`OnlineASRProcessor` is the service's (`app.asr.online`): LocalAgreement-2
streaming over any ``ASRBase``. It takes the guides' keywords
(``asr=``, ``buffer_trimming=(mode, seconds)``, ``min_chunk_sec=``,
``logfile=``) as well as the service's `ProcessorOptions`.
"""

from app.asr.online import OnlineASRProcessor, ProcessorOptions

__all__ = ["OnlineASRProcessor", "ProcessorOptions"]
