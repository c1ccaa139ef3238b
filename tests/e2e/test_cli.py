"""`asr-stream`, the installed command, run as a user runs it against real servers."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.messages import Complete, ErrorMessage, Metadata, Transcript, parse_server_message
from bench.server import running_server
from bench.stream_latency import word_error_rate
from clients.asr_client import read_wav
from tests.support.commands import (
    AUDIO,
    asr_stream,
    client_env,
    finals_of,
    run,
    transcript_of,
)

pytestmark = pytest.mark.e2e

# Same bound as the real-server tests (tests/e2e/test_real_server.py).
MAX_WER = 0.25
API_KEY = "cli-test-key"
# The scripted engine (tests.support.scripted): a word per second of audio and
# "end<N>" with the number of samples it got, so lost audio shows exactly.
COUNTING_ENV = {
    "ASR_PLUGINS": "counting=tests.support.scripted:counting",
    "DEFAULT_BACKEND": "counting",
    "DEFAULT_MODEL": "counting",
    "API_KEYS": API_KEY,
}


def reference(name: str) -> str:
    return (AUDIO / name).with_suffix(".txt").read_text()


def samples_in(name: str) -> int:
    with wave.open(str(AUDIO / name), "rb") as wav:
        return wav.getnframes()


@pytest.fixture(scope="module")
def secured_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real server process with API keys on and the exact, model-free counting engine."""
    log = tmp_path_factory.mktemp("secured") / "server.log"
    with running_server(env=COUNTING_ENV, log_path=log) as url:
        yield url


# --------------------------------------------------------------------------- transcripts


@pytest.mark.parametrize(
    ("name", "words"),
    [("en_16k.wav", "lazy dog"), ("en_48k.mp3", "umbrella")],
)
def test_file_to_transcript(server_url: str, name: str, words: str) -> None:
    """WAV and MP3 are decoded in the client; finals print as lines, then the transcript."""
    done = run([*asr_stream(), str(AUDIO / name), "--url", server_url, "--fast"])
    assert done.returncode == 0, done.stderr
    assert "error" not in done.stderr
    transcript = transcript_of(done.stdout)
    wer = word_error_rate(reference(name), transcript)
    assert wer <= MAX_WER, f"WER {wer:.2f}: {transcript!r}"
    assert words in transcript.lower()
    # The lines above it are the finals, in order: together they are the transcript.
    assert " ".join(finals_of(done.stdout)).split() == transcript.split()


def test_json_lines_for_scripts(server_url: str) -> None:
    done = run([*asr_stream(), str(AUDIO / "en_16k.wav"), "--url", server_url, "--fast", "--json"])
    assert done.returncode == 0, done.stderr
    messages = [parse_server_message(line) for line in done.stdout.splitlines()]
    assert isinstance(messages[0], Metadata)
    assert messages[0].sample_rate_hertz == 16000 and messages[0].language_code == "en-US"
    assert isinstance(messages[-1], Complete)
    finals = [m for m in messages if isinstance(m, Transcript) and m.is_final]
    assert finals
    transcript = "".join(f.text for f in finals)
    assert word_error_rate(reference("en_16k.wav"), transcript) <= MAX_WER, transcript


def test_raw_pcm_from_stdin_at_48k(server_url: str) -> None:
    """``asr-stream -`` with ``--rate``: the server converts 48 kHz itself."""
    pcm, rate = read_wav(AUDIO / "en_48k.wav")
    done = run([*asr_stream(), "-", "--rate", str(rate), "--url", server_url, "--fast"], stdin=pcm)
    assert done.returncode == 0, done.stderr
    transcript = transcript_of(done.stdout)
    assert word_error_rate(reference("en_48k.wav"), transcript) <= MAX_WER, transcript


