"""Helpers for in-process WebSocket tests (Starlette's TestClient)."""

from __future__ import annotations

import json
from typing import Any

from starlette.testclient import WebSocketTestSession


def drain(ws: WebSocketTestSession) -> tuple[list[dict[str, Any]], int]:
    """Every message up to the server's close, and the close code."""
    messages = []
    while True:
        raw = ws.receive()
        if raw["type"] == "websocket.close":
            return messages, raw["code"]
        messages.append(json.loads(raw["text"]))
