"""A full node, seen by the clients users run: "busy, retry in N s", not a connection error."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
import websockets

from bench.server import running_server
from clients.asr_client import ASRStreamClient, ServerBusy
from tests.e2e.test_hardening import BASE_ENV, CONFIG, wait_metric
from tests.support.commands import AUDIO, asr_stream, run

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def one_slot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server with room for one local-engine stream, Retry-After 7 s."""
    log = tmp_path_factory.mktemp("busy") / "server.log"
    env = {**BASE_ENV, "LOCAL_CAPACITY": "1", "RETRY_AFTER_SEC": "7"}
    with running_server(env=env, log_path=log) as url:
        yield url


async def hold_the_slot(url: str) -> websockets.ClientConnection:
    # The previous test's session may still be ending on the server (its close is done
    # on the client's side first): the slot is free once no session is active.
    assert await asyncio.to_thread(wait_metric, url, "asr_active_sessions", 0) == 0
    ws = await websockets.connect(url)
    await ws.send(json.dumps(CONFIG))
    assert json.loads(await ws.recv())["type"] == "metadata"
    return ws


async def test_the_python_client_raises_server_busy_with_retry_after(one_slot: str) -> None:
    held = await hold_the_slot(one_slot)
    try:
        client = ASRStreamClient(one_slot)
        with pytest.raises(ServerBusy) as busy:
            async for _ in client.stream(b"\0\0" * 1600, sample_rate_hertz=16000):
                pass
        assert (busy.value.code, busy.value.retry_after) == ("server_full", 7.0)
        assert "1 streams" in busy.value.detail
    finally:
        await held.close()


async def test_the_cli_exits_4_saying_busy_and_when_to_retry(one_slot: str) -> None:
    held = await hold_the_slot(one_slot)
    try:
        argv = [*asr_stream(), str(AUDIO / "en_16k.wav"), "--url", one_slot]
        done = await asyncio.to_thread(run, argv)
    finally:
        await held.close()
    assert done.returncode == 4, done.stderr
    assert done.stderr.startswith("error: busy, retry in 7 s: "), done.stderr
    assert "(server_full)" in done.stderr and done.stdout == ""
