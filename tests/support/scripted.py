"""A scripted engine for endpoint tests: deterministic output from sample counts.

`CountingProcessor` commits one word ``w<k>`` per whole second of audio it has
been given and, on `finish`, a last word ``end<samples>`` naming the total
sample count, so tests can check that every sample arrived, in order.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

from app.asr.base import Audio, EngineInfo, EngineRequest, TextSpan, TimedWord
from app.settings import ENGINE_SAMPLE_RATE


class CountingProcessor:
    def __init__(self, fail_on_iter: bool = False, iter_delay: float = 0.0) -> None:
        self.fail_on_iter = fail_on_iter
        self.iter_delay = iter_delay
        self.init()

    def init(self, offset: float = 0.0) -> None:
        self.offset = offset
        self.samples: list[Audio] = []
        self.total = 0
        self.seconds_committed = 0

    def insert_audio_chunk(self, audio: Audio) -> None:
        self.samples.append(audio)
        self.total += len(audio)

    def process_iter(self) -> TextSpan | None:
        if self.fail_on_iter:
            raise RuntimeError("scripted engine failure /secret/path")
        time.sleep(self.iter_delay)  # a slow engine
        whole = self.total // ENGINE_SAMPLE_RATE
        if whole <= self.seconds_committed:
            return None
        words = tuple(
            TimedWord(float(k), float(k) + 0.5, f" w{k}", 0.9)
            for k in range(self.seconds_committed, whole)
        )
        self.seconds_committed = whole
        return TextSpan(words[0].start, words[-1].end, "".join(w.word for w in words), words, 0.9)

    def unconfirmed(self) -> TextSpan | None:
        return TextSpan(float(self.seconds_committed), self.total / ENGINE_SAMPLE_RATE, " pending")

    def finish(self) -> TextSpan:
        """Whole seconds not yet committed, then ``end<total samples>``."""
        start, end = float(self.seconds_committed), self.total / ENGINE_SAMPLE_RATE
        rest = self.process_iter()
        text = (rest.text if rest else "") + f" end{self.total}"
        return TextSpan(start, end, text, rest.words if rest else ())

    @property
    def audio(self) -> Audio:
        return np.concatenate(self.samples) if self.samples else np.zeros(0, np.float32)


@dataclass
class CountingLoader:
    """Hands out `CountingProcessor`s and keeps them for inspection."""

    min_chunk_sec: float = 1.0
    fail_on_iter: bool = False
    iter_delay: float = 0.0
    keep: bool = True  # keep processors for inspection (in-process tests only)
    processors: list[CountingProcessor] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def load(self, request: EngineRequest) -> tuple[CountingProcessor, EngineInfo]:
        processor = CountingProcessor(self.fail_on_iter, self.iter_delay)
        if self.keep:
            with self.lock:
                self.processors.append(processor)
        return processor, EngineInfo(request.backend, request.model, self.min_chunk_sec)


# Factories for a real server process: ASR_PLUGINS=name=tests.support.scripted:<factory>.
def counting(settings: object) -> CountingLoader:
    return CountingLoader(keep=False)


def slow(settings: object) -> CountingLoader:
    # A pass as long as the audio it takes, well under test_hardening's 1.5 s pass
    # timeout: a pass of exactly the timeout raced the once-a-second watchdog.
    return CountingLoader(iter_delay=1.0, keep=False)


def broken(settings: object) -> CountingLoader:
    return CountingLoader(fail_on_iter=True, keep=False)


def hanging(settings: object) -> CountingLoader:
    return CountingLoader(iter_delay=600.0, keep=False)
