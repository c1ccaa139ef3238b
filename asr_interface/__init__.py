"""The integration guides' import paths, over this service's own code.

The guides this service grew from (docs/BACKENDS.md) import from an
``asr_interface`` package. These modules give those paths and nothing else:
each name is the service's own object, so a plugin written after the guides
plugs into the same registry, processor and app as everything else.

==========================================================  =====================================
``asr_interface.core.protocols``: ``ASRBase``               `app.asr.base.ASRModelBase` (a class)
``asr_interface.core.protocols``: ``ASRProcessor``          `app.asr.base.ASRProcessor`
``asr_interface.core.protocols``: ``ModelLoader``           `app.asr.base.ModelLoader`
``asr_interface.core.config``: ``ASRConfig``                `app.asr.base.ASRConfig`
``asr_interface.backends.registry``: ``register_loader``,   `app.asr.registry`
``list_loaders``, ``get_loader``
``asr_interface.backends.whisper_online_processor``:        `app.asr.online.OnlineASRProcessor`
``OnlineASRProcessor``
``asr_interface.web.server``: ``create_app``                `app.main.create_app`
==========================================================  =====================================
"""
