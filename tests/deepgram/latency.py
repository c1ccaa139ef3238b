"""Lag of finals and first text through /v1/listen (the Deepgram SDK) against the native door.

    python -m tests.deepgram.latency [test_audio/en_16k.wav] [--runs 3]

Starts a real server on the default engine, then streams the clip at real-time
pace through each door in turn (native first, alternating), 100 ms frames each
sent once its last sample has been spoken. Lag of a final = its arrival − the
moment the end of its audio was spoken; first text = the first non-empty
transcript (interim or final) after the first frame left. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import warnings
import wave
from dataclasses import asdict
from pathlib import Path
from typing import Any

import websockets

from app.cpu_info import compute_info
from bench.server import running_server
from bench.stream_latency import word_error_rate

FRAME_SEC = 0.1


def read(path: Path) -> tuple[bytes, int]:
    with wave.open(str(path)) as clip:
        return clip.readframes(clip.getnframes()), clip.getframerate()


async def paced(send: Any, pcm: bytes, rate: int, t0: float) -> None:
    step = round(rate * FRAME_SEC) * 2
    for k, i in enumerate(range(0, len(pcm), step)):
        await asyncio.sleep(max(0.0, t0 + (k + 1) * FRAME_SEC - time.monotonic()))
        await send(pcm[i : i + step])


async def native(base: str, pcm: bytes, rate: int) -> dict[str, Any]:
    finals: list[tuple[float, float, str]] = []  # (arrival, end, text)
    first: float | None = None
    config = {"sample_rate_hertz": rate, "encoding": "LINEAR16", "interim_results": True}
    async with websockets.connect(f"{base}/ws/asr-stream", max_size=None) as ws:
        await ws.send(json.dumps(config))
        json.loads(await ws.recv())  # metadata
        t0 = time.monotonic()
        sender = asyncio.create_task(paced(ws.send, pcm, rate, t0))

        async def stop() -> None:
            await sender
            await ws.send(json.dumps({"type": "stop"}))

        stopper = asyncio.create_task(stop())
        async for raw in ws:
            m = json.loads(raw)
            now = time.monotonic() - t0
            if m["type"] == "transcript" and m["text"].strip():
                first = now if first is None else first
                if m["is_final"]:
                    finals.append((now, m["end"], m["text"]))
        await stopper
    return summary(finals, first)


async def deepgram(base: str, pcm: bytes, rate: int) -> dict[str, Any]:
    from tests.deepgram.conftest import client

    finals: list[tuple[float, float, str]] = []
    first: float | None = None
    params = {"model": "nova-3", "encoding": "linear16", "sample_rate": rate}
    params |= {"interim_results": True, "punctuate": True}
    async with client(base, key="").listen.v1.connect(**params) as socket:
        t0 = time.monotonic()
        sender = asyncio.create_task(paced(socket.send_media, pcm, rate, t0))

        async def stop() -> None:
            await sender
            await socket.send_close_stream()

        stopper = asyncio.create_task(stop())
        async for message in socket:
            now = time.monotonic() - t0
            if message.type != "Results":
                continue
            text = message.channel.alternatives[0].transcript
            if text.strip():
                first = now if first is None else first
                if message.is_final:
                    finals.append((now, message.start + message.duration, text))
        await stopper
    return summary(finals, first)


def summary(finals: list[tuple[float, float, str]], first: float | None) -> dict[str, Any]:
    lags = [arrival - end for arrival, end, _ in finals]
    return {
        "first_text_sec": None if first is None else round(first, 3),
        "final_lag_mean_sec": round(statistics.mean(lags), 3) if lags else None,
        "final_lag_p50_sec": round(statistics.median(lags), 3) if lags else None,
        "final_lag_max_sec": round(max(lags), 3) if lags else None,
        "finals": len(finals),
        "transcript": " ".join(t.strip() for _, _, t in finals),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clip", nargs="?", default="test_audio/en_16k.wav", type=Path)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    pcm, rate = read(args.clip)
    reference = args.clip.with_suffix(".txt").read_text()
    warnings.simplefilter("ignore", DeprecationWarning)  # deepgram-sdk's websockets imports
    out: dict[str, Any] = {"clip": str(args.clip), "cpu": asdict(compute_info()), "runs": []}
    with running_server() as url:
        base = url.removesuffix("/ws/asr-stream")
        for _ in range(args.runs):
            run = {
                "native": await native(base, pcm, rate),
                "deepgram": await deepgram(base, pcm, rate),
            }
            for door in run.values():
                door["wer"] = round(word_error_rate(reference, door.pop("transcript")), 4)
            out["runs"].append(run)
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main())