def test_every_sample_arrives_with_an_api_key(secured_url: str) -> None:
    """The key goes as a Bearer header; the counting engine confirms every decoded sample."""
    done = run(
        [
            *asr_stream(),
            str(AUDIO / "en_16k.wav"),
            "--url",
            secured_url,
            "--api-key",
            API_KEY,
            "--fast",
        ]
    )
    assert done.returncode == 0, done.stderr
    samples = samples_in("en_16k.wav")
    words = transcript_of(done.stdout).split()
    assert words[-1] == f"end{samples}"
    assert words[:-1] == [f"w{k}" for k in range(samples // 16000)]


def test_stdin_needs_the_key_then_every_byte_arrives(secured_url: str) -> None:
    """Raw PCM read in 33 ms chunks (1056 bytes at 16 kHz) all reaches the engine."""
    pcm, _ = read_wav(AUDIO / "en_16k.wav")
    done = run(
        [*asr_stream(), "-", "--chunk-ms", "33", "--url", secured_url, "--fast"],
        stdin=pcm,
    )
    # No key: the server refuses at the handshake and the CLI says why.
    assert done.returncode == 1
    assert "API key is required" in done.stderr and "(unauthorized)" in done.stderr
    done = run(
        [
            *asr_stream(),
            "-",
            "--chunk-ms",
            "33",
            "--url",
            secured_url,
            "--fast",
            "--api-key",
            API_KEY,
        ],
        stdin=pcm,
    )
    assert done.returncode == 0, done.stderr
    assert transcript_of(done.stdout).split()[-1] == f"end{len(pcm) // 2}"


def test_terminal_shows_interim_and_progress_in_place(server_url: str, tmp_path: Path) -> None:
    """On a terminal, at real-time pace: a progress bar and the interim, redrawn on one line."""
    clip = tmp_path / "first_6s.wav"
    with wave.open(str(AUDIO / "en_16k.wav"), "rb") as src, wave.open(str(clip), "wb") as dst:
        dst.setparams(src.getparams())
        dst.writeframes(src.readframes(6 * src.getframerate()))
    screen = run_on_terminal([*asr_stream(), str(clip), "--url", server_url])
    assert "\r\x1b[2K[" in screen  # the live line is cleared and redrawn
    assert re.search(r"\[█+░*\] 0:0\d\.\d / 0:06\.0", screen), screen
    assert "connected: faster-whisper tiny.en, en-US" in screen
    # An interim was drawn after the bar (text that is not yet a final line).
    interims = re.findall(r"0:06\.0  ([^\r\n\x1b]+)", screen)
    assert interims, screen
    plain = re.sub(r"\r\x1b\[2K[^\r\n]*", "", screen)  # what stays on screen
    transcript = plain.strip().splitlines()[-1]
    assert "lazy dog" in transcript.lower(), screen


def run_on_terminal(argv: list[str], timeout: float = 60.0) -> str:
    """Run ``argv`` with stdout and stderr on a pseudo-terminal; everything it drew."""
    master, slave = pty.openpty()
    env = {**client_env(), "COLUMNS": "160", "LINES": "40"}
    proc = subprocess.Popen(argv, stdout=slave, stderr=slave, stdin=subprocess.DEVNULL, env=env)
    os.close(slave)
    output = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            output += data
        assert proc.wait(timeout=10) == 0, output.decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return output.decode(errors="replace").replace("\r\n", "\n")


# --------------------------------------------------------------------------- failures


def test_unreachable_server_exits_3_naming_the_url() -> None:
    url = "ws://127.0.0.1:1/ws/asr-stream"
    done = run([*asr_stream(), str(AUDIO / "en_16k.wav"), "--url", url])
    assert done.returncode == 3
    assert done.stderr.startswith(f"error: cannot connect to {url}: ")
    assert "Connection refused" in done.stderr
    assert done.stdout == ""


def test_refused_config_exits_1_with_the_servers_sentence(server_url: str) -> None:
    done = run(
        [*asr_stream(), str(AUDIO / "en_16k.wav"), "--url", server_url, "--language", "ar-EG"]
    )
    assert done.returncode == 1
    # The server's own detail: tiny.en is English-only; it names the field and the fix.
    assert re.fullmatch(
        r"error: .*'language_code'.*'base'.* \(unsupported_language\)\n", done.stderr
    )
    assert "Traceback" not in done.stderr
    # With --json the refusal is also the one line on stdout.
    done = run(
        [
            *asr_stream(),
            str(AUDIO / "en_16k.wav"),
            "--url",
            server_url,
            "--language",
            "ar-EG",
            "--json",
        ]
    )
    assert done.returncode == 1
    (line,) = done.stdout.splitlines()
    message = parse_server_message(line)
    assert isinstance(message, ErrorMessage) and message.code == "unsupported_language"


def test_missing_file_exits_2() -> None:
    done = run([*asr_stream(), "no/such/talk.mp3", "--url", "ws://127.0.0.1:1"])
    assert done.returncode == 2
    assert done.stderr == "error: no/such/talk.mp3: No such file\n"


def test_undecodable_file_exits_2(tmp_path: Path) -> None:
    notes = tmp_path / "notes.mp3"
    notes.write_text("this is not audio\n" * 50)
    done = run([*asr_stream(), str(notes), "--url", "ws://127.0.0.1:1"])
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: {notes}: cannot ")
    assert "Traceback" not in done.stderr


def test_bad_options_exit_2() -> None:
    done = run([*asr_stream(), "-", "--rate", "96000"])
    assert done.returncode == 2
    assert "between 8000 and 48000" in done.stderr


def test_help_lists_the_options() -> None:
    done = run([*asr_stream(), "--help"])
    assert done.returncode == 0
    for option in (
        "--url",
        "--language",
        "--backend",
        "--model",
        "--rate",
        "--chunk-ms",
        "--fast",
        "--json",
        "--api-key",
    ):
        assert option in done.stdout
