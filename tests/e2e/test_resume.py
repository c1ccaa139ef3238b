"""Resumed streams (issue 25): a node killed or drained, or the network cut, mid-stream.

Everything runs through a proxy in front of real nodes (deploy.cluster): the scripted
tests behind nginx and HAProxy both, the real model's behind nginx. The cut's
bookkeeping runs on the scripted engine (tests/support/scripted.py: ``w<k>`` over
[k, k + 0.5] s of each connection's audio, and ``end<samples>`` at its end), whose
sample counts show that exactly the audio after the last final was resent. Whether
a real transcript survives the cut runs on the real model (tiny.en) with real speech.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection

from bench.stream_latency import doubled_phrases, longest_dropped_run, word_error_rate
from clients.asr_client import (
    ASRStreamClient,
    ResumeFailed,
    StreamResult,
    read_wav,
)
from clients.resume import ResumePolicy
from deploy.cluster import PROXIES, Cluster, Node, Proxy
from tests.e2e.cluster_support import (
    AUDIO,
    RATE,
    active_sessions,
    eventually,
    open_session,
    require_proxy,
    speak,
)
from tests.support.commands import asr_stream, client_env

pytestmark = pytest.mark.e2e

PROXY: Proxy = "nginx"  # the real model's tests
SCRIPTED = {
    "ASR_PLUGINS": "counting=tests.support.scripted:counting",
    "DEFAULT_BACKEND": "counting",
    "MAX_SESSIONS": "2",
    "SHUTDOWN_GRACE_SEC": "1",
    "RETRY_AFTER_SEC": "1",
}
SECONDS = 6  # of scripted audio per stream, at real-time pace
CUT_AT_SEC = 2.7  # into it: after the first finals (w0, w1), mid-"second"
CLIP = "jfk_16k.wav"  # 11 s: "And so my fellow Americans, ask not what your country can do …"
SPEECH_CUT_AT_SEC = 5.5  # "… ask not what | your country …": mid-sentence
# The resumed transcript against the same clip undisturbed, on this machine (CTranslate2's
# words differ between CPU backends: the structure is compared, not a stored text). The
# new node decodes the rest of the sentence without the words before the cut as context,
# and the word the cut falls in is heard in two pieces: one word misheard, split or merged
# there (2 edits), and one elsewhere from the different pass boundaries (one more),
# of the clip's 22 words.
MAX_WER_VS_UNDISTURBED = 3 / 22
# A word cut in two may be heard as nothing on both sides; two words in a row never.
MAX_DROPPED_RUN = 1
TIME_SLACK_SEC = 0.001  # times are rounded to ms on the wire


@pytest.fixture(scope="module", params=PROXIES)
def proxy(request: pytest.FixtureRequest) -> Proxy:
    require_proxy(request.param)
    return request.param  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def scripted(proxy: Proxy, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp(f"resume-scripted-{proxy}")
    with Cluster(3, proxy=proxy, env=SCRIPTED, workdir=workdir) as cluster:
        yield cluster


def silence(seconds: float) -> bytes:
    return b"\x00\x00" * int(seconds * RATE)


# -- what a stream saw ---------------------------------------------------------------


@dataclass
class Seen:
    """A resumed stream's messages, split at each new connection's ``metadata``."""

    result: StreamResult
    error: BaseException | None = None

    @property
    def connections(self) -> list[list[dict[str, Any]]]:
        parts: list[list[dict[str, Any]]] = []
        for received in self.result.messages:
            message = json.loads(received.message.to_json())
            if message["type"] == "metadata":
                parts.append([])
            parts[-1].append(message)
        return parts

    @property
    def finals(self) -> list[dict[str, Any]]:
        return [m for part in self.connections for m in part if m.get("is_final")]

    @property
    def transcript(self) -> str:
        return "".join(m["text"] for m in self.finals).strip()


def check_times_go_on(finals: list[dict[str, Any]]) -> None:
    """Finals in stream order: none starts before the previous one ended."""
    for before, after in itertools.pairwise(finals):
        assert after["start"] >= before["end"] - TIME_SLACK_SEC, (before, after)
        assert after["end"] >= after["start"], after


def check_resent_exactly(seen: Seen, total_sec: float, reconnects: int | None = 1) -> None:
    """The scripted engine's sample counts: the new connection heard exactly the audio
    after the last final received, so the stream's audio was heard once, all of it.
    ``reconnects``: how many attempts it took (None: any number, the last one took)."""
    assert seen.error is None, seen.error
    parts = seen.connections
    resumes = seen.result.resumes
    assert len(parts) == 2, [p[0] for p in parts]
    assert len(resumes) == reconnects if reconnects else resumes, resumes
    resumed = resumes[-1]
    # Every attempt resumes at the same point: no final came between them.
    assert {r.offset_sec for r in resumes} == {resumed.offset_sec}, resumes
    before = [m for m in parts[0] if m.get("is_final")]
    assert before, "the cut came before any final"
    assert resumed.offset_sec == pytest.approx(before[-1]["end"], abs=TIME_SLACK_SEC)
    after = [m for m in parts[1] if m.get("is_final")]
    assert after[0]["start"] >= resumed.offset_sec - TIME_SLACK_SEC
    # The new session's first final is not the stream's: it keeps its separating space.
    assert after[0]["text"].startswith(" "), after[0]
    assert all(re.fullmatch(r"w\d+|end\d+", w) for w in seen.transcript.split()), seen.transcript
    last_word = seen.transcript.split()[-1]
    assert last_word.startswith("end"), seen.transcript
    heard = int(last_word.removeprefix("end")) / RATE
    assert resumed.offset_sec + heard == pytest.approx(total_sec, abs=1 / RATE), seen.transcript
    assert parts[1][-1]["type"] == "complete" and seen.result.close_code == 1000
    check_times_go_on(seen.finals)


def counted(text: str) -> bool:
    """The scripted engine's first words, in order, with no end: w0 w1 … (at least w0)."""
    words = text.split()
    return bool(words) and words == [f"w{k}" for k in range(len(words))]


