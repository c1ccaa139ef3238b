"""Start the service with uvicorn (`python run.py` or `asr-stream-server`)."""

from __future__ import annotations

import logging

import uvicorn

from app.main import create_app
from app.settings import Settings

# uvicorn refuses bigger WebSocket messages itself (close 1009, no `error`
# message); keep its limit well above ours so the service answers first.
TRANSPORT_SIZE_FACTOR = 16


def main() -> None:
    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        ws_max_size=settings.max_frame_bytes * TRANSPORT_SIZE_FACTOR,
    )


if __name__ == "__main__":
    main()
