"""The bridge's pure bookkeeping: request pieces, the replay buffer."""

from __future__ import annotations

from app.asr.google.replay import MAX_REQUEST_BYTES, ReplayBuffer, split_requests


def test_requests_are_split_at_the_google_limit_on_sample_boundaries() -> None:
    data = bytes(range(256)) * 400  # 102,400 bytes
    pieces = list(split_requests(data))
    assert [len(p) for p in pieces] == [25_000, 25_000, 25_000, 25_000, 2_400]
    assert b"".join(pieces) == data
    assert MAX_REQUEST_BYTES % 2 == 0
    assert list(split_requests(b"")) == []


def test_replay_buffer_trims_inside_and_across_chunks() -> None:
    buffer = ReplayBuffer()
    buffer.append(b"\x01\x00" * 10)  # samples 0-9
    buffer.append(b"\x02\x00" * 10)  # samples 10-19
    buffer.append(b"")
    assert (buffer.start, buffer.end, buffer.samples) == (0, 20, 20)
    buffer.trim(4)
    start, chunks = buffer.snapshot()
    assert start == 4 and b"".join(chunks) == b"\x01\x00" * 6 + b"\x02\x00" * 10
    buffer.trim(15)
    start, chunks = buffer.snapshot()
    assert start == 15 and b"".join(chunks) == b"\x02\x00" * 5
    buffer.trim(3)  # behind the start: nothing happens
    assert buffer.start == 15
    buffer.trim(99)  # past the end: everything goes, never further
    assert (buffer.start, buffer.end, buffer.samples) == (20, 20, 0)
    buffer.append(b"\x03\x00" * 2)
    assert buffer.snapshot() == (20, [b"\x03\x00" * 2])
