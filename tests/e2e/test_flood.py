"""One client floods a real server with connections that never send a config.

Pending connections take no session slot and have a per-address allowance, so
real clients from other addresses are admitted at once; a trusted proxy's
``X-Forwarded-For`` or ``Forwarded`` names the client, anyone else's is ignored. Loopback
addresses (127.0.0.0/8) serve as distinct client hosts.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from pathlib import Path

import pytest
import websockets

from bench.server import running_server
from tests.e2e.test_hardening import BASE_ENV, CONFIG

pytestmark = pytest.mark.e2e

FLOOD = 1000
FLOOD_CONCURRENCY = 100
PER_CLIENT = 8  # MAX_PENDING_PER_CLIENT for these servers
ADMISSION_GOAL_SEC = 1.0
LIMITS = {**BASE_ENV, "CONFIG_TIMEOUT_SEC": "2", "MAX_PENDING_PER_CLIENT": str(PER_CLIENT)}


async def attempt(url: str, host: str, headers: dict[str, str] | None = None) -> str:
    """Open a connection from ``host`` and never configure it: 'refused 429' or how it ended."""
    try:
        ws = await websockets.connect(
            url, local_addr=(host, 0), additional_headers=headers, open_timeout=20
        )
    except websockets.InvalidStatus as exc:
        assert exc.response.headers["Retry-After"] == "5"
        assert json.loads(exc.response.body)["code"] == "too_many_connections"
        return f"refused {exc.response.status_code}"
    async with ws:
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 15)
            await asyncio.wait_for(ws.recv(), 15)  # the error, then the close
        return f"closed {ws.close_code}"


async def real_client(url: str, host: str) -> float:
    """Seconds from connecting to `metadata`, for a client that sends its config at once."""
    started = time.monotonic()
    async with websockets.connect(url, local_addr=(host, 0)) as ws:
        await ws.send(json.dumps(CONFIG))
        assert json.loads(await ws.recv())["type"] == "metadata"
        waited = time.monotonic() - started
        await ws.send(json.dumps({"type": "stop"}))
        async for _ in ws:
            pass
    return waited


async def flood(url: str, host: str, count: int, **kwargs: object) -> list[str]:
    gate = asyncio.Semaphore(FLOOD_CONCURRENCY)

    async def one() -> str:
        async with gate:
            return await attempt(url, host, **kwargs)  # type: ignore[arg-type]

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def test_a_thousand_idle_connections_from_one_address_do_not_shut_others_out(
    tmp_path: Path,
) -> None:
    env = {**LIMITS, "MAX_PENDING_CONNECTIONS": "64"}
    with running_server(env=env, log_path=tmp_path / "server.log") as url:
        attack = asyncio.create_task(flood(url, "127.0.0.1", FLOOD))
        waits = []
        while not attack.done():
            waits.append(await real_client(url, "127.0.0.2"))
            await asyncio.sleep(0.1)
        outcomes = await attack
        waits.append(await real_client(url, "127.0.0.2"))
    refused = outcomes.count("refused 429")
    timed_out = outcomes.count("closed 1008")  # config_timeout
    p95 = statistics.quantiles(waits, n=20, method="inclusive")[-1] if len(waits) >= 2 else waits[0]
    print(
        f"flood: {refused} refused (429), {timed_out} timed out; real clients: {len(waits)}, "
        f"admission p95 {p95:.3f} s, max {max(waits):.3f} s"
    )
    assert refused + timed_out == FLOOD, set(outcomes)
    assert timed_out >= PER_CLIENT  # the allowance was used, then refused
    # Had the flood held session slots, real clients would have been refused, or waited
    # for the flood's connections to time out (CONFIG_TIMEOUT_SEC, 2 s here). The goal
    # (p95 within 1 s) is a figure for the report: a busy 2-core machine varies it.
    assert len(waits) >= 3 and max(waits) < 2.0, waits
    assert statistics.median(waits) < ADMISSION_GOAL_SEC, waits


async def test_each_address_has_its_own_allowance(tmp_path: Path) -> None:
    env = LIMITS
    with running_server(env=env, log_path=tmp_path / "server.log") as url:
        hosts = ["127.0.0.3", "127.0.0.4", "127.0.0.5"]
        results = await asyncio.gather(*(flood(url, host, 3 * PER_CLIENT) for host in hosts))
        assert await real_client(url, "127.0.0.6") < ADMISSION_GOAL_SEC
    for outcomes in results:
        assert outcomes.count("closed 1008") == PER_CLIENT, outcomes
        assert outcomes.count("refused 429") == 2 * PER_CLIENT


FORWARDING_HEADERS = {
    "X-Forwarded-For": lambda i: {"X-Forwarded-For": f"203.0.113.{i}"},
    # RFC 7239, as HAProxy's `option forwarded` sends it: IPv6 quoted, with a port.
    "Forwarded": lambda i: {"Forwarded": f'for="[2001:db8::{i}]:4711";proto=http'},
}


@pytest.mark.parametrize("header", FORWARDING_HEADERS)
async def test_a_forwarded_client_is_believed_only_from_a_trusted_proxy(
    tmp_path: Path, header: str
) -> None:
    env = {**LIMITS, "TRUSTED_PROXIES": "127.0.0.1"}
    with running_server(env=env, log_path=tmp_path / "server.log") as url:
        # From the trusted proxy: each forwarded client has its own allowance.
        spoofed = [FORWARDING_HEADERS[header](i) for i in range(PER_CLIENT + 2)]
        via_proxy = await asyncio.gather(
            *(attempt(url, "127.0.0.1", headers) for headers in spoofed)
        )
        assert via_proxy.count("closed 1008") == PER_CLIENT + 2
        # From anyone else: the header is ignored, the socket's address counts.
        direct = await asyncio.gather(*(attempt(url, "127.0.0.7", headers) for headers in spoofed))
        assert direct.count("closed 1008") == PER_CLIENT
        assert direct.count("refused 429") == 2
