"""The Google bridge answers every finalize with `FlushedEvent`, after Google's last finals.

`GoogleRecognizer` in its thread over a real `AudioHandoff`, against the fake
Speech server: a finalize covers exactly the audio before it (audio put right
after it goes to the next Google stream), and a finalize with nothing new is
answered at once.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

from app.asr.base import EngineRequest
from app.asr.google.loader import GoogleLoader
from app.session import AudioHandoff, CompleteEvent, FlushedEvent, SessionEvent, TranscriptEvent
from tests.google.conftest import google_settings
from tests.google.fake_speech import FakeSpeechServer, ramp

RATE = 16_000
WAIT_SEC = 5.0


async def until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_SEC
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def story(events: list[SessionEvent]) -> list[str]:
    """Finals as their text, flushes as ``flushed@<at>``, then ``complete`` (no interims)."""
    out = []
    for e in events:
        if isinstance(e, TranscriptEvent) and e.is_final:
            out.append(e.span.text.strip())
        elif isinstance(e, FlushedEvent):
            out.append(f"flushed@{e.at:g}")
        elif isinstance(e, CompleteEvent):
            out.append("complete")
    return out


async def test_each_finalize_is_answered_after_its_finals_and_covers_only_the_audio_before_it(
    fake: FakeSpeechServer,
) -> None:
    loader = GoogleLoader(google_settings(google_speech_endpoint=fake.endpoint))
    request = EngineRequest(backend="google", model="", language=None, interim_results=False)
    recognizer, _ = await asyncio.to_thread(loader.open_recognizer, request, RATE)
    handoff = AudioHandoff(30 * RATE, asyncio.get_running_loop(), RATE)
    events: list[SessionEvent] = []
    thread = threading.Thread(target=recognizer.run, args=(handoff, events.append), daemon=True)
    thread.start()
    try:
        audio = ramp(1.5, RATE)
        assert await handoff.put(audio[:24_000])  # 0.75 s: one word and a half
        handoff.flush()
        assert await handoff.put(audio[24_000:])  # right after the finalize
        await until(lambda: "flushed@0.75" in story(events))
        assert story(events) == ["s0 s5", "flushed@0.75"]
        handoff.flush()
        await until(lambda: len(story(events)) == 4)
        handoff.flush()  # nothing new: answered without a Google stream
        await until(lambda: len(story(events)) == 5)
        handoff.end()
        thread.join(WAIT_SEC)
        assert not thread.is_alive()
    finally:
        handoff.abort()
        loader.close()
    assert story(events) == [
        "s0 s5",
        "flushed@0.75",
        "s7 s12",
        "flushed@1.5",
        "flushed@1.5",
        "complete",
    ]
    # The first stream half-closed after exactly the audio before the first finalize.
    assert bytes(fake.streams[0].audio) == audio[:24_000]
    assert len(fake.streams) == 2
