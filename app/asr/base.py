"""Engine protocols: what a model (`ASRBase`) or a whole engine (`ASRProcessor`) must provide.

Two ways to plug in an engine:

* **A model** (`ASRBase`): something that transcribes a short buffer of 16 kHz
  float32 audio with word timestamps. The project's `OnlineASRProcessor` turns
  it into a streaming engine (LocalAgreement-2, buffer trimming).
* **A whole engine** (`ASRProcessor`): something with its own buffering that
  takes audio chunks and returns committed text.

Either is handed to sessions by a `ModelLoader` registered under a backend name.

The integration guides (docs/BACKENDS.md, and the `asr_interface` package that
gives their import paths) write a model the way ufal/whisper_streaming did: a
subclass of a base class whose constructor loads the model. `ASRModelBase` is
that class; it satisfies the `ASRBase` protocol, which is what the service
checks, so a model that does not inherit from it serves just as well.
Likewise `ASRConfig` is the guides' loader configuration, and `EngineRequest`,
what a loader gets here, answers to the same names.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import (
    TYPE_CHECKING,
    Any,
    Literal,
    NamedTuple,
    NotRequired,
    Protocol,
    TextIO,
    TypedDict,
    runtime_checkable,
)

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, Field

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


class ASRModelBase:
    """whisper_streaming's ``ASRBase`` as a base class: subclass it and fill in the model.

    The constructor is the original's: it keeps ``lan`` as `original_language`
    (None for ``"auto"``), starts `transcribe_kargs` empty and loads the model
    with ``self.model = self.load_model(modelsize, cache_dir, model_dir)``.
    A subclass implements `transcribe` (returning the `TranscribeResult`
    layout) and, unless its results have that layout, `ts_words` and
    `segments_end_ts`. It satisfies the `ASRBase` protocol.

    Unlike the original, nothing here raises ``NotImplemented`` (a `TypeError`):
    `load_model` keeps a model the subclass set before calling
    ``super().__init__`` (the guides' Path 1 shape), `use_vad` records the wish
    in `transcribe_kargs` for models that have a filter to pass it to, and the
    two extraction methods read the `TranscribeResult` layout.
    """

    sep: str = " "
    """Joins the words of `ts_words`: " " when words come bare, "" when they carry their space."""

    def __init__(
        self,
        lan: str,
        modelsize: str | None = None,
        cache_dir: str | None = None,
        model_dir: str | None = None,
        logfile: TextIO = sys.stderr,
    ) -> None:
        self.logfile = logfile
        self.transcribe_kargs: dict[str, Any] = {}
        self.original_language: str | None = None if lan == "auto" else lan
        self.model: Any = self.load_model(modelsize, cache_dir, model_dir)

    def load_model(
        self,
        modelsize: str | None = None,
        cache_dir: str | None = None,
        model_dir: str | None = None,
    ) -> Any:
        """Load and return the model; by default, the one the subclass already set (or None)."""
        return getattr(self, "model", None)

    def transcribe(self, audio: Audio, init_prompt: str = "") -> TranscribeResult:
        """Transcribe the whole buffer; a subclass must implement it."""
        raise NotImplementedError(f"{type(self).__name__} must implement transcribe()")

    def ts_words(self, result: TranscribeResult) -> Sequence[RawWord]:
        """The words of a `TranscribeResult` as ``(start, end, word)``."""
        return result_words(result)

    def segments_end_ts(self, result: TranscribeResult) -> list[float]:
        """The end of each segment of a `TranscribeResult`."""
        return segment_ends(result)

    def use_vad(self) -> None:
        """Ask for the model's own voice activity filter (``transcribe_kargs["vad_filter"]``)."""
        self.transcribe_kargs["vad_filter"] = True


NO_RESULT = (None, None, "")
"""whisper_streaming's "nothing committed" result, accepted from any processor."""

ProcessorResult = TextSpan | tuple[float, float, str] | tuple[None, None, str] | None


@runtime_checkable
class ASRProcessor(Protocol):
    """A streaming engine (Path 2): audio chunks in, committed text out.

    `process_iter` and `finish` return committed (final) text, never revised,
    as a `TextSpan` or a ``(start, end, text)`` tuple, or ``None`` (or
    whisper_streaming's ``(None, None, "")``) when there is nothing new. Times
    are seconds of stream audio.
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


@runtime_checkable
class SupportsBusy(Protocol):
    """An `ASRProcessor` that can do less per pass while its engine is busy.

    The session tells it before each committing pass (`app.session.EngineLoad`);
    what "less" means is the processor's own (`OnlineASRProcessor`: a shorter buffer).
    """

    def set_busy(self, busy: bool) -> None: ...


@runtime_checkable
class SupportsSpeaking(Protocol):
    """An `ASRProcessor` that knows whether its buffer holds speech to transcribe.

    A stream of silence costs the engine next to nothing (voice activity skips
    its passes), so it should not make the engine busy nor stop another
    stream's previews: `app.session.EngineLoad` counts only the sessions whose
    processor says it is speaking (and every session whose processor cannot say).
    """

    def speaking(self) -> bool:
        """Whether the next committing pass has speech to run the model on."""
        ...


@dataclass(frozen=True)
class SpeechChange:
    """Voice activity turned: speech ``started``, or ``stopped`` at a pause, at ``at`` seconds."""

    kind: Literal["started", "stopped"]
    at: float


@runtime_checkable
class SupportsUtterances(Protocol):
    """An `ASRProcessor` that hears where utterances begin and end (voice activity).

    What the drop-in protocols tell their clients beside the text: Deepgram's
    ``speech_final`` and ``SpeechStarted``, OpenAI's turn boundaries. Watching
    it changes nothing the processor decides.
    """

    def utterance_ended(self) -> bool:
        """Whether the text the latest `process_iter` committed ends an utterance (a pause)."""
        ...

    def speech_changes(self, *, ended: bool = False) -> list[SpeechChange]:
        """Speech starts and stops heard since the last call, in stream order.

        ``ended``: the stream has ended, so speech still going on stops where it was last heard.
        """
        ...


@dataclass(frozen=True)
class StreamingOptions:
    """Tuning of `OnlineASRProcessor` (None: the settings' value)."""

    min_chunk_size: float | None = None
    buffer_trimming: Literal["segment", "sentence"] | None = None
    buffer_trimming_sec: float | None = None


class ASRConfig(BaseModel):
    """The integration guides' loader configuration (their ``asr_interface.core.config``).

    Field names and defaults are the guides' (those of whisper_streaming's
    command line), except ``backend``, whose default is this service's. A
    loader here is handed an `EngineRequest`, which answers to the same names,
    so a loader written against either works; build an `ASRConfig` yourself to
    call a loader directly, as the guides' tests do.
    """

    model: str = Field(description="Model name or size ('tiny', 'base'…) or a path")
    lan: str = Field(default="auto", description="Language code, or 'auto' to detect it")
    task: Literal["transcribe", "translate"] = "transcribe"
    backend: str = Field(default="faster-whisper", description="Registered backend name")
    min_chunk_size: float = Field(default=1.0, gt=0.0, description="Seconds of audio per pass")
    buffer_trimming: Literal["segment", "sentence"] = "segment"
    buffer_trimming_sec: float = Field(default=10.0, gt=0.0, description="Trim past this long")
    model_cache_dir: str | None = Field(default=None, description="Where models are cached")
    model_dir: str | None = Field(default=None, description="A model folder (overrides model)")
    vac: bool = Field(default=False, description="Voice activity control (whisper_streaming)")
    vad: bool = Field(default=False, description="The model's own voice activity filter")


GUIDE_DEFAULTS = ASRConfig(model="")
"""`ASRConfig`'s defaults, for the names an `EngineRequest` answers to."""


@dataclass(frozen=True)
class EngineRequest:
    """What a session (or `/load_model`) asks a loader for.

    It also answers to the guides' `ASRConfig` names (`lan`, `min_chunk_size`,
    `buffer_trimming`, `buffer_trimming_sec`, `model_cache_dir`, `model_dir`,
    `vac`, `vad`), so a loader written after the guides reads it unchanged.
    """

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
    model_cache_dir: str | None = None
    """Where the service keeps models (MODEL_CACHE_DIR), for loaders that cache their own."""
    model_dir: str | None = None

    # -- the guides' `ASRConfig` names -------------------------------------------------

    @property
    def lan(self) -> str:
        """The Whisper language code, or the BCP-47 tag as sent when Whisper lacks it."""
        return self.language or self.language_code

    @property
    def min_chunk_size(self) -> float:
        return self.options.min_chunk_size or GUIDE_DEFAULTS.min_chunk_size

    @property
    def buffer_trimming(self) -> Literal["segment", "sentence"]:
        return self.options.buffer_trimming or GUIDE_DEFAULTS.buffer_trimming

    @property
    def buffer_trimming_sec(self) -> float:
        return self.options.buffer_trimming_sec or GUIDE_DEFAULTS.buffer_trimming_sec

    @property
    def vac(self) -> bool:
        return GUIDE_DEFAULTS.vac

    @property
    def vad(self) -> bool:
        return GUIDE_DEFAULTS.vad


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


@runtime_checkable
class SupportsCheck(Protocol):
    """A loader that can refuse a request it cannot serve without loading a model.

    ``check`` raises `app.errors.ConfigError` naming the field (a language the
    model lacks, a model it does not have); its return value is not used. The
    core calls it before the upgrade when the request carries the config
    (Deepgram's query, a WebRTC offer), so the client gets HTTP 400.
    """

    def check(self, request: EngineRequest) -> object: ...


class ModelLoader(Protocol):
    """Builds a fresh processor per session; heavy models are cached inside the loader.

    A loader that inherits from this class, as the integration guides write
    them, may instead return the guides' metadata dict (``separator``,
    ``model_type``, ``model_size`` or ``model_path``, ``language``,
    ``backend``); the registry maps it onto an `EngineInfo`
    (`app.asr.registry.GuideLoader`).
    """

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
    """Normalise a processor result; empty text (as in ``(None, None, "")``) counts as nothing."""
    if result is None:
        return None
    if isinstance(result, TextSpan):
        span = result
    else:
        start, end, text = result
        if not text or not text.strip():
            return None
        if start is None or end is None:
            raise TypeError(f"a processor returned text without times: {result!r}")
        span = TextSpan(float(start), float(end), text)
    return span if span.text.strip() else None
