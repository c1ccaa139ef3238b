"""Stream WAV files to a server at real-time pace; print lag of finals, stop→complete, WER.

    python -m bench.stream_latency test_audio/en_16k.wav            # starts its own server
    python -m bench.stream_latency --url ws://host:8001/ws/asr-stream FILE...

Lag of a final = its arrival − the moment the end of its last word was spoken
(stream start + the final's ``end``; frames leave once their last sample has been
spoken, as from a microphone). With several files they stream at once.
Prints a table and, with ``--json``, a JSON list with one object per file.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import re
import statistics
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from bench.server import running_server
from clients.asr_client import ASRStreamClient, StreamResult, read_wav


def normalize(text: str) -> str:
    return " ".join(re.sub(r"[^\w' ]", " ", text.lower()).split())


def word_error_rate(reference: str, hypothesis: str) -> float:
    import jiwer

    return float(jiwer.wer(normalize(reference), normalize(hypothesis) or "<empty>"))


def corpus_word_error_rate(pairs: list[tuple[str, str]]) -> float:
    """WER over several (reference, hypothesis) pairs: all errors over all reference words."""
    import jiwer

    references = [normalize(r) for r, _ in pairs]
    hypotheses = [normalize(h) or "<empty>" for _, h in pairs]
    return float(jiwer.wer(references, hypotheses))


def longest_dropped_run(reference: str, hypothesis: str) -> int:
    """The most consecutive reference words the hypothesis lost (deleted, not misheard)."""
    import jiwer

    out = jiwer.process_words(normalize(reference), normalize(hypothesis) or "<empty>")
    return max(
        (c.ref_end_idx - c.ref_start_idx for c in out.alignments[0] if c.type == "delete"),
        default=0,
    )


def doubled_phrases(reference: str, hypothesis: str, longest: int = 8) -> list[str]:
    """What a final committed twice at a seam, or a model looping, leaves behind.

    Phrases of up to ``longest`` words the hypothesis says twice in a row where the
    reference does not ("to be to be"), and two-word phrases it says more often
    than the reference, at least twice and again within ``longest`` words (a
    doubled final the second pass heard a little differently: "leisure to
    consider sure to consider").
    """
    said, meant = normalize(hypothesis).split(), normalize(reference).split()
    padded = f" {' '.join(meant)} "
    found = set()
    for n in range(1, longest + 1):
        for i in range(len(said) - 2 * n + 1):
            phrase = said[i : i + n]
            if phrase == said[i + n : i + 2 * n] and f" {' '.join(phrase * 2)} " not in padded:
                found.add(" ".join(phrase))

    def pairs(words: list[str]) -> Counter[str]:
        return Counter(f"{a} {b}" for a, b in itertools.pairwise(words))

    # A doubled final says its pair again within a few words; a pair said again far
    # off is a misheard word ("contracted to thine own" heard "to thy", a sonnet line
    # that says "to thy sweet self" later), which WER counts, not a doubling.
    where: dict[str, list[int]] = {}
    for i, (a, b) in enumerate(itertools.pairwise(said)):
        where.setdefault(f"{a} {b}", []).append(i)
    meant_pairs = pairs(meant)
    for pair, starts in where.items():
        close = any(later - earlier <= longest for earlier, later in itertools.pairwise(starts))
        if close and len(starts) > max(1, meant_pairs[pair]):
            found.add(pair)
    return sorted(found)


def summarize(path: Path, result: StreamResult) -> dict[str, Any]:
    assert result.audio_started_at is not None and result.stop_sent_at is not None
    started = result.audio_started_at
    lags = [
        r.at - (started + r.message.end)
        for r in result.messages
        if r.message.type == "transcript" and r.message.is_final
    ]
    complete_at = next(r.at for r in result.messages if r.message.type == "complete")
    interims = [
        r for r in result.messages if r.message.type == "transcript" and not r.message.is_final
    ]
    first_interim = min((r.at - started for r in interims), default=None)
    reference = path.with_suffix(".txt")
    out: dict[str, Any] = {
        "file": str(path),
        "finals": len(lags),
        "interims": len(interims),
        "lag_p50_s": round(statistics.median(lags), 3) if lags else None,
        "lag_max_s": round(max(lags), 3) if lags else None,
        "lag_mean_s": round(statistics.fmean(lags), 3) if lags else None,
        "first_interim_s": None if first_interim is None else round(first_interim, 3),
        "stop_to_complete_s": round(complete_at - result.stop_sent_at, 3),
        "transcript": result.transcript,
    }
    if reference.exists():
        out["wer"] = round(word_error_rate(reference.read_text(), result.transcript), 4)
    return out


async def stream_all(
    url: str, files: list[Path], chunk_ms: int, config: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    client = ASRStreamClient(url)

    async def one(path: Path) -> dict[str, Any]:
        pcm, rate = read_wav(path)
        result = await client.transcribe(
            pcm, sample_rate_hertz=rate, chunk_ms=chunk_ms, config=config
        )
        return summarize(path, result)

    return list(await asyncio.gather(*(one(f) for f in files)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--url", help="an already running server (default: start one)")
    parser.add_argument("--chunk-ms", type=int, default=100)
    parser.add_argument("--model", help="the session's model (e.g. base)")
    parser.add_argument("--language", help="the session's language_code (e.g. ar-EG)")
    parser.add_argument(
        "--json", action="store_true", help="print JSON (a list, one object per file)"
    )
    args = parser.parse_args(argv)

    config = {
        key: value
        for key, value in (("model", args.model), ("language_code", args.language))
        if value
    }
    if args.url:
        results = asyncio.run(stream_all(args.url, args.files, args.chunk_ms, config))
    else:
        with running_server() as url:
            results = asyncio.run(stream_all(url, args.files, args.chunk_ms, config))
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    columns = [
        "finals",
        "lag_p50_s",
        "lag_mean_s",
        "lag_max_s",
        "first_interim_s",
        "stop_to_complete_s",
        "wer",
    ]
    print("file".ljust(28) + "".join(c.rjust(19) for c in columns))
    for row in results:
        print(
            Path(row["file"]).name.ljust(28) + "".join(str(row.get(c)).rjust(19) for c in columns)
        )
    for row in results:
        print(f"\n{Path(row['file']).name}: {row['transcript']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
