"""Behind the proxy, a node counts each client by the address the proxy names.

A node trusts its proxy's ``X-Forwarded-For`` (``TRUSTED_PROXIES``, which the
cluster sets), so one client's idle connections fill that client's allowance
(429 through the proxy, which does not try another node on it) and another
client behind the same proxy is not affected. Were the node counting the
proxy's own address, every client would share one allowance.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.cluster import PROXIES, Cluster, Proxy
from tests.e2e.cluster_support import require_proxy
from tests.e2e.test_flood import attempt, real_client

pytestmark = pytest.mark.e2e

ENV = {
    "ASR_PLUGINS": "counting=tests.support.scripted:counting",
    "DEFAULT_BACKEND": "counting",
    "MAX_PENDING_PER_CLIENT": "2",
    "CONFIG_TIMEOUT_SEC": "2",
}


@pytest.fixture(scope="module", params=PROXIES)
def one_node(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    proxy: Proxy = request.param
    require_proxy(proxy)
    workdir: Path = tmp_path_factory.mktemp(f"cluster-clients-{proxy}")
    with Cluster(1, proxy=proxy, env=ENV, workdir=workdir) as cluster:
        yield cluster


async def test_each_client_behind_the_proxy_has_its_own_allowance(one_node: Cluster) -> None:
    url = one_node.url
    flood = await asyncio.gather(*(attempt(url, "127.0.0.2") for _ in range(4)))
    assert sorted(flood) == ["closed 1008", "closed 1008", "refused 429", "refused 429"], flood
    # Meanwhile another client, through the same proxy, is admitted at once.
    assert await real_client(url, "127.0.0.3") < 1.0


async def test_a_header_the_client_forges_does_not_buy_it_more(one_node: Cluster) -> None:
    # The proxy appends the address it saw, and the node takes the last untrusted hop.
    forged = [{"X-Forwarded-For": f"203.0.113.{i}"} for i in range(4)]
    flood = await asyncio.gather(*(attempt(one_node.url, "127.0.0.4", h) for h in forged))
    assert flood.count("refused 429") == 2, flood
