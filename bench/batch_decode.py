"""What one streaming pass's model calls cost per item when sessions share a batch (issue 30).

    python -m bench.batch_decode                       # tiny.en and base, 1 and 2 threads
    python -m bench.batch_decode --models tiny.en --batches 1,2,4,8 --json out.json

A streaming pass is three CTranslate2 calls: ``encode`` (the buffer's window),
``generate`` (greedy, the committed text as prompt) and ``align`` (word times).
Sessions whose passes coincide could share one call of each with a batch of
their buffers. For each model, thread count and batch size this times the three
calls on batches of *different* 8 s buffers of recorded speech (each with its own
prompt, as different sessions have), best of ``--repeats``, and prints the cost
per item and its ratio to batch 1. The window is the one a streaming pass of 8 s
uses (`encoder_frames`), so the figures are those of the server's passes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from app.asr.faster_whisper_backend import encoder_frames, token_budget
from app.asr.models import resolve_model_dir
from app.cpu_info import compute_info
from app.settings import Settings
from bench.replay import engine_audio
from bench.server import ROOT

BUFFER_SEC = 8.0
# CTranslate2 batches prompts of one length only: every item keeps its last 30 tokens.
PROMPT_TOKENS = 30
# Earlier text for the prompt-length rows of --prefix: read speech no item says.
PROMPT_TEXT = "heldout_ljspeech_a_16k.txt"
CLIPS = ("heldout_librispeech_16k.wav", "heldout_mfa_fast_16k.wav", "sonnet_16k.wav")


def buffers(count: int, seconds: float = BUFFER_SEC) -> list[tuple[np.ndarray, str]]:
    """``count`` different buffers of ``seconds`` of recorded speech and a prompt for each."""
    out = []
    for i in range(count):
        path = ROOT / "test_audio" / CLIPS[i % len(CLIPS)]
        audio = engine_audio(path)
        start = int((2.0 + 8.0 * (i // len(CLIPS))) * 16_000)
        # A prompt of the right kind (the clip's words), not of the right place.
        words = path.with_suffix(".txt").read_text().split()
        out.append((audio[start : start + int(seconds * 16_000)], " ".join(words[:40])))
    return out


def best(repeats: int, call: Any) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return min(times)


def measure(
    model_name: str,
    threads: int,
    batches: list[int],
    repeats: int,
    prefix: bool = False,
    buffer_sec: float = BUFFER_SEC,
) -> list[dict[str, Any]]:
    import ctranslate2
    from faster_whisper import WhisperModel

    settings = Settings()
    fw = WhisperModel(
        str(resolve_model_dir(model_name, settings.model_cache_dir)),
        device="cpu",
        compute_type="int8",
        cpu_threads=threads,
    )
    tokenizer_sot = fw.hf_tokenizer
    frames = encoder_frames(buffer_sec)
    items = buffers(max(batches), buffer_sec)
    features = [
        fw.feature_extractor(audio, padding=frames - len(audio) // 160)[:, :frames]
        for audio, _ in items
    ]
    from faster_whisper.tokenizer import Tokenizer

    tokenizer = Tokenizer(tokenizer_sot, fw.model.is_multilingual, task="transcribe", language="en")
    prompts = [
        [tokenizer.sot_prev, *tokenizer.encode(" " + text)[:PROMPT_TOKENS], *tokenizer.sot_sequence]
        for _, text in items
    ]
    if prefix:
        return prefix_rows(fw, tokenizer, features[:4], prompts[:4], model_name, threads, repeats)
    rows = []
    base_costs: dict[str, float] = {}
    for n in batches:
        batch = np.ascontiguousarray(np.stack(features[:n]).astype(np.float32))
        storage = ctranslate2.StorageView.from_array(batch)
        encoded = fw.model.encode(storage, to_cpu=False)
        encode_sec = best(repeats, lambda s=storage: fw.model.encode(s, to_cpu=False))
        results: list[Any] = []

        def generate(encoded: Any = encoded, n: int = n, results: list[Any] = results) -> None:
            results[:] = fw.model.generate(
                encoded,
                prompts[:n],
                beam_size=1,
                max_length=len(prompts[0]) + token_budget(buffer_sec),
                return_scores=True,
                return_no_speech_prob=True,
                suppress_blank=True,
                suppress_tokens=list(tokenizer.non_speech_tokens),
                max_initial_timestamp_index=50,
            )

        generate_sec = best(repeats, generate)
        texts = [r.sequences_ids[0] for r in results]
        tokens = sum(len(t) for t in texts) / n
        words = [[t for t in seq if t < tokenizer.eot] for seq in texts]
        align_sec = best(
            repeats,
            lambda e=encoded, w=words[:n]: fw.model.align(
                e, tokenizer.sot_sequence, w, frames // 2
            ),
        )
        per_item = {
            "encode": encode_sec / n,
            "generate": generate_sec / n,
            "align": align_sec / n,
        }
        if n == batches[0]:
            base_costs = dict(per_item)
        row = {
            "model": model_name,
            "threads": threads,
            "batch": n,
            "tokens_per_item": round(tokens, 1),
            **{f"{k}_ms_per_item": round(1000 * v, 1) for k, v in per_item.items()},
            **{f"{k}_vs_batch1": round(v / base_costs[k], 3) for k, v in per_item.items()},
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def prefix_rows(
    fw: Any,
    tokenizer: Any,
    features: list[Any],
    prompts: list[list[int]],
    model_name: str,
    threads: int,
    repeats: int,
) -> list[dict[str, Any]]:
    """Decoding with the first part of each item's own tokens forced as a prefix.

    A streaming pass re-decodes the words it committed before; forced, they
    might run through the decoder in one step. Per share of the tokens forced:
    the time of the four items' decoding against decoding all of it, and
    whether greedy decoding continued with the same tokens.
    """
    import ctranslate2

    options: dict[str, Any] = {
        "beam_size": 1,
        "return_scores": True,
        "suppress_blank": True,
        "suppress_tokens": list(tokenizer.non_speech_tokens),
        "max_initial_timestamp_index": 50,
    }

    def decode(encoded: Any, prompt: list[int], max_length: int) -> tuple[float, list[int]]:
        """Best time of ``repeats`` greedy decodings, and the tokens decoded."""

        def run() -> list[Any]:
            return list(fw.model.generate(encoded, [prompt], max_length=max_length, **options))

        return best(repeats, run), list(run()[0].sequences_ids[0])

    items = []
    for item, prompt in zip(features, prompts, strict=True):
        storage = ctranslate2.StorageView.from_array(np.ascontiguousarray(item[None]))
        encoded = fw.model.encode(storage, to_cpu=False)
        budget = len(prompt) + token_budget(BUFFER_SEC)
        full = fw.model.generate(encoded, [prompt], max_length=budget, **options)[0]
        items.append((encoded, prompt, budget, full.sequences_ids[0]))
    rows = []
    for share in (0.0, 0.5, 0.75):
        total, same, generated = 0.0, 0, 0
        for encoded, prompt, budget, tokens in items:
            forced = tokens[: int(share * len(tokens))]
            seconds, out = decode(encoded, prompt + forced, budget)
            total += seconds
            # CTranslate2 returns the forced tokens too, then what it decoded after them.
            same += out == tokens
            generated += len(out) - len(forced)
        row = {
            "model": model_name,
            "threads": threads,
            "prefix_share": share,
            "generate_ms_4_items": round(1000 * total, 1),
            "tokens_generated": generated,
            "tokens_in_all": sum(len(t) for *_, t in items),
            "same_continuation": f"{same}/{len(items)}",
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    # The prompt (earlier text, before <|startoftranscript|>) at several lengths.
    earlier = tokenizer.encode(" " + (ROOT / "test_audio" / PROMPT_TEXT).read_text())
    for length in (0, 10, 45, 120, 220):
        total, generated = 0.0, 0
        for encoded, prompt, _, _ in items:
            start = prompt[prompt.index(tokenizer.sot) :]
            p = [tokenizer.sot_prev, *earlier[:length], *start] if length else start
            seconds, out = decode(encoded, p, len(p) + token_budget(BUFFER_SEC))
            total += seconds
            generated += len(out)
        row = {
            "model": model_name,
            "threads": threads,
            "prompt_tokens": length,
            "generate_ms_4_items": round(1000 * total, 1),
            "tokens_generated": generated,
            "ms_per_generated_token": round(1000 * total / generated, 2),
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Batched model calls, cost per item")
    parser.add_argument("--models", default="tiny.en,base")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--batches", default="1,2,4,8")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--prefix", action="store_true", help="time forced prefixes instead of batches"
    )
    parser.add_argument(
        "--buffer-sec",
        type=float,
        default=BUFFER_SEC,
        help="each item's buffer (a busy engine's passes hear at most 6 s); not with --prefix",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.prefix and args.buffer_sec != BUFFER_SEC:
        parser.error("--prefix times 8 s buffers only")
    figures: dict[str, Any] = {
        "machine": compute_info().as_dict(),
        "buffer_sec": args.buffer_sec,
        "rows": [],
    }
    for model in args.models.split(","):
        for threads in (int(t) for t in args.threads.split(",")):
            batches = [int(b) for b in args.batches.split(",")]
            figures["rows"] += measure(
                model, threads, batches, args.repeats, args.prefix, args.buffer_sec
            )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
