"""`asr-stream`: stream an audio file, or raw PCM from stdin, and print the transcript.

    asr-stream talk.mp3                               # real-time pace, interim text in place
    asr-stream --fast --json talk.flac                # as fast as the server takes it, JSON lines
    ffmpeg -i talk.ogg -f s16le -ar 16000 -ac 1 - | asr-stream -    # raw PCM on stdin

Files of any format FFmpeg knows (WAV, MP3, FLAC, OGG, M4A…) are decoded with
PyAV to 16-bit mono PCM at ``--rate`` (16 kHz by default): no ``ffmpeg``
binary is needed. The streamers in `clients.ffmpeg_stream` and
`clients.pydub_stream` reuse the options and the display defined here.

Output: each final on its own line as it arrives, then a blank line and the
whole transcript on the last line. When stdout is a terminal the current
interim is shown in place; when stderr is a terminal, a progress bar. Exit
status: see `Exit`.

A connection lost mid-stream is resumed (`ASRStreamClient.stream`): each
reconnect is told on stderr ("connection lost (1006); resuming at 12.34 s,
attempt 1/5"), and so is giving up (exit 5). ``--no-resume`` turns it off.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import enum
import json
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import AsyncIterable, AsyncIterator, Coroutine, Sequence
from typing import IO, Any, TextIO
from urllib.parse import urlsplit, urlunsplit

import websockets

from app.messages import ErrorMessage, Metadata, ServerMessage, Transcript
from clients.asr_client import (
    BYTES_PER_SAMPLE,
    DEFAULT_CHUNK_MS,
    DEFAULT_URL,
    ASRStreamClient,
    ResumeAttempt,
    ResumeFailed,
    ServerBusy,
    StreamError,
)

ENGINE_RATE = 16000
URL_ENV = "ASR_STREAM_URL"
API_KEY_ENV = "ASR_STREAM_API_KEY"
WS_PATH = "/ws/asr-stream"
REDRAW_INTERVAL_SEC = 0.05
PROGRESS_BAR_WIDTH = 24
MIN_LINE_WIDTH = 40
ENGINE_BEHIND = "engine_behind"


class Exit(enum.IntEnum):
    OK = 0
    SERVER_ERROR = 1  # the server sent an `error` or dropped the session
    USAGE = 2  # bad options, a missing or undecodable file
    CONNECT = 3  # the server could not be reached
    BUSY = 4  # the server (every node behind a balancer) is full or draining: retry later
    LOST = 5  # the connection was lost mid-stream and every reconnect failed
    INTERRUPTED = 130  # Ctrl-C twice


class AudioSourceError(Exception):
    """The audio cannot be read: a missing or undecodable file, a decoder that failed."""


# --------------------------------------------------------------------------- options


def add_stream_options(parser: argparse.ArgumentParser) -> None:
    """The options every client shares (the CLI and the streamers)."""
    parser.add_argument(
        "--url",
        default=os.environ.get(URL_ENV, DEFAULT_URL),
        help=f"server WebSocket URL (default: ${URL_ENV} or {DEFAULT_URL}); "
        f"http:// and a missing path are accepted: ws://HOST:PORT means ws://HOST:PORT{WS_PATH}",
    )
    parser.add_argument("--language", help="BCP-47 language, e.g. en-US (default: the server's)")
    parser.add_argument("--backend", help="engine, e.g. faster-whisper (default: the server's)")
    parser.add_argument("--model", help="model, e.g. tiny.en or base (default: the server's)")
    parser.add_argument(
        "--chunk-ms",
        type=_positive_int,
        default=DEFAULT_CHUNK_MS,
        help=f"audio per WebSocket frame in ms (default: {DEFAULT_CHUNK_MS})",
    )
    parser.add_argument(
        "--fast",
        action="store_true",
        help="send as fast as the server takes it instead of at real-time pace",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print every server message as one JSON object per line (for scripts)",
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get(API_KEY_ENV),
        help=f"API key, sent as 'Authorization: Bearer KEY' (default: ${API_KEY_ENV}); "
        "needed only when the server sets API_KEYS",
    )
    parser.add_argument(
        "--no-resume",
        dest="resume",
        action="store_false",
        help="end with an error when the connection is lost mid-stream, instead of "
        "reconnecting and resending the audio no final covers yet",
    )


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text}")
    return value


def _sample_rate(text: str) -> int:
    value = int(text)
    if not 8000 <= value <= 48000:
        raise argparse.ArgumentTypeError(f"must be between 8000 and 48000 Hz, not {text}")
    return value


def stream_config(args: argparse.Namespace) -> dict[str, str]:
    """The optional config fields the options ask for."""
    fields = {"language_code": args.language, "backend": args.backend, "model": args.model}
    return {key: value for key, value in fields.items() if value}


def websocket_url(url: str) -> str:
    """``http(s)://`` becomes ``ws(s)://``; an empty path becomes the stream path."""
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    path = parts.path if parts.path not in ("", "/") else WS_PATH
    return urlunsplit((scheme, parts.netloc, path, parts.query, parts.fragment))


