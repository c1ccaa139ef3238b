"""Admission under overload: N nodes behind a proxy, offered twice what they can keep.

    python -m bench.cluster --nodes 2 --proxy nginx [--seconds 30] [--json FILE]

Starts a local cluster (`deploy.cluster`), reads the capacity the nodes measured
(``/ready``), then offers ``--factor`` (2) times that many real-time streams of
continuous speech through the proxy at once, twice: with admission control on,
and with ``ADMISSION_CONTROL=false`` (every stream admitted up to MAX_SESSIONS).
Prints, for each: offered, admitted, refused with 503 before the upgrade, the p95
lag of the admitted streams' finals, and how many fell behind (their
``complete`` came more than `FALL_BEHIND_SEC` after ``stop``). The goal: with
admission on, every admitted stream keeps p95 lag ≤ 3 s and none falls behind.

The streams, lags and "fell behind" are `bench.benchmark`'s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from websockets.exceptions import InvalidStatus

from bench.benchmark import (
    FALL_BEHIND_SEC,
    SAMPLE_RATE,
    continuous_speech,
    lags,
    stop_to_complete,
    stream,
)
from bench.replay import percentile
from clients.asr_client import ServerBusy, StreamError, StreamResult
from deploy.cluster import PROXIES, Cluster

# Streams start this far apart (a burst of handshakes, not one instant).
STAGGER_SEC = 0.1


REFUSED_503 = "refused_503"  # before the upgrade: what a balancer can act on
REFUSED_1013 = "refused_1013"  # accepted, then closed: the fallback

REFUSED = (REFUSED_503, REFUSED_1013)

Outcome = StreamResult | str


async def offer(url: str, n: int, seconds: float) -> list[Outcome]:
    """``n`` real-time streams at once: each a result, how it was refused, or the error
    that ended it."""
    pcm = continuous_speech(seconds)

    async def one(i: int) -> Outcome:
        await asyncio.sleep(i * STAGGER_SEC)
        try:
            return await stream(url, pcm, SAMPLE_RATE)
        except ServerBusy as exc:
            # The client gives a Retry-After figure only for an HTTP 503 at the handshake.
            return REFUSED_503 if exc.retry_after is not None else REFUSED_1013
        except InvalidStatus as exc:
            return REFUSED_503 if exc.response.status_code == 503 else str(exc)
        except (StreamError, OSError) as exc:
            return f"{type(exc).__name__}: {exc}"

    return list(await asyncio.gather(*(one(i) for i in range(n))))


def figures(outcomes: list[Outcome]) -> dict[str, Any]:
    admitted = [o for o in outcomes if isinstance(o, StreamResult)]
    all_lags = [lag for r in admitted for lag in lags(r)]
    behind = [stop_to_complete(r) > FALL_BEHIND_SEC for r in admitted]
    return {
        "offered": len(outcomes),
        "admitted": len(admitted),
        "refused_503": outcomes.count(REFUSED_503),
        "refused_1013": outcomes.count(REFUSED_1013),
        "failed": [o for o in outcomes if isinstance(o, str) and o not in REFUSED],
        "lag_p50_s": percentile(all_lags, 50),
        "lag_p95_s": percentile(all_lags, 95),
        "stop_to_complete_max_s": round(max(map(stop_to_complete, admitted)), 3)
        if admitted
        else None,
        "fell_behind": sum(behind),
    }


def capacity_of(cluster: Cluster) -> int:
    return sum(int(node.ready()[1]["capacity"]) for node in cluster.nodes)


def run(args: argparse.Namespace, admission: bool, offered: int | None) -> dict[str, Any]:
    env = {"ADMISSION_CONTROL": "true" if admission else "false"}
    with Cluster(args.nodes, proxy=args.proxy, env=env) as cluster:
        capacity = capacity_of(cluster)
        n = offered if offered is not None else args.factor * capacity
        print(
            f"admission {'on' if admission else 'off'}: capacity {capacity}, offering {n} "
            f"streams of {args.seconds:g} s through {args.proxy}",
            file=sys.stderr,
        )
        outcomes = asyncio.run(offer(cluster.url, n, args.seconds))
        return {"admission": admission, "capacity": capacity, **figures(outcomes)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--proxy", choices=PROXIES, default="nginx")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each stream")
    parser.add_argument("--factor", type=int, default=2, help="offered load / capacity")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    on = run(args, admission=True, offered=None)
    # The same offered load without admission: what admitting everyone costs.
    off = run(args, admission=False, offered=on["offered"])
    rows = [on, off]
    columns = ["offered", "admitted", "refused_503", "refused_1013", "lag_p50_s", "lag_p95_s"]
    columns.append("fell_behind")
    print("admission".ljust(10) + "capacity".rjust(10) + "".join(c.rjust(13) for c in columns))
    for row in rows:
        print(
            ("on" if row["admission"] else "off").ljust(10)
            + str(row["capacity"]).rjust(10)
            + "".join(str(row[c]).rjust(13) for c in columns)
        )
        if row["failed"]:
            print(f"  failed otherwise: {row['failed']}")
    if args.json:
        meta = {"nodes": args.nodes, "proxy": args.proxy, "seconds": args.seconds}
        args.json.write_text(json.dumps({**meta, "runs": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