async def serving_node(cluster: Cluster, busy_before: list[int] | None = None) -> Node:
    """The node whose session count went up by one (the stream just opened)."""
    base = busy_before or [0] * len(cluster.nodes)

    def one_more() -> bool:
        return sum((c or 0) - b for c, b in zip(active_sessions(cluster), base, strict=True)) == 1

    await eventually(one_more, "the stream is on a node")
    counts = active_sessions(cluster)
    index = next(i for i, (c, b) in enumerate(zip(counts, base, strict=True)) if (c or 0) > b)
    return cluster.nodes[index]


async def stream_seen(
    url: str, pcm: bytes, policy: ResumePolicy | None = None, **kwargs: Any
) -> Seen:
    result = StreamResult()
    try:
        async for _ in ASRStreamClient(url).stream(
            pcm, sample_rate_hertz=RATE, timings=result, resume_policy=policy, **kwargs
        ):
            pass
    except Exception as exc:
        return Seen(result, exc)
    return Seen(result)


async def restart(cluster: Cluster, node: Node) -> None:
    if node.running:
        await asyncio.to_thread(cluster.stop_node, node)
    await asyncio.to_thread(cluster.start_node, node)


# -- a relay whose connections can be cut (a network drop) ----------------------------


@dataclass
class Relay:
    """A TCP relay in front of the proxy; `cut` resets every connection through it,
    as a dropped network does (the client sees no close frame: 1006)."""

    target_port: int
    port: int = 0
    links: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/asr-stream"

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(OSError):
            writer.close()

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.links.append((writer, up_writer))
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    def cut(self) -> int:
        for down, up in self.links:
            down.transport.abort()  # an RST to the client: no close frame
            up.transport.abort()
        cut, self.links = len(self.links), []
        return cut


