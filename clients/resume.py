"""Resuming a dropped stream: what to keep, where to resume, how long to wait.

The bookkeeping of STREAMING.md "Resuming a stream", free of sockets, clocks and
randomness, so it can be tested with plain bytes: `ResumeBuffer` keeps the audio
sent after the ``end`` of the last final received, `ResumePolicy` says how many
reconnects and how far apart, and `cut_kind` says whether an ended connection is
worth resuming at all. `clients.asr_client.ASRStreamClient` drives them.

Positions are byte offsets into the whole stream of 16-bit PCM at the client's
rate, counted from its first sample however many connections carried it; the
server's times (seconds, shifted by ``stream_offset_sec``) are converted once.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

BYTES_PER_SAMPLE = 2

DEFAULT_KEEP_SEC = 60.0
"""Audio kept for a resume. What the server may still hold unconfirmed is the
engine's buffer, cut at ``MAX_BUFFER_SEC`` (25 s) by committing it, plus the
audio queued before the engine, at most ``AUDIO_QUEUE_SECONDS`` (30 s): 55 s at
the server's defaults. 60 s of 16 kHz audio is 1.9 MB."""

DEFAULT_MAX_ATTEMPTS = 5
FIRST_DELAY_SEC = 0.25
"""A kill or a drain frees the connection at once and the balancer picks a live node:
the first reconnect goes almost at once (the issue's goal: a new transcript ≤ 2 s
after the drop)."""
MAX_DELAY_SEC = 8.0
RESUME_OPEN_TIMEOUT_SEC = 10.0
"""A reconnect that hangs (a black-holed network) is one failed attempt, not 30 s."""

# Fatal `error` codes that say "not this node, not now": resume with the full budget.
NODE_ERRORS = frozenset({"shutting_down", "server_full", "google_quota_exceeded"})
# Fatal `error` codes of a failure while transcribing (close 1011). STREAMING.md says
# "reconnect to go on": another node may do, but the same failure twice in a row is the
# audio's or the engine's, so it is retried once (`SERVER_FAILURE_RETRIES`).
SERVER_FAILURES = frozenset(
    {"engine_failure", "engine_timeout", "internal_error", "google_error", "google_unavailable"}
)
SERVER_FAILURE_RETRIES = 1
# Closes that refuse what the client sent (RFC 6455 §7.4.1): resending it would be
# refused again. 1008 also ends a stream at the server's limits (`idle_timeout`,
# `max_duration_exceeded`), which a resume must not work around.
REFUSING_CLOSES = frozenset({1002, 1003, 1007, 1008, 1009, 1010})


class Cut(enum.Enum):
    """How a connection that ended without ``complete`` ended."""

    NODE = "node"  # the node or the network went away: resume with the full budget
    FAILURE = "failure"  # the server reported a failure (1011): resume once
    FINAL = "final"  # the server refused the stream: do not resume


def cut_kind(close_code: int | None, error_code: str | None) -> Cut:
    """Classify a connection that ended without ``complete`` (or after ``shutting_down``).

    ``close_code`` is None or 1006 when no close frame came (a killed node, a
    dropped network); ``error_code`` is the fatal ``error`` that came before the
    close, if any.
    """
    if error_code in NODE_ERRORS:
        return Cut.NODE
    if error_code in SERVER_FAILURES:
        return Cut.FAILURE
    if error_code is not None or close_code in REFUSING_CLOSES:
        return Cut.FINAL
    # 1006/None (no close frame), 1001 (going away), 1011, 1012 (a restart), 1013, 1014
    # (a proxy's bad gateway), and a 1000 that came without `complete`.
    return Cut.NODE


@dataclass(frozen=True)
class ResumePolicy:
    """How a dropped stream is resumed. ``ResumePolicy()`` is the default of the client.

    ``keep_sec``: audio kept after the last final's end (see `DEFAULT_KEEP_SEC`).
    ``max_attempts``: reconnects in a row without a new final before giving up.
    The n-th waits ``first_delay_sec * 2**(n-1)`` (at most ``max_delay_sec``),
    jittered down to half of it, and never less than the ``Retry-After`` of a 503.
    """

    keep_sec: float = DEFAULT_KEEP_SEC
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    first_delay_sec: float = FIRST_DELAY_SEC
    max_delay_sec: float = MAX_DELAY_SEC
    open_timeout_sec: float = RESUME_OPEN_TIMEOUT_SEC

    def __post_init__(self) -> None:
        if not self.keep_sec >= 0 or self.max_attempts < 1 or not self.first_delay_sec >= 0:
            raise ValueError("keep_sec and first_delay_sec must be >= 0, max_attempts >= 1")

    def delay(self, attempt: int, retry_after: float | None, unit: float) -> float:
        """Seconds to wait before reconnect ``attempt`` (1-based).

        ``unit`` is a uniform random number in [0, 1): "equal jitter" keeps at
        least half of the exponential step, so clients cut at the same moment
        (every session of a killed node) do not all come back at the same one.
        A ``Retry-After`` is honoured, and spread over a quarter of itself more.
        """
        step = min(self.max_delay_sec, self.first_delay_sec * 2.0 ** (attempt - 1))
        wait = step * (0.5 + 0.5 * unit)
        if retry_after is not None and retry_after > 0:
            wait = max(wait, retry_after * (1.0 + 0.25 * unit))
        return wait


