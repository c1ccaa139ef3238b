"""Nodes behind Debian's nginx and HAProxy: real processes on loopback (deploy.cluster).

Routing runs on a scripted engine (tests/support/scripted.py: one word per second
of audio, then ``end<samples>``), so three nodes start in seconds and leave the
cores free; drain and rolling restart stream real speech through the real model.
Every test runs behind each proxy with the repository's config.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Iterator

import pytest

from bench.stream_latency import longest_dropped_run, word_error_rate
from deploy.cluster import PROXIES, Cluster, Proxy
from tests.e2e.cluster_support import (
    Outcome,
    active_sessions,
    counted_to_the_end,
    eventually,
    finish,
    log_of,
    open_session,
    proxy_reloaded,
    refused,
    refused_total,
    require_proxy,
    speak,
)

pytestmark = pytest.mark.e2e

SCRIPTED = {
    "ASR_PLUGINS": "counting=tests.support.scripted:counting",
    # The default engine is loaded and warmed at start: the scripted one, not tiny.en.
    "DEFAULT_BACKEND": "counting",
    "MAX_SESSIONS": "2",
    "SHUTDOWN_GRACE_SEC": "10",
}
CLIP = "jfk_16k.wav"  # 11 s, "… ask not what your country can do for you …"
# A disturbed stream against the same clip undisturbed: no word dropped, and at most
# a word misheard differently (pass boundaries move with the load).
MAX_WER_VS_UNDISTURBED = 0.1


@pytest.fixture(scope="module", params=PROXIES)
def proxy(request: pytest.FixtureRequest) -> Proxy:
    require_proxy(request.param)
    return request.param  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def scripted(proxy: Proxy, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp(f"cluster-scripted-{proxy}")
    with Cluster(3, proxy=proxy, env=SCRIPTED, workdir=workdir) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def speech(proxy: Proxy, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three nodes on the real model (tiny.en)."""
    workdir = tmp_path_factory.mktemp(f"cluster-speech-{proxy}")
    env = {
        "MODEL_CACHE_DIR": str(tmp_path_factory.mktemp("models")),
        "SHUTDOWN_GRACE_SEC": "30",
        # Three nodes share this machine's 2 cores (one node's worth): each measured
        # its capacity at 1 stream while the others warmed up beside it. These tests
        # are about routing and drain, not capacity: room for 3 short clips each.
        "LOCAL_CAPACITY": "3",
    }
    with Cluster(3, proxy=proxy, env=env, workdir=workdir) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def undisturbed(speech: Cluster) -> str:
    """The clip's transcript through the proxy with nothing else going on."""
    outcome = asyncio.run(speak(speech.url, CLIP))
    assert outcome.complete, outcome.describe()
    return outcome.result.transcript


def assert_every_word(outcome: Outcome, undisturbed: str) -> None:
    assert outcome.complete, outcome.describe()
    transcript = outcome.result.transcript
    assert longest_dropped_run(undisturbed, transcript) == 0, (undisturbed, transcript)
    assert word_error_rate(undisturbed, transcript) <= MAX_WER_VS_UNDISTURBED, (
        undisturbed,
        transcript,
    )


# -- routing (scripted engine) -----------------------------------------------------------


async def test_six_sessions_spread_two_per_node_and_the_seventh_gets_503(
    scripted: Cluster,
) -> None:
    sessions = [await open_session(scripted.url) for _ in range(6)]
    assert active_sessions(scripted) == [2, 2, 2]

    # Every node is full: the proxy tried them all and passes the last 503 on,
    # before any upgrade (an HTTP status, not an accepted-then-closed socket).
    response = (await refused(scripted.url)).response
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) >= 1
    body = json.loads(response.body)
    assert body["type"] == "error" and body["code"] == "server_full" and body["detail"]
    assert active_sessions(scripted) == [2, 2, 2]

    ended = await asyncio.gather(*(finish(ws, 2) for ws in sessions))
    for e in ended:
        assert e.types[-1] == "complete" and "error" not in e.types
        assert e.close_code == 1000 and counted_to_the_end(e, 2), e
    await eventually(lambda: active_sessions(scripted) == [0, 0, 0], "all sessions closed")


async def test_a_full_node_sends_new_sessions_to_another(scripted: Cluster) -> None:
    first = scripted.nodes[0]
    # Filled behind the proxy's back: the proxy counts no connection on it and
    # tries it first, so each session below is refused there and replayed.
    direct = [await open_session(first.ws_url) for _ in range(2)]
    refusals_before = refused_total(scripted, 0)
    for _ in range(4):
        ws = await open_session(scripted.url)
        counts = active_sessions(scripted)
        assert counts[0] == 2 and sorted(c or 0 for c in counts[1:]) == [0, 1], counts
        ended = await finish(ws, 1)
        assert ended.close_code == 1000 and counted_to_the_end(ended, 1), ended
        await eventually(lambda: active_sessions(scripted) == [2, 0, 0], "the session closed")
    assert refused_total(scripted, 0) > refusals_before, "the proxy never tried the full node"
    for ws in direct:
        ended = await finish(ws, 1)
        assert ended.close_code == 1000 and counted_to_the_end(ended, 1), ended
    await eventually(lambda: active_sessions(scripted) == [0, 0, 0], "all sessions closed")


