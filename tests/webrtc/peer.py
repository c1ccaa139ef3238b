"""A real WebRTC client for the tests: aiortc's RTCPeerConnection sending a WAV file.

`WavTrack` plays 16-bit mono PCM as 20 ms frames at real-time pace (aiortc's
encoder makes them Opus, 48 kHz); it can pause for a while mid-clip, its
timestamps moving on as a real sender's would, so the server sees a gap.
`Peer` posts the offer to ``/webrtc/offer`` and collects the data channel's
native JSON messages.
"""

from __future__ import annotations

import asyncio
import fractions
import json
import random
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

FRAME_SEC = 0.02
CONFIG = {"sample_rate_hertz": 16000, "encoding": "LINEAR16"}


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as wav:
        assert wav.getsampwidth() == 2 and wav.getnchannels() == 1
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2"), wav.getframerate()


class WavTrack(MediaStreamTrack):
    """PCM as a live microphone: real-time pace, an optional pause, silence after the end."""

    kind = "audio"

    def __init__(
        self,
        samples: np.ndarray,
        rate: int,
        pause_at_sec: float | None = None,
        pause_sec: float = 0.0,
        silence_after: bool = True,
    ) -> None:
        super().__init__()
        self.samples = samples
        self.rate = rate
        self.step = int(rate * FRAME_SEC)
        self.pause_at = None if pause_at_sec is None else int(pause_at_sec * rate)
        self.pause_samples = int(pause_sec * rate)
        self.silence_after = silence_after
        self.position = 0  # samples of the clip sent
        self.pts = 0  # stream time of the next frame, in samples (a pause moves it on)
        self.started: float | None = None
        self.finished = asyncio.Event()  # the whole clip went out
        self.sent_at_stop = 0  # `pts` when the test sent `stop`

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self.started is None:
            self.started = time.monotonic()
        if self.pause_at is not None and self.position >= self.pause_at:
            self.pause_at = None
            self.pts += self.pause_samples  # nothing is sent meanwhile, time goes on
        due = self.started + self.pts / self.rate
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        chunk = self.samples[self.position : self.position + self.step]
        if len(chunk) < self.step:
            self.finished.set()
            if not self.silence_after:
                self.stop()
                raise MediaStreamError
            chunk = np.concatenate([chunk, np.zeros(self.step - len(chunk), np.int16)])
        self.position += self.step
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.rate
        frame.pts = self.pts
        frame.time_base = fractions.Fraction(1, self.rate)
        self.pts += self.step
        return frame


@dataclass
class Peer:
    """One client session over WebRTC."""

    base_url: str  # http://host:port
    pc: RTCPeerConnection = field(default_factory=RTCPeerConnection)
    messages: list[dict[str, Any]] = field(default_factory=list)
    arrived: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    channel: Any = None
    answer: dict[str, Any] | None = None

    async def offer(
        self,
        track: MediaStreamTrack | None,
        config: Any = CONFIG,
        headers: dict[str, str] | None = None,
        channel: bool = True,
        body: dict[str, Any] | None = None,
    ) -> httpx.Response:
        """Post the offer; on 200, apply the answer. Returns the HTTP response."""
        if channel:
            self.channel = self.pc.createDataChannel("asr")
            self.channel.on("message", self._on_message)
        if track is not None:
            self.pc.addTrack(track)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        payload = {"sdp": self.pc.localDescription.sdp, "type": "offer", "config": config}
        payload.update(body or {})
        async with httpx.AsyncClient(timeout=60) as http:
            response = await http.post(
                f"{self.base_url}/webrtc/offer", json=payload, headers=headers or {}
            )
        if response.status_code == 200:
            self.answer = response.json()
            await self.pc.setRemoteDescription(
                RTCSessionDescription(self.answer["sdp"], self.answer["type"])
            )
        return response

    def _on_message(self, text: str) -> None:
        message = json.loads(text)
        message["_at"] = time.monotonic()
        self.messages.append(message)
        self.arrived.put_nowait(message)

    def send(self, message: dict[str, Any]) -> None:
        self.channel.send(json.dumps(message))

    async def until(self, kind: str, within: float = 30.0) -> dict[str, Any]:
        """The next message of this type (others are kept in `messages`)."""
        async with asyncio.timeout(within):
            while True:
                message = await self.arrived.get()
                if message["type"] == kind:
                    return message

    async def close(self) -> None:
        await self.pc.close()

    @property
    def finals(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] == "transcript" and m["is_final"]]

    @property
    def transcript(self) -> str:
        return "".join(m["text"] for m in self.finals)