# --------------------------------------------------------------------------- audio sources


def decode_file(path: str, rate: int = ENGINE_RATE) -> bytes:
    """Any audio file FFmpeg (through PyAV) can read, as 16-bit mono PCM at ``rate``."""
    import av
    from av.audio.resampler import AudioResampler

    if not os.path.exists(path):
        raise AudioSourceError(f"{path}: No such file")
    try:
        container = av.open(path)
    except (av.FFmpegError, OSError) as exc:
        raise AudioSourceError(f"{path}: cannot read it as audio ({_reason(exc)})") from None
    with container:
        if not container.streams.audio:
            raise AudioSourceError(f"{path}: the file has no audio stream")
        resampler = AudioResampler(format="s16", layout="mono", rate=rate)
        pcm = bytearray()
        try:
            for frame in container.decode(container.streams.audio[0]):
                for out in resampler.resample(frame):
                    pcm += out.to_ndarray().astype("<i2", copy=False).tobytes()
            for out in resampler.resample(None):
                pcm += out.to_ndarray().astype("<i2", copy=False).tobytes()
        except av.FFmpegError as exc:
            raise AudioSourceError(f"{path}: cannot decode its audio ({_reason(exc)})") from None
    if not pcm:
        raise AudioSourceError(f"{path}: the audio stream is empty")
    return bytes(pcm)


def probe_duration(path: str) -> float | None:
    """The duration of a media file in seconds, if PyAV can tell; for progress only."""
    import av

    try:
        with av.open(path) as container:
            return None if container.duration is None else container.duration / 1_000_000
    except (av.FFmpegError, OSError):
        return None


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


