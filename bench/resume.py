"""Resumed streams under node kills (issue 25): what a `kill -9` mid-sentence costs.

    python -m bench.resume --kills 20 --proxy nginx [--clip jfk_16k.wav] [--json FILE]

Starts a local cluster (`deploy.cluster`) of ``--nodes`` (3) real-model nodes
(the default engine, tiny.en), then streams a recorded clip through the proxy
with the Python client (`clients.asr_client.ASRStreamClient`, resume on, its
default policy) at real-time pace:

- ``--undisturbed`` (3) times untouched: the reference transcripts;
- ``--kills`` times with the serving node killed (SIGKILL) at a point of the
  clip that moves evenly from `FIRST_CUT_SEC` to `LAST_CUT_SEC` across runs
  (mid-sentence), the killed node restarted (and ready) before the next run.

For each kill: the words lost (words of the first undisturbed transcript that
the resumed one deletes, by jiwer's alignment; words heard differently are
substitutions, counted by WER), the longest run of lost words, phrases said
twice, the time from the kill to the first transcript of the new connection
(interim or final) and to its first final, and the WER against the undisturbed
transcript. Then: words lost in total and per kill, those times at p50/p95
(the goal: ≤ 2 s at p95), and the WER of the resumed and of the undisturbed
runs against the first undisturbed one and against the clip's reference text.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench.replay import percentile
from bench.stream_latency import (
    corpus_word_error_rate,
    doubled_phrases,
    longest_dropped_run,
    normalize,
    word_error_rate,
)
from clients.asr_client import ASRStreamClient, StreamResult, read_wav
from deploy.cluster import PROXIES, Cluster, Node

ROOT = Path(__file__).resolve().parent.parent
AUDIO = ROOT / "test_audio"
FIRST_CUT_SEC = 2.0  # into the clip: after the first words
LAST_CUT_SEC = 9.0  # jfk_16k.wav is 11 s: before its last words
NODE_ENV = {
    # Three tiny.en nodes share this machine's cores: each measures a small capacity
    # while the others warm up beside it; a run holds one stream at a time.
    "LOCAL_CAPACITY": "2",
    "SHUTDOWN_GRACE_SEC": "2",
}
POLL_SEC = 0.05
FIND_NODE_TIMEOUT_SEC = 10.0


def words_lost(reference: str, hypothesis: str) -> int:
    """Reference words the hypothesis deleted (jiwer's alignment)."""
    import jiwer

    out = jiwer.process_words(normalize(reference), normalize(hypothesis) or "<empty>")
    return int(out.deletions)


def active(node: Node) -> int:
    try:
        return int(node.ready()[1]["active_sessions"])
    except (OSError, KeyError, ValueError):
        return 0


async def serving_node(cluster: Cluster) -> Node:
    """The node that holds the (only) stream."""
    deadline = time.monotonic() + FIND_NODE_TIMEOUT_SEC
    while time.monotonic() < deadline:
        for node in cluster.nodes:
            if node.running and await asyncio.to_thread(active, node) > 0:
                return node
        await asyncio.sleep(POLL_SEC)
    raise RuntimeError("no node took the stream")


async def run_once(
    cluster: Cluster, pcm: bytes, rate: int, cut_at: float | None
) -> tuple[StreamResult, float | None, Node | None]:
    """Stream the clip; with ``cut_at``, kill the serving node that far into the audio.
    Returns the result, when the kill happened (monotonic) and the killed node."""
    result = StreamResult()
    reached = asyncio.Event()

    def progress(sent_sec: float) -> None:
        if cut_at is not None and sent_sec >= cut_at:
            reached.set()

    async def stream() -> None:
        async for _ in ASRStreamClient(cluster.url).stream(
            pcm, sample_rate_hertz=rate, timings=result, progress=progress
        ):
            pass

    task = asyncio.create_task(stream())
    if cut_at is None:
        await task
        return result, None, None
    node = await serving_node(cluster)
    await reached.wait()  # the client paces at real time: cut_at s of audio are sent
    killed_at = time.monotonic()
    await asyncio.to_thread(cluster.kill_node, node)
    await task
    return result, killed_at, node


def after_kill(result: StreamResult, killed_at: float) -> dict[str, Any]:
    """Times from the kill to the new connection's first transcript and first final."""
    types = [r.message.type for r in result.messages]
    metadata = [i for i, t in enumerate(types) if t == "metadata"]
    if len(metadata) < 2:
        return {"first_transcript_s": None, "first_final_s": None}
    new = result.messages[metadata[1] :]
    transcripts = [r for r in new if r.message.type == "transcript"]
    finals = [r for r in transcripts if getattr(r.message, "is_final", False)]
    return {
        "first_transcript_s": round(transcripts[0].at - killed_at, 3) if transcripts else None,
        "first_final_s": round(finals[0].at - killed_at, 3) if finals else None,
    }


async def bench(args: argparse.Namespace, cluster: Cluster) -> dict[str, Any]:
    pcm, rate = read_wav(AUDIO / args.clip)
    reference_path = (AUDIO / args.clip).with_suffix(".txt")
    reference = reference_path.read_text().strip() if reference_path.exists() else None
    undisturbed: list[str] = []
    for i in range(args.undisturbed):
        result, _, _ = await run_once(cluster, pcm, rate, None)
        undisturbed.append(result.transcript)
        print(f"undisturbed {i + 1}/{args.undisturbed}: {result.transcript}", file=sys.stderr)
    base = undisturbed[0]
    kills: list[dict[str, Any]] = []
    for i in range(args.kills):
        cut_at = FIRST_CUT_SEC + (LAST_CUT_SEC - FIRST_CUT_SEC) * (i + 0.5) / args.kills
        result, killed_at, node = await run_once(cluster, pcm, rate, cut_at)
        assert killed_at is not None and node is not None
        complete = bool(result.messages) and result.messages[-1].message.type == "complete"
        row: dict[str, Any] = {
            "cut_at_s": round(cut_at, 2),
            "complete": complete,
            "reconnects": len(result.resumes),
            "reasons": [r.reason for r in result.resumes],
            **after_kill(result, killed_at),
            "words_lost": words_lost(base, result.transcript),
            "longest_lost_run": longest_dropped_run(base, result.transcript),
            "doubled": doubled_phrases(base, result.transcript),
            "wer_vs_undisturbed": round(word_error_rate(base, result.transcript), 4),
            "transcript": result.transcript,
        }
        kills.append(row)
        print(
            f"kill {i + 1}/{args.kills} at {cut_at:.2f} s: lost {row['words_lost']}, "
            f"first transcript {row['first_transcript_s']} s, "
            f"WER {row['wer_vs_undisturbed']:.3f}: {result.transcript}",
            file=sys.stderr,
        )
        await asyncio.to_thread(cluster.start_node, node)
    firsts = [k["first_transcript_s"] for k in kills if k["first_transcript_s"] is not None]
    first_finals = [k["first_final_s"] for k in kills if k["first_final_s"] is not None]
    resumed = [k["transcript"] for k in kills]
    summary: dict[str, Any] = {
        "kills": len(kills),
        "completed": sum(k["complete"] for k in kills),
        "words_lost_total": sum(k["words_lost"] for k in kills),
        "words_lost_per_kill_mean": round(statistics.fmean(k["words_lost"] for k in kills), 3)
        if kills
        else None,
        "words_lost_max": max((k["words_lost"] for k in kills), default=None),
        "doubled_total": sum(len(k["doubled"]) for k in kills),
        "kill_to_first_transcript_p50_s": percentile(firsts, 50),
        "kill_to_first_transcript_p95_s": percentile(firsts, 95),
        "kill_to_first_final_p50_s": percentile(first_finals, 50),
        "kill_to_first_final_p95_s": percentile(first_finals, 95),
        "wer_resumed_vs_undisturbed": round(corpus_word_error_rate([(base, t) for t in resumed]), 4)
        if resumed
        else None,
        "wer_undisturbed_vs_undisturbed": round(
            corpus_word_error_rate([(base, t) for t in undisturbed[1:]]), 4
        )
        if len(undisturbed) > 1
        else None,
    }
    if reference is not None:
        summary["wer_resumed_vs_reference"] = (
            round(corpus_word_error_rate([(reference, t) for t in resumed]), 4) if resumed else None
        )
        summary["wer_undisturbed_vs_reference"] = round(
            corpus_word_error_rate([(reference, t) for t in undisturbed]), 4
        )
    return {"summary": summary, "undisturbed": undisturbed, "runs": kills}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--undisturbed", type=int, default=3)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--proxy", choices=PROXIES, default="nginx")
    parser.add_argument("--clip", default="jfk_16k.wav", help="a 16-bit mono WAV in test_audio/")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.nodes < 2 or args.kills < 0 or args.undisturbed < 1:
        parser.error("need --nodes >= 2, --kills >= 0, --undisturbed >= 1")
    started = time.monotonic()
    with Cluster(args.nodes, proxy=args.proxy, env=NODE_ENV) as cluster:
        out = asyncio.run(bench(args, cluster))
    meta = {
        "command": "python -m bench.resume " + " ".join(argv if argv is not None else sys.argv[1:]),
        "nodes": args.nodes,
        "proxy": args.proxy,
        "clip": args.clip,
        "kill_window_s": [FIRST_CUT_SEC, LAST_CUT_SEC],
        "wall_s": round(time.monotonic() - started, 1),
    }
    result = {**meta, **out}
    print(json.dumps(result["summary"], indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
