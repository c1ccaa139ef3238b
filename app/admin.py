"""REST beside the socket: pick and preload engines (`POST /load_model`, `GET /backends`)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from app.asr.base import EngineRequest, RecognizerLoader, StreamingOptions
from app.core import SessionCore
from app.errors import ASRError, BackendFailure, ConfigError, echo
from app.languages import is_bcp47, to_whisper_language
from app.messages import ErrorMessage
from app.plan import SessionDefaults

logger = logging.getLogger(__name__)


class LoadModelRequest(BaseModel):
    """The seeds' body for ``POST /load_model``; every field optional."""

    model_config = ConfigDict(extra="forbid")

    backend: str | None = None
    model: str | None = None
    lan: str | None = Field(default=None, description="Language: 'en', 'ar', or BCP-47 'ar-EG'")
    task: Literal["transcribe", "translate"] = "transcribe"
    min_chunk_size: float | None = Field(default=None, gt=0.0, le=10.0)
    buffer_trimming: Literal["segment", "sentence"] | None = None
    buffer_trimming_sec: float | None = Field(default=None, gt=1.0, le=28.0)


def _error(exc: ASRError, backend: str | None = None) -> JSONResponse:
    """Our JSON error: 500 for an engine that failed, 400 for a request it cannot serve."""
    body: dict[str, Any] = ErrorMessage(detail=exc.detail, code=exc.code).model_dump()
    if backend is not None:
        body["backend"] = backend
    status = 500 if isinstance(exc, BackendFailure) else 400
    return JSONResponse(body, status_code=status)


def admin_router(endpoint: SessionCore) -> APIRouter:
    router = APIRouter()
    registry = endpoint.registry

    @router.get("/backends")
    async def backends() -> dict[str, Any]:
        """Every registered backend, whether it can run here and why not."""
        listed = []
        for name in registry.list_loaders():
            info = await asyncio.to_thread(registry.describe, name)
            listed.append({"name": name, **info})
        defaults = endpoint.defaults
        return {
            "default": {
                "backend": defaults.backend,
                "model": defaults.model,
                "language_code": defaults.language_code,
                "task": defaults.task,
            },
            "backends": listed,
        }

    @router.post("/load_model", response_model=None)
    async def load_model(body: LoadModelRequest) -> dict[str, Any] | JSONResponse:
        """Load and warm a backend + model; make it the default for new sessions.

        A backend that cannot serve the request answers 400, one that failed 500,
        each with our ``error`` body and the backend's name; the service stays up.
        """
        current = endpoint.defaults
        backend = body.backend or current.backend
        if backend not in registry:
            known = ", ".join(registry.list_loaders())
            return _error(
                ConfigError(
                    f"Field 'backend' names {echo(backend)}, which is not registered; "
                    f"available: {known}.",
                    code="unknown_backend",
                ),
                backend,
            )
        model = body.model or (current.model if backend == current.backend else "")
        language_code = body.lan or current.language_code
        if not is_bcp47(language_code):
            # It becomes the sessions' default language: refuse what they would refuse.
            error = ConfigError(
                f"Field 'lan' {echo(language_code)} is not a BCP-47 language tag (examples: "
                "'en', 'en-US', 'ar-EG'); there is no language detection ('auto'): name the "
                "language the streams are in.",
                code="unsupported_language",
                field="lan",
            )
            return _error(error, backend)
        options = StreamingOptions(
            min_chunk_size=body.min_chunk_size,
            buffer_trimming=body.buffer_trimming,
            buffer_trimming_sec=body.buffer_trimming_sec,
        )
        request = EngineRequest(
            backend=backend,
            model=model,
            language=to_whisper_language(language_code),
            language_code=language_code,
            task=body.task,
            options=options,
        )
        started = time.perf_counter()
        try:
            loader = registry.get_loader(backend)
            if isinstance(loader, RecognizerLoader):
                _, info = await asyncio.to_thread(loader.open_recognizer, request, 16_000)
            else:
                _, info = await asyncio.to_thread(loader.load, request)
        except ASRError as exc:
            logger.info("load_model %s: %s: %s", echo(backend), exc.code, exc.detail)
            return _error(exc, backend)
        except Exception as exc:  # a plugin's own code: never a traceback to the client
            logger.exception("load_model: backend %s failed", backend)
            failure = BackendFailure(
                f"Backend '{backend}' failed to load model {echo(model)} ({type(exc).__name__}); "
                "the server log has the details. The service is still running."
            )
            return _error(failure, backend)
        elapsed = time.perf_counter() - started
        endpoint.defaults = SessionDefaults(
            backend=backend,
            model=info.model,
            language_code=language_code,
            task=body.task,
            options=options,
        )
        return {
            "status": "loaded",
            "backend": info.backend,
            "model": info.model,
            "language_code": language_code,
            "task": body.task,
            "min_chunk_size": info.min_chunk_sec,
            "load_seconds": round(elapsed, 3),
        }

    return router
