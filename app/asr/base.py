"""Engine protocols: what a model (`ASRBase`) or a whole engine (`ASRProcessor`) must provide.

Two ways to plug in an engine:

* **A model** (`ASRBase`): something that transcribes a short buffer of 16 kHz
  float32 audio with word timestamps. The project's `OnlineASRProcessor` turns
  it into a streaming engine (LocalAgreement-2, buffer trimming).
* **A whole engine** (`ASRProcessor`): something with its own buffering that
  takes audio chunks and returns committed text.

Either is handed to sessions by a `ModelLoader` registered under a backend name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import (
    TYPE_CHECKING,
    Any,
    Literal,
    NamedTuple,
    NotRequired,
    Protocol,
    TypedDict,
    runtime_checkable,
)

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from app.session import AudioHandoff, Emit

Audio = npt.NDArray[np.float32]
"""Mono float32 samples in [-1, 1] at `ENGINE_SAMPLE_RATE` (16 kHz)."""


class WordDict(TypedDict):
    start: float
    end: float
    text: str
    probability: NotRequired[float]


class SegmentDict(TypedDict):
    start: float
    end: float
    text: str
    words: list[WordDict]
    no_speech_prob: NotRequired[float]


class TranscribeResult(TypedDict):
    """What `ASRBase.transcribe` returns; times are seconds from the buffer's start."""

    text: str
    segments: list[SegmentDict]
    language: str


class TimedWord(NamedTuple):
    """A word with its times in seconds; `probability` when the model gives one."""

    start: float
    end: float
    word: str
    probability: float | None = None


RawWord = tuple[float, float, str] | TimedWord
"""A word as `ASRBase.ts_words` may give it: ``(start, end, word)`` or a `TimedWord`."""


@dataclass(frozen=True)
class TextSpan:
    """Recognised text over ``[start, end]`` seconds of stream time."""

    start: float
    end: float
    text: str
    words: tuple[TimedWord, ...] = field(default=())
    confidence: float | None = None
    stability: float | None = None
    """For interim text: how likely it is to stay as it is, 0–1, when the engine says."""


@runtime_checkable
class ASRBase(Protocol):
    """A speech model that transcribes a buffer (Path 1 of the plugin guide).

    ``sep`` joins the ``word`` strings of `ts_words` into text ("" when words
    carry their own leading space, as faster-whisper's do; " " otherwise).
    """

    sep: str

    def load_model(
        self, modelsize: str | None, cache_dir: str | None, model_dir: str | None
    ) -> Any:
        """Load (or return the already loaded) model."""
        ...

    def transcribe(self, audio: Audio, init_prompt: str = "") -> TranscribeResult:
        """Transcribe the whole buffer; ``init_prompt`` is the text that preceded it."""
        ...

    def ts_words(self, result: TranscribeResult) -> Sequence[RawWord]:
        """Words of a result as ``(start, end, word)`` (or `TimedWord`), in order."""
        ...

    def segments_end_ts(self, result: TranscribeResult) -> list[float]:
        """End time of each segment of a result, in order."""
        ...

    def use_vad(self) -> None:
        """Turn on the backend's own voice activity filter, if it has one."""
        ...


ProcessorResult = TextSpan | tuple[float, float, str] | None


@runtime_checkable
class ASRProcessor(Protocol):
    """A streaming engine (Path 2): audio chunks in, committed text out.

    `process_iter` and `finish` return committed (final) text, never revised,
    as a `TextSpan` or a ``(start, end, text)`` tuple, or ``None`` when there is
    nothing new. Times are seconds of stream audio.
    """

    def init(self, offset: float = 0.0) -> None:
        """Reset for a new stream whose first sample is at ``offset`` seconds."""
        ...

    def insert_audio_chunk(self, audio: Audio) -> None:
        """Append 16 kHz float32 audio."""
        ...

    def process_iter(self) -> ProcessorResult:
        """Recognise what is buffered; return newly committed text."""
        ...

    def finish(self) -> ProcessorResult:
        """End of stream: return everything not yet committed."""
        ...


@runtime_checkable
class SupportsInterim(Protocol):
    """An `ASRProcessor` that can also show its current, not yet committed guess."""

    def unconfirmed(self) -> TextSpan | None: ...


