"""Stream anything the ``ffmpeg`` program can read: a file, a URL, a live device.

    python -m clients.ffmpeg_stream talk.mp3 --url ws://127.0.0.1:8001/ws/asr-stream
    python -m clients.ffmpeg_stream --input-format pulse default      # a microphone (Linux)
    python -m clients.ffmpeg_stream --input-format avfoundation :0    # a microphone (macOS)

ffmpeg decodes to what the service takes, raw 16 kHz 16-bit mono little-endian
PCM on its stdout (``ffmpeg -i INPUT -f s16le -ar 16000 -ac 1 -``), and
`ASRStreamClient` streams it; options and output are those of ``asr-stream``.
A live input runs until Ctrl-C, which ends the audio and waits for the last finals.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence

from clients.cli import (
    ENGINE_RATE,
    AudioSourceError,
    Exit,
    add_stream_options,
    chunk_bytes,
    execute,
    probe_duration,
    stream_to_server,
)

STDERR_TAIL_LINES = 5


def ffmpeg_command(
    ffmpeg: str, source: str, *, input_format: str | None = None, rate: int = ENGINE_RATE
) -> list[str]:
    """The ffmpeg command line that writes ``source`` as s16le mono PCM at ``rate`` to stdout."""
    command = [ffmpeg, "-hide_banner", "-loglevel", "error"]
    if source != "-":
        command.append("-nostdin")  # leave the terminal alone
    if input_format:
        command += ["-f", input_format]
    return [*command, "-i", source, "-vn", "-f", "s16le", "-ar", str(rate), "-ac", "1", "-"]


async def ffmpeg_pcm(
    command: Sequence[str], chunk_size: int, *, reads_stdin: bool = False
) -> AsyncIterator[bytes]:
    """ffmpeg's stdout in chunks; raises `AudioSourceError` with its message if it fails.

    ``reads_stdin``: ffmpeg's input is ``-``, so it gets our stdin.
    """
    proc = await asyncio.create_subprocess_exec(
        *command,
        stdin=None if reads_stdin else subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        # Ctrl-C is ours to handle (end the audio, keep the finals), not ffmpeg's.
        start_new_session=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    # Read stderr all along: a decoder that complains a lot must not block on a full pipe.
    errors = asyncio.create_task(proc.stderr.read())
    produced = 0
    try:
        while True:
            try:
                chunk = await proc.stdout.readexactly(chunk_size)
            except asyncio.IncompleteReadError as end:
                if end.partial:
                    produced += len(end.partial)
                    yield end.partial
                break
            produced += len(chunk)
            yield chunk
        returncode = await proc.wait()
        message = (await errors).decode(errors="replace").strip().splitlines()
        if returncode != 0:
            tail = " ".join(message[-STDERR_TAIL_LINES:]) or "no message"
            raise AudioSourceError(f"ffmpeg failed (exit {returncode}): {tail}")
        if produced == 0:
            raise AudioSourceError("ffmpeg decoded no audio from the input")
    finally:
        if proc.returncode is None:  # we stopped early (Ctrl-C, a server error)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        # Read both pipes to their end and reap ffmpeg, so that nothing is left
        # for the garbage collector to close after the event loop is gone.
        await proc.stdout.read()
        with contextlib.suppress(Exception):
            await errors
        await proc.wait()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m clients.ffmpeg_stream",
        description="Decode any input with the ffmpeg program and stream it to an asr-stream "
        "server; print finals as they come and then the transcript.",
        epilog="Exit status: 0 done, 1 the server reported an error, 2 bad usage, a missing "
        "input or a failed ffmpeg, 3 the server could not be reached.",
    )
    parser.add_argument("input", help="what ffmpeg reads (-i): a file, a URL, a device, or -")
    parser.add_argument(
        "--input-format",
        "-f",
        help="ffmpeg input format for a live device (-f), e.g. pulse, alsa, avfoundation, dshow",
    )
    parser.add_argument("--ffmpeg", default="ffmpeg", help="the ffmpeg program (default: ffmpeg)")
    add_stream_options(parser)
    return parser


async def _run(args: argparse.Namespace, command: list[str], total: float | None) -> Exit:
    return await stream_to_server(
        args,
        ffmpeg_pcm(command, chunk_bytes(ENGINE_RATE, args.chunk_ms), reads_stdin=args.input == "-"),
        sample_rate_hertz=ENGINE_RATE,
        total_seconds=total,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    ffmpeg = shutil.which(args.ffmpeg)
    if ffmpeg is None:
        print(
            f"error: {args.ffmpeg} was not found; install FFmpeg (Debian: apt-get install ffmpeg) "
            "or pass --ffmpeg PATH",
            file=sys.stderr,
        )
        return Exit.USAGE
    is_file = not args.input_format and args.input != "-" and "://" not in args.input
    if is_file and not os.path.exists(args.input):
        print(f"error: {args.input}: No such file", file=sys.stderr)
        return Exit.USAGE
    command = ffmpeg_command(ffmpeg, args.input, input_format=args.input_format)
    total = probe_duration(args.input) if is_file else None  # for the progress bar only
    return execute(_run(args, command, total))


if __name__ == "__main__":
    sys.exit(main())
