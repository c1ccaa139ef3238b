"""The ffmpeg and pydub streamers, and an ffmpeg pipe into `asr-stream -`, on an MP3."""

from __future__ import annotations

import io
import subprocess
import wave
from pathlib import Path

import pytest

from bench.stream_latency import word_error_rate
from tests.support.commands import (
    AUDIO,
    COMMAND_TIMEOUT_SEC,
    ROOT,
    asr_stream,
    client_env,
    module,
    require_program,
    run,
    transcript_of,
)

pytestmark = pytest.mark.e2e

MAX_WER = 0.25
MP3 = AUDIO / "en_48k.mp3"
REFERENCE = (AUDIO / "en_48k.txt").read_text()


def _empty_wav() -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
    return buffer.getvalue()


EMPTY_WAV = _empty_wav()  # a valid file without a single sample


@pytest.fixture(scope="module")
def ffmpeg() -> str:
    return require_program("ffmpeg", "Debian: apt-get install ffmpeg")


def check_transcript(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 0, done.stderr
    assert "error" not in done.stderr, done.stderr
    transcript = transcript_of(done.stdout)
    wer = word_error_rate(REFERENCE, transcript)
    assert wer <= MAX_WER, f"WER {wer:.2f}: {transcript!r}"
    assert "umbrella" in transcript.lower()


@pytest.mark.parametrize("streamer", ["clients.ffmpeg_stream", "clients.pydub_stream"])
def test_streamer_transcribes_an_mp3(server_url: str, ffmpeg: str, streamer: str) -> None:
    """pydub also decodes MP3 through the ffmpeg program."""
    check_transcript(run([*module(streamer), str(MP3), "--url", server_url, "--fast"]))


def test_ffmpeg_pipe_into_asr_stream_stdin(server_url: str, ffmpeg: str) -> None:
    """The README's live-input recipe: ffmpeg writes s16le 16 kHz mono, asr-stream reads -."""
    decoder = subprocess.Popen(
        [
            ffmpeg,
            "-loglevel",
            "error",
            "-nostdin",
            "-i",
            MP3,
            "-f",
            "s16le",
            "-ar",
            "16000",
            "-ac",
            "1",
            "-",
        ],
        stdout=subprocess.PIPE,
    )
    assert decoder.stdout is not None
    try:
        done = subprocess.run(
            [*asr_stream(), "-", "--url", server_url, "--fast"],
            stdin=decoder.stdout,
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=client_env(),
            timeout=COMMAND_TIMEOUT_SEC,
            check=False,
        )
    finally:
        decoder.stdout.close()
        assert decoder.wait(timeout=30) == 0
    check_transcript(done)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"this is not audio\n" * 50, "error: ffmpeg failed (exit 1): "),
        (EMPTY_WAV, "error: ffmpeg decoded no audio from the input"),
    ],
    ids=["not-media", "no-audio-frames"],
)
def test_ffmpeg_streamer_reports_a_failed_decode(
    server_url: str, ffmpeg: str, tmp_path: Path, content: bytes, message: str
) -> None:
    """ffmpeg's own message, exit 2, and no traceback: the session is ended, not left open."""
    bogus = tmp_path / "talk.wav"
    bogus.write_bytes(content)
    done = run([*module("clients.ffmpeg_stream"), str(bogus), "--url", server_url])
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(message), done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("streamer", ["clients.ffmpeg_stream", "clients.pydub_stream"])
def test_streamer_missing_file_exits_2(streamer: str) -> None:
    done = run([*module(streamer), "no/such.mp3", "--url", "ws://127.0.0.1:1"])
    assert done.returncode == 2
    assert done.stderr == "error: no/such.mp3: No such file\n"


def test_pydub_streamer_reports_an_undecodable_file(ffmpeg: str, tmp_path: Path) -> None:
    bogus = tmp_path / "talk.ogg"
    bogus.write_bytes(b"OggS but not really" * 100)
    done = run([*module("clients.pydub_stream"), str(bogus), "--url", "ws://127.0.0.1:1"])
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: {bogus}: pydub cannot decode it (")
    assert "Traceback" not in done.stderr
