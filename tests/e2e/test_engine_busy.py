"""A busy engine's streams on the real model: a shorter buffer, the same speech heard.

And what makes it busy: sessions with speech, not sessions open.
"""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
from typing import Any

import numpy as np
import pytest
import websockets

from app.asr.base import EngineRequest, StreamingOptions
from app.asr.faster_whisper_loader import FasterWhisperLoader, timed_busy_pass
from app.asr.models import TINY_EN
from app.settings import Settings
from bench.replay import ENGLISH, engine_audio
from bench.stream_latency import word_error_rate
from clients.asr_client import read_wav
from tests.support.commands import AUDIO

pytestmark = pytest.mark.e2e

STEP = 16_000  # 1 s: a committing pass
# Busy trimming cut the held-out clips' WER by +0.5 points pooled (bench/results/README.md);
# a cut that lost audio or words would cost far more than this on one clip.
MAX_WER_COST = 0.10


def _stream(loader: FasterWhisperLoader, busy: bool) -> tuple[float, str]:
    """The longest buffer a pass heard, and the committed text, of en_long (66 s)."""
    audio = engine_audio(AUDIO / "en_long_16k.wav")
    processor, _ = loader.load(ENGLISH)
    processor.set_busy(busy)
    longest, texts = 0.0, []
    for at in range(0, len(audio), STEP):
        processor.insert_audio_chunk(audio[at : at + STEP])
        longest = max(longest, processor.buffer_duration)
        span = processor.process_iter()
        texts += [span.text] if span else []
    span = processor.finish()
    return longest, "".join(texts + ([span.text] if span else []))


def test_a_busy_stream_keeps_a_shorter_buffer_and_the_words_of_real_speech() -> None:
    loader = FasterWhisperLoader(Settings(_env_file=None))  # type: ignore[call-arg]
    reference = (AUDIO / "en_long_16k.txt").read_text()
    idle_longest, idle_text = _stream(loader, busy=False)
    busy_longest, busy_text = _stream(loader, busy=True)
    # Idle: trimmed past BUFFER_TRIMMING_SEC (15 s); busy: past 6 s, at a committed
    # segment end or between committed words, so a pass hears at most a few seconds more.
    assert idle_longest > 14.0, idle_longest
    assert busy_longest < 11.0, busy_longest
    idle_wer = word_error_rate(reference, idle_text)
    busy_wer = word_error_rate(reference, busy_text)
    assert busy_wer <= idle_wer + MAX_WER_COST, (idle_wer, busy_wer, busy_text)


def test_start_up_times_a_busy_pass_for_the_capacity_and_none_with_busy_trimming_off() -> None:
    loader = FasterWhisperLoader(Settings(_env_file=None))  # type: ignore[call-arg]
    model = loader.shared_model(TINY_EN, loader.model_dir(TINY_EN))
    busy = loader.busy_stream_cost()
    assert busy is not None and busy > 0.0
    # The pass follows the tokens the buffer's speech needs: 2 s and 8 s share the 10 s
    # window, so only the decoder tells them apart (7 against 28 tokens; 2.5x the time
    # under oneDNN, 3x under MKL). A decoder that stopped on the noise would time both
    # alike. (Its ratio to the
    # whole-window warm-up pass depends on the kernels: about 1/3 under oneDNN on
    # AMD EPYC, but 1.7x under MKL there, where a decoded token costs 95 ms.)
    assert timed_busy_pass(model, 8.0) > 1.5 * timed_busy_pass(model, 2.0)
    settings = Settings(_env_file=None, busy_buffer_trimming_sec=0)  # type: ignore[call-arg]
    never_busy = FasterWhisperLoader(settings)
    never_busy.shared_model(TINY_EN, never_busy.model_dir(TINY_EN))
    assert never_busy.stream_cost() is not None
    assert never_busy.busy_stream_cost() is None


