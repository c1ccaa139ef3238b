"""Backends by name: each entry a loader, or a lazy ``"module:attr"`` factory.

Where entries come from, later ones overriding earlier ones:

1. the backends that ship with the service (`BUILTIN_BACKENDS`);
2. installed packages' entry points in the group ``asr_stream.backends``
   (``name = "module:attr"``), so a pip-installed plugin appears by itself;
3. the ``ASR_PLUGINS`` setting: ``"name=module:attr,other=module:attr"``;
4. code: `register_loader(name, loader)` before `create_app`.

A lazy entry's module is imported only when its backend is first chosen, so
an optional dependency is needed only by those who use it. A factory is
called with the service `Settings` and returns a loader (a `ModelLoader`, or a
`RecognizerLoader` for engines with their own streaming loop).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import threading
from collections.abc import Callable
from typing import Any, TypeAlias

from app.asr.base import ModelLoader, RecognizerLoader
from app.errors import ASRError, BackendUnavailable
from app.settings import Settings

logger = logging.getLogger(__name__)

AnyLoader: TypeAlias = ModelLoader | RecognizerLoader
LoaderFactory: TypeAlias = Callable[[Settings], AnyLoader]

ENTRY_POINT_GROUP = "asr_stream.backends"

BUILTIN_BACKENDS: dict[str, str] = {
    "faster-whisper": "app.asr.faster_whisper_loader:FasterWhisperLoader",
    "whisper_timestamped": "app.asr.whisper_timestamped_backend:WhisperTimestampedLoader",
    "mlx-whisper": "app.asr.mlx_whisper_backend:MLXWhisperLoader",
    "google": "app.asr.google.loader:GoogleLoader",
}

# Loaders registered by code for every app created afterwards in this process.
_code_loaders: dict[str, AnyLoader | str] = {}
_current: Registry | None = None


def parse_plugins(spec: str) -> dict[str, str]:
    """``"a=pkg.mod:Loader, b=x:y"`` → ``{"a": "pkg.mod:Loader", "b": "x:y"}``."""
    entries: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, sep, target = item.partition("=")
        if not sep or ":" not in target or not name.strip():
            raise ValueError(f"ASR_PLUGINS entry {item!r} is not 'name=module:attr'")
        entries[name.strip()] = target.strip()
    return entries


def entry_point_backends() -> dict[str, str]:
    return {ep.name: ep.value for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


class Registry:
    """Backend name → loader; lazy entries are imported and built on first use."""

    def __init__(self, settings: Settings, entries: dict[str, str] | None = None) -> None:
        self._settings = settings
        self._lazy: dict[str, str] = {}
        self._loaders: dict[str, AnyLoader] = {}
        self._lock = threading.Lock()
        if entries is not None:
            self._lazy.update(entries)
        else:
            self._lazy.update(BUILTIN_BACKENDS)
            self._lazy.update(entry_point_backends())
            self._lazy.update(parse_plugins(settings.asr_plugins))
            for name, loader in _code_loaders.items():
                self.register_loader(name, loader)

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
        with self._lock:
            return self._loaders.setdefault(name, loader)

    def describe(self, name: str) -> dict[str, Any]:
        """Whether ``name`` can run here, and why not; its models when it says."""
        try:
            loader = self.get_loader(name)
        except ASRError as exc:
            return {"usable": False, "reason": exc.detail}
        describe = getattr(loader, "describe", None)
        if callable(describe):
            info: dict[str, Any] = describe()
            return info
        return {"usable": True, "reason": None}


def _import_factory(name: str, target: str) -> LoaderFactory:
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
        factory: LoaderFactory = getattr(module, attr)
    except ImportError as exc:
        missing = exc.name or module_name
        raise BackendUnavailable(
            f"Backend '{name}' cannot be used: it needs the Python package '{missing}', "
            "which is not installed.",
        ) from exc
    except AttributeError as exc:
        raise BackendUnavailable(
            f"Backend '{name}' is misconfigured: '{target}' was not found."
        ) from exc
    return factory


# --------------------------------------------------------------------------- module-level API


def register_loader(name: str, loader: AnyLoader | str) -> None:
    """Register a backend for apps created from now on (and the current one)."""
    _code_loaders[name] = loader
    if _current is not None:
        _current.register_loader(name, loader)


def set_current(registry: Registry) -> None:
    """Make ``registry`` the one the module-level functions use (`create_app` does this)."""
    global _current
    _current = registry


def current() -> Registry:
    global _current
    if _current is None:
        _current = Registry(Settings())
    return _current


def list_loaders() -> list[str]:
    return current().list_loaders()


def get_loader(name: str) -> AnyLoader:
    return current().get_loader(name)