@contextlib.asynccontextmanager
async def relay_to(port: int) -> AsyncIterator[Relay]:
    relay = Relay(port)
    server = await asyncio.start_server(relay._link, "127.0.0.1", 0)
    relay.port = server.sockets[0].getsockname()[1]
    try:
        yield relay
    finally:
        relay.cut()
        server.close()
        await server.wait_closed()


# -- the scripted engine: exactly the audio after the last final is resent ---------------


async def test_a_killed_node_resumes_on_another_with_the_audio_after_the_last_final(
    scripted: Cluster,
) -> None:
    stream = asyncio.create_task(stream_seen(scripted.url, silence(SECONDS)))
    node = await serving_node(scripted)
    await asyncio.sleep(CUT_AT_SEC)
    scripted.kill_node(node)
    seen = await stream
    check_resent_exactly(seen, SECONDS)
    assert seen.result.resumes[0].reason == "connection lost (1006)"
    await restart(scripted, node)


async def test_a_drained_node_ends_with_1012_and_the_stream_goes_on_elsewhere(
    scripted: Cluster,
) -> None:
    stream = asyncio.create_task(stream_seen(scripted.url, silence(SECONDS)))
    node = await serving_node(scripted)
    await asyncio.sleep(CUT_AT_SEC - 1.0)  # the drain's grace is 1 s
    status, _ = scripted.drain_node(node)
    assert status == 202
    seen = await stream
    check_resent_exactly(seen, SECONDS)
    assert seen.result.resumes[0].reason == "node draining (1012, shutting_down)"
    # The drain flushed everything that node heard (its `end<n>`): the resume starts
    # right there, and neither its `shutting_down` nor its `complete` reached the caller.
    drained = [m for m in seen.connections[0] if m.get("is_final")][-1]
    heard = int(drained["text"].split()[-1].removeprefix("end")) / RATE
    assert seen.result.resumes[0].offset_sec == pytest.approx(heard, abs=1 / RATE)
    types = [r.message.type for r in seen.result.messages]
    assert "error" not in types and types.count("complete") == 1
    await restart(scripted, node)


async def test_a_network_drop_resumes_through_the_same_address(scripted: Cluster) -> None:
    async with relay_to(scripted.port) as relay:
        stream = asyncio.create_task(stream_seen(relay.url, silence(SECONDS)))
        await serving_node(scripted)
        await asyncio.sleep(CUT_AT_SEC)
        assert relay.cut() == 1
        seen = await stream
    check_resent_exactly(seen, SECONDS)
    assert seen.result.resumes[0].reason == "connection lost (1006)"
    await eventually(lambda: active_sessions(scripted) == [0, 0, 0], "the sessions ended")


async def test_a_restarted_proxy_resumes_the_stream_and_every_second_counts(
    scripted: Cluster,
) -> None:
    """The proxy process itself stopped (every connection through it cut) and started
    again on the same port: the client reconnects once it answers, and resumes."""
    stream = asyncio.create_task(stream_seen(scripted.url, silence(SECONDS)))
    await serving_node(scripted)
    await asyncio.sleep(CUT_AT_SEC)
    old_pid = scripted.describe()["proxy_pid"]
    await asyncio.to_thread(scripted.stop_proxy)
    stopped = time.monotonic()
    await asyncio.to_thread(scripted.start_proxy)
    down_sec = time.monotonic() - stopped
    assert scripted.describe()["proxy_pid"] != old_pid
    seen = await stream
    print(f"{scripted.proxy} down {down_sec:.2f} s; reconnects: {seen.result.resumes}")
    # The first reconnect waits 0.125-0.25 s: it may find the port closed, and the next
    # one (after 0.25-0.5 s more) gets through; five attempts span at least 3.9 s.
    check_resent_exactly(seen, SECONDS, reconnects=None)
    assert seen.result.resumes[0].reason == "connection lost (1006)"
    await eventually(lambda: active_sessions(scripted) == [0, 0, 0], "the sessions ended")


