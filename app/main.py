"""`create_app(settings)`: the FastAPI application, built with nothing heavy at import."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI, Request, WebSocket
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST

from app.admin import admin_router
from app.admission import Pool
from app.asr.base import RecognizerLoader
from app.asr.registry import Registry, set_current
from app.capacity import SupportsBusyCostEstimate, SupportsCostEstimate, busy_sessions
from app.core import SessionCore
from app.deepgram import PATH as DEEPGRAM_PATH
from app.deepgram import DeepgramWebSocket
from app.errors import AuthError, UpgradeRequired, http_status
from app.forwarded import ForwardedClient, TrustedProxies
from app.messages import ErrorMessage
from app.openai_realtime import PATH as OPENAI_REALTIME_PATH
from app.openai_realtime import OpenAIRealtime
from app.plan import SessionDefaults
from app.readiness import GOOGLE, Readiness, google_configured
from app.settings import Settings
from app.webrtc import PATH as WEBRTC_PATH
from app.webrtc import WebRTCDoor
from app.ws import NativeWebSocket

logger = logging.getLogger(__name__)

# The browser client (plain HTML/JS, no build step), shipped as package data.
STATIC_DIR = Path(__file__).resolve().parent / "static"
# Every method a plain HTTP request to a WebSocket path may use: each is answered 426.
HTTP_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def create_app(settings: Settings | None = None, registry: Registry | None = None) -> FastAPI:
    settings = settings or Settings()
    registry = registry or Registry(settings)
    set_current(registry)
    # Every front door serves its sessions through the one core (`app.core`).
    endpoint = SessionCore(settings, registry)
    admission = endpoint.admission
    readiness = Readiness(settings)
    # aiortc is imported only when an offer arrives.
    webrtc = WebRTCDoor(endpoint, ice_servers=settings.webrtc_ice_servers)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Load and warm the default engine before the first client arrives.
        request = SessionDefaults.from_settings(settings).engine_request()
        loader = registry.get_loader(request.backend)
        if not isinstance(loader, RecognizerLoader):
            await asyncio.to_thread(loader.load, request)
        if isinstance(loader, SupportsCostEstimate):
            cost = loader.stream_cost()
            busy_cost = None
            if isinstance(loader, SupportsBusyCostEstimate):
                busy_cost = loader.busy_stream_cost()
            endpoint.admission.estimate.set_prior(cost, busy_cost)
            if not settings.busy_sessions:
                policy = endpoint.admission.estimate.policy
                endpoint.engine_load.busy_sessions = busy_sessions(policy, cost)
        app.state.ready = True
        estimate = endpoint.admission.estimate
        logger.info(
            "ready: default backend %s, model %s; local capacity %d streams (%s, cost %s, "
            "busy %s); busy past %s sessions",
            request.backend,
            request.model,
            endpoint.admission.local_capacity,
            estimate.source,
            "unknown" if estimate.cost is None else f"{estimate.cost:.3f}",
            "unknown" if estimate.busy_cost is None else f"{estimate.busy_cost:.3f}",
            endpoint.engine_load.busy_sessions,
        )
        yield
        await webrtc.aclose()

    app = FastAPI(title="asr-stream", version="0.1.0", lifespan=lifespan)
    # A trusted proxy's RFC 7239 Forwarded header (uvicorn reads X-Forwarded-For).
    app.add_middleware(ForwardedClient, trusted=TrustedProxies(settings.trusted_proxies))
    app.state.settings = settings
    app.state.registry = registry
    app.state.endpoint = endpoint
    app.state.ready = False

    async def asr_stream(websocket: WebSocket) -> None:
        """The native protocol (STREAMING.md)."""
        await endpoint.serve(NativeWebSocket(websocket))

    app.add_api_websocket_route("/ws/asr-stream", asr_stream)

    async def deepgram_listen(websocket: WebSocket) -> None:
        """Deepgram's live streaming protocol (docs/COMPATIBILITY.md)."""
        await endpoint.serve(
            DeepgramWebSocket(
                websocket, settings.deepgram_models, settings.deepgram_idle_timeout_sec
            )
        )

    app.add_api_websocket_route(DEEPGRAM_PATH, deepgram_listen)

    async def openai_realtime(websocket: WebSocket) -> None:
        """OpenAI's Realtime transcription protocol (docs/COMPATIBILITY.md)."""
        transport = OpenAIRealtime(
            websocket,
            send_timeout_sec=settings.send_timeout_sec,
            max_frame_bytes=settings.max_frame_bytes,
        )
        await endpoint.serve(transport)

    app.add_api_websocket_route(OPENAI_REALTIME_PATH, openai_realtime)

    async def websocket_required(request: Request) -> JSONResponse:
        """Plain HTTP to a WebSocket path: say so (426), not "Not Found"."""
        error = UpgradeRequired(
            f"{request.url.path} is a WebSocket endpoint: connect with a WebSocket client "
            "(ws:// or wss://, 'Upgrade: websocket'). Pre-recorded files are not taken over "
            "HTTP; stream them (STREAMING.md)."
        )
        body = ErrorMessage(detail=error.detail, code=error.code).model_dump()
        headers = {"Upgrade": "websocket", "Connection": "Upgrade"}
        return JSONResponse(body, status_code=http_status(error), headers=headers)

    for path in ("/ws/asr-stream", DEEPGRAM_PATH, OPENAI_REALTIME_PATH):
        app.add_api_route(path, websocket_required, methods=HTTP_METHODS, include_in_schema=False)
    # WebRTC microphone input (the `webrtc` extra): the offer in, the answer out (app/webrtc.py).
    app.add_api_route(WEBRTC_PATH, webrtc.offer, methods=["POST"], include_in_schema=False)
    # The page and its scripts are public: the stream itself checks the API key.
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        """The browser client: microphone → /ws/asr-stream → transcript."""
        return FileResponse(STATIC_DIR / "index.html")

    async def require_key(request: Request) -> None:
        """REST auth (when API_KEYS is set): the same keys as the WebSocket."""
        endpoint.auth.check(request.headers, request.query_params)

    @app.exception_handler(AuthError)
    async def refused(request: Request, exc: AuthError) -> JSONResponse:
        endpoint.metrics.errors.labels(exc.code).inc()
        status = 403 if exc.code == "origin_not_allowed" else 401
        body = ErrorMessage(detail=exc.detail, code=exc.code).model_dump()
        return JSONResponse(body, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        """FastAPI's 422, without the offending input: NaN or 1e999 cannot be JSON."""
        errors = [{k: v for k, v in e.items() if k not in ("input", "ctx")} for e in exc.errors()]
        return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)

    protected = [Depends(require_key)]
    app.include_router(admin_router(endpoint), dependencies=protected)

    @app.get("/metrics", dependencies=protected)
    async def metrics() -> Response:
        """Prometheus metrics."""
        return Response(endpoint.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/health")
    async def health() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.post("/drain", status_code=202, dependencies=protected)
    async def drain() -> dict[str, object]:
        """Stop taking sessions; let running ones finish (SHUTDOWN_GRACE_SEC), then end them.

        The process goes on (a Kubernetes preStop hook calls this, then the pod's
        SIGTERM finds the node already drained).
        """
        endpoint.start_drain(settings.shutdown_grace_sec)
        return {"status": "draining", "active_sessions": admission.sessions}

    @app.get("/ready", response_model=None)
    async def ready() -> JSONResponse:
        """Readiness: 200 while the node serves (full or not), 503 while loading or draining.

        A full node stays ready: it refuses new sessions itself with a 503 handshake
        that a balancer retries elsewhere, and its running sessions keep their
        routes; leaving readiness on every full/not-full flip would churn endpoints.
        """
        figures: dict[str, object] = {
            "active_sessions": admission.sessions,
            "sessions": {pool.value: admission.active[pool] for pool in Pool},
            "capacity": admission.local_capacity,
            "capacity_source": admission.estimate.source,
            "max_sessions": settings.max_sessions,
            "accepting": app.state.ready and admission.has_room(endpoint.default_pool),
            # Past busy_sessions local sessions with speech, streams trim their buffers sooner.
            "busy": endpoint.engine_load.busy,
            "busy_sessions": endpoint.engine_load.busy_sessions,
            "speaking_sessions": endpoint.engine_load.speaking,
        }
        if not app.state.ready or endpoint.draining:
            status = "draining" if endpoint.draining else "loading"
            # Not accepting: the same fields as a full node's answer (no checks are run).
            refused = {"status": status, **figures, "checks": {}}
            refused["retry_after_sec"] = admission.retry_after
            return JSONResponse(refused, status_code=503)
        checks = {}
        if GOOGLE in registry and google_configured(settings, endpoint.defaults):
            checks[GOOGLE] = await readiness.google(registry.get_loader(GOOGLE))
        ok = all(check.ok for check in checks.values())
        body: dict[str, object] = {
            "status": "ready" if ok else "unavailable",
            **figures,
            "checks": {name: check.as_json() for name, check in checks.items()},
        }
        if not figures["accepting"]:
            body["retry_after_sec"] = admission.retry_after
        return JSONResponse(body, status_code=200 if ok else 503)

    return app
