"""The page at `/` in real headless Chromium (Debian's), with a fake microphone.

Chromium plays a WAV file as the microphone (16-bit PCM; its first 0.5 s are
silence, so nothing is lost while the page connects). The test clicks the real
Start and Stop buttons, as a person would, against a real server process.
A screenshot of the page after the run is kept in artifacts/browser.png.
"""

from __future__ import annotations

import os
import re
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

from bench.stream_latency import longest_dropped_run, word_error_rate
from tests.support.commands import AUDIO, ROOT

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
FAKE_MICROPHONE = AUDIO / "en_16k.wav"
SCREENSHOT = ROOT / "artifacts" / "browser.png"
# The page resamples in JavaScript (from the AudioContext's rate, e.g. 44.1 kHz)
# and the fake device resamples the file first: allow a little more than files.
MAX_WER = 0.35
# tiny.en sometimes hears one word as none ("lazy dog" → "lazy-hard"); never more.
MAX_DROPPED_RUN = 2
INSECURE_HOST = "asr.test"  # resolves to 127.0.0.1 inside the browser only
COMMON_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-device-for-media-stream",
]
STATE_IS = "state => document.querySelector('#status').dataset.state === state"


def chromium_path() -> str:
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing (Debian: apt-get install chromium; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return str(CHROMIUM)


def launch_with_microphone(
    playwright: Playwright, clip: Path, *extra_args: str, executable: str | None = None
) -> Browser:
    """Headless Chromium whose fake microphone plays ``clip`` once (prompt answered "allow")."""
    return playwright.chromium.launch(
        executable_path=executable or chromium_path(),
        headless=True,
        args=[
            *COMMON_ARGS,
            "--use-fake-ui-for-media-stream",
            f"--use-file-for-fake-audio-capture={clip}%noloop",
            *extra_args,
        ],
    )


def page_url(ws_url: str, host: str = "127.0.0.1") -> str:
    """The page on the server behind ``ws_url``: http://HOST:PORT/."""
    return f"http://{host}:{urlsplit(ws_url).port}/"


def clip_seconds(path: Path) -> float:
    with wave.open(str(path), "rb") as wav:
        return wav.getnframes() / wav.getframerate()


def watch(page: Page) -> list[str]:
    """Uncaught errors and console errors of the page."""
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"pageerror: {exc}"))
    page.on(
        "console",
        lambda msg: problems.append(f"console: {msg.text}") if msg.type == "error" else None,
    )
    return problems


@pytest.fixture(scope="module")
def refusing_browser() -> Iterator[Browser]:
    """Chromium whose microphone prompt is answered "deny", and an insecure host name."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path(),
            headless=True,
            args=[
                *COMMON_ARGS,
                "--use-fake-ui-for-media-stream=deny",
                f"--host-resolver-rules=MAP {INSECURE_HOST} 127.0.0.1",
            ],
        )
        yield browser
        browser.close()


def test_page_transcribes_the_microphone(server_url: str) -> None:
    """Start, the clip plays into the microphone, Stop: the spoken words are on the page."""
    with sync_playwright() as playwright:
        browser = launch_with_microphone(playwright, FAKE_MICROPHONE)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 640})
            problems = watch(page)
            page.goto(page_url(server_url))
            assert page.text_content("#status") == "idle"
            assert page.evaluate("window.isSecureContext")
            assert page.input_value("#language") == "en-US"
            # The backend list comes from GET /backends; the server's default is chosen.
            options = page.eval_on_selector_all("#backend option", "os => os.map(o => o.value)")
            assert "faster-whisper" in options
            assert page.input_value("#backend") == "faster-whisper"

            started = time.monotonic()
            page.click("#start")
            page.wait_for_function(STATE_IS, arg="streaming", timeout=20_000)
            assert page.is_disabled("#start") and page.is_enabled("#stop")
            # Interim text shows up while the clip is still playing.
            page.wait_for_function(
                "() => document.querySelector('#interim').textContent.trim().length > 0",
                timeout=15_000,
            )
            # Let the whole clip play (it ends with 0.5 s of silence), then Stop.
            remaining = clip_seconds(FAKE_MICROPHONE) + 1.0 - (time.monotonic() - started)
            page.wait_for_timeout(max(remaining, 0) * 1000)
            page.click("#stop")
            page.wait_for_function(STATE_IS, arg="done", timeout=30_000)

            transcript = page.text_content("#transcript") or ""
            context_rate = page.evaluate("new AudioContext().sampleRate")
            SCREENSHOT.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
        finally:
            browser.close()

    reference = FAKE_MICROPHONE.with_suffix(".txt").read_text()
    wer = word_error_rate(reference, transcript)
    assert wer <= MAX_WER, f"WER {wer:.2f} at {context_rate} Hz: {transcript!r}"
    # Nothing lost: a misheard word costs WER, but no run of words may go missing. (The
    # transcript goes in the message whole: pytest's own repr cuts long strings with "...".)
    assert longest_dropped_run(reference, transcript) <= MAX_DROPPED_RUN, transcript
    assert problems == []


def test_page_explains_an_insecure_origin(server_url: str, refusing_browser: Browser) -> None:
    """Over plain http on a non-local name browsers hide the microphone: the page says why."""
    page = refusing_browser.new_page()
    page.goto(page_url(server_url, host=INSECURE_HOST))
    assert not page.evaluate("window.isSecureContext")
    status = page.text_content("#status") or ""
    assert status.startswith("error: the microphone is not available")
    port = urlsplit(server_url).port
    assert f"http://localhost:{port}/" in status and "HTTPS" in status
    page.click("#start")  # still explains, and nothing starts
    assert page.get_attribute("#status", "data-state") == "error"
    assert page.is_enabled("#start") and page.is_disabled("#stop")
    page.close()


def test_page_explains_a_denied_microphone(server_url: str, refusing_browser: Browser) -> None:
    """At http://localhost (a secure context) the prompt is refused: the page says what to do."""
    page = refusing_browser.new_page()
    problems = watch(page)
    page.goto(page_url(server_url, host="localhost"))
    assert page.evaluate("window.isSecureContext")
    assert page.text_content("#status") == "idle"
    page.click("#start")
    page.wait_for_function(STATE_IS, arg="error", timeout=10_000)
    status = page.text_content("#status") or ""
    assert re.match(r"error: permission to use the microphone was denied\. Allow", status)
    assert page.is_enabled("#start") and page.is_disabled("#stop")
    assert problems == []
    page.close()


