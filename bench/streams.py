"""How many real-time streams of read speech one node keeps up with (issue 30).

    python -m bench.streams                          # 8,16,24,32 tiny.en streams
    python -m bench.streams --streams 4,8,12 --model base --json out.json

Each stream is recorded read speech with its natural pauses: clips no engine
setting was tuned on (`bench.replay.HELD_OUT_RECORDED` but the two 110 s
LJSpeech ones) and the recorded clips of the usual set, joined end to end until
the stream is at least ``--seconds`` long. Stream *i* starts at clip *i*, so the
streams say different things at any moment, and streams start ``--stagger``
seconds apart, as people arrive. Frames go at real-time pace (100 ms each, sent
once their last sample would have been spoken).

Per concurrency level it prints the lag of finals p50 / p95 (arrival − when the
final's last word was spoken), how many streams fell behind (their
``complete`` more than `FALL_BEHIND_SEC` after ``stop``), the WER over every
stream's words, how many streams failed, and the server's CPU time per second
of audio streamed (user + system of the server process, over the whole level,
divided by the audio seconds of all its streams).

The server is started with ``LOCAL_CAPACITY`` well above the levels, so
admission refuses nothing: this measures the engine, not the admission policy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

from app.cpu_info import compute_info
from bench.benchmark import FALL_BEHIND_SEC, lags, server_pid, stop_to_complete
from bench.replay import percentile as pct
from bench.server import ROOT, cpu_seconds, running_server
from bench.stream_latency import corpus_word_error_rate
from clients.asr_client import ASRStreamClient, StreamResult, read_wav

AUDIO = ROOT / "test_audio"
SAMPLE_RATE = 16_000
# The goal's condition (issue 30): p95 lag of finals at most this, no stream behind.
KEPT_P95_SEC = 3.0
CLIPS = (
    "heldout_librispeech_16k.wav",
    "heldout_mfa_fast_16k.wav",
    "heldout_mfa_cold_16k.wav",
    "librivox_16k.wav",
    "jfk_16k.wav",
    "sonnet_16k.wav",
)


def speech(index: int, seconds: float) -> tuple[bytes, str]:
    """Stream ``index``'s audio (16 kHz LINEAR16) and its reference text."""
    pcm, texts = b"", []
    i = index
    while len(pcm) < seconds * SAMPLE_RATE * 2:
        name = CLIPS[i % len(CLIPS)]
        clip, rate = read_wav(AUDIO / name)
        assert rate == SAMPLE_RATE, name
        pcm += clip
        texts.append((AUDIO / name).with_suffix(".txt").read_text().strip())
        i += 1
    return pcm, " ".join(texts)


async def one(url: str, pcm: bytes, delay: float, model: str | None) -> StreamResult | str:
    await asyncio.sleep(delay)
    config: dict[str, Any] = {"enable_word_time_offsets": True}
    if model:
        config["model"] = model
    try:
        return await ASRStreamClient(url).transcribe(
            pcm, sample_rate_hertz=SAMPLE_RATE, config=config
        )
    except Exception as exc:  # a failed stream is a figure, not the end of the run
        return f"{type(exc).__name__}: {exc}"


async def level(url: str, n: int, args: argparse.Namespace) -> dict[str, Any]:
    streams = [speech(i, args.seconds) for i in range(n)]
    pid = server_pid(url)
    cpu_before = cpu_seconds(pid)
    started = time.monotonic()
    results = await asyncio.gather(
        *(one(url, pcm, i * args.stagger, args.model) for i, (pcm, _) in enumerate(streams))
    )
    wall = time.monotonic() - started
    cpu = cpu_seconds(pid) - cpu_before
    done = [
        (r, ref) for r, (_, ref) in zip(results, streams, strict=True) if not isinstance(r, str)
    ]
    failed = [r for r in results if isinstance(r, str)]
    all_lags = [lag for r, _ in done for lag in lags(r)]
    audio_sec = sum(len(pcm) / 2 / SAMPLE_RATE for pcm, _ in streams)
    return {
        "streams": n,
        "audio_sec": round(audio_sec, 1),
        "wall_sec": round(wall, 1),
        "lag_p50_s": pct(all_lags, 50),
        "lag_p95_s": pct(all_lags, 95),
        "lag_max_s": round(max(all_lags), 3) if all_lags else None,
        "fell_behind": sum(stop_to_complete(r) > FALL_BEHIND_SEC for r, _ in done),
        "failed": len(failed),
        "failures": failed[:3],
        "wer": round(corpus_word_error_rate([(ref, r.transcript) for r, ref in done]), 4),
        "cpu_sec_per_audio_sec": round(cpu / audio_sec, 4),
        "server_cpu_busy": round(cpu / wall / (os.cpu_count() or 1), 3),
    }


async def run(url: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    out = []
    for n in args.streams:
        row = await level(url, n, args)
        print(json.dumps(row), flush=True)
        out.append(row)
        await asyncio.sleep(2.0)  # the last sessions end before the next level
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Real-time streams per node")
    parser.add_argument("--url", help="an already running server (default: start run.py)")
    parser.add_argument("--streams", default="8,16,24,32", help="concurrency levels")
    parser.add_argument("--seconds", type=float, default=40.0, help="least audio per stream")
    parser.add_argument("--stagger", type=float, default=0.37, help="seconds between starts")
    parser.add_argument("--model", help="the sessions' model (default: the server's)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--log", type=Path, help="the server's log (default: none)")
    args = parser.parse_args(argv)
    args.streams = [int(s) for s in args.streams.split(",") if s]
    env = {"LOCAL_CAPACITY": str(max(args.streams) * 2), "LOG_LEVEL": "warning"}
    if args.model:
        env["DEFAULT_MODEL"] = args.model
    figures: dict[str, Any] = {
        "machine": compute_info().as_dict(),
        "model": args.model or os.environ.get("DEFAULT_MODEL", "tiny.en"),
        "seconds": args.seconds,
        "stagger": args.stagger,
    }
    if args.url:
        figures["levels"] = asyncio.run(run(args.url, args))
    else:
        with running_server(env, args.log) as url:
            figures["levels"] = asyncio.run(run(url, args))
    kept = [
        level["streams"]
        for level in figures["levels"]
        if level["lag_p95_s"] is not None
        and level["lag_p95_s"] <= KEPT_P95_SEC
        and not level["fell_behind"]
        and not level["failed"]
    ]
    figures["streams_kept"] = max(kept, default=0)
    print(
        f"streams kept (p95 lag of finals <= {KEPT_P95_SEC} s, none behind): {max(kept, default=0)}"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
