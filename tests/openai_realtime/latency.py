"""Lag of finals and first text through /v1/realtime (the openai SDK) against the native door.

    python -m tests.openai_realtime.latency [test_audio/en_16k.wav] [--runs 2]

Starts a real server on the default engine, then streams the clip, resampled to
OpenAI's 24 kHz, at real-time pace through each door in turn: the native one
(24 kHz too, with interims as clients run it, and without, as this door runs
the engine), then OpenAI GA mode with server VAD. 100 ms frames, each sent once
its last sample has been spoken. A native final's lag = its arrival − the moment
the end of its audio was spoken. A delta carries no times: when a run's words
are the native run's words, each delta's lag is taken against the end of the
native final that holds its last word (the same audio gives the same passes).
First text: the first non-empty transcript (native: interim or final) or delta
after the first frame left. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import websockets

from app.cpu_info import compute_info
from bench.server import running_server
from bench.stream_latency import normalize, word_error_rate
from tests.openai_realtime.conftest import KEY, RATE, session, update
from tests.openai_realtime.test_transcripts import clip_24k, our_commit, spoken_turns_completed

FRAME_SEC = 0.1
DELTA = "conversation.item.input_audio_transcription.delta"
COMPLETED = "conversation.item.input_audio_transcription.completed"


async def paced(send: Any, pcm: bytes, t0: float) -> None:
    step = round(RATE * FRAME_SEC) * 2
    for k, i in enumerate(range(0, len(pcm), step)):
        await asyncio.sleep(max(0.0, t0 + (k + 1) * FRAME_SEC - time.monotonic()))
        await send(pcm[i : i + step])


async def native(base: str, pcm: bytes, interim: bool) -> dict[str, Any]:
    finals: list[tuple[float, float, str]] = []  # (arrival, end, text)
    first: float | None = None
    config = {"sample_rate_hertz": RATE, "encoding": "LINEAR16", "interim_results": interim}
    ws_base = base.replace("http://", "ws://")
    headers = {"Authorization": f"Bearer {KEY}"}
    async with websockets.connect(
        f"{ws_base}/ws/asr-stream", max_size=None, additional_headers=headers
    ) as ws:
        await ws.send(json.dumps(config))
        json.loads(await ws.recv())  # metadata
        t0 = time.monotonic()

        async def stop() -> None:
            await paced(ws.send, pcm, t0)
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
    lags = [arrival - end for arrival, end, _ in finals]
    return {
        **figures(lags, first),
        "first_final_sec": round(finals[0][0], 3) if finals else None,
        "finals": finals,
    }


async def openai(base: str, pcm: bytes) -> dict[str, Any]:
    """GA mode, server VAD, as `client.realtime.connect` users run it."""
    async with session(base, "ga") as (conn, reader):
        await update(conn, "ga", vad=True)
        await reader.wait_type("session.updated")
        t0 = time.monotonic()
        loop_t0 = asyncio.get_running_loop().time()

        async def send(chunk: bytes) -> None:
            await conn.input_audio_buffer.append(audio=_b64(chunk))

        await paced(send, pcm, t0)
        before = len(reader.events)
        await conn.input_audio_buffer.commit()

        def settled() -> bool:
            """Our commit's turn, and every turn with text, completed."""
            ours = our_commit(reader, before)
            done = {e["item_id"] for e in reader.of(COMPLETED)}
            return ours in done and spoken_turns_completed(reader)

        await reader.wait_for(lambda _: settled(), within=120.0)
        deltas = [
            (at - loop_t0, e["delta"])
            for e, at in zip(reader.events, reader.arrivals, strict=True)
            if e["type"] == DELTA
        ]
    return {"deltas": deltas}


def _b64(chunk: bytes) -> str:
    import base64

    return base64.b64encode(chunk).decode()


async def until_accepting(base: str, limit_sec: float = 30.0) -> None:
    """Until the node takes a session again (the last one's slot is released as it closes)."""
    import urllib.request

    deadline = time.monotonic() + limit_sec
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{base}/ready", timeout=5) as resp:
            if json.loads(resp.read())["accepting"]:
                return
        await asyncio.sleep(0.2)
    raise RuntimeError("the node did not take a session again")


def figures(lags: list[float], first: float | None) -> dict[str, Any]:
    return {
        "first_text_sec": None if first is None else round(first, 3),
        "final_lag_mean_sec": round(statistics.mean(lags), 3) if lags else None,
        "final_lag_p50_sec": round(statistics.median(lags), 3) if lags else None,
        "final_lag_max_sec": round(max(lags), 3) if lags else None,
    }


def delta_lags(
    deltas: list[tuple[float, str]], finals: list[tuple[float, float, str]]
) -> list[float] | None:
    """Each delta's lag against the end of the native final holding its last word;
    None when the two runs heard different words."""
    ends: list[float] = []
    for _, end, text in finals:
        ends += [end] * len(normalize(text).split())
    words = 0
    lags = []
    for arrival, text in deltas:
        count = len(normalize(text).split())
        if not count:
            continue
        words += count
        if words > len(ends):
            return None
        lags.append(arrival - ends[words - 1])
    native_words = " ".join(normalize(t) for _, _, t in finals).split()
    said = " ".join(normalize(t) for _, t in deltas).split()
    return lags if said == native_words else None


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clip", nargs="?", default="test_audio/en_16k.wav", type=Path)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    pcm, reference = clip_24k(args.clip.name)
    out: dict[str, Any] = {"clip": str(args.clip), "cpu": asdict(compute_info()), "runs": []}
    with running_server(env={"API_KEYS": KEY}) as url:
        base = url.replace("ws://", "http://").removesuffix("/ws/asr-stream")
        for _ in range(args.runs):
            await until_accepting(base)
            with_interims = await native(base, pcm, interim=True)
            await until_accepting(base)
            plain = await native(base, pcm, interim=False)
            await until_accepting(base)
            realtime = await openai(base, pcm)
            deltas = realtime.pop("deltas")
            lags = delta_lags(deltas, plain["finals"])
            transcript = "".join(t for _, t in deltas)
            run = {
                "native_interims": with_interims,
                "native": plain,
                "openai": {
                    **figures(lags or [], deltas[0][0] if deltas else None),
                    "first_final_sec": round(deltas[0][0], 3) if deltas else None,
                    "same_words_as_native": lags is not None,
                    "wer": round(word_error_rate(reference, transcript), 4),
                },
            }
            for door in ("native_interims", "native"):
                finals = run[door].pop("finals")
                text = " ".join(t.strip() for _, _, t in finals)
                run[door]["wer"] = round(word_error_rate(reference, text), 4)
            out["runs"].append(run)
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main())
