"""API keys and allowed origins, checked before a session or a REST call starts.

Off while ``API_KEYS`` is empty. A key may come as ``Authorization: Bearer KEY``,
as ``?token=KEY`` (browsers cannot set headers on a WebSocket), or as a
WebSocket subprotocol: ``new WebSocket(url, ["bearer", KEY])`` or
``["bearer.KEY"]``; the server then accepts with the ``bearer`` (or
``bearer.KEY``) subprotocol, as browsers require. Keys are compared in
constant time and never logged.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from starlette.datastructures import Headers, QueryParams

from app.errors import AuthError
from app.settings import Settings

BEARER = "bearer"
KEY_REQUIRED = "An API key is required"  # a refusal's first words, which doors reword


@dataclass(frozen=True)
class Credentials:
    key: str | None
    subprotocol: str | None  # what to accept the WebSocket with, if the key came that way


def _matches(candidate: str, keys: list[str]) -> bool:
    found = False
    for key in keys:  # no early exit: time does not depend on which key matched
        found |= hmac.compare_digest(candidate.encode(), key.encode())
    return found


def presented(headers: Headers, query: QueryParams) -> Credentials:
    authorization = headers.get("authorization", "")
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == BEARER and value.strip():
        return Credentials(value.strip(), None)
    if query.get("token"):
        return Credentials(query["token"], None)
    offered = [p.strip() for p in headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
    for i, proto in enumerate(offered):
        if proto.lower() == BEARER and i + 1 < len(offered):
            return Credentials(offered[i + 1], proto)
        if proto.lower().startswith(BEARER + "."):
            return Credentials(proto[len(BEARER) + 1 :], proto)
    return Credentials(None, None)


class Authenticator:
    def __init__(self, settings: Settings) -> None:
        self.keys = settings.api_key_list
        self.origins = settings.allowed_origin_list

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def check(self, headers: Headers, query: QueryParams) -> Credentials:
        """Raise `AuthError` unless the request may go on; return how the key came."""
        origin = headers.get("origin")
        if self.origins and origin is not None and origin.rstrip("/") not in self.origins:
            raise AuthError(
                "This origin is not allowed to use the service.", code="origin_not_allowed"
            )
        creds = presented(headers, query)
        if not self.enabled:
            return creds
        if creds.key is None:
            raise AuthError(
                f"{KEY_REQUIRED}: send 'Authorization: Bearer KEY', '?token=KEY', "
                "or the WebSocket subprotocols ['bearer', KEY]."
            )
        if not _matches(creds.key, self.keys):
            raise AuthError("The API key is not valid.")
        return creds
