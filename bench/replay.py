"""Replay a clip through the streaming algorithm as fast as the CPU allows (no server, no clock).

    python -m bench.replay                                  # every test_audio clip, 1 s steps
    python -m bench.replay --step 0.5 --no-short-window test_audio/en_16k.wav
    python -m bench.replay --held-out                       # clips nothing was tuned on
    python -m bench.replay --gain -45 test_audio/jfk_16k.wav  # as a quiet microphone gives it
    python -m bench.replay --held-out --busy                # as a server past BUSY_SESSIONS
    CT2_USE_MKL=1 python -m bench.replay --json out.json     # Intel's GEMM backend, figures kept

The first line names the machine: the CPU, and the GEMM backend (MKL or oneDNN)
and kernel ISA CTranslate2 used (`app.cpu_info`): they change the words, so
figures are compared only between runs that name the same ones.

For each clip: WER of the committed text (what a client gets as finals) next to
the same model's offline WER, the number of passes, and the engine seconds spent
per second of audio (its real-time factor: 0.5 means one core streams two clips),
and the engine's part of the lag of finals (see `replay`); then both WERs and the
lag over all clips (all errors over all reference words), and when both kinds
of speech are in the run, the WERs over the recorded and over the synthetic
clips. The text is deterministic, so accuracy changes to the engine or to
`OnlineASRProcessor` can be compared run against run; the lag moves with the machine, and
`bench.benchmark` gives the figures through a real server.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from app.asr.base import EngineRequest, TextSpan
from app.asr.faster_whisper_loader import FasterWhisperLoader
from app.cpu_info import compute_info
from app.settings import ENGINE_SAMPLE_RATE, Settings
from bench.server import ROOT
from bench.stream_latency import corpus_word_error_rate, longest_dropped_run, word_error_rate
from clients.asr_client import read_wav

ENGLISH = EngineRequest(backend="faster-whisper", model="", language="en", language_code="en-US")
# Synthetic (espeak-ng), then recorded speech (see test_audio/make_recorded_audio.sh).
CLIPS = (
    "en_16k.wav",
    "en_48k.wav",
    "en_long_16k.wav",
    "librivox_16k.wav",
    "jfk_16k.wav",
    "sonnet_16k.wav",
)
# Clips no engine setting was tuned on: a change that helps CLIPS and not these
# was fitted to CLIPS. espeak-ng in other voices and speeds
# (test_audio/make_test_audio.sh), then recorded read and spontaneous speech
# (test_audio/make_recorded_audio.sh).
HELD_OUT_RECORDED = tuple(
    f"heldout_{name}_16k.wav"
    for name in ("ljspeech_a", "ljspeech_b", "librispeech", "mfa_fast", "mfa_cold")
)
HELD_OUT = (
    *(
        f"heldout_{name}_16k.wav"
        for name in ("library", "bread", "train", "meeting", "doctor", "wind")
    ),
    *HELD_OUT_RECORDED,
)
RECORDED = frozenset({"librivox_16k.wav", "jfk_16k.wav", "sonnet_16k.wav", *HELD_OUT_RECORDED})


def kind(clip: str) -> str:
    """Whether a test_audio clip is recorded speech or synthetic (espeak-ng)."""
    return "recorded" if clip in RECORDED else "synthetic"


def percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


def engine_audio(path: Path) -> np.ndarray:
    """The clip as the engine gets it: 16 kHz float32 (soxr, as the server resamples)."""
    import soxr

    pcm, rate = read_wav(path)
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
    if rate != ENGINE_SAMPLE_RATE:
        samples = soxr.resample(samples, rate, ENGINE_SAMPLE_RATE).astype(np.float32)
    return samples


def at_gain(samples: np.ndarray, db: float) -> np.ndarray:
    """``samples`` ``db`` louder (or quieter), on the 16-bit grid a client sends."""
    scaled = np.clip(samples * 10 ** (db / 20), -1.0, 32767 / 32768)
    return (np.round(scaled * 32768) / 32768).astype(np.float32)


def replay(
    loader: FasterWhisperLoader, audio: np.ndarray, step: float, *, busy: bool = False
) -> dict[str, Any]:
    """Stream ``audio`` through a fresh processor, one pass per ``step`` of audio.

    ``busy``: as a server does past BUSY_SESSIONS streams (a shorter buffer).

    ``lags``: for each final, when it would reach a client of a server that
    starts each pass once its step has arrived and does nothing else (the end
    of the step, or of the previous pass if that is later, plus this pass's
    time) minus the end of its last word: the engine's part of the lag of
    finals, without the network, the frames or other sessions.
    """
    request = ENGLISH
    processor, _ = loader.load(request)
    processor.set_busy(busy)
    hop = int(step * ENGINE_SAMPLE_RATE)
    texts: list[str] = []
    lags: list[float] = []
    busy, free_at = 0.0, 0.0

    def timed(call: Callable[[], TextSpan | None], heard_until: float) -> None:
        nonlocal busy, free_at
        started = time.perf_counter()
        span = call()
        took = time.perf_counter() - started
        busy += took
        free_at = max(heard_until, free_at) + took
        if span is not None:
            texts.append(span.text)
            lags.append(free_at - span.end)

    starts = range(0, len(audio), hop)
    for at in starts:
        processor.insert_audio_chunk(audio[at : at + hop])
        timed(processor.process_iter, min(at + hop, len(audio)) / ENGINE_SAMPLE_RATE)
    timed(processor.finish, len(audio) / ENGINE_SAMPLE_RATE)
    return {
        "text": "".join(texts).strip(),
        "passes": len(starts),
        "rtf": round(busy / (len(audio) / ENGINE_SAMPLE_RATE), 3),
        "lags": lags,
    }


def offline(loader: FasterWhisperLoader, audio: np.ndarray) -> str:
    request = ENGLISH
    asr = loader.asr(request)
    asr.short_window = False
    return str(asr.transcribe(audio)["text"]).strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("clips", nargs="*", type=Path)
    parser.add_argument("--step", type=float, default=1.0, help="seconds of audio per pass")
    parser.add_argument(
        "--short-window",
        action=argparse.BooleanOptionalAction,
        help="override WHISPER_SHORT_WINDOW (default: the setting)",
    )
    parser.add_argument("--show", action="store_true", help="print the texts")
    parser.add_argument(
        "--gain", type=float, default=0.0, help="dB to scale each clip by (-45: a quiet microphone)"
    )
    parser.add_argument(
        "--held-out", action="store_true", help="the held-out clips instead of the usual ones"
    )
    parser.add_argument(
        "--busy",
        action="store_true",
        help="stream as a busy server does (BUSY_BUFFER_TRIMMING_SEC, not BUFFER_TRIMMING_SEC)",
    )
    parser.add_argument("--json", type=Path, help="also write every line printed here, as one list")
    args = parser.parse_args(argv)
    machine = compute_info()
    lines: list[dict[str, Any]] = [{"machine": machine.as_dict(), "label": machine.label()}]
    print(json.dumps(lines[0]))
    settings = Settings()
    if args.short_window is not None:
        settings = settings.model_copy(update={"whisper_short_window": args.short_window})
    loader = FasterWhisperLoader(settings)
    rows = []
    pairs: list[tuple[str, str, str]] = []  # reference, streamed, offline
    lags: list[float] = []
    names = HELD_OUT if args.held_out else CLIPS
    for path in args.clips or [ROOT / "test_audio" / name for name in names]:
        audio = engine_audio(path)
        if args.gain:
            audio = at_gain(audio, args.gain)
        reference = path.with_suffix(".txt").read_text()
        streamed = replay(loader, audio, args.step, busy=args.busy)
        whole = offline(loader, audio)
        row = {
            "clip": path.name,
            "wer_streamed": round(word_error_rate(reference, streamed["text"]), 4),
            "wer_offline": round(word_error_rate(reference, whole), 4),
            # A lost phrase shows here before it moves the WER much.
            "dropped_run_streamed": longest_dropped_run(reference, streamed["text"]),
            "dropped_run_offline": longest_dropped_run(reference, whole),
            "passes": streamed["passes"],
            "rtf": streamed["rtf"],
            "lag_p50_s": percentile(streamed["lags"], 50),
        }
        if args.show:
            row |= {"streamed": streamed["text"], "offline": whole}
        rows.append(row)
        pairs.append((reference, streamed["text"], whole))
        lags += streamed["lags"]
        lines.append(row)
        print(json.dumps(row))
    kinds = [kind(str(row["clip"])) for row in rows]
    if len(set(kinds)) > 1:  # each kind of speech pooled on its own, then all together
        for group in sorted(set(kinds)):
            chosen = [pair for pair, k in zip(pairs, kinds, strict=True) if k == group]
            lines.append({"speech": group} | pooled(chosen))
            print(json.dumps(lines[-1]))
    if len(pairs) > 1:
        lines.append(
            pooled(pairs)
            | {
                "lag_p50_s": percentile(lags, 50),
                "lag_p95_s": percentile(lags, 95),
                # Again at the end, next to the figures it qualifies.
                "machine": machine.label(),
            }
        )
        print(json.dumps(lines[-1]))
    if args.json:
        args.json.write_text(json.dumps(lines, indent=2) + "\n")
    return 0


def pooled(pairs: list[tuple[str, str, str]]) -> dict[str, Any]:
    """Both WERs over (reference, streamed, offline) triples: all errors over all words."""
    return {
        "clips": len(pairs),
        "wer_streamed": round(corpus_word_error_rate([(r, s) for r, s, _ in pairs]), 4),
        "wer_offline": round(corpus_word_error_rate([(r, o) for r, _, o in pairs]), 4),
    }


if __name__ == "__main__":
    raise SystemExit(main())
