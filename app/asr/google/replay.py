"""Audio bookkeeping of the Google bridge, free of I/O: PCM bytes, request pieces, replay.

Positions are sample indices of the session's stream at the client's own rate
(the bridge takes audio without resampling), so "sample ``n``" is the same
moment for the client, for every Google stream and for this buffer.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator

from app.audio import BYTES_PER_SAMPLE

MAX_REQUEST_BYTES = 25_000
"""Audio per ``StreamingRecognizeRequest``. Google's quota page limits a streaming
request to 25 KB; 25,000 stays under it and is even, so no sample is split."""


def split_requests(data: bytes, limit: int = MAX_REQUEST_BYTES) -> Iterator[bytes]:
    """``data`` in pieces of at most ``limit`` bytes, in order."""
    for i in range(0, len(data), limit):
        yield data[i : i + limit]


class ReplayBuffer:
    """Audio taken from the session that no Google final covers yet.

    The bridge appends every byte it takes from the session, before sending
    it, and trims up to the end of each final. A new Google stream (after a
    restart or a reconnect) starts by resending what is left, so no audio that
    reached the server is lost or recognised twice. Thread-safe: the gRPC
    request thread appends, the recognition thread trims and snapshots.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._chunks: deque[bytes] = deque()
        self._start = 0  # sample index of the first buffered sample
        self._end = 0  # sample index one past the last buffered sample

    @property
    def start(self) -> int:
        return self._start

    @property
    def end(self) -> int:
        return self._end

    @property
    def samples(self) -> int:
        with self._lock:
            return self._end - self._start

    def append(self, data: bytes) -> None:
        if not data:
            return
        with self._lock:
            self._chunks.append(data)
            self._end += len(data) // BYTES_PER_SAMPLE

    def trim(self, upto: int) -> None:
        """Forget the samples before ``upto`` (clipped to what is buffered)."""
        with self._lock:
            upto = min(upto, self._end)
            drop = (upto - self._start) * BYTES_PER_SAMPLE
            while drop > 0 and self._chunks:
                head = self._chunks[0]
                if len(head) <= drop:
                    self._chunks.popleft()
                    drop -= len(head)
                    self._start += len(head) // BYTES_PER_SAMPLE
                else:
                    self._chunks[0] = head[drop:]
                    self._start += drop // BYTES_PER_SAMPLE
                    drop = 0

    def snapshot(self) -> tuple[int, list[bytes]]:
        """``(start sample, chunks)``: what a new Google stream must send first."""
        with self._lock:
            return self._start, list(self._chunks)
