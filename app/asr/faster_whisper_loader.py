"""The ``faster-whisper`` backend's loader: each model loaded once, one processor per session."""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from app.asr.base import EngineInfo, EngineRequest
from app.asr.faster_whisper_backend import FasterWhisperASR, Placement, encoder_frames, place
from app.asr.models import BASE, BUNDLED_MODELS, TINY_EN, available, is_english_only
from app.asr.models import resolve_model_dir as _resolve_model_dir
from app.asr.online import TRIM_KEEP_SEC, OnlineASRProcessor, ProcessorOptions
from app.asr.vad import QuietStreamScorer, SileroScorer, SpeechTimeline
from app.errors import ConfigError, echo
from app.settings import ENGINE_SAMPLE_RATE, Settings

logger = logging.getLogger(__name__)

BACKEND_NAME = "faster-whisper"
WARMUP_SECONDS = 1.0
# Tokens Whisper writes per second of English speech: 16 per busy pass on 4.7 s buffers
# of `en_long_16k.wav` (bench/results/README.md, "Where a busy pass's time goes").
SPEECH_TOKENS_PER_SEC = 3.5


def timed_busy_pass(model: Any, buffer_sec: float) -> float:
    """Seconds of a streaming pass on a buffer of ``buffer_sec`` of speech, timed on the
    model's own calls: features, the encoder on the pass's window, the decoder, and
    word alignment (the voice activity's few milliseconds left out).

    The warm-up's noise makes the decoder stop at once, so it is kept from stopping
    (the end-of-text token suppressed) and its time per token scaled to the tokens
    `SPEECH_TOKENS_PER_SEC` says that much speech needs. The best of two passes: the
    first allocates for the window's shape.
    """
    from faster_whisper.tokenizer import Tokenizer

    tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, "transcribe", "en")
    prompt = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
    wanted = max(1, round(SPEECH_TOKENS_PER_SEC * buffer_sec))
    samples = int(buffer_sec * ENGINE_SAMPLE_RATE)
    window = encoder_frames(buffer_sec)
    noise = np.random.default_rng(0).normal(0.0, 0.01, samples).astype(np.float32)
    best = math.inf
    for _ in range(2):
        started = time.perf_counter()
        features = model.feature_extractor(noise)[:, :window]
        features = np.pad(features, ((0, 0), (0, window - features.shape[1])))
        encoded = model.encode(features)
        encoded_at = time.perf_counter()
        # With this short prompt CTranslate2 4.8 writes about half of ``max_length``;
        # the time per token written is what is scaled.
        result = model.model.generate(
            encoded,
            [prompt],
            beam_size=1,
            max_length=2 * wanted + len(prompt),
            suppress_tokens=[-1, tokenizer.eot],
        )
        decoded_at = time.perf_counter()
        written = result[0].sequences_ids[0]
        tokens = [t for t in written if t < tokenizer.eot][:wanted]
        model.find_alignment(tokenizer, [tokens], encoded, window)
        aligned_at = time.perf_counter()
        per_token = (decoded_at - encoded_at) / max(1, len(written))
        spent = (encoded_at - started) + per_token * wanted + (aligned_at - decoded_at)
        best = min(best, spent)
    return best