@runtime_checkable
class SupportsPreview(SupportsInterim, Protocol):
    """An `ASRProcessor` that can refresh its guess without deciding what to commit.

    Lets a lightly loaded server show words sooner without changing when and
    what is committed: two passes half a step apart agree on a half-heard word
    far more often, and committing it costs accuracy.
    """

    def preview_iter(self) -> None:
        """A pass that only updates `unconfirmed`; it never commits."""
        ...


@dataclass(frozen=True)
class StreamingOptions:
    """Tuning of `OnlineASRProcessor` (None: the settings' value)."""

    min_chunk_size: float | None = None
    buffer_trimming: Literal["segment", "sentence"] | None = None
    buffer_trimming_sec: float | None = None


@dataclass(frozen=True)
class EngineRequest:
    """What a session (or `/load_model`) asks a loader for."""

    backend: str
    model: str
    """Model name or path; "" asks for the backend's own default."""
    language: str | None
    """Whisper language code (``"en"``, ``"ar"``…) mapped from BCP-47; None if Whisper lacks it."""
    language_code: str = "en-US"
    """The BCP-47 tag as the client gave it (engines such as Google take it as is)."""
    punctuation: bool = True
    word_offsets: bool = False
    interim_results: bool = True
    task: Literal["transcribe", "translate"] = "transcribe"
    options: StreamingOptions = field(default_factory=StreamingOptions)


@dataclass(frozen=True)
class EngineInfo:
    """What a loader tells the session about the processor it built."""

    backend: str
    model: str
    min_chunk_sec: float = 1.0
    """How much new audio to gather before each `process_iter`."""
    light_chunk_sec: float | None = None
    """The step of preview passes while the process is lightly loaded (see
    `app.session.EngineLoad`); None: no previews."""


class ModelLoader(Protocol):
    """Builds a fresh processor per session; heavy models are cached inside the loader."""

    def load(self, request: EngineRequest) -> tuple[ASRProcessor, EngineInfo]: ...


class Recognizer(Protocol):
    """A session's engine loop; runs in the recognition thread until the hand-off ends.

    The hand-off gives the client's LINEAR16 bytes at the client's rate
    (``handoff.sample_rate``), as sent; the recognizer decodes what it needs.
    """

    def run(self, handoff: AudioHandoff, emit: Emit) -> None: ...


@runtime_checkable
class RecognizerLoader(Protocol):
    """A loader for an engine with its own streaming loop (a cloud bridge, say).

    Used instead of `ModelLoader.load` when a backend's loader has it.
    ``sample_rate_hertz`` is the client's rate.
    """

    def open_recognizer(
        self, request: EngineRequest, sample_rate_hertz: int
    ) -> tuple[Recognizer, EngineInfo]: ...


def from_whisper_dict(raw: dict[str, Any], word_key: str, probability_key: str) -> TranscribeResult:
    """An openai-whisper-style result (whisper_timestamped, mlx-whisper) as a `TranscribeResult`."""
    segments: list[SegmentDict] = [
        {
            "start": float(seg["start"]),
            "end": float(seg["end"]),
            "text": seg["text"],
            "words": [
                {
                    "start": float(w["start"]),
                    "end": float(w["end"]),
                    "text": str(w[word_key]),
                    "probability": float(w.get(probability_key, 1.0)),
                }
                for w in seg.get("words", ())
            ],
        }
        for seg in raw.get("segments", ())
    ]
    return {"text": raw.get("text", ""), "segments": segments, "language": raw.get("language", "")}


def result_words(result: TranscribeResult) -> list[RawWord]:
    """`ASRBase.ts_words` for any `TranscribeResult`."""
    return [(w["start"], w["end"], w["text"]) for s in result["segments"] for w in s["words"]]


def segment_ends(result: TranscribeResult) -> list[float]:
    """`ASRBase.segments_end_ts` for any `TranscribeResult`."""
    return [s["end"] for s in result["segments"]]


def as_text_span(result: ProcessorResult) -> TextSpan | None:
    """Normalise a processor result; empty text counts as nothing."""
    if result is None:
        return None
    span = result if isinstance(result, TextSpan) else TextSpan(*result)
    return span if span.text.strip() else None
