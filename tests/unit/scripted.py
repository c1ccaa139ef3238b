"""A scripted `ASRBase` for driving `OnlineASRProcessor` without a model.

The test describes what the "model" hears as words with absolute stream times
(`Word`). `ScriptedASR.transcribe` is told the buffer's stream offset through a
closure (`ScriptedASR.offset`, wired to the processor's `buffer_time_offset` by
`make_processor`), asks its hypothesis function which words it recognises in
``[offset, offset + len(audio) / 16 kHz]`` and returns them buffer-relative, as
a real backend would. Every call is recorded (offset, samples, prompt).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.asr.base import (
    Audio,
    SegmentDict,
    TextSpan,
    TimedWord,
    TranscribeResult,
    WordDict,
)
from app.asr.online import OnlineASRProcessor, ProcessorOptions
from app.settings import ENGINE_SAMPLE_RATE

SR = ENGINE_SAMPLE_RATE
EPS = 1e-6


@dataclass(frozen=True)
class Word:
    """A word as the scripted model hears it, in absolute stream seconds."""

    start: float
    end: float
    text: str
    seg: int = 0
    prob: float | None = None


@dataclass(frozen=True)
class Call:
    """One `transcribe` call: where the buffer started, how long it was, the prompt."""

    index: int
    offset: float
    samples: int
    prompt: str

    @property
    def seconds(self) -> float:
        return self.samples / SR

    @property
    def end(self) -> float:
        return self.offset + self.seconds


Hypothesis = Callable[[Call], Sequence[Word]]


def visible(script: Sequence[Word], call: Call) -> list[Word]:
    """The words of ``script`` lying wholly inside the audio of ``call``."""
    return [w for w in script if w.start >= call.offset - EPS and w.end <= call.end + EPS]


def from_script(script: Sequence[Word]) -> Hypothesis:
    """A model that always hears exactly the script's words (a perfectly stable model)."""
    return lambda call: visible(script, call)


def regular_words(
    n: int,
    *,
    step: float = 0.5,
    per_segment: int | None = None,
    sentence_every: int | None = None,
    first: float = 0.0,
) -> list[Word]:
    """``n`` words `` w0``, `` w1``… one per ``step`` seconds, each ``step - 0.1`` s long."""
    words = []
    for k in range(n):
        start = first + k * step + 0.05
        text = f" w{k}"
        if sentence_every and (k + 1) % sentence_every == 0:
            text += "."
        seg = k // per_segment if per_segment else 0
        words.append(Word(round(start, 6), round(start + step - 0.1, 6), text, seg))
    return words


def text_of(words: Sequence[Word]) -> str:
    return "".join(w.text for w in words)


class ScriptedASR:
    """`ASRBase` whose output comes from a hypothesis function of the call."""

    sep = ""

    def __init__(self, hypothesis: Hypothesis) -> None:
        self.hypothesis = hypothesis
        self.offset: Callable[[], float] = lambda: 0.0
        self.calls: list[Call] = []

    def load_model(
        self, modelsize: str | None, cache_dir: str | None, model_dir: str | None
    ) -> Any:
        return None

    def transcribe(self, audio: Audio, init_prompt: str = "") -> TranscribeResult:
        assert audio.dtype == np.float32
        call = Call(len(self.calls), self.offset(), len(audio), init_prompt)
        self.calls.append(call)
        segments: list[SegmentDict] = []
        current: int | None = None
        for w in self.hypothesis(call):
            word: WordDict = {
                "start": w.start - call.offset,
                "end": w.end - call.offset,
                "text": w.text,
            }
            if w.prob is not None:
                word["probability"] = w.prob
            if current != w.seg or not segments:
                segments.append({"start": word["start"], "end": 0.0, "text": "", "words": []})
                current = w.seg
            seg = segments[-1]
            seg["words"].append(word)
            seg["end"] = word["end"]
            seg["text"] += w.text
        return {
            "text": "".join(s["text"] for s in segments),
            "segments": segments,
            "language": "en",
        }

    def ts_words(self, result: TranscribeResult) -> list[TimedWord]:
        return [
            TimedWord(w["start"], w["end"], w["text"], w.get("probability"))
            for seg in result["segments"]
            for w in seg["words"]
        ]

    def segments_end_ts(self, result: TranscribeResult) -> list[float]:
        return [seg["end"] for seg in result["segments"]]

    def use_vad(self) -> None:
        pass


@dataclass
class Driver:
    """A processor over a `ScriptedASR`, fed silence one chunk at a time."""

    asr: ScriptedASR
    processor: OnlineASRProcessor
    finals: list[TextSpan] = field(default_factory=list)

    def feed(self, seconds: float) -> None:
        self.processor.insert_audio_chunk(np.zeros(round(seconds * SR), dtype=np.float32))

    def step(self, seconds: float = 1.0) -> TextSpan | None:
        """Insert ``seconds`` of audio and run one `process_iter`."""
        self.feed(seconds)
        span = self.processor.process_iter()
        if span is not None:
            self.finals.append(span)
        return span

    def finish(self) -> TextSpan | None:
        span = self.processor.finish()
        if span is not None:
            self.finals.append(span)
        return span

    @property
    def text(self) -> str:
        return "".join(s.text for s in self.finals)

    @property
    def words(self) -> list[TimedWord]:
        return [w for s in self.finals for w in s.words]


def make_processor(
    hypothesis: Hypothesis | Sequence[Word], options: ProcessorOptions | None = None
) -> Driver:
    hyp = hypothesis if callable(hypothesis) else from_script(hypothesis)
    asr = ScriptedASR(hyp)
    processor = OnlineASRProcessor(asr, options)
    asr.offset = lambda: processor.buffer_time_offset
    return Driver(asr, processor)
