"""The opt-in short encoder window (WHISPER_SHORT_WINDOW)."""

from __future__ import annotations

import threading

import numpy as np

from app.asr import faster_whisper_backend as backend


def test_encoder_frames_are_at_least_10_s_with_a_margin_and_cap_at_30_s() -> None:
    assert backend.encoder_frames(1.0) == 1000  # never under 10 s: shorter windows loop
    assert backend.encoder_frames(8.0) == 1000  # 8 s + 2 s
    assert backend.encoder_frames(12.0) == 1500  # 12 s + 25 %
    assert backend.encoder_frames(27.0) == 3000  # never past Whisper's window


def test_padding_follows_the_calling_threads_window_only() -> None:
    import faster_whisper.transcribe as fw_transcribe

    backend._install_short_window()
    backend._install_short_window()  # idempotent: one wrapper, not two
    pad = fw_transcribe.pad_or_trim
    assert getattr(pad, "asr_stream_window", False)
    features = np.ones((80, 250), dtype=np.float32)
    backend._window.frames = 500
    try:
        assert pad(features).shape == (80, 500)
        seen: list[tuple[int, int]] = []
        other = threading.Thread(target=lambda: seen.append(pad(features).shape))
        other.start()
        other.join()
        assert seen == [(80, 3000)]  # another thread keeps Whisper's 30 s
    finally:
        backend._window.frames = None
    assert pad(features).shape == (80, 3000)


class _Segment:
    def __init__(self, text: str, compression_ratio: float) -> None:
        self.text, self.compression_ratio = text, compression_ratio
        self.start, self.end, self.no_speech_prob = 0.0, 1.0, 0.0
        self.words: list[object] = []


class _LoopingModel:
    """Loops (a high compression ratio) on a short window, reads fine on 30 s."""

    def __init__(self) -> None:
        self.windows: list[int | None] = []

    def transcribe(self, audio: object, **options: object) -> tuple[list[_Segment], object]:
        frames = getattr(backend._window, "frames", None)
        self.windows.append(frames)
        info = type("Info", (), {"language": "en"})()
        if frames is not None:
            return [_Segment(" good morning" * 20, 12.0)], info
        return [_Segment(" good morning", 1.1)], info


def test_a_short_window_pass_that_loops_is_redone_on_the_full_window() -> None:
    model = _LoopingModel()
    asr = backend.FasterWhisperASR("en", model=model, short_window=True)
    result = asr.transcribe(np.zeros(16_000, dtype=np.float32))
    assert result["text"] == " good morning"
    assert model.windows == [1000, None]
