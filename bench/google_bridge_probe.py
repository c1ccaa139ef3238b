"""The service (`run.py`) with timing probes around the Google bridge, for `bench.google_bridge`.

    python -m bench.google_bridge_probe          # same as run.py, plus the probes

Probes (installed by wrapping functions; the service's code is unchanged):

* **up**: a binary frame enters the endpoint (`SessionCore._on_audio`) →
  the gRPC client serializes the request that carries the frame's last sample
  onto the stream (correlated by stream position, per session);
* **down**: the gRPC client deserializes a response → the endpoint sends the
  transcript made from it (correlated by the fake server's ``@<ns>`` stamp).

Write a file ``dump-<name>`` into ``$PROBE_DIR``; the probe answers with
``result-<name>.json`` (milliseconds, then forgets what it has).
"""

from __future__ import annotations

import json
import os
import re
import runpy
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.server import ROOT

STAMP = re.compile(r"@(\d+)")
POLL_SEC = 0.2


class Probes:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.frames: dict[int, list[tuple[int, int]]] = {}  # handoff id → (end sample, ns)
        self.requests: dict[int, list[tuple[int, int]]] = {}  # handoff id → (end sample, ns)
        self.responses: dict[str, int] = {}  # stamp → ns deserialized
        self.down_ms: list[float] = []
        self.local = threading.local()

    def take(self) -> dict[str, list[float]]:
        with self.lock:
            up = []
            for key, frames in self.frames.items():
                requests = self.requests.get(key, [])
                j = 0
                for end, t_in in frames:
                    while j < len(requests) and requests[j][0] < end:
                        j += 1
                    if j < len(requests):
                        up.append((requests[j][1] - t_in) / 1e6)
            down = self.down_ms
            self.frames, self.requests, self.responses, self.down_ms = {}, {}, {}, []
        return {"up_ms": up, "down_ms": down}


def install(probes: Probes) -> None:
    from google.cloud.speech_v1.types import cloud_speech

    from app import core, ws
    from app.asr.google import bridge

    on_audio = core.SessionCore._on_audio

    async def probed_on_audio(self: Any, stream: Any, data: bytes) -> None:
        t_in = time.monotonic_ns()
        framer = stream.framer
        end = (framer.samples_in * 2 + framer.pending_bytes + len(data)) // 2
        with probes.lock:
            probes.frames.setdefault(id(stream.session.handoff), []).append((end, t_in))
        await on_audio(self, stream, data)

    core.SessionCore._on_audio = probed_on_audio  # type: ignore[method-assign]

    requests = bridge.GoogleRecognizer._requests

    def probed_requests(self: Any, gen: Any, handoff: Any) -> Iterator[Any]:
        for request in requests(self, gen, handoff):
            # Read by the serializer below, on this same (gRPC request) thread.
            probes.local.position = (id(handoff), gen.start_sample + gen.sent_samples)
            yield request

    bridge.GoogleRecognizer._requests = probed_requests  # type: ignore[method-assign]

    serialize = cloud_speech.StreamingRecognizeRequest.serialize

    def probed_serialize(instance: Any) -> bytes:
        data: bytes = serialize(instance)
        position = getattr(probes.local, "position", None)
        if position is not None:
            now = time.monotonic_ns()
            with probes.lock:
                probes.requests.setdefault(position[0], []).append((position[1], now))
        return data

    cloud_speech.StreamingRecognizeRequest.serialize = probed_serialize  # type: ignore[method-assign]

    deserialize = cloud_speech.StreamingRecognizeResponse.deserialize

    def probed_deserialize(payload: bytes) -> Any:
        now = time.monotonic_ns()
        match = STAMP.search(payload.decode("utf-8", "replace"))
        if match:
            with probes.lock:
                probes.responses[match.group(1)] = now
        return deserialize(payload)

    cloud_speech.StreamingRecognizeResponse.deserialize = probed_deserialize  # type: ignore[method-assign]

    send = ws.NativeWebSocket._send_text

    async def probed_send(self: Any, text: str) -> None:
        match = STAMP.search(text)
        if match:
            with probes.lock:
                t_in = probes.responses.pop(match.group(1), None)
            if t_in is not None:
                ms = (time.monotonic_ns() - t_in) / 1e6
                with probes.lock:
                    probes.down_ms.append(ms)
        await send(self, text)

    ws.NativeWebSocket._send_text = probed_send  # type: ignore[method-assign]


def serve_dumps(probes: Probes, folder: Path) -> None:
    while True:
        time.sleep(POLL_SEC)
        for request in folder.glob("dump-*"):
            name = request.name.removeprefix("dump-")
            result = folder / f"result-{name}.json"
            result.with_suffix(".tmp").write_text(json.dumps(probes.take()))
            result.with_suffix(".tmp").rename(result)
            request.unlink()


def main() -> None:
    probes = Probes()
    install(probes)
    folder = Path(os.environ["PROBE_DIR"])
    threading.Thread(target=serve_dumps, args=(probes, folder), daemon=True).start()
    runpy.run_path(str(ROOT / "run.py"), run_name="__main__")


if __name__ == "__main__":
    main()
