"""What the Google bridge adds: per-chunk latency both ways, memory per session, errors.

    python -m bench.google_bridge                  # 1, 100 and 200 concurrent sessions
    python -m bench.google_bridge --sessions 50 --seconds 20 --json

Three processes on this machine, so one monotonic clock (CLOCK_MONOTONIC is
system-wide on Linux) times everything:

* the fake Speech server (`tests/google/fake_speech.py`) in a child process,
  capped at 100 concurrent streams per HTTP/2 connection like Google's front
  ends; it stamps each audio request when gRPC hands it over, and puts its send
  time into every result's text (``… @<monotonic_ns>``);
* the real service (`run.py`, default backend faster-whisper) with
  ``GOOGLE_SPEECH_ENDPOINT`` pointing at the fake;
* this process: N WebSocket clients streaming ``--seconds`` of 16 kHz audio at
  real-time pace in 100 ms frames, sessions staggered over a second.

Figures:

* **up**: client sends a frame → the fake receives the request carrying its
  last byte (WebSocket hop + bridge + gRPC hop).
* **down**: the fake sends a result → the client receives the transcript
  (gRPC hop + bridge + WebSocket hop).
* **RSS/session**: service RSS with N sessions streaming, minus RSS before,
  over N.

Both latencies include the two loopback transports, so they are upper bounds
of what the bridge itself adds. In production the clients and Google are other
machines; here the fake server and the clients (the load) run on CPU 0 only
(``--load-cpus``), and the service keeps every CPU. Sharing both of this
machine's two cores with the load, the service's p99 measured the load's
preemption of it: down p99 11-17 ms at 100 sessions where the load pinned to
one core gave 2.6-3.8 ms (``--load-cpus all`` to reproduce).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import multiprocessing as mp
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np
import websockets

from bench.server import ROOT, cpu_seconds, free_port, wait_ready

RATE = 16_000
FRAME_MS = 100
FRAME_BYTES = RATE * 2 * FRAME_MS // 1000
STAMP = re.compile(r"@(\d+)")
GFE_STREAMS_PER_CONNECTION = 100
# Sessions start at random moments over one second (the fake's final period), as
# independent clients would, instead of all finalising in the same 100 ms.
STAGGER_SEC = 1.0


# --------------------------------------------------------------------------- the fake, in a child


def _fake_main(conn: Connection, max_streams: int) -> None:
    from tests.google.fake_speech import FakeSpeechServer, Script

    with FakeSpeechServer(
        Script(word_sec=0.5, words_per_final=2, stamp=True),
        max_concurrent_streams=max_streams,
    ) as fake:
        conn.send(fake.endpoint)
        while (command := conn.recv()) != "stop":
            if command == "records":
                conn.send(
                    [
                        {
                            "tag": int.from_bytes(s.audio[:2], "little", signed=True),
                            "arrivals": s.arrivals,
                            "status": s.status,
                        }
                        for s in fake.streams
                        if s.arrivals
                    ]
                )
            elif command == "clear":
                fake.streams.clear()


@contextlib.contextmanager
def fake_server() -> Iterator[tuple[str, Connection, int]]:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_fake_main, args=(child, GFE_STREAMS_PER_CONNECTION), daemon=True)
    proc.start()
    try:
        assert proc.pid is not None
        yield parent.recv(), parent, proc.pid
    finally:
        parent.send("stop")
        proc.join(10)
        if proc.is_alive():
            proc.kill()


# --------------------------------------------------------------------------- the service


@contextlib.contextmanager
def service(endpoint: str, folder: Path, cpus: set[int]) -> Iterator[tuple[str, int]]:
    """``run.py`` with the bridge probes, on ``cpus`` and a free port; yields (URL, pid)."""
    port = free_port()
    log = folder / "service.log"
    env = {
        **os.environ,
        "PROBE_DIR": str(folder),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "GOOGLE_SPEECH_ENDPOINT": endpoint,
        "MAX_SESSIONS": "1000",
        "LOG_LEVEL": "warning",
    }
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.google_bridge_probe"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=out,
            # Before any thread of the service exists: they all inherit it.
            preexec_fn=lambda: os.sched_setaffinity(0, cpus),
        )
        try:
            try:
                wait_ready(port, proc)
            except RuntimeError as exc:
                raise RuntimeError(f"{exc}; see {log}") from None
            yield f"ws://127.0.0.1:{port}/ws/asr-stream", proc.pid
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def probe_results(folder: Path, name: str) -> dict[str, list[float]]:
    """The service's probe figures since the last call (see `bench.google_bridge_probe`)."""
    (folder / f"dump-{name}").touch()
    result = folder / f"result-{name}.json"
    deadline = time.monotonic() + 10
    while not result.exists():
        if time.monotonic() > deadline:
            raise RuntimeError("the service's probe did not answer")
        time.sleep(0.05)
    figures: dict[str, list[float]] = json.loads(result.read_text())
    return figures


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS (kB) and Threads of a process, from /proc."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "Threads"):
            values[key] = int(rest.split()[0])
    return values


