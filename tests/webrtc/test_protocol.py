"""`POST /webrtc/offer` against a real server process, with aiortc as the client.

The server runs the scripted engine (`tests.support.scripted`: one word ``w<k>``
per second of audio, ``end<samples>`` at the end), so sample counts and times
are exact. Media goes over the machine's own addresses (aioice leaves
127.0.0.1 out of its candidates).
"""

from __future__ import annotations

import asyncio
import gc
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest

pytest.importorskip("aiortc", reason="the 'webrtc' extra: pip install -e '.[webrtc]'")

import uvicorn
from aiortc import RTCPeerConnection

from app.main import create_app
from app.settings import Settings
from bench.server import free_port, running_server
from tests.e2e.test_hardening import BASE_ENV
from tests.webrtc.conftest import AUTH, KEY, ORIGIN, http_base
from tests.webrtc.peer import CONFIG, Peer, WavTrack

pytestmark = pytest.mark.e2e

RATE = 16000
# Audio in flight when `stop` is sent: aiortc's jitter buffer (4 packets, 80 ms), the
# server's stop grace (100 ms), the loop's scheduling.
STOP_SLACK = 0.25 * RATE


def tone(seconds: float) -> np.ndarray:
    """A 440 Hz tone (Opus keeps it; a constant level would be filtered out as DC)."""
    t = np.arange(int(seconds * RATE)) / RATE
    return (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)


async def metric(base: str, name: str) -> float:
    async with httpx.AsyncClient(timeout=5) as http:
        text = (await http.get(f"{base}/metrics", headers=AUTH)).text
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


async def settled(base: str, within: float = 10.0) -> None:
    """Until the server holds no session, peer connection or WebRTC task."""
    names = ("asr_active_sessions", "asr_webrtc_peer_connections", "asr_webrtc_sessions")
    deadline = time.monotonic() + within
    figures = {name: await metric(base, name) for name in names}
    while any(figures.values()):
        assert time.monotonic() < deadline, f"not freed: {figures}"
        await asyncio.sleep(0.2)
        figures = {name: await metric(base, name) for name in names}


async def stream(base: str, track: WavTrack, config: dict[str, object] = CONFIG) -> Peer:
    """Offer, stream the whole track, stop, collect up to `complete`."""
    peer = Peer(base)
    response = await peer.offer(track, config=config, headers=AUTH)
    assert response.status_code == 200, response.text
    metadata = await peer.until("metadata", 10)
    assert metadata["session_id"] == peer.answer["session_id"]
    await asyncio.wait_for(track.finished.wait(), 30)
    track.sent_at_stop = track.pts
    peer.send({"type": "stop"})
    await peer.until("complete", 15)
    return peer


async def test_stop_gives_finals_then_complete(scripted_server: str) -> None:
    base = http_base(scripted_server)
    track = WavTrack(tone(2.5), RATE)
    peer = await stream(base, track)
    sent = track.sent_at_stop
    try:
        kinds = [m["type"] for m in peer.messages]
        assert kinds[0] == "metadata" and kinds[-1] == "complete", kinds
        assert "error" not in kinds, peer.messages
        words = peer.transcript.split()
        assert words[:2] == ["w0", "w1"], words
        samples = int(words[-1].removeprefix("end"))
        # All the audio arrived once: 2.5 s, plus the silence the track sends after it
        # until `stop`, which ends the audio within its grace.
        assert abs(samples - sent) <= STOP_SLACK, (samples, sent)
        assert peer.finals[-1]["end"] == pytest.approx(samples / RATE, abs=0.002)
    finally:
        await peer.close()
    await settled(base)


async def test_only_the_audio_track_is_taken_a_video_one_is_answered_inactive(
    scripted_server: str,
) -> None:
    """A camera beside the microphone: the session reads one audio track, and aiortc
    decodes whatever it receives into a queue no one reads (about 13 MB a second of
    server memory for a video track). The answer turns every other section off."""
    from aiortc import VideoStreamTrack

    base = http_base(scripted_server)
    track = WavTrack(tone(2.5), RATE)
    peer = Peer(base)
    peer.pc.addTrack(VideoStreamTrack())
    peer.pc.addTrack(track)  # the first audio section: the session's
    peer.pc.addTrack(WavTrack(tone(2.5), RATE))  # a second microphone: not read either
    try:
        response = await peer.offer(None, headers=AUTH)
        assert response.status_code == 200, response.text
        sections = re.split(r"^m=", peer.answer["sdp"], flags=re.MULTILINE)[1:]
        directions = [
            (m.split()[0], re.search(r"^a=(sendrecv|sendonly|recvonly|inactive)", m, re.M)[1])  # type: ignore[index]
            for m in sections
            if m.startswith(("audio", "video"))
        ]
        assert directions == [("video", "inactive"), ("audio", "recvonly"), ("audio", "inactive")]
        await peer.until("metadata", 10)
        await asyncio.wait_for(track.finished.wait(), 30)
        peer.send({"type": "stop"})
        await peer.until("complete", 15)
        assert peer.transcript.split()[:2] == ["w0", "w1"], peer.transcript
    finally:
        await peer.close()
    await settled(base)