def test_the_loader_gives_busy_trimming_unless_the_client_chose_its_trimming() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    loader = FasterWhisperLoader(settings)
    processor, _ = loader.load(ENGLISH)
    assert processor.options.buffer_trimming_sec == 15.0
    assert processor.options.busy_trimming_sec == 6.0
    assert processor.options.busy_keep_sec == 3.0
    chosen = EngineRequest(
        backend="faster-whisper",
        model="",
        language="en",
        options=StreamingOptions(buffer_trimming_sec=10.0),
    )
    processor, _ = loader.load(chosen)
    assert processor.options.buffer_trimming_sec == 10.0
    assert processor.options.busy_trimming_sec is None
    off = FasterWhisperLoader(settings.model_copy(update={"busy_buffer_trimming_sec": 0.0}))
    assert off.load(ENGLISH)[0].options.busy_trimming_sec is None


def _get(url: str, path: str) -> str:
    http = url.replace("ws://", "http://").replace("/ws/asr-stream", path)
    with urllib.request.urlopen(http, timeout=5) as resp:
        return str(resp.read().decode())


def _gauge(url: str, name: str) -> float:
    match = re.search(rf"^{name} ([0-9.e+-]+)$", _get(url, "/metrics"), re.MULTILINE)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


async def _send_paced(ws: Any, pcm: bytes, chunk_sec: float = 0.1) -> None:
    """``pcm`` (16 kHz LINEAR16) in chunks, about twice as fast as real time."""
    step = int(16_000 * chunk_sec) * 2
    for at in range(0, len(pcm), step):
        await ws.send(pcm[at : at + step])
        await asyncio.sleep(chunk_sec / 2)


async def test_open_sessions_sending_silence_do_not_make_the_engine_busy(server_url: str) -> None:
    """Three open lines sending silence and one speaker: one session speaks, never busy.

    Counted by sessions open, four would be past this machine's `busy_sessions` (3 for
    `tiny.en` on 2 AMD cores, 1 under MKL) and the speaker's buffer would be trimmed.
    """
    config = json.dumps({"sample_rate_hertz": 16000, "encoding": "LINEAR16"})
    speech, rate = read_wav(AUDIO / "jfk_16k.wav")
    assert rate == 16_000
    silence = np.zeros(16_000, dtype="<i2").tobytes()  # 1 s
    quiet = [await websockets.connect(server_url) for _ in range(3)]
    try:
        for ws in quiet:
            await ws.send(config)
            assert json.loads(await ws.recv())["type"] == "metadata"
        await asyncio.gather(*(_send_paced(ws, 2 * silence) for ws in quiet))
        for _ in range(100):  # until each had a pass over its silence
            speaking = await asyncio.to_thread(_gauge, server_url, "asr_engine_sessions_speaking")
            if speaking == 0:
                break
            await asyncio.sleep(0.1)
        assert speaking == 0
        ready = json.loads(await asyncio.to_thread(_get, server_url, "/ready"))
        assert (ready["active_sessions"], ready["speaking_sessions"]) == (3, 0)
        seen: list[tuple[float, float]] = []

        async def watch() -> None:
            while True:
                seen.append(
                    (
                        await asyncio.to_thread(_gauge, server_url, "asr_engine_sessions_speaking"),
                        await asyncio.to_thread(_gauge, server_url, "asr_engine_busy"),
                    )
                )
                await asyncio.sleep(0.2)

        async with websockets.connect(server_url) as talker:
            await talker.send(config)
            assert json.loads(await talker.recv())["type"] == "metadata"
            watcher = asyncio.create_task(watch())
            keep_quiet = [asyncio.create_task(_send_paced(ws, 8 * silence)) for ws in quiet]
            await _send_paced(talker, speech)
            await talker.send(json.dumps({"type": "stop"}))
            texts = [json.loads(raw) async for raw in talker]
            watcher.cancel()
            await asyncio.gather(*keep_quiet)
        finals = "".join(m["text"] for m in texts if m.get("is_final"))
        assert "ask not" in finals.lower()
        assert max(n for n, _ in seen) == 1, seen  # the speaker alone
        assert max(busy for _, busy in seen) == 0, seen
    finally:
        for ws in quiet:
            await ws.close()
