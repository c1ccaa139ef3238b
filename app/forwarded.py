"""RFC 7239 ``Forwarded``: the client a trusted proxy names, when it sends no X-Forwarded-For.

uvicorn reads ``X-Forwarded-For`` from the peers in ``TRUSTED_PROXIES``
(`app.server`), and nothing reads the standard ``Forwarded`` header, which
some proxies send instead (HAProxy's ``option forwarded``, Envoy, several
cloud balancers). `ForwardedClient` is the ASGI middleware that does it the
same way: only when the socket's peer is trusted, and only when uvicorn found
no ``X-Forwarded-For`` (so the two never disagree), the client is the
right-most ``for=`` that is not itself a trusted proxy. A ``for`` that is not
an address (``unknown``, an obfuscated ``_name``) leaves the peer as it was,
as does a header that does not parse.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from typing import Any

logger = logging.getLogger(__name__)

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Scope = dict[str, Any]
ASGIApp = Any


class TrustedProxies:
    """``TRUSTED_PROXIES``: comma-separated addresses or networks, or ``*`` for any peer."""

    def __init__(self, setting: str) -> None:
        entries = [entry.strip() for entry in setting.split(",") if entry.strip()]
        self.any = "*" in entries
        self.networks: list[Network] = [
            ipaddress.ip_network(entry, strict=False) for entry in entries if entry != "*"
        ]

    def __bool__(self) -> bool:
        return self.any or bool(self.networks)

    def __contains__(self, host: object) -> bool:
        if self.any:
            return True
        address = as_address(str(host))
        return address is not None and any(address in network for network in self.networks)


def as_address(value: str) -> Address | None:
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


def forwarded_for(header: str) -> list[str] | None:
    """The ``for=`` of each element of a ``Forwarded`` value, in order (None: it does not parse).

    ``for="[2001:db8::1]:4711"`` gives ``2001:db8::1``; ``for=192.0.2.60:80``
    gives ``192.0.2.60``; an element without ``for`` gives ``""``.
    """
    found = []
    for element in header.split(","):
        node = ""
        for pair in element.split(";"):
            if not pair.strip():
                continue
            name, sep, value = pair.strip().partition("=")
            if not sep or not name.strip():
                return None
            if name.strip().lower() != "for":
                continue
            value = value.strip()
            if value.startswith('"'):
                if len(value) < 2 or not value.endswith('"'):
                    return None
                value = value[1:-1]
            node = host_of(value)
        found.append(node)
    return found


def host_of(node: str) -> str:
    """A node of RFC 7239 §6 without its port: ``[v6]:port``, ``v4:port``, or as it is."""
    if node.startswith("["):
        end = node.find("]")
        return node[1:end] if end > 0 else node
    if node.count(":") == 1:
        return node.split(":", 1)[0]
    return node


def client_from(nodes: Iterable[str], trusted: TrustedProxies) -> str | None:
    """The right-most node that is not a trusted proxy, if it is an address."""
    for node in reversed(list(nodes)):
        if node in trusted:
            continue
        return node if as_address(node) is not None else None
    return None


class ForwardedClient:
    """ASGI middleware: the ``Forwarded`` header's client, from a trusted proxy's request."""

    def __init__(self, app: ASGIApp, trusted: TrustedProxies) -> None:
        self.app = app
        self.trusted = trusted

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket") and self.trusted:
            self._rewrite(scope)
        await self.app(scope, receive, send)

    def _rewrite(self, scope: Scope) -> None:
        peer = scope.get("client")
        if not peer or peer[0] not in self.trusted:
            return
        names = [name for name, _ in scope.get("headers") or []]
        values = [value for name, value in scope.get("headers") or [] if name == b"forwarded"]
        if not values or b"x-forwarded-for" in names:
            return  # no header, or uvicorn took X-Forwarded-For's client already
        nodes = forwarded_for(b",".join(values).decode("latin-1"))
        client = client_from(nodes, self.trusted) if nodes is not None else None
        if client is not None:
            scope["client"] = (client, 0)