async def test_every_node_full_on_reconnect_retries_after_retry_after_then_gives_up(
    scripted: Cluster,
) -> None:
    """Two nodes full, a library stream and a CLI on the third, which is killed."""
    if scripted.proxy != "nginx":
        # The held sessions go straight to the nodes, and HAProxy's leastconn counts only
        # its own connections: the CLI goes to a full node, and its 3 retries may all land
        # on full ones. The give-up under test is the client's, the same behind either.
        pytest.skip("the setup needs nginx's every-node-once retries")
    victim, *others = scripted.nodes
    held: list[ClientConnection] = [await open_session(n.ws_url) for n in others for _ in "ab"]
    policy = ResumePolicy(max_attempts=3)
    library = asyncio.create_task(stream_seen(scripted.url, silence(SECONDS), policy))
    cli = await asyncio.create_subprocess_exec(
        *asr_stream(),
        "--json",
        "-",
        "--url",
        scripted.url,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=client_env(),
    )
    assert cli.stdin is not None
    cli.stdin.write(silence(SECONDS))  # the CLI paces a pipe as it comes: it is all there
    await cli.stdin.drain()
    try:
        await eventually(lambda: active_sessions(scripted)[0] == 2, "both streams on node 1")
        await asyncio.sleep(CUT_AT_SEC)
        started = time.monotonic()
        scripted.kill_node(victim)
        seen = await library
        gave_up_after = time.monotonic() - started
        cli.stdin.close()
        out, err = await asyncio.wait_for(cli.communicate(), 60)
    finally:
        for ws in held:
            await ws.close()
    # The library: three reconnects, each refused; then ResumeFailed says what happened.
    # nginx tries every node: two answer 503, the dead one refuses the connection, and
    # nginx passes on the last answer: the 503 (with Retry-After), or a 502 when it tried
    # the dead node last (max_fails=0 never marks it down).
    assert isinstance(seen.error, ResumeFailed), seen.error
    attempts = seen.error.attempts
    assert [a.attempt for a in attempts] == [1, 2, 3]
    assert attempts[0].reason == "connection lost (1006)"
    refusals = ("server busy (HTTP 503, server_full)", "HTTP 502")
    assert all(a.reason in refusals for a in attempts[1:]), attempts
    # After a 503 the wait honours its Retry-After (1 s); the backoff alone is shorter.
    assert all(a.delay_sec >= 1.0 for a in attempts[1:] if a.reason.startswith("server busy"))
    assert gave_up_after >= sum(a.delay_sec for a in attempts)
    assert "3 reconnects failed" in seen.error.detail and seen.error.code == "resume_failed"
    finals = [m for m in seen.connections[0] if m.get("is_final")]
    assert counted(" ".join(m["text"] for m in finals)), finals  # every final it got
    assert seen.error.offset_sec == finals[-1]["end"]
    # The CLI: five attempts on stderr, the give-up, exit 5; the finals it got on stdout.
    assert cli.returncode == 5, err.decode()
    printed = [json.loads(line) for line in out.decode().splitlines()]
    got = [m for m in printed if m.get("is_final")]
    assert counted(" ".join(m["text"] for m in got)), printed
    assert printed[-1]["type"] == "error" and printed[-1]["code"] == "resume_failed"
    lines = err.decode().splitlines()
    said = [line for line in lines if ", attempt " in line]
    assert len(said) == 5, err.decode()
    end = got[-1]["end"]
    assert said[0] == f"connection lost (1006); resuming at {end:.2f} s, attempt 1/5"
    assert said[-1].endswith("attempt 5/5") and said[-1].startswith(refusals)
    assert lines[-1].startswith("error: gave up resuming: the connection was lost"), lines
    await restart(scripted, victim)