async def stream_file(
    base_url: str, clip: Path, config: dict[str, Any], tail_sec: float, within: float
) -> None:
    """Stream `clip` at real-time pace, `stop` after it (and `tail_sec`), print every message.

    One JSON line a message, flushed as it arrives, with ``_at`` (this machine's
    monotonic clock, the same in every network namespace); first a
    ``{"type": "_started", "_at": …}`` line: when the clip's first sample was spoken.
    """
    samples, rate = read_wav(clip)
    track = WavTrack(samples, rate)
    peer = Peer(base_url)
    peer.arrived = _Printing()
    try:
        response = await peer.offer(track, config=config)
        if response.status_code != 200:
            print(
                json.dumps({"type": "_http", "status": response.status_code, "body": response.text})
            )
            raise SystemExit(2)
        await peer.until("metadata", within)
        await asyncio.wait_for(track.finished.wait(), within + len(samples) / rate)
        assert track.started is not None
        print(json.dumps({"type": "_started", "_at": track.started - FRAME_SEC}), flush=True)
        await asyncio.sleep(tail_sec)
        peer.send({"type": "stop"})
        await peer.until("complete", within)
    finally:
        await peer.close()


class _Printing(asyncio.Queue[dict[str, Any]]):
    def put_nowait(self, item: dict[str, Any]) -> None:
        print(json.dumps(item), flush=True)
        super().put_nowait(item)


def impair_udp(netem: str, seed: int = 1) -> None:
    """netem in this process, for kernels without ``sch_netem``: ``loss P% delay D J``.

    Every datagram aioice sends for this peer after ICE (DTLS, SRTP, SCTP) is
    dropped with probability P, the rest go out after D ± J (uniform, as netem's
    default; so reordered, as netem does). Seeded: the same packets are lost each run.
    """
    from aioice.ice import StunProtocol

    words = netem.split()
    loss = float(words[words.index("loss") + 1].rstrip("%")) / 100 if "loss" in words else 0.0
    delay = jitter = 0.0
    if "delay" in words:
        at = words.index("delay")
        delay = float(words[at + 1].removesuffix("ms")) / 1000
        if at + 2 < len(words) and words[at + 2].endswith("ms"):
            jitter = float(words[at + 2].removesuffix("ms")) / 1000
    rng = random.Random(seed)

    async def send_data(self: StunProtocol, data: bytes, addr: tuple[str, int]) -> None:
        if rng.random() < loss:
            return
        wait = max(0.0, delay + rng.uniform(-jitter, jitter))
        asyncio.get_running_loop().call_later(wait, _sendto, self, data, addr)

    StunProtocol.send_data = send_data  # type: ignore[method-assign]


def _sendto(protocol: Any, data: bytes, addr: tuple[str, int]) -> None:
    if protocol.transport is not None and not protocol.transport.is_closing():
        protocol.transport.sendto(data, addr)


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=stream_file.__doc__)
    parser.add_argument("base_url", help="http://host:port of the server")
    parser.add_argument("clip", type=Path, help="16-bit mono WAV")
    parser.add_argument("--config", default="{}", help="extra config fields, as JSON")
    parser.add_argument("--tail", type=float, default=0.5, help="seconds before `stop`")
    parser.add_argument("--within", type=float, default=60.0, help="timeout of each wait")
    parser.add_argument("--netem", help="impair what this client sends: 'loss 5%% delay 30ms 30ms'")
    args = parser.parse_args()
    if args.netem:
        impair_udp(args.netem)
    _, rate = read_wav(args.clip)
    config = {"sample_rate_hertz": rate, "encoding": "LINEAR16", **json.loads(args.config)}
    asyncio.run(stream_file(args.base_url, args.clip, config, args.tail, args.within))


if __name__ == "__main__":
    main()
