"""`GET /ready` checks beyond "the default engine is warm": external engines that are configured.

Today that is Google Speech: when the operator configured it (credentials or an
emulator endpoint set, or ``google`` as the default backend) the service is only
ready once the credentials load and a gRPC channel connects. A probe costs a
connection attempt, so results are kept for `CACHE_SEC` and concurrent probes share
one run; a load balancer polling every second does not turn into a connection storm.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from app.errors import ASRError
from app.plan import SessionDefaults
from app.settings import Settings

logger = logging.getLogger(__name__)

GOOGLE = "google"
CACHE_SEC = 5.0


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    detail: str | None = None

    def as_json(self) -> dict[str, object]:
        return {"ok": self.ok, "detail": self.detail}


def google_configured(settings: Settings, defaults: SessionDefaults) -> bool:
    """The operator asked for Google: a key file, an emulator endpoint or the default backend."""
    return bool(
        settings.google_speech_endpoint
        or settings.google_application_credentials is not None
        or defaults.backend == GOOGLE
    )


class Readiness:
    """The external checks of ``/ready``, cached; `None` loaders are simply skipped."""

    def __init__(self, settings: Settings, cache_sec: float = CACHE_SEC) -> None:
        self.settings = settings
        self.cache_sec = cache_sec
        self._lock = asyncio.Lock()
        self._cached: tuple[float, CheckResult] | None = None

    async def google(self, loader: object) -> CheckResult:
        """Probe the Google loader (its ``probe(timeout)``), at most once per `cache_sec`."""
        async with self._lock:
            now = time.monotonic()
            if self._cached is not None and now - self._cached[0] < self.cache_sec:
                return self._cached[1]
            result = await self._probe(loader)
            self._cached = (time.monotonic(), result)
            return result

    async def _probe(self, loader: object) -> CheckResult:
        probe = getattr(loader, "probe", None)
        if not callable(probe):
            return CheckResult(False, "The 'google' backend has no readiness probe.")
        timeout = self.settings.ready_check_timeout_sec
        try:
            await asyncio.to_thread(probe, timeout)
        except ASRError as exc:
            logger.warning("ready: google not ready: %s", exc.detail)
            return CheckResult(False, exc.detail)
        except Exception:  # a bug in the probe: not ready, the log has the story
            logger.exception("ready: google probe failed")
            return CheckResult(False, "The Google readiness probe failed; see the server log.")
        return CheckResult(True)