async def test_without_resume_a_cut_is_an_error_as_before(scripted: Cluster) -> None:
    async with relay_to(scripted.port) as relay:
        stream = asyncio.create_task(stream_seen(relay.url, silence(4), resume=False))
        await serving_node(scripted)
        await asyncio.sleep(1.5)
        relay.cut()
        seen = await stream
    assert seen.error is not None and "code 1006 before complete" in str(seen.error)
    assert seen.result.resumes == [] and len(seen.connections) == 1


# -- real speech, the real model ------------------------------------------------------


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Two nodes on tiny.en: one to lose, one to resume on."""
    require_proxy(PROXY)
    env = {"SHUTDOWN_GRACE_SEC": "2", "LOCAL_CAPACITY": "2"}
    workdir = tmp_path_factory.mktemp("resume-speech")
    with Cluster(2, proxy=PROXY, env=env, workdir=workdir) as cluster:
        yield cluster


@pytest.fixture
def revive(speech: Cluster) -> Iterator[None]:
    """After a test, start any node it left dead (a failed assertion before its
    restart), so the next test still has a node to resume on."""
    yield
    for node in speech.nodes:
        if not node.running:
            speech.start_node(node)


@pytest.fixture(scope="module")
def undisturbed(speech: Cluster) -> str:
    """The clip's transcript through the proxy, nothing cut."""
    outcome = asyncio.run(speak(speech.url, CLIP))
    assert outcome.complete, outcome.describe()
    return outcome.result.transcript


def check_every_word(transcript: str, undisturbed: str) -> None:
    wer = word_error_rate(undisturbed, transcript)
    print(f"resumed vs undisturbed: WER {wer:.3f}\n  {undisturbed}\n  {transcript}")
    assert longest_dropped_run(undisturbed, transcript) <= MAX_DROPPED_RUN, (
        undisturbed,
        transcript,
    )
    assert doubled_phrases(undisturbed, transcript) == [], (undisturbed, transcript)
    assert word_error_rate(undisturbed, transcript) <= MAX_WER_VS_UNDISTURBED, (
        undisturbed,
        transcript,
    )


@pytest.mark.usefixtures("revive")
async def test_the_cli_survives_a_kill_9_mid_sentence_with_every_word(
    speech: Cluster, undisturbed: str
) -> None:
    cli = await asyncio.create_subprocess_exec(
        *asr_stream(),
        "--json",
        str(AUDIO / CLIP),
        "--url",
        speech.url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=client_env(),
    )
    assert cli.stdout is not None and cli.stderr is not None
    node = await serving_node(speech)
    await asyncio.sleep(SPEECH_CUT_AT_SEC)
    speech.kill_node(node)
    killed_at = time.monotonic()
    lines: list[tuple[float, dict[str, Any]]] = []
    while raw := await asyncio.wait_for(cli.stdout.readline(), 60):
        lines.append((time.monotonic(), json.loads(raw)))
    err = (await cli.stderr.read()).decode()
    assert await cli.wait() == 0, err
    messages = [m for _, m in lines]
    assert [m["type"] for m in messages].count("metadata") == 2, err
    assert messages[-1]["type"] == "complete"
    finals = [m for m in messages if m.get("is_final")]
    check_times_go_on(finals)
    second = next(i for i, m in enumerate(messages) if m["type"] == "metadata" and i > 0)
    first_final_after = next(m for m in messages[second:] if m.get("is_final"))
    # A loaded machine may not have made anything final before the cut: then the new
    # connection's first final is the stream's first, without a separating space.
    # (A final with no words before the cut leaves nothing to separate from.)
    if any(m.get("is_final") and m["text"].strip() for m in messages[:second]):
        assert first_final_after["text"][0].isspace(), first_final_after
    resumed = [line for line in err.splitlines() if "resuming at" in line]
    assert len(resumed) == 1 and resumed[0].startswith("connection lost (1006); resuming at ")
    transcript = "".join(m["text"] for m in finals).strip()
    check_every_word(transcript, undisturbed)
    # Time from the kill to the new connection's first transcript (issue 25: ≤ 2 s at p95
    # is the goal; one sample on a shared machine is only bounded loosely here).
    first_new = next(at for at, m in lines[second:] if m["type"] == "transcript")
    print(f"kill -9 → first new transcript: {first_new - killed_at:.2f} s")
    assert first_new - killed_at < 10.0
    await restart(speech, node)


