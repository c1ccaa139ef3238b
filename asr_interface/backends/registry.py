"""The guides' ``asr_interface.backends.registry``: the service's backend registry.

``register_loader(name, loader)`` before the app is created (at import of your
plugin module, say) makes ``name`` a backend of every app created afterwards;
see `app.asr.registry` for the other ways in (``ASR_PLUGINS``, entry points).
"""

from app.asr.registry import get_loader, list_loaders, register_loader

__all__ = ["get_loader", "list_loaders", "register_loader"]
