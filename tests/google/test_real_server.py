"""Backend ``google`` in a real service process (`run.py`), configured only by environment.

The default backend stays faster-whisper; ``GOOGLE_SPEECH_ENDPOINT`` points the
bridge at the fake Speech server running in this test process.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bench.server import running_server
from clients.asr_client import ASRStreamClient
from tests.google.fake_speech import FakeSpeechServer, Script, ramp

pytestmark = pytest.mark.e2e


def test_google_backend_in_a_real_server_process(tmp_path: Path) -> None:
    env = {
        "GOOGLE_SPEECH_ENDPOINT": "",  # set below, once the fake has its port
        "GOOGLE_RESTART_SEC": "1",  # shrunk, so the restart happens in a short clip
        "MODEL_CACHE_DIR": str(tmp_path / "models"),
    }
    with FakeSpeechServer(Script(words_per_final=1)) as fake:
        env["GOOGLE_SPEECH_ENDPOINT"] = fake.endpoint
        with running_server(env=env, log_path=tmp_path / "server.log") as url:
            client = ASRStreamClient(url)
            result = asyncio.run(
                client.transcribe(
                    ramp(3.0, 24_000),
                    sample_rate_hertz=24_000,
                    chunk_ms=100,
                    realtime=True,  # a microphone's pace: the bridge restarts mid-stream
                    config={
                        "backend": "google",
                        "language_code": "ar-EG",
                        "enable_word_time_offsets": True,
                    },
                )
            )
    types = [r.message.type for r in result.messages]
    assert types[0] == "metadata" and types[-1] == "complete" and result.close_code == 1000
    assert "error" not in types
    assert result.transcript.split() == [f"s{5 * k}" for k in range(6)]
    ends = [f.end for f in result.finals]
    assert ends == [0.5 * (k + 1) for k in range(6)]  # continuous across restarts
    assert len(fake.streams) >= 2
    config = fake.streams[0].config
    assert (config.language_code, config.sample_rate_hertz, config.model) == (
        "ar-EG",
        24_000,
        "latest_long",
    )
