"""Real server processes for the Deepgram tests, and the official SDK pointed at them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.server import running_server

KEY = "dg-test-key"
PLUGINS = "talking=tests.deepgram.engine:talking,counting=tests.support.scripted:counting"
SCRIPTED_ENV = {
    "ASR_PLUGINS": PLUGINS,
    "DEFAULT_BACKEND": "talking",
    "DEFAULT_MODEL": "talking",
    "API_KEYS": KEY,
    "MAX_SESSIONS": "20",
}
# deepgram-sdk 7 imports names websockets 14+ deprecated (InvalidStatusCode, the legacy
# client); its own warnings, not ours.
SDK_WARNINGS = pytest.mark.filterwarnings(
    "ignore:websockets.*is deprecated:DeprecationWarning",
    "ignore:websockets.legacy is deprecated:DeprecationWarning",
)
RATE = 16_000
FRAME_SEC = 0.1


def ws_base(url: str) -> str:
    """``ws://host:port`` of a `running_server` URL."""
    return url.removesuffix("/ws/asr-stream")


@pytest.fixture(scope="module")
def scripted_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real server on the scripted engine that hears loud audio as words (`engine.py`)."""
    log = tmp_path_factory.mktemp("deepgram") / "server.log"
    with running_server(env=SCRIPTED_ENV, log_path=log) as url:
        yield ws_base(url)


def client(base: str, key: str = KEY) -> Any:
    """The official SDK's client, its environment pointed at ``base``."""
    from deepgram import AsyncDeepgramClient
    from deepgram.environment import DeepgramClientEnvironment

    http = base.replace("ws://", "http://")
    environment = DeepgramClientEnvironment(base=http, production=base, agent=base, agent_rest=http)
    return AsyncDeepgramClient(api_key=key, environment=environment)


def loud(seconds: float) -> bytes:
    return np.full(round(seconds * RATE), 6000, dtype="<i2").tobytes()


def quiet(seconds: float) -> bytes:
    return np.zeros(round(seconds * RATE), dtype="<i2").tobytes()


def frames(pcm: bytes, rate: int = RATE, seconds: float = FRAME_SEC) -> list[bytes]:
    step = round(rate * seconds) * 2
    return [pcm[i : i + step] for i in range(0, len(pcm), step)]


@dataclass
class Session:
    """What the SDK's socket received (as dicts, in order), and how it closed."""

    socket: Any
    messages: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None
    reader: asyncio.Task[None] | None = None

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] == kind]

    @property
    def types(self) -> list[str]:
        return [m["type"] for m in self.messages]

    def finals(self) -> list[dict[str, Any]]:
        return [m for m in self.of("Results") if m["is_final"]]

    def transcript(self) -> str:
        return " ".join(
            t for m in self.finals() if (t := m["channel"]["alternatives"][0]["transcript"])
        )

    async def send_paced(self, pcm: bytes, pace: float = 0.0, rate: int = RATE) -> None:
        """Send ``pcm`` in 100 ms frames, ``pace`` × real time apart (0: as fast as possible)."""
        for frame in frames(pcm, rate):
            await self.socket.send_media(frame)
            await asyncio.sleep(pace * FRAME_SEC)

    async def until(self, predicate: Any, within: float = 10.0) -> None:
        """Wait (polling what the reader task gathers) until ``predicate(self)`` holds."""
        async with asyncio.timeout(within):
            while not predicate(self):  # noqa: ASYNC110 - a condition over a plain list
                await asyncio.sleep(0.02)

    async def closed(self, within: float = 20.0) -> None:
        assert self.reader is not None
        await asyncio.wait_for(self.reader, within)


@contextlib.asynccontextmanager
async def listen(base: str, key: str = KEY, **params: Any) -> AsyncIterator[Session]:
    """A stream through ``client(...).listen.v1.connect(**params)``, read in the background."""
    params.setdefault("model", "nova-3")
    params.setdefault("encoding", "linear16")
    params.setdefault("sample_rate", RATE)
    async with client(base, key).listen.v1.connect(**params) as socket:
        session = Session(socket)

        async def read() -> None:
            # The SDK's own parsing: it routes by `type` into its pydantic models.
            async for message in socket:
                session.messages.append(message.dict())
            session.close_code = socket._websocket.close_code

        session.reader = asyncio.create_task(read())
        try:
            yield session
        finally:
            if not session.reader.done():
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(session.reader, 20)


ROOT = Path(__file__).resolve().parents[2]
