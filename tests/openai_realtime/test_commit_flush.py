"""A commit is complete when the engine says its flush is done, and holds only its own audio.

The core answers every finalize with `FlushedEvent`, so a commit gets its
``completed`` right after the flush's final (or at once, with ``""``, when the
flush found nothing) instead of after `FLUSH_QUIET_SEC`; and the flush covers
exactly the audio appended before the commit, so audio appended right after
it goes to the next turn, however busy the engine was when the commit came.
Real server processes on scripted engines, through the official SDK.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.openai_realtime import FLUSH_QUIET_SEC
from bench.server import running_server
from tests.openai_realtime.conftest import (
    PLUGINS,
    SCRIPTED_ENV,
    Event,
    Mode,
    append,
    pcm,
    session,
    update,
)

pytestmark = pytest.mark.e2e

MODES = ["ga", "beta"]
COMMITTED = "input_audio_buffer.committed"
COMPLETED = "conversation.item.input_audio_transcription.completed"
DELTA = "conversation.item.input_audio_transcription.delta"
ENGINE_RATE = 16_000
PROMPT_SEC = 1.0  # well under FLUSH_QUIET_SEC: the scripted engine flushes in milliseconds
SLOW_PASS_SEC = 1.0  # `tests.support.scripted:slow`: every engine pass takes this long


@pytest.fixture(scope="module")
def slow_base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server whose engine passes take a second each (``w<k>`` per second, ``end<samples>``
    at a flush), so audio can be appended while the engine is busy."""
    env = {
        **SCRIPTED_ENV,
        "ASR_PLUGINS": f"{PLUGINS},slow=tests.support.scripted:slow",
        "DEFAULT_BACKEND": "slow",
        "DEFAULT_MODEL": "slow",
    }
    log = Path(tmp_path_factory.mktemp("openai-slow")) / "server.log"
    with running_server(env=env, log_path=log) as url:
        yield url.replace("ws://", "http://").replace("/ws/asr-stream", "")


@pytest.mark.parametrize("mode", MODES)
async def test_a_commit_with_no_new_speech_completes_at_once(
    scripted_base: str, mode: Mode
) -> None:
    assert PROMPT_SEC < FLUSH_QUIET_SEC
    async with session(scripted_base, mode) as (conn, reader):
        await update(conn, mode)
        loop = asyncio.get_running_loop()

        def completed(count: int) -> Callable[[Event], bool]:
            return lambda _: len(reader.of(COMPLETED)) == count

        for turn in range(2):
            await append(conn, pcm(0.6, value=0))  # quiet: the flush makes no final
            asked = loop.time()
            await conn.input_audio_buffer.commit()
            await reader.wait_for(completed(turn + 1))
            assert loop.time() - asked < PROMPT_SEC
            done = reader.of(COMPLETED)[turn]
            assert done["transcript"] == ""
            committed = reader.of(COMMITTED)[turn]
            assert committed["item_id"] == done["item_id"]
            kinds = [e["type"] for e in reader.events if e.get("item_id") == done["item_id"]]
            assert kinds.index(COMMITTED) < kinds.index(COMPLETED)
        assert not reader.of(DELTA) and not reader.of("error")


@pytest.mark.parametrize("mode", MODES)
async def test_audio_appended_right_after_a_commit_goes_to_the_next_turn(
    slow_base: str, mode: Mode
) -> None:
    async with session(slow_base, mode) as (conn, reader):
        await update(conn, mode)
        await append(conn, pcm(1.0))  # a step: the engine starts a second-long pass
        await asyncio.sleep(SLOW_PASS_SEC / 4)
        # All of this reaches the server while that pass runs.
        await append(conn, pcm(0.5))
        await conn.input_audio_buffer.commit()
        await append(conn, pcm(0.7))
        await conn.input_audio_buffer.commit()
        await reader.wait_for(lambda e: len(reader.of(COMPLETED)) == 2, within=20.0)
        first, second = reader.of(COMPLETED)
        assert [c["item_id"] for c in reader.of(COMMITTED)] == [first["item_id"], second["item_id"]]
        # The engine's ``end<samples>`` counts what it heard until each flush (16 kHz):
        # the first commit's 1.5 s exactly, not the 0.7 s appended after it.
        assert first["transcript"] == "w0 end24000"
        assert second["transcript"] == "w1 end35200"
        assert first["usage"]["seconds"] == 1.5 and second["usage"]["seconds"] == 0.7
        assert not reader.of("error")