async def read_pipe(stream: IO[bytes], chunk_bytes: int) -> AsyncIterator[bytes]:
    """Chunks of a blocking byte stream (stdin), read on a daemon thread.

    A daemon thread rather than ``asyncio.to_thread``: a read blocked on a live
    source that never ends must not keep the process alive once we are done.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue()

    def pump() -> None:
        try:
            while chunk := stream.read(chunk_bytes):
                loop.call_soon_threadsafe(queue.put_nowait, chunk)
            loop.call_soon_threadsafe(queue.put_nowait, None)
        except BaseException as exc:  # handed to the loop, not lost on the thread
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(queue.put_nowait, exc)

    threading.Thread(target=pump, name="stdin-reader", daemon=True).start()
    while (item := await queue.get()) is not None:
        if isinstance(item, BaseException):
            raise AudioSourceError(f"reading the audio failed: {_reason(item)}") from item
        yield item


async def until_set(source: AsyncIterable[bytes], stop: asyncio.Event) -> AsyncIterator[bytes]:
    """``source`` until it ends or ``stop`` is set (Ctrl-C: end the audio, keep the finals)."""
    iterator = aiter(source)
    stopped = asyncio.ensure_future(stop.wait())
    following: asyncio.Future[bytes] | None = None
    try:
        while not stop.is_set():
            following = asyncio.ensure_future(anext(iterator))
            await asyncio.wait({following, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not following.done():
                return  # stopped while the source was waiting (on a live input)
            try:
                chunk = following.result()
            except StopAsyncIteration:
                return
            yield chunk
    finally:
        stopped.cancel()
        # Let the source clean up (a decoder process is killed and reaped) before we go.
        if following is not None and not following.done():
            following.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await following
        close = getattr(iterator, "aclose", None)
        if close is not None:
            await close()


async def bytes_source(pcm: bytes, rate: int, chunk_ms: int) -> AsyncIterator[bytes]:
    size = max(BYTES_PER_SAMPLE, rate * BYTES_PER_SAMPLE * chunk_ms // 1000)
    for i in range(0, len(pcm), size):
        yield pcm[i : i + size]


def chunk_bytes(rate: int, chunk_ms: int) -> int:
    return max(BYTES_PER_SAMPLE, rate * BYTES_PER_SAMPLE * chunk_ms // 1000)


# --------------------------------------------------------------------------- display


def _clock(seconds: float) -> str:
    minutes, rest = divmod(max(seconds, 0.0), 60)
    return f"{int(minutes)}:{rest:04.1f}"


class Display:
    """Finals as lines on stdout; interim and progress on one line redrawn in place.

    The live line is drawn only on terminals: the interim when stdout is one,
    the progress bar when stderr is one. Pipes get finals and the transcript.
    """

    def __init__(
        self,
        total_seconds: float | None,
        *,
        json_lines: bool = False,
        quiet_codes: frozenset[str] = frozenset(),
        out: TextIO | None = None,
        err: TextIO | None = None,
    ) -> None:
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.total = total_seconds
        self.json_lines = json_lines
        self.quiet_codes = quiet_codes
        self.show_interim = self.out.isatty() and not json_lines
        self.show_progress = self.err.isatty()
        self.live: TextIO | None = (
            self.err if self.show_progress else self.out if self.show_interim else None
        )
        self.sent_seconds = 0.0
        self.interim = ""
        self.finals: list[str] = []
        self.started = time.monotonic()
        self._drawn_at = 0.0
        self._line_shown = False
        self.error_printed = False

    @property
    def transcript(self) -> str:
        return "".join(self.finals).strip()

    def progress(self, sent_seconds: float) -> None:
        self.sent_seconds = sent_seconds
        self._draw()

    def note(self, text: str) -> None:
        """A line for the person at the terminal (stderr)."""
        self._clear()
        print(text, file=self.err, flush=True)
        self._draw(force=True)

    def message(self, msg: ServerMessage) -> None:
        if self.json_lines:
            print(msg.to_json(), file=self.out, flush=True)
            self.error_printed |= isinstance(msg, ErrorMessage)
            return
        if isinstance(msg, Metadata):
            if self.err.isatty():
                self.note(
                    f"connected: {msg.backend} {msg.model}, {msg.language_code} "
                    f"(session {msg.session_id})"
                )
        elif isinstance(msg, Transcript) and msg.is_final:
            self.finals.append(msg.text)
            self.interim = ""
            self._clear()
            print(msg.text.strip(), file=self.out, flush=True)
            self._draw(force=True)
        elif isinstance(msg, Transcript):
            self.interim = msg.text
            self._draw()
        elif isinstance(msg, ErrorMessage) and msg.code not in self.quiet_codes:
            # Non-fatal (a fatal one raises StreamError): say it and go on.
            self.note(f"warning: {msg.detail} ({msg.code})")

    def finish(self) -> None:
        self._clear()
        if not self.json_lines:
            print(file=self.out)
            print(self.transcript, file=self.out, flush=True)

    def abandon(self) -> None:
        self._clear()

    def resuming(self, attempt: ResumeAttempt) -> None:
        """A reconnect: say so; the interim is void, and the resent backlog puts the
        engine behind on purpose."""
        if attempt.lost is not None:
            start, end = attempt.lost
            self.note(
                f"warning: audio {start:.2f}–{end:.2f} s was not kept (over the resume "
                "bound): words there are lost"
            )
        self.interim = ""
        self.quiet_codes = self.quiet_codes | {ENGINE_BEHIND}
        self.note(attempt.describe())

    def _clear(self) -> None:
        if self.live is not None and self._line_shown:
            self.live.write("\r\x1b[2K")
            self.live.flush()
            self._line_shown = False

    def _draw(self, force: bool = False) -> None:
        if self.live is None:
            return
        now = time.monotonic()
        if not force and now - self._drawn_at < REDRAW_INTERVAL_SEC:
            return
        self._drawn_at = now
        parts = []
        if self.show_progress:
            parts.append(self._bar())
        if self.show_interim and self.interim:
            parts.append(self.interim)
        line = "  ".join(parts)
        width = max(shutil.get_terminal_size().columns - 1, MIN_LINE_WIDTH)
        if len(line) > width:
            line = "…" + line[len(line) - width + 1 :]
        self.live.write("\r\x1b[2K" + line)
        self.live.flush()
        self._line_shown = True

    def _bar(self) -> str:
        sent = _clock(self.sent_seconds)
        if self.total:
            done = min(self.sent_seconds / self.total, 1.0)
            filled = round(done * PROGRESS_BAR_WIDTH)
            bar = "█" * filled + "░" * (PROGRESS_BAR_WIDTH - filled)
            return f"[{bar}] {sent} / {_clock(self.total)}"
        return f"[{sent} sent, {_clock(time.monotonic() - self.started)} elapsed]"


# --------------------------------------------------------------------------- running a stream


def is_connect_error(exc: BaseException) -> bool:
    return isinstance(
        exc, OSError | TimeoutError | websockets.InvalidHandshake | websockets.InvalidURI
    )


def describe_connect_error(url: str, exc: BaseException) -> tuple[Exit, str]:
    """What to tell the user when the connection could not be opened."""
    if isinstance(exc, websockets.InvalidURI):
        return Exit.USAGE, f"error: {url} is not a WebSocket URL (ws://HOST:PORT{WS_PATH})"
    if isinstance(exc, websockets.InvalidStatus):
        response = exc.response
        with contextlib.suppress(ValueError, UnicodeDecodeError):
            body = json.loads(response.body or b"")
            if isinstance(body, dict) and "detail" in body:
                # A refusal at the handshake (a missing or wrong API key) carries an error.
                return Exit.SERVER_ERROR, f"error: {body['detail']} ({body.get('code')})"
        return Exit.CONNECT, (
            f"error: cannot connect to {url}: the server answered HTTP {response.status_code} "
            f"(is this the {WS_PATH} endpoint of an asr-stream server?)"
        )
    if isinstance(exc, TimeoutError):
        return Exit.CONNECT, f"error: cannot connect to {url}: timed out"
    errno = getattr(exc, "errno", None)
    reason = os.strerror(errno) if isinstance(errno, int) else _reason(exc)
    return Exit.CONNECT, f"error: cannot connect to {url}: {reason}"


async def stream_to_server(
    args: argparse.Namespace,
    audio: AsyncIterable[bytes],
    *,
    sample_rate_hertz: int,
    total_seconds: float | None,
    display: Display | None = None,
) -> Exit:
    """Stream ``audio`` with the shared options in ``args``; show everything; say how it ended."""
    # Sending faster than real time puts the engine behind on purpose.
    quiet = frozenset({ENGINE_BEHIND}) if args.fast else frozenset()
    display = display or Display(total_seconds, json_lines=args.json, quiet_codes=quiet)
    url = websocket_url(args.url)
    client = ASRStreamClient(url, api_key=args.api_key)
    stop = asyncio.Event()
    _on_interrupt(stop, display)
    connected = False
    try:
        async for msg in client.stream(
            until_set(audio, stop),
            sample_rate_hertz=sample_rate_hertz,
            chunk_ms=args.chunk_ms,
            realtime=not args.fast,
            config=stream_config(args),
            progress=display.progress,
            resume=args.resume,
            on_resume=display.resuming,
        ):
            connected = True
            display.message(msg)
    except ResumeFailed as exc:
        display.abandon()
        if args.json and not display.error_printed:
            print(ErrorMessage(detail=exc.detail, code=exc.code or "").to_json(), flush=True)
        print(f"error: gave up resuming: {exc.detail}", file=sys.stderr, flush=True)
        return Exit.LOST
    except ServerBusy as exc:
        display.abandon()
        wait = f"retry in {exc.retry_after:g} s" if exc.retry_after else "retry later"
        print(f"error: busy, {wait}: {exc.detail} ({exc.code})", file=sys.stderr, flush=True)
        return Exit.BUSY
    except StreamError as exc:
        display.abandon()
        if args.json and exc.code is not None and not display.error_printed:
            # A refused config raises before its `error` is yielded: still one line for it.
            print(ErrorMessage(detail=exc.detail, code=exc.code).to_json(), flush=True)
        code = f" ({exc.code})" if exc.code else ""
        print(f"error: {exc.detail}{code}", file=sys.stderr, flush=True)
        return Exit.SERVER_ERROR
    except AudioSourceError as exc:
        display.abandon()
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return Exit.USAGE
    except Exception as exc:
        if connected or not is_connect_error(exc):
            raise
        display.abandon()
        status, text = describe_connect_error(url, exc)
        print(text, file=sys.stderr, flush=True)
        return status
    display.finish()
    return Exit.OK


def _on_interrupt(stop: asyncio.Event, display: Display) -> None:
    """First Ctrl-C: end the audio and wait for the last finals. Second: quit."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()

    def interrupted() -> None:
        if stop.is_set():
            if task is not None:
                task.cancel()
            return
        stop.set()
        display.note("stopping: waiting for the last finals (Ctrl-C again to quit)")

    with contextlib.suppress(NotImplementedError, RuntimeError):  # not on Windows
        loop.add_signal_handler(signal.SIGINT, interrupted)