async def test_a_gap_in_the_track_keeps_stream_time(scripted_server: str) -> None:
    """The sender pauses 1 s after 1.2 s (its RTP timestamps move on): 1 s of silence.

    The server takes audio until `stop` (and its grace); the client's stream time at
    `stop` counts the pause. Without the gap as silence the server would have 1 s less.
    """
    base = http_base(scripted_server)
    track = WavTrack(tone(3.0), RATE, pause_at_sec=1.2, pause_sec=1.0)
    peer = Peer(base)
    response = await peer.offer(track, headers=AUTH)
    assert response.status_code == 200, response.text
    try:
        await peer.until("metadata", 10)
        await asyncio.wait_for(track.finished.wait(), 30)
        sent = track.pts  # samples of stream time sent, the pause included
        peer.send({"type": "stop"})
        await peer.until("complete", 15)
        samples = int(peer.transcript.split()[-1].removeprefix("end"))
        # In flight at `stop`: up to the jitter buffer (80 ms) and the grace (100 ms).
        assert abs(samples - sent) <= STOP_SLACK, (samples, sent)
        assert peer.finals[-1]["end"] == pytest.approx(samples / RATE, abs=0.002)
        words = [m["text"].strip() for m in peer.finals if m["text"].strip().startswith("w")]
        assert words == [f"w{k}" for k in range(int(samples // RATE))], words
    finally:
        await peer.close()
    await settled(base)


async def test_closing_the_peer_connection_frees_the_session() -> None:
    """In one process, so the threads and peer connections can be counted by name."""
    port = free_port()
    app = create_app(Settings(**{name.lower(): value for name, value in BASE_ENV.items()}))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    try:
        await until(lambda: server.started, 10)
        base = f"http://127.0.0.1:{port}"
        peers = []
        for _ in range(2):
            peer = Peer(base)
            response = await peer.offer(WavTrack(tone(30), RATE))
            assert response.status_code == 200, response.text
            await peer.until("metadata", 10)
            peers.append(peer)
        await asyncio.sleep(1.2)
        assert await metric(base, "asr_active_sessions") == 2
        assert await metric(base, "asr_webrtc_peer_connections") == 2
        assert len(named("audio-decoder")) == 2  # aiortc's decoder thread per track
        assert len(named("asr-")) == 2  # the sessions' recognition threads
        for peer in peers:
            await peer.close()  # mid-stream, no `stop`: a disconnect
        del peers, peer
        await settled(base)
        await until(lambda: not named("audio-decoder") and not named("asr-"), 5)
        assert not named("audio-decoder") and not named("asr-"), named("")
        gc.collect()
        alive = [o for o in gc.get_objects() if isinstance(o, RTCPeerConnection)]
        assert alive == []
    finally:
        server.should_exit = True
        await serving


async def until(condition: Callable[[], bool], within: float) -> None:
    """Poll a condition another thread or process changes (no event to wait on)."""
    deadline = time.monotonic() + within
    for _ in iter(int, 1):  # until the condition holds or time is up
        if condition() or time.monotonic() > deadline:
            return
        await asyncio.sleep(0.05)


def named(prefix: str) -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(prefix)]


async def test_controls_and_invalid_messages_on_the_channel(scripted_server: str) -> None:
    base = http_base(scripted_server)
    track = WavTrack(tone(1.5), RATE)
    peer = Peer(base)
    assert (await peer.offer(track, headers=AUTH)).status_code == 200
    try:
        await peer.until("metadata", 10)
        peer.send({"type": "keepalive"})
        peer.channel.send("{not json")
        error = await peer.until("error", 5)
        assert error["code"] == "invalid_json"
        peer.send({"type": "nope"})
        assert (await peer.until("error", 5))["code"] == "unknown_message_type"
        await asyncio.wait_for(track.finished.wait(), 30)
        peer.send({"type": "finalize"})
        final = await peer.until("transcript", 5)
        assert final["text"]
        peer.send({"type": "stop"})
        await peer.until("complete", 10)
    finally:
        await peer.close()
    await settled(base)


async def test_a_data_channel_never_opened_is_torn_down(scripted_server: str) -> None:
    """The answer is applied but the client never connects: freed after CONFIG_TIMEOUT_SEC."""
    base = http_base(scripted_server)
    peer = Peer(base)
    response = await peer.offer(WavTrack(tone(5), RATE), headers=AUTH)
    assert response.status_code == 200
    await peer.close()  # before ICE could finish: nothing ever opens
    await settled(base, within=float(BASE_ENV["CONFIG_TIMEOUT_SEC"]) + 5)


# --------------------------------------------------------------------------- refusals


async def refused(base: str, **kwargs: object) -> httpx.Response:
    peer = Peer(base)
    try:
        track = kwargs.pop("track", WavTrack(tone(1), RATE))
        return await peer.offer(track, **kwargs)  # type: ignore[arg-type]
    finally:
        await peer.close()


async def test_auth_and_origin(scripted_server: str) -> None:
    base = http_base(scripted_server)
    response = await refused(base, headers={})
    assert response.status_code == 401 and response.json()["code"] == "unauthorized"
    response = await refused(base, headers={"Authorization": "Bearer wrong"})
    assert response.status_code == 401
    response = await refused(base, headers={**AUTH, "Origin": "http://evil.example"})
    assert response.status_code == 403 and response.json()["code"] == "origin_not_allowed"
    peer = Peer(f"{base}")
    response = await peer.offer(
        WavTrack(tone(1), RATE), headers={"Origin": ORIGIN}, body={}, config=CONFIG
    )
    await peer.close()
    assert response.status_code == 401  # the origin is fine, the key is still required
    async with httpx.AsyncClient() as http:  # ?token= as for the WebSocket
        response = await http.post(f"{base}/webrtc/offer?token={KEY}", content=b"[]")
    assert response.status_code == 400 and response.json()["code"] == "invalid_json"
    await settled(base)


CONFIG_CASES = [
    ({**CONFIG, "volume": 11}, "unknown_field"),
    ({**CONFIG, "sample_rate_hertz": "16000"}, "invalid_field_type"),
    ({"encoding": "LINEAR16"}, "missing_field"),
    ({**CONFIG, "encoding": "MULAW"}, "unsupported_encoding"),
    ({**CONFIG, "sample_rate_hertz": 4000}, "unsupported_sample_rate"),
    ({**CONFIG, "language_code": "not a tag"}, "unsupported_language"),
    ({**CONFIG, "backend": "nope"}, "unknown_backend"),
    ({**CONFIG, "stream_offset_sec": -1}, "invalid_stream_offset"),
    ([16000], "invalid_json"),
]


async def test_config_errors_are_http_400_with_the_native_codes(scripted_server: str) -> None:
    base = http_base(scripted_server)
    for config, code in CONFIG_CASES:
        response = await refused(base, headers=AUTH, config=config)
        assert response.status_code == 400, (config, response.text)
        assert response.json()["code"] == code, (config, response.json())
    await settled(base)


async def test_bad_offers(scripted_server: str) -> None:
    base = http_base(scripted_server)
    response = await refused(base, headers=AUTH, track=None)
    assert (response.status_code, response.json()["code"]) == (400, "no_audio_track")
    response = await refused(base, headers=AUTH, channel=False)
    assert (response.status_code, response.json()["code"]) == (400, "no_data_channel")
    response = await refused(base, headers=AUTH, body={"sdp": "v=0\r\nm=audio x RTP 1\r\n"})
    assert (response.status_code, response.json()["code"]) == (400, "invalid_sdp")
    # It parses, but has no ICE or DTLS: negotiation fails after admission, still a 400.
    bare = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nm=application 9 UDP/DTLS/SCTP x\r\n"
    response = await refused(base, headers=AUTH, body={"sdp": bare})
    assert (response.status_code, response.json()["code"]) == (400, "invalid_sdp")
    response = await refused(base, headers=AUTH, body={"type": "answer"})
    assert (response.status_code, response.json()["code"]) == (400, "invalid_offer")
    # Text that is no SDP at all, and an offer cut short: not "add a track".
    for text in ("hello world", "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\n"):
        response = await refused(base, headers=AUTH, body={"sdp": text})
        assert (response.status_code, response.json()["code"]) == (400, "invalid_sdp"), text
    # A real offer without its DTLS fingerprint was answered 200, then dropped in silence.
    peer = Peer(base)
    peer.pc.addTrack(WavTrack(tone(1), RATE))
    peer.pc.createDataChannel("asr")
    await peer.pc.setLocalDescription(await peer.pc.createOffer())
    unsigned = re.sub(r"^a=fingerprint:.*\r?\n", "", peer.pc.localDescription.sdp, flags=re.M)
    await peer.close()
    response = await refused(base, headers=AUTH, body={"sdp": unsigned})
    assert (response.status_code, response.json()["code"]) == (400, "invalid_sdp")
    assert "fingerprint" in response.json()["detail"]
    await settled(base)


async def test_full_and_draining_node_answers_503(tmp_path: Path) -> None:
    env = {**BASE_ENV, "MAX_SESSIONS": "1", "ADMISSION_CONTROL": "true"}
    with running_server(env=env, log_path=tmp_path / "server.log") as url:
        base = http_base(url)
        first = Peer(base)
        assert (await first.offer(WavTrack(tone(30), RATE))).status_code == 200
        await first.until("metadata", 10)
        response = await refused(base)
        assert response.status_code == 503, response.text
        assert response.json()["code"] == "server_full"
        assert int(response.headers["Retry-After"]) >= 1
        await first.close()
        async with httpx.AsyncClient() as http:
            assert (await http.post(f"{base}/drain")).status_code == 202
        response = await refused(base)
        assert response.status_code == 503 and response.json()["code"] == "shutting_down"
        assert "Retry-After" in response.headers
        await settled(base)
