"""Sessions for the cluster tests: opened through a proxy, each outcome kept for assertions."""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from clients.asr_client import ASRStreamClient, StreamError, StreamResult, read_wav
from deploy.cluster import Cluster, Node, Proxy, find_program

AUDIO = Path(__file__).resolve().parents[2] / "test_audio"
RATE = 16_000
SECOND_OF_SILENCE = b"\x00\x00" * RATE
CONFIG = {"sample_rate_hertz": RATE, "encoding": "LINEAR16"}
EVENTUALLY_SEC = 10.0


def require_proxy(proxy: Proxy) -> None:
    if find_program(proxy) is None:
        message = f"{proxy} is not installed (apt-get install {proxy}; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def active_sessions(cluster: Cluster) -> list[int | None]:
    """Each node's ``/ready`` ``active_sessions`` (None for a node that does not answer)."""
    counts: list[int | None] = []
    for node in cluster.nodes:
        try:
            counts.append(int(node.ready()[1]["active_sessions"]))
        except (OSError, KeyError):
            counts.append(None)
    return counts


async def eventually(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + EVENTUALLY_SEC
    while not await asyncio.to_thread(check):
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {EVENTUALLY_SEC:g} s: {what}")
        await asyncio.sleep(0.1)


def log_of(node: Node) -> str:
    return node.log.read_text(errors="replace")


def proxy_reloaded(cluster: Cluster) -> bool:
    """The proxy's log says it reloaded (and is not still at it)."""
    if cluster.proxy == "nginx":
        log = (cluster.workdir / "nginx-error.log").read_text(errors="replace")
        return (
            "reconfiguring" in log and "start worker process" in log.rsplit("reconfiguring", 1)[-1]
        )
    log = (cluster.workdir / "haproxy.log").read_text(errors="replace")
    return (
        "Reloading HAProxy" in log and "Loading success" in log.rsplit("Reloading HAProxy", 1)[-1]
    )


def refused_total(cluster: Cluster, index: int) -> float:
    """The node's ``asr_admission_refused_total`` summed over its labels."""
    with urllib.request.urlopen(cluster.nodes[index].url + "/metrics", timeout=2) as resp:
        text = resp.read().decode()
    return sum(
        float(v) for v in re.findall(r"^asr_admission_refused_total\{.*\} (\S+)$", text, re.M)
    )


# -- raw sessions (the scripted engine) ------------------------------------------------


async def open_session(url: str) -> ClientConnection:
    """Connect and send the config; return once ``metadata`` arrived."""
    ws = await connect(url, open_timeout=10)
    await ws.send(json.dumps(CONFIG))
    first = json.loads(await ws.recv())
    assert first["type"] == "metadata", first
    return ws


@dataclass
class Ended:
    messages: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None
    close_frame: bool = False  # the server closed with a close frame (not a dropped link)

    @property
    def types(self) -> list[str]:
        return [m["type"] for m in self.messages]

    @property
    def transcript(self) -> str:
        return "".join(m["text"] for m in self.messages if m.get("is_final"))


async def finish(ws: ClientConnection, seconds: int) -> Ended:
    """Send ``seconds`` of audio and ``stop``; read everything up to the close."""
    ended = Ended()
    try:
        for _ in range(seconds):
            await ws.send(SECOND_OF_SILENCE)
        await ws.send(json.dumps({"type": "stop"}))
        async for raw in ws:
            ended.messages.append(json.loads(raw))
    except ConnectionClosed:
        pass
    await ws.wait_closed()
    ended.close_code = ws.close_code
    ended.close_frame = ws.protocol.close_rcvd is not None
    return ended


def counted_to_the_end(ended: Ended, seconds: int) -> bool:
    """The scripted engine's transcript of ``seconds`` of audio: w0 … w<n-1> end<samples>."""
    words = " ".join([*(f"w{k}" for k in range(seconds)), f"end{seconds * RATE}"])
    return ended.transcript.split() == words.split()


async def refused(url: str) -> InvalidStatus:
    """The handshake through ``url`` must be refused with an HTTP status (no WebSocket)."""
    try:
        ws = await open_session(url)
    except InvalidStatus as exc:
        return exc
    await ws.close()
    raise AssertionError("the session was accepted")


# -- real speech (the real model) -------------------------------------------------------


@dataclass
class Outcome:
    result: StreamResult
    error: BaseException | None = None

    @property
    def complete(self) -> bool:
        types = [r.message.type for r in self.result.messages]
        return (
            self.error is None
            and bool(types)
            and types[-1] == "complete"
            and "error" not in types
            and self.result.close_code == 1000
        )

    def describe(self) -> str:
        types = [r.message.type for r in self.result.messages]
        return f"close {self.result.close_code}, {types[-3:]}, error {self.error!r}"


async def speak(url: str, clip: str) -> Outcome:
    """Stream a clip at real-time pace through ``url``; keep what happened."""
    pcm, rate = read_wav(AUDIO / clip)
    result = StreamResult()
    try:
        async for _ in ASRStreamClient(url).stream(pcm, sample_rate_hertz=rate, timings=result):
            pass
    except (StreamError, InvalidStatus, OSError, TimeoutError) as exc:
        return Outcome(result, exc)
    return Outcome(result)
