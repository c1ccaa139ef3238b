"""Backends by name: each entry a loader, or a lazy ``"module:attr"`` factory.

A lazy entry's module is imported only when its backend is first chosen, so
an optional dependency is needed only by those who use it. A factory is
called with the service `Settings` and returns a `ModelLoader`.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from typing import TypeAlias

from app.asr.base import ModelLoader, RecognizerLoader
from app.errors import BackendUnavailable
from app.settings import Settings

AnyLoader: TypeAlias = ModelLoader | RecognizerLoader
LoaderFactory: TypeAlias = Callable[[Settings], AnyLoader]

# Backends that ship with the service.
BUILTIN_BACKENDS: dict[str, str] = {
    "faster-whisper": "app.asr.faster_whisper_loader:FasterWhisperLoader",
}


class Registry:
    """Backend name → loader; lazy entries are imported and built on first use."""

    def __init__(self, settings: Settings, entries: dict[str, str] | None = None) -> None:
        self._settings = settings
        self._lazy: dict[str, str] = dict(BUILTIN_BACKENDS if entries is None else entries)
        self._loaders: dict[str, AnyLoader] = {}
        self._lock = threading.Lock()

    def register_loader(self, name: str, loader: AnyLoader | str) -> None:
        """Register a loader object, or a ``"module:attr"`` factory imported on first use."""
        with self._lock:
            self._loaders.pop(name, None)
            self._lazy.pop(name, None)
            if isinstance(loader, str):
                self._lazy[name] = loader
            else:
                self._loaders[name] = loader

    def list_loaders(self) -> list[str]:
        with self._lock:
            return sorted(self._loaders.keys() | self._lazy.keys())

    def __contains__(self, name: object) -> bool:
        return name in self.list_loaders()

    def get_loader(self, name: str) -> AnyLoader:
        """The loader for ``name``: `KeyError` if unknown, `BackendUnavailable` if unusable."""
        with self._lock:
            if name in self._loaders:
                return self._loaders[name]
            target = self._lazy[name]
            loader = _import_factory(name, target)(self._settings)
            self._loaders[name] = loader
            return loader


def _import_factory(name: str, target: str) -> LoaderFactory:
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
        factory: LoaderFactory = getattr(module, attr)
    except ImportError as exc:
        missing = exc.name or module_name
        raise BackendUnavailable(
            f"Backend '{name}' cannot be used: its module needs '{missing}', which is not "
            "installed.",
        ) from exc
    except AttributeError as exc:
        raise BackendUnavailable(
            f"Backend '{name}' is misconfigured: '{target}' was not found."
        ) from exc
    return factory
