"""Stream an audio file converted with pydub, the way the original examples did.

    python -m clients.pydub_stream talk.mp3 --url ws://127.0.0.1:8001/ws/asr-stream

The conversion is pydub's ``set_channels(1).set_frame_rate(16000)
.set_sample_width(2)``; its ``raw_data`` is 16-bit mono little-endian PCM,
which `ASRStreamClient` streams. pydub reads WAV itself and calls the
``ffmpeg`` program for other formats. Needs the ``clients`` extra:
``pip install -e '.[clients]'``. Options and output are those of ``asr-stream``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import warnings
from collections.abc import Sequence

from clients.asr_client import BYTES_PER_SAMPLE
from clients.cli import (
    ENGINE_RATE,
    AudioSourceError,
    Exit,
    add_stream_options,
    bytes_source,
    execute,
    stream_to_server,
)


def convert(path: str, rate: int = ENGINE_RATE) -> bytes:
    """The file as 16-bit mono PCM at ``rate``, through pydub."""
    try:
        with warnings.catch_warnings():
            # pydub imports `audioop` (deprecated in 3.11, gone in 3.13: the
            # `audioop-lts` package stands in) and warns at import when it
            # cannot find ffmpeg; a failed decode below says what is missing.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            from pydub import AudioSegment
    except ImportError:
        raise AudioSourceError(
            "the pydub streamer requires pydub: pip install -e '.[clients]'"
        ) from None
    if not os.path.exists(path):
        raise AudioSourceError(f"{path}: No such file")
    try:
        segment = AudioSegment.from_file(path)
    except FileNotFoundError as exc:  # the ffmpeg program pydub calls
        raise AudioSourceError(
            f"{path}: pydub needs the ffmpeg program for this file ({exc.filename} not found)"
        ) from None
    except Exception as exc:  # pydub raises CouldntDecodeError, IndexError, OSError…
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AudioSourceError(f"{path}: pydub cannot decode it ({first_line})") from None
    segment = segment.set_channels(1).set_frame_rate(rate).set_sample_width(BYTES_PER_SAMPLE)
    pcm: bytes = segment.raw_data
    if not pcm:
        raise AudioSourceError(f"{path}: the file holds no audio")
    return pcm


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m clients.pydub_stream",
        description="Convert an audio file with pydub to 16 kHz 16-bit mono and stream it to an "
        "asr-stream server; print finals as they come and then the transcript.",
        epilog="Exit status: 0 done, 1 the server reported an error, 2 bad usage or an "
        "unreadable file, 3 the server could not be reached.",
    )
    parser.add_argument("file", help="audio file (WAV; MP3, OGG, M4A… through ffmpeg)")
    add_stream_options(parser)
    return parser


async def _run(args: argparse.Namespace) -> Exit:
    try:
        pcm = await asyncio.to_thread(convert, args.file)
    except AudioSourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return Exit.USAGE
    return await stream_to_server(
        args,
        bytes_source(pcm, ENGINE_RATE, args.chunk_ms),
        sample_rate_hertz=ENGINE_RATE,
        total_seconds=len(pcm) / BYTES_PER_SAMPLE / ENGINE_RATE,
    )


def main(argv: Sequence[str] | None = None) -> int:
    return execute(_run(build_parser().parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