def execute(coro: Coroutine[Any, Any, Exit]) -> int:
    """Run a client's main coroutine; an interrupt that quits gives 130."""
    try:
        return int(asyncio.run(coro))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted", file=sys.stderr)
        return Exit.INTERRUPTED


# --------------------------------------------------------------------------- the command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="asr-stream",
        description="Stream an audio file (WAV, MP3, FLAC, OGG, M4A…) or raw PCM from stdin "
        "to an asr-stream server; print finals as they come and then the transcript.",
        epilog="Exit status: 0 done, 1 the server reported an error, 2 bad usage or an "
        "unreadable file, 3 the server could not be reached, 4 the server is busy (full or "
        "draining: retry after the time it says), 5 the connection was lost mid-stream and "
        "could not be resumed, 130 interrupted. "
        "Ctrl-C once ends the audio and waits for the last finals.",
    )
    parser.add_argument(
        "file",
        help="audio file to stream, or - for raw 16-bit little-endian mono PCM on stdin "
        "(at --rate)",
    )
    parser.add_argument(
        "--rate",
        type=_sample_rate,
        default=ENGINE_RATE,
        help="sample rate sent to the server: files are resampled to it; raw PCM on stdin "
        f"must be at it (8000–48000, default {ENGINE_RATE})",
    )
    add_stream_options(parser)
    return parser


async def _run(args: argparse.Namespace) -> Exit:
    if args.file == "-":
        audio: AsyncIterable[bytes] = read_pipe(
            sys.stdin.buffer, chunk_bytes(args.rate, args.chunk_ms)
        )
        total = None
    else:
        try:
            pcm = await asyncio.to_thread(decode_file, args.file, args.rate)
        except AudioSourceError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return Exit.USAGE
        audio = bytes_source(pcm, args.rate, args.chunk_ms)
        total = len(pcm) / BYTES_PER_SAMPLE / args.rate
    return await stream_to_server(args, audio, sample_rate_hertz=args.rate, total_seconds=total)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return execute(_run(args))


if __name__ == "__main__":
    sys.exit(main())