# --------------------------------------------------------------------------- clients


@dataclass
class Session:
    tag: int
    sent_ns: list[int] = field(default_factory=list)  # per frame
    down_ms: list[float] = field(default_factory=list)
    transcripts: int = 0
    error: str | None = None
    close_code: int | None = None


def audio_for(tag: int, seconds: float) -> bytes:
    samples = np.repeat(np.arange(round(seconds * 10), dtype=np.int16) % 1000 + 1000, RATE // 10)
    samples[0] = tag  # the fake reports each stream's first sample: which session it is
    return samples.astype("<i2").tobytes()


async def run_session(url: str, tag: int, seconds: float, start_at: float) -> Session:
    session = Session(tag)
    audio = audio_for(tag, seconds)
    try:
        async with websockets.connect(url, max_size=None, open_timeout=60, compression=None) as ws:
            config = {"sample_rate_hertz": RATE, "encoding": "LINEAR16", "backend": "google"}
            await ws.send(json.dumps(config))
            meta = json.loads(await ws.recv())
            if meta["type"] != "metadata":
                session.error = meta.get("code", "no metadata")
                return session

            async def send() -> None:
                loop = asyncio.get_running_loop()
                t0 = max(start_at, loop.time())
                for k, i in enumerate(range(0, len(audio), FRAME_BYTES)):
                    await asyncio.sleep(max(0.0, t0 + k * FRAME_MS / 1000 - loop.time()))
                    session.sent_ns.append(time.monotonic_ns())
                    await ws.send(audio[i : i + FRAME_BYTES])
                await ws.send(json.dumps({"type": "stop"}))

            sender = asyncio.create_task(send())
            async for raw in ws:
                now = time.monotonic_ns()
                message = json.loads(raw)
                if message["type"] == "transcript":
                    session.transcripts += 1
                    stamp = STAMP.search(message["text"])
                    if stamp:
                        session.down_ms.append((now - int(stamp.group(1))) / 1e6)
                elif message["type"] == "error":
                    session.error = message["code"]
            # The loop ends when the server closes (1000 after `complete`).
            await sender
            session.close_code = ws.close_code
    except Exception as exc:  # a bench: count it, go on
        session.error = session.error or type(exc).__name__
    return session


def percentile(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 2) if values else float("nan")


@dataclass(frozen=True)
class Latency:
    """Milliseconds: median, 99th percentile, worst, and how many were measured."""

    p50: float
    p99: float
    max: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Latency:
        worst = round(max(values), 2) if values else float("nan")
        return cls(percentile(values, 50), percentile(values, 99), worst, len(values))


@dataclass
class Result:
    sessions: int
    seconds: float
    ok: int
    errors: dict[str, int]
    bridge_up: Latency  # frame into the endpoint → its request serialized onto the gRPC stream
    bridge_down: Latency  # gRPC response deserialized → its transcript sent on the socket
    e2e_up: Latency  # client sends a frame → the fake server receives it
    e2e_down: Latency  # the fake server sends a result → the client receives it
    rss_base_mb: float
    rss_peak_mb: float
    rss_per_session_kb: float
    threads_peak: int
    cpu_cores: dict[str, float]  # CPU time / wall time, per process


async def measure(
    url: str, pid: int, fake: Connection, fake_pid: int, folder: Path, n: int, seconds: float
) -> Result:
    fake.send("clear")
    run_id = f"{n}-{time.monotonic_ns()}"  # the same N may be measured twice
    probe_results(folder, f"before-{run_id}")  # forget what came before
    base = proc_status(pid)
    pids = {"service": pid, "fake": fake_pid, "clients": os.getpid()}
    cpu_before = {name: cpu_seconds(p) for name, p in pids.items()}
    wall = time.monotonic()
    loop = asyncio.get_running_loop()
    start_at = loop.time() + 1.0 + n * 0.01  # all sessions open before audio starts
    tasks = [
        asyncio.create_task(
            run_session(url, tag, seconds, start_at + random.uniform(0, STAGGER_SEC))
        )
        for tag in range(1, n + 1)
    ]
    peak = dict(base)
    while not all(t.done() for t in tasks):
        await asyncio.sleep(0.5)
        now = proc_status(pid)
        peak = {k: max(peak[k], now[k]) for k in peak}
    sessions = [t.result() for t in tasks]
    wall = time.monotonic() - wall
    cpu = {name: round((cpu_seconds(p) - cpu_before[name]) / wall, 2) for name, p in pids.items()}
    bridge = probe_results(folder, f"after-{run_id}")
    fake.send("records")
    records = fake.recv()
    up = []
    for rec in records:
        session = sessions[rec["tag"] - 1]
        arrivals = rec["arrivals"]
        j = 0
        for k, sent in enumerate(session.sent_ns):
            end = (k + 1) * FRAME_BYTES
            while j < len(arrivals) and arrivals[j][0] < end:
                j += 1
            if j < len(arrivals):
                up.append((arrivals[j][1] - sent) / 1e6)
    errors: dict[str, int] = {}
    for s in sessions:
        if s.error or s.close_code != 1000:
            key = s.error or f"close {s.close_code}"
            errors[key] = errors.get(key, 0) + 1
    return Result(
        sessions=n,
        seconds=seconds,
        ok=n - sum(errors.values()),
        errors=errors,
        bridge_up=Latency.of(bridge["up_ms"]),
        bridge_down=Latency.of(bridge["down_ms"]),
        e2e_up=Latency.of(up),
        e2e_down=Latency.of([d for s in sessions for d in s.down_ms]),
        rss_base_mb=round(base["VmRSS"] / 1024, 1),
        rss_peak_mb=round(peak["VmRSS"] / 1024, 1),
        rss_per_session_kb=round((peak["VmRSS"] - base["VmRSS"]) / n, 1),
        threads_peak=peak["Threads"],
        cpu_cores=cpu,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 100, 200])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--load-cpus",
        default="0",
        help="CPUs of the fake server and the clients, e.g. 0 or 0,1, or 'all' (default: 0)",
    )
    args = parser.parse_args(argv)
    everything = os.sched_getaffinity(0)
    load = everything if args.load_cpus == "all" else {int(c) for c in args.load_cpus.split(",")}
    if len(everything) > 1:  # the fake (spawned below) inherits it
        os.sched_setaffinity(0, load & everything or everything)
    results = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        fake_server() as (endpoint, fake, fake_pid),
        service(endpoint, Path(tmp), everything) as (url, pid),
    ):
        run = functools.partial(measure, url, pid, fake, fake_pid, Path(tmp))
        asyncio.run(run(1, 2.0))  # warm-up: imports, the first channel
        for n in args.sessions:
            results.append(asyncio.run(run(n, args.seconds)))
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))
        return
    print(
        "sessions  ok | bridge up p50/p99  down p50/p99 | end-to-end up p50/p99  down p50/p99 "
        "| RSS/session threads CPU service/fake/clients | errors"
    )
    for r in results:
        print(
            f"{r.sessions:>8} {r.ok:>3} | {r.bridge_up.p50:>7.2f} {r.bridge_up.p99:>6.2f}"
            f" {r.bridge_down.p50:>8.2f} {r.bridge_down.p99:>6.2f} |"
            f" {r.e2e_up.p50:>13.2f} {r.e2e_up.p99:>6.2f} {r.e2e_down.p50:>8.2f}"
            f" {r.e2e_down.p99:>6.2f} | {r.rss_per_session_kb:>7.0f} kB {r.threads_peak:>7}"
            f" {r.cpu_cores['service']:.2f}/{r.cpu_cores['fake']:.2f}/{r.cpu_cores['clients']:.2f}"
            f" | {r.errors or '-'}"
        )
    print(
        "ms. bridge: frame into the endpoint → request serialized onto the gRPC stream; gRPC "
        "response deserialized → transcript sent. end-to-end: client → fake server, fake → client."
    )


if __name__ == "__main__":
    main()
