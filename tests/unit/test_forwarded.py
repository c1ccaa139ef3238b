"""RFC 7239 ``Forwarded`` from a trusted proxy (app/forwarded.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import ValidationError

from app.forwarded import ForwardedClient, TrustedProxies, client_from, forwarded_for
from app.settings import Settings


@pytest.mark.parametrize(
    ("header", "nodes"),
    [
        ("for=192.0.2.43", ["192.0.2.43"]),
        ('For="[2001:db8:cafe::17]:4711"', ["2001:db8:cafe::17"]),
        ("for=192.0.2.60:8080;proto=http;by=203.0.113.43", ["192.0.2.60"]),
        ("for=192.0.2.43, for=198.51.100.17", ["192.0.2.43", "198.51.100.17"]),
        ("for=unknown, for=_hidden", ["unknown", "_hidden"]),
        ("proto=https", [""]),
        ("for", None),
        ('for="192.0.2.43', None),
    ],
)
def test_forwarded_for_reads_rfc_7239_nodes(header: str, nodes: list[str] | None) -> None:
    assert forwarded_for(header) == nodes


def test_the_client_is_the_right_most_node_that_is_not_a_trusted_proxy() -> None:
    trusted = TrustedProxies("127.0.0.1, 10.0.0.0/8")
    assert client_from(["203.0.113.9", "10.1.2.3"], trusted) == "203.0.113.9"
    # A client cannot pose as someone else by sending its own header first.
    assert client_from(["198.51.100.1", "203.0.113.9"], trusted) == "203.0.113.9"
    assert client_from(["unknown"], trusted) is None
    assert client_from(["10.1.2.3"], trusted) is None


def test_trusted_proxies_take_addresses_networks_and_any() -> None:
    assert "10.9.8.7" in TrustedProxies("10.0.0.0/8")
    assert "2001:db8::1" in TrustedProxies("2001:db8::/32")
    assert "192.0.2.1" not in TrustedProxies("127.0.0.1")
    assert "anything" in TrustedProxies("*")
    assert not TrustedProxies("")


def test_a_bad_trusted_proxies_setting_is_refused_at_start() -> None:
    with pytest.raises(ValidationError, match=r"TRUSTED_PROXIES: 'proxy\.local'"):
        Settings(trusted_proxies="127.0.0.1,proxy.local")


def rewritten(client: tuple[str, int], headers: list[tuple[bytes, bytes]], setting: str) -> Any:
    seen: dict[str, Any] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen["client"] = scope["client"]

    scope = {"type": "websocket", "client": client, "headers": headers}
    asyncio.run(ForwardedClient(app, TrustedProxies(setting))(scope, None, None))
    return seen["client"]


def test_the_middleware_believes_only_a_trusted_peer() -> None:
    header = [(b"forwarded", b"for=203.0.113.9;proto=https")]
    assert rewritten(("127.0.0.1", 5000), header, "127.0.0.1") == ("203.0.113.9", 0)
    assert rewritten(("127.0.0.7", 5000), header, "127.0.0.1") == ("127.0.0.7", 5000)
    assert rewritten(("127.0.0.1", 5000), header, "") == ("127.0.0.1", 5000)
    # Two headers are one list; X-Forwarded-For, when sent, is uvicorn's to read.
    two = [(b"forwarded", b"for=198.51.100.1"), (b"forwarded", b"for=203.0.113.9")]
    assert rewritten(("127.0.0.1", 1), two, "127.0.0.1") == ("203.0.113.9", 0)
    both = [*header, (b"x-forwarded-for", b"198.51.100.1")]
    assert rewritten(("127.0.0.1", 1), both, "127.0.0.1") == ("127.0.0.1", 1)