# The page's resampler on its own: a tone through the worklet in an OfflineAudioContext.
RESAMPLE_TONE_JS = """
async ([rate, frequency, seconds]) => {
  const context = new OfflineAudioContext(1, Math.round(rate * seconds), rate);
  await context.audioWorklet.addModule("/static/pcm-worklet.js");
  const node = new AudioWorkletNode(context, "pcm-downsampler", {
    numberOfInputs: 1, numberOfOutputs: 0, channelCount: 1, channelCountMode: "explicit",
    processorOptions: { targetRate: 16000, frameSamples: 1600 },
  });
  const frames = [];
  const flushed = new Promise((resolve) => {
    node.port.onmessage = ({ data }) =>
      data === "flushed" ? resolve() : frames.push(new Int16Array(data));
  });
  const tone = new OscillatorNode(context, { frequency });
  tone.connect(new GainNode(context, { gain: 0.5 })).connect(node);
  tone.start();
  await context.startRendering();
  node.port.postMessage("flush");
  await flushed;
  const pcm = new Int16Array(frames.reduce((n, f) => n + f.length, 0));
  let at = 0;
  for (const f of frames) { pcm.set(f, at); at += f.length; }
  const body = pcm.subarray(1600, pcm.length - 1600);  // leave out the filter's ramps
  let energy = 0, crossings = 0;
  for (let i = 0; i < body.length; i++) {
    energy += body[i] * body[i];
    if (i > 0 && (body[i - 1] < 0) !== (body[i] < 0)) crossings++;
  }
  return {
    samples: pcm.length,
    fullFrames: frames.slice(0, -1).every((f) => f.length === 1600),
    rms: Math.sqrt(energy / body.length),
    hertz: crossings / 2 / (body.length / 16000),
  };
}
"""
TONE_RMS = 0.5 * 32767 / 2**0.5  # a sine at half of full scale


@pytest.mark.parametrize("rate", [48000, 44100])
def test_worklet_resamples_to_16k_without_aliasing(
    server_url: str, refusing_browser: Browser, rate: int
) -> None:
    """Speech band passes at full level and pitch; a tone above 8 kHz does not fold back."""
    page = refusing_browser.new_page()
    page.goto(page_url(server_url, host="localhost"))  # worklets need a secure context
    seconds = 2.0
    speech = page.evaluate(RESAMPLE_TONE_JS, [rate, 1000, seconds])
    # OfflineAudioContext renders whole 128-sample quanta: the input is that long.
    rendered = -(-int(rate * seconds) // 128) * 128
    assert abs(speech["samples"] - rendered * 16000 / rate) <= 1
    assert speech["fullFrames"]  # 100 ms frames, only the flushed rest is shorter
    assert speech["hertz"] == pytest.approx(1000, rel=0.01)
    assert speech["rms"] == pytest.approx(TONE_RMS, rel=0.02)
    # 12 kHz would alias to 4 kHz (48k) or 5.64 kHz (44.1k) without the low-pass.
    alias = page.evaluate(RESAMPLE_TONE_JS, [rate, 12000, seconds])
    assert alias["rms"] < TONE_RMS * 0.01
    page.close()
