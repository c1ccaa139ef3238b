"""A busy engine's streams on the real model: a shorter buffer, the same speech heard."""

from __future__ import annotations

import pytest

from app.asr.base import EngineRequest, StreamingOptions
from app.asr.faster_whisper_loader import FasterWhisperLoader
from app.settings import Settings
from bench.replay import ENGLISH, engine_audio
from bench.stream_latency import word_error_rate
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
