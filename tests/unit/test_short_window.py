"""The opt-in short encoder window (WHISPER_SHORT_WINDOW)."""

from __future__ import annotations

import threading

import numpy as np

from app.asr import faster_whisper_backend as backend


def test_encoder_frames_pad_with_a_margin_and_cap_at_30_s() -> None:
    assert backend.encoder_frames(1.0) == 300  # 1 s + 2 s margin
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
