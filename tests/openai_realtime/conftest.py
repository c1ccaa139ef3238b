"""The official ``openai`` SDK against a real server process, in both protocol versions.

Protocol tests run a scripted engine (`scripted_vad`: ``w<k>`` per second of
audio, ``end<samples>`` at a flush, speech where the audio is loud), so every
answer is exact and fast; only the transcript tests load the real model.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import typing
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pydantic
import pytest
from openai import AsyncOpenAI
from openai.types.beta.realtime import RealtimeServerEvent as BetaServerEvent
from openai.types.realtime import RealtimeServerEvent as GaServerEvent

from bench.server import running_server

KEY = "openai-test-key"
RATE = 24_000
PLUGINS = "vad=tests.openai_realtime.scripted_vad:vad,counting=tests.support.scripted:counting"
SCRIPTED_ENV = {
    "ASR_PLUGINS": PLUGINS,
    "DEFAULT_BACKEND": "vad",
    "DEFAULT_MODEL": "vad",
    "API_KEYS": KEY,
    "MAX_SESSIONS": "40",
    "IDLE_TIMEOUT_SEC": "20",
}
Mode = Literal["ga", "beta"]
Event = dict[str, Any]

_GA_EVENTS: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(GaServerEvent)
# The beta SDK's union lacks the event the beta server sends first.
_BETA_UNTYPED = {"transcription_session.created"}


@pytest.fixture(scope="session")
def scripted_base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``http://127.0.0.1:PORT`` of a real server on the scripted engines."""
    log = Path(tmp_path_factory.mktemp("openai-scripted")) / "server.log"
    with running_server(env=SCRIPTED_ENV, log_path=log) as url:
        yield url.replace("ws://", "http://").replace("/ws/asr-stream", "")


def sdk_client(base: str, key: str = KEY) -> AsyncOpenAI:
    """The SDK pointed at our server, as a user would do it."""
    ws_base = base.replace("http://", "ws://")
    return AsyncOpenAI(api_key=key, base_url=f"{base}/v1", websocket_base_url=f"{ws_base}/v1")


def connect(client: AsyncOpenAI, mode: Mode, **query: str) -> Any:
    extra_query = {"intent": "transcription", **query}
    if mode == "ga":
        return client.realtime.connect(extra_query=extra_query)
    return client.beta.realtime.connect(model="gpt-4o-transcribe", extra_query=extra_query)


async def update(conn: Any, mode: Mode, *, vad: bool = False, **transcription: Any) -> None:
    """The session update each SDK sends for 24 kHz PCM, with or without server VAD."""
    transcription = {"model": "gpt-4o-transcribe", "language": "en", **transcription}
    turn = {
        "type": "server_vad",
        "threshold": 0.5,
        "prefix_padding_ms": 300,
        "silence_duration_ms": 500,
    }
    if mode == "ga":
        await conn.session.update(
            session={
                "type": "transcription",
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcm", "rate": RATE},
                        "transcription": transcription,
                        "turn_detection": turn if vad else None,
                    }
                },
            }
        )
    else:
        await conn.transcription_session.update(
            session={
                "input_audio_format": "pcm16",
                "input_audio_transcription": transcription,
                "turn_detection": turn if vad else None,
            }
        )


def pcm(seconds: float, value: int = 1000, rate: int = RATE) -> bytes:
    return np.full(int(seconds * rate), value, dtype="<i2").tobytes()


async def append(
    conn: Any, audio: bytes, chunk_ms: int = 100, rate: int = RATE, pace: float = 0.0
) -> None:
    """Audio as ``input_audio_buffer.append`` events of ``chunk_ms`` (``pace``: real time × pace)."""
    step = rate * chunk_ms // 1000 * 2
    for i in range(0, len(audio), step):
        await conn.input_audio_buffer.append(audio=base64.b64encode(audio[i : i + step]).decode())
        if pace:
            await asyncio.sleep(chunk_ms / 1000 * pace)


def _by_type(union: Any) -> dict[str, type[pydantic.BaseModel]]:
    """The SDK's server event models by their ``type`` (the beta union has no discriminator)."""
    members = typing.get_args(union)
    if members and typing.get_origin(members[0]) is typing.Union:
        members = typing.get_args(members[0])
    out = {}
    for model in members:
        field = getattr(model, "model_fields", {}).get("type")
        if field is not None:
            (kind,) = typing.get_args(field.annotation)
            out[kind] = model
    return out


_BETA_MODELS = _by_type(BetaServerEvent)


def check_shape(event: Event, mode: Mode) -> None:
    """Every server event validates against the SDK's own type for it."""
    if mode == "ga":
        _GA_EVENTS.validate_python(event)
        return
    if event["type"] in _BETA_UNTYPED:
        return
    if event["type"] == "transcription_session.updated":
        # The SDK's beta type requires the ephemeral key that OpenAI's reference says
        # is "not present when a session is updated via the WebSocket API".
        secret = {"value": "", "expires_at": 0}
        event = {**event, "session": {**event["session"], "client_secret": secret}}
    _BETA_MODELS[event["type"]].model_validate(event)


class Reader:
    """Reads a connection's server events (raw JSON, shape-checked) in the background."""

    def __init__(self, conn: Any, mode: Mode) -> None:
        self.conn, self.mode = conn, mode
        self.events: list[Event] = []
        self.arrivals: list[float] = []  # loop time of each event
        self._changed = asyncio.Condition()
        self.closed = False
        self.error: Exception | None = None
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                event = json.loads(await self.conn.recv_bytes())
                check_shape(event, self.mode)
                async with self._changed:
                    self.events.append(event)
                    self.arrivals.append(loop.time())
                    self._changed.notify_all()
        except Exception as exc:  # the close, or an event the SDK's types refuse
            async with self._changed:
                self.error = exc
                self.closed = True
                self._changed.notify_all()

    async def wait_for(
        self, predicate: Callable[[Event], bool], within: float = 15.0, start: int = 0
    ) -> Event:
        """The first event from index ``start`` on that matches."""
        async with asyncio.timeout(within), self._changed:
            while True:
                for event in self.events[start:]:
                    if predicate(event):
                        return event
                if self.closed:
                    raise AssertionError(f"reading stopped: {self.error!r}; events: {self.types()}")
                await self._changed.wait()

    async def wait_type(self, kind: str, within: float = 15.0, start: int = 0) -> Event:
        return await self.wait_for(lambda e: e["type"] == kind, within, start)

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]

    def of(self, kind: str) -> list[Event]:
        return [e for e in self.events if e["type"] == kind]

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


@asynccontextmanager
async def session(
    base: str, mode: Mode, key: str = KEY, **query: str
) -> AsyncIterator[tuple[Any, Reader]]:
    """A connected SDK connection and a reader of its events."""
    async with connect(sdk_client(base, key), mode, **query) as conn:
        reader = Reader(conn, mode)
        try:
            yield conn, reader
        finally:
            await reader.stop()
