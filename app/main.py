"""`create_app(settings)`: the FastAPI application, built with nothing heavy at import."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from app.admin import admin_router
from app.asr.base import EngineRequest, RecognizerLoader
from app.asr.registry import Registry, set_current
from app.languages import to_whisper_language
from app.settings import Settings
from app.ws import StreamEndpoint

logger = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, registry: Registry | None = None) -> FastAPI:
    settings = settings or Settings()
    registry = registry or Registry(settings)
    set_current(registry)
    endpoint = StreamEndpoint(settings, registry)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Load and warm the default engine before the first client arrives.
        request = EngineRequest(
            backend=settings.default_backend,
            model=settings.default_model,
            language=to_whisper_language(settings.default_language_code),
            language_code=settings.default_language_code,
        )
        loader = registry.get_loader(request.backend)
        if not isinstance(loader, RecognizerLoader):
            await asyncio.to_thread(loader.load, request)
        app.state.ready = True
        logger.info("ready: default backend %s, model %s", request.backend, request.model)
        yield

    app = FastAPI(title="asr-stream", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    app.state.registry = registry
    app.state.endpoint = endpoint
    app.state.ready = False

    app.add_api_websocket_route("/ws/asr-stream", endpoint)
    app.include_router(admin_router(endpoint))

    @app.get("/health")
    async def health() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/ready", response_model=None)
    async def ready() -> JSONResponse:
        """Readiness: the default engine is loaded and warmed."""
        if not app.state.ready:
            return JSONResponse({"status": "loading"}, status_code=503)
        return JSONResponse(
            {"status": "ready", "active_sessions": len(endpoint.active)}, status_code=200
        )

    return app
