"""Guide 002's import paths (``real_time_asr_backend.*``), over this service's own code.

Guide 002 ("adding a custom ASR model") imports from a package of this name;
`asr_interface` gives the other guides' paths. Same objects either way:

==========================================================  =====================================
``real_time_asr_backend.slimer_whisper_online``: ``ASRBase``  `app.asr.base.ASRModelBase`
``real_time_asr_backend.slimer_whisper_online``:              `app.asr.online.OnlineASRProcessor`
``OnlineASRProcessor``
``real_time_asr_backend.real_time_asr_protocols``:            `app.asr.base.ModelLoader`,
``ModelLoader``, ``ASRProcessor``                             `app.asr.base.ASRProcessor`
==========================================================  =====================================

The guide's last step edits a ``MODEL_LOADERS`` dict in its ``server.py``; here a
loader is registered instead (``asr_interface.backends.registry.register_loader``,
``ASR_PLUGINS`` or an entry point: docs/BACKENDS.md).
"""