async def test_kill_9_ends_that_nodes_sessions_only_and_new_ones_avoid_it(
    scripted: Cluster,
) -> None:
    sessions = [await open_session(scripted.url) for _ in range(6)]
    assert active_sessions(scripted) == [2, 2, 2]
    victim = scripted.nodes[1]
    scripted.kill_node(victim)

    ended = await asyncio.gather(*(finish(ws, 2) for ws in sessions))
    # Its two clients see the connection end: no close frame, no `complete`.
    dropped = [e for e in ended if "complete" not in e.types]
    assert len(dropped) == 2, [e.types for e in ended]
    for e in dropped:
        assert e.close_code == 1006 and not e.close_frame, e
    # The other four go on to the end: every second counted, `complete`, 1000.
    for e in ended:
        if e not in dropped:
            assert e.close_code == 1000 and counted_to_the_end(e, 2), e
    await eventually(lambda: active_sessions(scripted) == [0, None, 0], "sessions closed")

    fresh = [await open_session(scripted.url) for _ in range(4)]
    assert active_sessions(scripted) == [2, None, 2]
    for e in await asyncio.gather(*(finish(ws, 1) for ws in fresh)):
        assert e.close_code == 1000 and counted_to_the_end(e, 1), e
    await eventually(lambda: active_sessions(scripted) == [0, None, 0], "sessions closed")

    # Every live node full (behind the proxy's back, so it counts no connection
    # anywhere and its order varies), one dead: a node's kind of 503 whichever node
    # the proxy tried last (nginx answered its own HTML 502 when that was the dead one,
    # HAProxy its HTML 503 "No server is available" when it had none left to try).
    live = [node for node in scripted.nodes if node is not victim]
    direct = [await open_session(node.ws_url) for node in live for _ in range(2)]
    for _ in range(6):
        response = (await refused(scripted.url)).response
        seen = (response.status_code, dict(response.headers), response.body)
        assert response.status_code == 503 and "Retry-After" in response.headers, seen
        assert int(response.headers["Retry-After"]) >= 1
        body = json.loads(response.body)
        assert body["type"] == "error" and body["code"] == "server_full", body
    for e in await asyncio.gather(*(finish(ws, 1) for ws in direct)):
        assert e.close_code == 1000 and counted_to_the_end(e, 1), e
    scripted.start_node(victim)  # whole again for whatever runs next


# -- drain and rolling restart (real speech, real model) ------------------------------


async def test_drain_lets_running_sessions_finish_with_every_word(
    speech: Cluster, undisturbed: str
) -> None:
    # Four sessions through the proxy: one node gets two.
    started = [asyncio.create_task(speak(speech.url, CLIP)) for _ in range(4)]
    await eventually(lambda: sum(c or 0 for c in active_sessions(speech)) == 4, "4 sessions")
    counts = active_sessions(speech)
    target = speech.nodes[counts.index(2)]
    await asyncio.sleep(2.0)  # well into the speech

    status, body = speech.drain_node(target)
    assert (status, body["status"], body["active_sessions"]) == (202, "draining", 2)
    status, ready = target.ready()
    assert status == 503 and ready["status"] == "draining"
    assert target.running  # the process does not exit (a Kubernetes preStop hook)

    # New sessions go to the other nodes.
    response = (await refused(target.ws_url)).response
    assert response.status_code == 503
    assert json.loads(response.body)["code"] == "shutting_down"
    before = active_sessions(speech)
    fresh = [await open_session(speech.url) for _ in range(2)]
    after = active_sessions(speech)
    index = speech.nodes.index(target)
    assert after[index] == before[index] and sum(c or 0 for c in after) == 6, (before, after)
    for ws in fresh:
        await ws.close()

    # The running ones finish (the grace is 30 s, the clip 11 s), every word there.
    for outcome in await asyncio.gather(*started):
        assert_every_word(outcome, undisturbed)
    await eventually(lambda: active_sessions(speech)[index] == 0, "the drained node emptied")
    assert target.running


async def test_rolling_restart_under_load_loses_no_session(
    speech: Cluster, undisturbed: str
) -> None:
    done = asyncio.Event()

    async def keep_talking() -> list[Outcome]:
        outcomes = []
        while not done.is_set():
            outcomes.append(await speak(speech.url, CLIP))
        return outcomes

    talkers = [asyncio.create_task(keep_talking()) for _ in range(2)]
    await asyncio.sleep(3.0)
    for node in speech.nodes:
        # SIGTERM: the node refuses new sessions, lets its own finish, then exits
        # (uvicorn re-raises the signal it handled once its shutdown is done).
        assert await asyncio.to_thread(speech.stop_node, node) in (0, -signal.SIGTERM)
        assert log_of(node).count("Finished server process") == 1
        await asyncio.to_thread(speech.start_node, node)
    done.set()
    outcomes = [o for talker in await asyncio.gather(*talkers) for o in talker]

    assert len(outcomes) >= 4
    for outcome in outcomes:
        assert_every_word(outcome, undisturbed)
    assert not any("Traceback" in log_of(node) for node in speech.nodes)


async def test_a_proxy_reload_does_not_cut_sessions(scripted: Cluster) -> None:
    sessions = [await open_session(scripted.url) for _ in range(3)]
    scripted.reload_proxy()
    await eventually(lambda: proxy_reloaded(scripted), "the proxy reloaded")
    # The old worker keeps the upgraded sessions to their end; the new one takes new ones.
    fresh = await open_session(scripted.url)
    for e in await asyncio.gather(*(finish(ws, 2) for ws in [*sessions, fresh])):
        assert e.types[-1] == "complete" and e.close_code == 1000 and counted_to_the_end(e, 2), e
