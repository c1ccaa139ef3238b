"""Real speech through WebRTC into the real model: Chromium's page.

The aiortc client's run of the same clip is in test_netns.py (over a veth, from its
own network namespace).

Both compare with the native WebSocket on the same server and clip: the native
endpoint transcribes jfk_16k.wav at 0.0 WER (oneDNN and MKL builds alike,
tests/openai_realtime/test_transcripts.py). WebRTC adds Opus (48 kHz, lossy
but transparent for speech at these rates) and a resampling each way; the bound
is the native figure plus 0.14 (three words of the clip's 22), far below what
lost or doubled audio, a wrong rate or a broken gap would cost.
"""

from __future__ import annotations

import asyncio
import re
import time
import wave
from pathlib import Path

import httpx
import numpy as np
import pytest

pytest.importorskip("aiortc", reason="the 'webrtc' extra: pip install -e '.[webrtc]'")

from playwright.sync_api import sync_playwright

from bench.stream_latency import word_error_rate
from clients.asr_client import ASRStreamClient
from clients.asr_client import read_wav as read_pcm
from tests.e2e.test_browser import (
    STATE_IS,
    chromium_path,
    launch_with_microphone,
    page_url,
    watch,
)
from tests.support.commands import AUDIO
from tests.webrtc.peer import read_wav

pytestmark = pytest.mark.e2e

CLIP = AUDIO / "jfk_16k.wav"
MARGIN = 0.14
LEAD_IN_SEC = 1.5  # silence before the speech: the page connects while it plays


async def native_wer(url: str) -> float:
    pcm, rate = read_pcm(CLIP)
    result = await ASRStreamClient(url).transcribe(pcm, sample_rate_hertz=rate)
    return word_error_rate(CLIP.with_suffix(".txt").read_text(), result.transcript)


def padded_clip(folder: Path) -> Path:
    """The clip after LEAD_IN_SEC of silence, as Chromium's fake microphone plays it."""
    samples, rate = read_wav(CLIP)
    out = folder / "jfk_lead_in.wav"
    with wave.open(str(out), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(np.zeros(int(LEAD_IN_SEC * rate), np.int16).tobytes())
        wav.writeframes(samples.tobytes())
    return out


def chromium_page_over_webrtc(
    native: float, page: str, clip: Path, executable: str, extra_args: tuple[str, ...] = ()
) -> None:
    """Chromium opens ``page``, picks WebRTC, presses Start, then Stop: the clip's transcript."""
    with sync_playwright() as playwright:
        browser = launch_with_microphone(playwright, clip, *extra_args, executable=executable)
        try:
            tab = browser.new_page()
            problems = watch(tab)
            tab.goto(page)
            tab.select_option("#transport", "webrtc")
            started = time.monotonic()
            tab.click("#start")
            tab.wait_for_function(STATE_IS, arg="streaming", timeout=30_000)
            assert tab.is_disabled("#start") and tab.is_enabled("#stop")
            tab.wait_for_function(
                "() => document.querySelector('#interim').textContent.trim().length > 0",
                timeout=20_000,
            )
            seconds = LEAD_IN_SEC + 11.0 + 1.0
            tab.wait_for_timeout(max(0.0, seconds - (time.monotonic() - started)) * 1000)
            tab.click("#stop")
            tab.wait_for_function(STATE_IS, arg="done", timeout=30_000)
            transcript = tab.text_content("#transcript") or ""
            assert tab.is_enabled("#start")
        finally:
            browser.close()
    wer = word_error_rate(CLIP.with_suffix(".txt").read_text(), transcript)
    assert wer <= native + MARGIN, f"WER {wer:.2f} vs native {native:.2f}: {transcript!r}"
    assert problems == []


def test_chromium_page_over_webrtc(model_server: str, tmp_path: Path) -> None:
    """Debian's Chromium on this host: the page on the loopback, media over a host address."""
    native = asyncio.run(native_wer(model_server))
    chromium_page_over_webrtc(
        native, page_url(model_server), padded_clip(tmp_path), chromium_path()
    )


def webrtc_peers(page: str) -> float:
    """The server's `asr_webrtc_peer_connections` (no keys on this server)."""
    text = httpx.get(f"{page}metrics", timeout=5).text
    match = re.search(r"^asr_webrtc_peer_connections (\S+)$", text, re.MULTILINE)
    assert match, "asr_webrtc_peer_connections not in /metrics"
    return float(match.group(1))


def test_closing_the_tab_frees_the_session_at_once(model_server: str, tmp_path: Path) -> None:
    """A closed tab tells the server nothing until the track times out (about 30 s in
    Chromium, the session and its capacity held meanwhile): the page closes its peer
    connection when it is hidden for good."""
    page = page_url(model_server)
    with sync_playwright() as playwright:
        browser = launch_with_microphone(playwright, padded_clip(tmp_path))
        try:
            tab = browser.new_page()
            tab.goto(page)
            tab.select_option("#transport", "webrtc")
            tab.click("#start")
            tab.wait_for_function(STATE_IS, arg="streaming", timeout=30_000)
            assert webrtc_peers(page) == 1
            tab.close()
            closed = time.monotonic()
            while webrtc_peers(page) and time.monotonic() - closed < 10:
                time.sleep(0.2)
            freed_after = time.monotonic() - closed
        finally:
            browser.close()
    assert freed_after < 5, f"the peer connection was held {freed_after:.1f} s after the tab"
