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

A loader that inherits from `ModelLoader`, as the integration guides write
them, is served through a `GuideLoader`: it gets the request with the
service's streaming settings filled in (the guides' `ASRConfig` names), may
return the guides' metadata dict instead of an `EngineInfo`, and a failure in
it is reported as the named backend's (`BackendFailure`), not a bare exception.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeAlias

from app.asr.base import (
    ASRProcessor,
    Audio,
    EngineInfo,
    EngineRequest,
    ModelLoader,
    ProcessorResult,
    RecognizerLoader,
    StreamingOptions,
    SupportsInterim,
    TextSpan,
    as_text_span,
)
from app.errors import ASRError, BackendFailure, BackendUnavailable, echo
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


def is_guide_loader(loader: object) -> bool:
    """A loader written after the guides: it inherits from the `ModelLoader` protocol."""
    return ModelLoader in type(loader).__mro__ and not isinstance(loader, RecognizerLoader)


class SeparatedProcessor:
    """Starts each final with the engine's ``separator``, so finals concatenate into text.

    The guides' metadata names the separator the server joins segments with;
    here finals are joined by concatenation, so each carries its own (see
    STREAMING.md). Used for processors without interim results, which follow
    the guides' conventions rather than the service's.
    """

    def __init__(self, processor: ASRProcessor, separator: str) -> None:
        self.processor = processor
        self.separator = separator
        self.min_chunk_sec: float | None = getattr(processor, "min_chunk_sec", None)

    def init(self, offset: float = 0.0) -> None:
        self.processor.init(offset)

    def insert_audio_chunk(self, audio: Audio) -> None:
        self.processor.insert_audio_chunk(audio)

    def process_iter(self) -> ProcessorResult:
        return self._separated(self.processor.process_iter())

    def finish(self) -> ProcessorResult:
        return self._separated(self.processor.finish())

    def _separated(self, result: ProcessorResult) -> TextSpan | None:
        span = as_text_span(result)
        if span is None or span.text.startswith(self.separator):
            return span
        return dataclasses.replace(span, text=self.separator + span.text)


class GuideLoader:
    """Serves a loader written after the integration guides (see the module docstring)."""

    def __init__(self, name: str, loader: ModelLoader, settings: Settings) -> None:
        self.name = name
        self.loader = loader
        self._settings = settings

    def __getattr__(self, attr: str) -> Any:
        # `describe` and anything else the plugin offers (not our own attributes:
        # they are missing only while the object is being built or copied).
        if attr in ("name", "loader", "_settings"):
            raise AttributeError(attr)
        return getattr(self.loader, attr)

    def request_for(self, request: EngineRequest) -> EngineRequest:
        """The request with the service's settings where it leaves a value open."""
        s, opts = self._settings, request.options
        return dataclasses.replace(
            request,
            options=StreamingOptions(
                min_chunk_size=opts.min_chunk_size or s.min_chunk_size,
                buffer_trimming=opts.buffer_trimming or s.buffer_trimming,
                buffer_trimming_sec=opts.buffer_trimming_sec or s.buffer_trimming_sec,
            ),
            model_cache_dir=request.model_cache_dir or str(s.model_cache_dir),
        )

    def load(self, request: EngineRequest) -> tuple[ASRProcessor, EngineInfo]:
        request = self.request_for(request)
        try:
            processor, metadata = self.loader.load(request)
        except ASRError:
            raise
        except Exception as exc:
            logger.exception("backend %s failed to load model %r", self.name, request.model)
            raise BackendFailure(
                f"Backend '{self.name}' failed to load model {echo(request.model)} "
                f"({type(exc).__name__}); the server log has the details.",
            ) from exc
        if not isinstance(processor, ASRProcessor):
            raise BackendFailure(
                f"Backend '{self.name}' returned a {type(processor).__name__}, which lacks "
                "the ASRProcessor methods (init, insert_audio_chunk, process_iter, finish)."
            )
        if isinstance(metadata, EngineInfo):
            return processor, metadata
        if not isinstance(metadata, Mapping):
            raise BackendFailure(
                f"Backend '{self.name}' returned {type(metadata).__name__} metadata; "
                "return an EngineInfo or the guides' metadata dict."
            )
        return self._wrapped(processor, metadata), self.engine_info(request, processor, metadata)

    def engine_info(
        self, request: EngineRequest, processor: ASRProcessor, metadata: Mapping[str, Any]
    ) -> EngineInfo:
        """The guides' metadata dict as an `EngineInfo` (clients see the registered name)."""
        model = next(
            (str(metadata[k]) for k in ("model_size", "model_path", "model") if metadata.get(k)),
            request.model,
        )
        step = getattr(processor, "min_chunk_sec", None)
        return EngineInfo(
            backend=self.name,
            model=model,
            min_chunk_sec=float(step) if step else request.min_chunk_size,
        )

    @staticmethod
    def _wrapped(processor: ASRProcessor, metadata: Mapping[str, Any]) -> ASRProcessor:
        separator = metadata.get("separator")
        if isinstance(processor, SupportsInterim) or not isinstance(separator, str):
            return processor  # the service's own OnlineASRProcessor joins with `sep` itself
        return SeparatedProcessor(processor, separator) if separator else processor


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
                self._loaders[name] = self._served(name, loader)

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
        try:
            loader = _import_factory(name, target)(self._settings)
        except ASRError:
            raise
        except Exception as exc:  # a plugin's factory is its own code
            logger.exception("backend %s: its factory %s failed", name, target)
            raise BackendUnavailable(
                f"Backend '{name}' could not be set up ({type(exc).__name__}); "
                "the server log has the details."
            ) from exc
        with self._lock:
            return self._loaders.setdefault(name, self._served(name, loader))

    def _served(self, name: str, loader: AnyLoader) -> AnyLoader:
        if isinstance(loader, GuideLoader) or not is_guide_loader(loader):
            return loader
        assert not isinstance(loader, RecognizerLoader)  # `is_guide_loader` excludes them
        return GuideLoader(name, loader, self._settings)

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
    """Register a backend for apps created from now on (and the current one).

    Call it before the app is created (at import of your plugin module, say).
    """
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