@dataclass(frozen=True)
class ResumePoint:
    """Where a new connection starts: its ``stream_offset_sec`` and the audio to resend.

    ``lost`` is the span (seconds) between the last final's end and the first kept
    sample, when the keep bound made the client drop audio no final covered: words
    there, if any, are lost. None when nothing was dropped.
    """

    offset_sec: float
    audio: bytes
    lost: tuple[float, float] | None


class ResumeBuffer:
    """The audio sent after the ``end`` of the last final received, at most ``keep_sec``.

    Call `add` with every chunk of the stream before sending it (a chunk lost in
    flight is then kept too), `confirm` with every final's ``end``, and
    `resume_point` when a connection ended without ``complete``. Past the bound
    the oldest audio is dropped, and the next `resume_point` names the span.
    """

    def __init__(self, sample_rate: int, keep_sec: float = DEFAULT_KEEP_SEC) -> None:
        if sample_rate <= 0 or keep_sec < 0:
            raise ValueError("sample_rate must be > 0 and keep_sec >= 0")
        self.sample_rate = sample_rate
        self.limit = round(keep_sec * sample_rate) * BYTES_PER_SAMPLE
        self._kept = bytearray()  # CPython drops a bytearray's head without copying the rest
        self._start = 0  # stream byte position of _kept[0]; always even
        self._confirmed = 0  # stream byte position of the last final's end; always even

    # -- positions ----------------------------------------------------------------------

    @property
    def sent_bytes(self) -> int:
        """Bytes of the stream added so far (sent or about to be)."""
        return self._start + len(self._kept)

    @property
    def kept_bytes(self) -> int:
        return len(self._kept)

    @property
    def confirmed_sec(self) -> float:
        """The ``end`` of the last final, as a sample position in seconds."""
        return self._seconds(self._confirmed)

    def _seconds(self, position: int) -> float:
        return position // BYTES_PER_SAMPLE / self.sample_rate

    # -- the stream ---------------------------------------------------------------------

    def add(self, chunk: bytes) -> None:
        """A chunk of the stream, in order (odd lengths are fine)."""
        self._kept += chunk
        over = len(self._kept) - self.limit
        if over > 0:
            # Whole samples only, so the start stays on a sample (an odd byte at the
            # end waits for the next chunk).
            whole = len(self._kept) - len(self._kept) % BYTES_PER_SAMPLE
            drop = min(over + over % BYTES_PER_SAMPLE, whole)
            del self._kept[:drop]
            self._start += drop

    def confirm(self, end_sec: float) -> None:
        """A final ending at ``end_sec`` (stream time) arrived: its audio is never resent."""
        position = round(end_sec * self.sample_rate) * BYTES_PER_SAMPLE
        sent_whole = self.sent_bytes - self.sent_bytes % BYTES_PER_SAMPLE
        position = min(position, sent_whole)  # times are rounded to ms on the wire
        if position <= self._confirmed:
            return  # an older final (or the same end): nothing new is covered
        self._confirmed = position
        if position > self._start:
            del self._kept[: position - self._start]
            self._start = position

    def resume_point(self) -> ResumePoint:
        """What a new connection sends first. Does not change the buffer (see `resumed`)."""
        lost = None
        if self._start > self._confirmed:
            lost = (self._seconds(self._confirmed), self._seconds(self._start))
        return ResumePoint(self._seconds(self._start), bytes(self._kept), lost)

    def resumed(self) -> None:
        """A new connection took the resume point: a lost span is reported only once."""
        self._confirmed = max(self._confirmed, self._start)


def frames(audio: bytes, frame_bytes: int) -> list[bytes]:
    """``audio`` in frames of ``frame_bytes`` (made even: no sample split), in order."""
    size = max(BYTES_PER_SAMPLE, frame_bytes - frame_bytes % BYTES_PER_SAMPLE)
    return [audio[i : i + size] for i in range(0, len(audio), size)]