@pytest.mark.usefixtures("revive")
async def test_a_drained_node_hands_the_sentence_to_the_other_with_every_word(
    speech: Cluster, undisturbed: str
) -> None:
    pcm, rate = read_wav(AUDIO / CLIP)
    stream = asyncio.create_task(
        ASRStreamClient(speech.url).transcribe(pcm, sample_rate_hertz=rate)
    )
    node = await serving_node(speech)
    await asyncio.sleep(SPEECH_CUT_AT_SEC - 2.0)  # the grace is 2 s: cut mid-sentence
    assert speech.drain_node(node)[0] == 202
    result = await stream
    assert [r.message.type for r in result.messages].count("metadata") == 2
    assert len(result.resumes) == 1
    assert result.resumes[0].reason == "node draining (1012, shutting_down)"
    assert result.close_code == 1000 and result.messages[-1].message.type == "complete"
    finals = [json.loads(t.to_json()) for t in result.finals]
    check_times_go_on(finals)
    types = [r.message.type for r in result.messages]
    second = types.index("metadata", 1)
    after = next(r.message for r in result.messages[second:] if r.message.type == "transcript" and r.message.is_final)  # fmt: skip
    said_before = any(
        r.message.type == "transcript" and r.message.is_final and r.message.text.strip()
        for r in result.messages[:second]
    )
    assert after.text[0].isspace() or not said_before, after
    check_every_word(result.transcript, undisturbed)


# -- the browser page -------------------------------------------------------------------


def test_the_page_resumes_its_microphone_stream_on_another_node(scripted: Cluster) -> None:
    """Real Chromium through nginx, a fake microphone, the serving node killed mid-stream."""
    from playwright.sync_api import sync_playwright

    from tests.e2e.test_browser import STATE_IS, launch_with_microphone, watch

    with sync_playwright() as playwright:
        browser = launch_with_microphone(playwright, AUDIO / "en_16k.wav")
        try:
            page = browser.new_page()
            problems = watch(page)
            page.goto(scripted.http_url + "/")
            # The page picks the server's default backend (the scripted one) from /backends.
            page.wait_for_function("() => document.querySelector('#backend').value === 'counting'")
            page.click("#start")
            page.wait_for_function(STATE_IS, arg="streaming", timeout=20_000)
            transcript = "() => document.querySelector('#transcript').textContent"
            page.wait_for_function(f"() => ({transcript})().includes('w1')", timeout=15_000)
            counts = active_sessions(scripted)
            node = scripted.nodes[counts.index(1)]
            scripted.kill_node(node)
            page.wait_for_function(STATE_IS, arg="reconnecting", timeout=10_000)
            said = page.text_content("#status") or ""
            page.wait_for_function(STATE_IS, arg="streaming", timeout=10_000)
            before = page.evaluate(transcript)
            page.wait_for_function(f"() => ({transcript})().length > {len(before)}", timeout=15_000)
            page.click("#stop")
            page.wait_for_function(STATE_IS, arg="done", timeout=20_000)
            text = page.evaluate(transcript)
        finally:
            browser.close()
    assert re.fullmatch(
        r"reconnecting: connection lost \(1006\); resuming at \d+\.\d\d s, attempt 1/5", said
    ), said
    # Two sessions' counts, each in order, joined with a space: w0 … wK w0 … wM end<n>.
    words = text.split()
    assert all(re.fullmatch(r"w\d+|end\d+", w) for w in words), text
    restart_at = next(i for i, w in enumerate(words) if i > 0 and w == "w0")
    assert counted(" ".join(words[:restart_at])), text
    assert counted(" ".join(words[restart_at:-1])) and words[-1].startswith("end"), text
    assert problems == []
    scripted.start_node(node)
