"""Client resume over backend ``google``: the bridge's own restarts and a client's resume
together double nothing and lose nothing (issue 25).

The fake Speech server names each word by the audio it starts on (``ramp``: every
100 ms block holds its index), so a word heard twice, by two Google streams of the
bridge or by two connections of the client, would show up twice in the transcript.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bench.server import running_server
from clients.asr_client import ASRStreamClient, StreamResult
from tests.e2e.test_resume import relay_to
from tests.google.fake_speech import FakeSpeechServer, Script, ramp

pytestmark = pytest.mark.e2e

RATE = 16_000
SECONDS = 6.0
WORD_SEC = 0.5  # the fake's default: words s0, s5, s10, … (their first 100 ms block)


async def stream_cut_once(port: int) -> StreamResult:
    result = StreamResult()
    async with relay_to(port) as relay:
        stream = asyncio.create_task(
            ASRStreamClient(relay.url).transcribe(
                ramp(SECONDS, RATE),
                sample_rate_hertz=RATE,
                config={"backend": "google", "language_code": "en-US"},
            )
        )
        await asyncio.sleep(2.7)  # past a bridge restart (GOOGLE_RESTART_SEC=1), mid-word
        assert relay.cut() == 1
        result = await stream
    return result


def test_a_resumed_google_stream_hears_every_word_once(tmp_path: Path) -> None:
    env = {
        "GOOGLE_SPEECH_ENDPOINT": "",
        "GOOGLE_RESTART_SEC": "1",  # the bridge restarts its Google stream every second
        "MODEL_CACHE_DIR": str(tmp_path / "models"),
    }
    with FakeSpeechServer(Script(words_per_final=1)) as fake:
        env["GOOGLE_SPEECH_ENDPOINT"] = fake.endpoint
        with running_server(env=env, log_path=tmp_path / "server.log") as url:
            port = int(url.split(":")[2].split("/")[0])
            result = asyncio.run(stream_cut_once(port))
    types = [r.message.type for r in result.messages]
    assert types.count("metadata") == 2 and types[-1] == "complete", types
    assert len(result.resumes) == 1 and result.resumes[0].reason == "connection lost (1006)"
    words = result.transcript.split()
    assert words == [f"s{5 * k}" for k in range(int(SECONDS / WORD_SEC))], words
    ends = [f.end for f in result.finals]
    assert ends == [WORD_SEC * (k + 1) for k in range(len(ends))]  # continuous across both
    assert result.resumes[0].offset_sec in ends
    assert len(fake.streams) >= 4  # bridge restarts on both connections, and the resume
