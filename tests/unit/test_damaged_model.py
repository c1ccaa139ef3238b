"""A model folder that is there but cannot be loaded is `model_unavailable`, not a crash."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.asr.base import EngineRequest
from app.asr.faster_whisper_loader import FasterWhisperLoader
from app.errors import BackendUnavailable
from app.settings import Settings


def test_a_damaged_model_folder_is_model_unavailable(tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_bytes(b"not a model")
    (tmp_path / "config.json").write_text("{}")
    loader = FasterWhisperLoader(Settings())
    request = EngineRequest(
        backend="faster-whisper", model=str(tmp_path), language="en", language_code="en-US"
    )
    with pytest.raises(BackendUnavailable) as err:
        loader.load(request)
    assert err.value.code == "model_unavailable"
    assert str(tmp_path) not in err.value.detail  # no server paths to the client
