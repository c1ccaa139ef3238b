"""A scripted engine with voice activity, for the turn tests (`ASR_PLUGINS=vad=...:vad`).

Like `tests.support.scripted.CountingProcessor` (``w<k>`` per second of audio,
``end<samples>`` at a flush), and it hears speech where the audio is loud: an
utterance starts at the first loud 10 ms frame and stops after `PAUSE_SEC` of
quiet frames (``at``: where the quiet began), as the real engine's
`SupportsUtterances` does. So a client sending loud, quiet, loud, quiet gets
two turns at known times. A flush of quiet alone makes no final, as with the
real engine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.asr.base import Audio, EngineInfo, EngineRequest, SpeechChange, TextSpan
from app.settings import ENGINE_SAMPLE_RATE
from tests.support.scripted import CountingProcessor

FRAME = ENGINE_SAMPLE_RATE // 100  # 10 ms
LOUD = 0.01  # mean absolute level of a speech frame (the tests send 1000/32768 or 0)
PAUSE_SEC = 0.5
MIN_LOUD_FRAMES = 5  # a flush with less speech than this makes no final


class VadCountingProcessor(CountingProcessor):
    def init(self, offset: float = 0.0) -> None:
        super().init(offset)
        if not hasattr(self, "_changes"):  # voice activity carries across a flush's `init`
            self._changes: list[SpeechChange] = []
            self._talking = False
            self._quiet_since: float | None = None
            self._frames = 0
            self._tail = np.zeros(0, np.float32)
            self._stopped_since_pass = False
            self._ended = False
            self._loud_since_finish = 0  # loud frames

    def insert_audio_chunk(self, audio: Audio) -> None:
        super().insert_audio_chunk(audio)
        self._tail = np.concatenate((self._tail, audio))
        while len(self._tail) >= FRAME:
            frame, self._tail = self._tail[:FRAME], self._tail[FRAME:]
            at = self._frames * FRAME / ENGINE_SAMPLE_RATE
            self._frames += 1
            if float(np.abs(frame).mean()) >= LOUD:
                self._loud_since_finish += 1
                self._quiet_since = None
                if not self._talking:
                    self._talking = True
                    self._changes.append(SpeechChange("started", at))
            elif self._talking:
                if self._quiet_since is None:
                    self._quiet_since = at
                if at + FRAME / ENGINE_SAMPLE_RATE - self._quiet_since >= PAUSE_SEC:
                    self._talking = False
                    self._changes.append(SpeechChange("stopped", self._quiet_since))
                    self._stopped_since_pass = True
                    self._quiet_since = None

    def process_iter(self) -> TextSpan | None:
        self._ended, self._stopped_since_pass = self._stopped_since_pass, False
        return super().process_iter()

    def finish(self) -> TextSpan | None:  # type: ignore[override]
        """Like the real engine, a flush of nothing but quiet makes no final."""
        loud, self._loud_since_finish = self._loud_since_finish, 0
        span = super().finish()
        return span if loud >= MIN_LOUD_FRAMES else None

    def utterance_ended(self) -> bool:
        return self._ended

    def speech_changes(self, *, ended: bool = False) -> list[SpeechChange]:
        if ended and self._talking:
            self._talking = False
            at = self._quiet_since
            self._changes.append(
                SpeechChange(
                    "stopped", self._frames * FRAME / ENGINE_SAMPLE_RATE if at is None else at
                )
            )
        changes, self._changes = self._changes, []
        return changes


@dataclass
class VadLoader:
    min_chunk_sec: float = 1.0

    def load(self, request: EngineRequest) -> tuple[VadCountingProcessor, EngineInfo]:
        return VadCountingProcessor(), EngineInfo(
            request.backend, request.model, self.min_chunk_sec
        )


def vad(settings: object) -> VadLoader:
    return VadLoader()
