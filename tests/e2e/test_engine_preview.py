"""Preview passes on the real model and real speech: fresher interims, the same finals."""

from __future__ import annotations

import pytest

from app.asr.faster_whisper_loader import FasterWhisperLoader
from app.settings import Settings
from bench.replay import ENGLISH, engine_audio
from tests.support.commands import AUDIO

pytestmark = pytest.mark.e2e

STEP = 16_000  # 1 s: a committing pass
HALF = STEP // 2


def test_previews_leave_the_finals_of_real_speech_unchanged() -> None:
    loader = FasterWhisperLoader(Settings(_env_file=None))  # type: ignore[call-arg]
    audio = engine_audio(AUDIO / "en_16k.wav")[: 10 * STEP]
    finals: dict[bool, list[str]] = {}
    fresher = 0
    for preview in (False, True):
        processor, _ = loader.load(ENGLISH)
        texts = []
        for at in range(0, len(audio), STEP):
            if preview:
                processor.insert_audio_chunk(audio[at : at + HALF])
                assert processor.preview_iter() is None
                shown = processor.unconfirmed()
                fresher += shown is not None and shown.end > at / STEP
                processor.insert_audio_chunk(audio[at + HALF : at + STEP])
            else:
                processor.insert_audio_chunk(audio[at : at + STEP])
            span = processor.process_iter()
            texts += [span.text] if span else []
        span = processor.finish()
        finals[preview] = texts + ([span.text] if span else [])
    assert "lazy dog" in "".join(finals[False]).lower()
    assert finals[True] == finals[False]
    assert fresher >= 3  # previews showed words the last committing pass had not heard