class FasterWhisperLoader:
    """Loads each model once (thread-safe) and wraps it per session in `OnlineASRProcessor`."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        # The device is settled here, once: with WHISPER_DEVICE=cuda and no GPU the
        # backend is unavailable (`Registry.get_loader` raises, `/backends` says why and
        # the command line refuses to start), rather than failing at its first model load.
        # A WHISPER_COMPUTE_TYPE the operator set wins; unset, the device's default.
        explicit = "whisper_compute_type" in settings.model_fields_set
        self.placement: Placement = place(
            settings.whisper_device, settings.whisper_compute_type if explicit else None
        )
        cuda = self.placement.cuda
        logger.info(
            "faster-whisper: WHISPER_DEVICE=%s runs on %s, compute type %s%s",
            self.placement.setting,
            self.placement.device,
            self.placement.compute_type,
            "" if cuda is None else f" (CTranslate2 sees {cuda.devices} CUDA devices)",
        )
        self._models: dict[Path, Any] = {}  # model folder → shared WhisperModel
        self._names: dict[str, Path] = {}  # model names and paths resolved so far
        self.load_seconds: dict[str, float] = {}
        self.warm_pass_seconds: dict[str, float] = {}  # a timed pass per model, after warm-up
        self.busy_pass_seconds: dict[str, float] = {}  # a busy engine's pass, timed at start-up
        self._lock = threading.Lock()

    @property
    def default_model(self) -> str:
        return self._settings.default_model or TINY_EN

    def describe(self) -> dict[str, Any]:
        """For ``GET /backends``: usable; which bundled models are installed; device, precision."""
        models = {name: available(name) or "installed" for name in BUNDLED_MODELS}
        return {
            "usable": True,
            "reason": None,
            "models": models,
            "loaded": sorted(self._names),
            "device": self.placement.device,
            "compute_type": self.placement.compute_type,
        }

    def model_dir(self, name: str) -> Path:
        with self._lock:
            if name not in self._names:
                self._names[name] = _resolve_model_dir(name, self._settings.model_cache_dir)
            return self._names[name]

    def check(self, request: EngineRequest) -> Path:
        """Refuse, naming the config field, what this backend cannot serve; return the folder."""
        name = request.model or self.default_model
        model_dir = self.model_dir(name)
        if request.language is None:
            raise ConfigError(
                f"Field 'language_code' {echo(request.language_code)} is not a language Whisper "
                "recognises.",
                code="unsupported_language",
                field="language_code",
            )
        if is_english_only(name, model_dir):
            if request.language != "en":
                raise ConfigError(
                    f"Model '{name}' understands English only; for field 'language_code' "
                    f"{echo(request.language_code)} use the multilingual model '{BASE}' "
                    "(set 'model': 'base').",
                    code="unsupported_language",
                    field="language_code",
                )
            if request.task == "translate":
                raise ConfigError(
                    f"Model '{name}' is English only and cannot translate; use '{BASE}'.",
                    code="unsupported_task",
                    field="task",
                )
        return model_dir

    def shared_model(self, name: str, model_dir: Path) -> Any:
        """The `WhisperModel` in ``model_dir``, loaded and warmed on first use."""
        with self._lock:
            model = self._models.get(model_dir)
            if model is None:
                started = time.perf_counter()
                model = FasterWhisperASR(
                    "en",
                    model_dir=model_dir,
                    device=self.placement.device,
                    compute_type=self.placement.compute_type,
                    cpu_threads=self._settings.whisper_cpu_threads,
                    num_workers=self._settings.whisper_num_workers or len(os.sched_getaffinity(0)),
                ).model
                self._warm_up(model)
                self.warm_pass_seconds[name] = self._timed_pass(model)
                if name == self.default_model:  # only its figures set the capacity
                    self._time_busy_pass(name, model)
                elapsed = time.perf_counter() - started
                self.load_seconds[name] = round(elapsed, 3)
                logger.info(
                    "loaded and warmed model %s in %.2f s on %s (CTranslate2 runs %s)",
                    name,
                    elapsed,
                    self.placement.device,
                    getattr(getattr(model, "model", None), "compute_type", "?"),
                )
                self._models[model_dir] = model
            return model

    def asr(self, request: EngineRequest) -> FasterWhisperASR:
        """A per-session wrapper around the shared model."""
        name = request.model or self.default_model
        model = self.shared_model(name, self.check(request))
        return FasterWhisperASR(
            request.language or "en",  # `check` refused None
            model=model,
            task=request.task,
            beam_size=self._settings.whisper_beam_size,
            vad_filter=self._settings.whisper_vad_filter,
            short_window=self._settings.whisper_short_window,
        )

    @staticmethod
    def _warm_up(model: object) -> None:
        # The first inference allocates CTranslate2's buffers; pay for it at
        # start-up, not in the first user's session.
        rng = np.random.default_rng(0)
        noise = rng.normal(0.0, 0.01, int(WARMUP_SECONDS * ENGINE_SAMPLE_RATE)).astype(np.float32)
        FasterWhisperASR("en", model=model, vad_filter=False).transcribe(noise)

    @staticmethod
    def _timed_pass(model: object) -> float:
        """One more warm-up pass, timed: the start-up measure of what a pass costs."""
        started = time.perf_counter()
        FasterWhisperLoader._warm_up(model)
        return time.perf_counter() - started

    def _time_busy_pass(self, name: str, model: Any) -> None:
        """Time a busy engine's pass of ``model`` (`busy_stream_cost`), unless busy
        trimming is off."""
        busy_sec = self._settings.busy_buffer_trimming_sec
        if not busy_sec:
            return
        try:
            self.busy_pass_seconds[name] = timed_busy_pass(model, busy_sec)
        except (RuntimeError, ValueError) as exc:  # CTranslate2's, for a model folder
            # unlike Whisper's own: the node only starts lower.
            logger.warning("could not time a busy pass of %s: %s", name, exc)

    def _per_audio_second(self, pass_seconds: dict[str, float]) -> float | None:
        """The default model's timed pass over the audio each pass hears under load."""
        spent = pass_seconds.get(self.default_model)
        return None if spent is None else spent / self._settings.min_chunk_size

    def stream_cost(self) -> float | None:
        """Core-seconds per audio-second of one stream of the default model (`app.capacity`).

        Under load a stream runs one pass per ``MIN_CHUNK_SIZE`` of audio (previews
        stop), each about one warm-up pass on a whole window: so the warm-up's pass
        time over the step. It overestimates speech with pauses (voice activity skips
        silence); the node's live measure replaces it once sessions run.

        On CUDA it is the same timing, but of a pass on the GPU: wall seconds of GPU
        work (and its CPU-side decoding) per audio second, not a core's. The capacity
        still multiplies it by ``workers`` (WHISPER_NUM_WORKERS, else one per CPU core),
        which on one GPU are CUDA streams sharing it, not independent cores: the start-up
        figure is then optimistic. The live measure times passes as they really run,
        sharing the GPU included, so it corrects that as load grows; LOCAL_CAPACITY
        sets the figure by hand. (Not measured on a GPU here: the CI machine has none.)
        """
        return self._per_audio_second(self.warm_pass_seconds)

    def busy_stream_cost(self) -> float | None:
        """Core-seconds per audio-second of one stream of the default model while the
        engine is busy (`app.capacity`), measured at start-up; None with busy trimming off.

        A busy engine trims buffers at BUSY_BUFFER_TRIMMING_SEC, so its passes
        encode the shortest window and write few tokens (`timed_busy_pass`): on 2
        AMD EPYC cores under oneDNN a third of the whole-window warm-up pass,
        which decodes almost nothing on noise (under MKL there, where a token
        costs 95 ms, 1.7 times it). One pass per ``MIN_CHUNK_SIZE`` of audio, as
        in `stream_cost`; the node's live busy passes then move it.
        """
        return self._per_audio_second(self.busy_pass_seconds)

    def load(self, request: EngineRequest) -> tuple[OnlineASRProcessor, EngineInfo]:
        settings, opts = self._settings, request.options
        trimming_sec = opts.buffer_trimming_sec or settings.buffer_trimming_sec
        busy_sec = min(settings.busy_buffer_trimming_sec, trimming_sec)
        options = ProcessorOptions(
            buffer_trimming=opts.buffer_trimming or settings.buffer_trimming,
            buffer_trimming_sec=trimming_sec,
            trim_keep_sec=min(TRIM_KEEP_SEC, trimming_sec / 2),
            max_buffer_sec=max(settings.max_buffer_sec, trimming_sec + 1.0),
            pause_sec=settings.vad_pause_sec,
            first_commit_sec=settings.first_commit_sec,
            # A trimming the client chose is kept whatever the load.
            busy_trimming_sec=busy_sec if busy_sec and not opts.buffer_trimming_sec else None,
            busy_keep_sec=min(TRIM_KEEP_SEC, busy_sec / 2),
        )
        speech = None
        if settings.streaming_vad:
            speech = SpeechTimeline(QuietStreamScorer(SileroScorer()))
        processor = OnlineASRProcessor(self.asr(request), options, speech)
        info = EngineInfo(
            backend=BACKEND_NAME,
            model=request.model or self.default_model,
            min_chunk_sec=opts.min_chunk_size or settings.min_chunk_size,
            # A step the client chose is kept whatever the load.
            light_chunk_sec=None if opts.min_chunk_size else settings.min_chunk_size_light,
        )
        return processor, info
