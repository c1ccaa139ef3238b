"""The WebRTC receiver's audio jitter buffer (app/jitter.py): packets in, frames out."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

import pytest

from app.jitter import (
    CAPACITY,
    MAX_MISORDER,
    RECEIVER_ATTRIBUTE,
    REORDER_PACKETS,
    AudioJitterBuffer,
    ahead_of,
    install,
)

SAMPLES_PER_PACKET = 960  # 20 ms of Opus at 48 kHz


@dataclass
class Packet:
    sequence_number: int
    timestamp: int
    _data: bytes


def packet(sequence: int) -> Packet:
    return Packet(sequence % 65536, sequence * SAMPLES_PER_PACKET, f"p{sequence}".encode())


def feed(buffer: AudioJitterBuffer, sequences: list[int]) -> list[bytes]:
    """The frames that come out, in order, as ``sequences`` arrive."""
    out = []
    for sequence in sequences:
        pli, frame = buffer.add(packet(sequence))
        assert pli is False  # audio never asks for a picture
        if frame is not None:
            out.append(frame.data)
    return out


def names(sequences: range | list[int]) -> list[bytes]:
    return [f"p{s}".encode() for s in sequences]


def test_the_first_packets_are_held_then_each_goes_out_as_one_comes_in() -> None:
    buffer = AudioJitterBuffer()
    for sequence in range(REORDER_PACKETS - 1):
        assert buffer.add(packet(sequence)) == (False, None)  # the first may come later
    for sequence in range(REORDER_PACKETS - 1, 20):
        _, frame = buffer.add(packet(sequence))
        out = sequence - (REORDER_PACKETS - 1)
        assert frame is not None and frame.data == f"p{out}".encode()
        assert frame.timestamp == out * SAMPLES_PER_PACKET
    assert buffer.stats()["held"] == REORDER_PACKETS - 1


def test_the_stream_s_first_packets_may_come_out_of_order() -> None:
    buffer = AudioJitterBuffer()
    assert feed(buffer, [2, 0, 3, 1, 4]) == names([0, 1])
    assert buffer.late == buffer.given_up == 0


def gone_out(buffer: AudioJitterBuffer, expected: list[int]) -> list[bytes]:
    """``expected`` but the packets the buffer still holds (one frame out per packet in)."""
    return names(expected[: len(expected) - buffer.stats()["held"]])


def test_reordered_packets_go_out_in_order_and_none_is_lost() -> None:
    buffer = AudioJitterBuffer()
    arrivals = [0, 1, 2, 3, 5, 4, 6, 9, 7, 8, 10, 11]
    assert feed(buffer, arrivals) == gone_out(buffer, list(range(12)))
    assert buffer.given_up == buffer.late == 0


def test_a_lost_packet_is_given_up_after_the_reorder_window() -> None:
    buffer = AudioJitterBuffer()
    arrivals = [s for s in range(30) if s != 10]
    out = []
    for sequence in arrivals:
        _, frame = buffer.add(packet(sequence))
        if frame is not None:
            out.append(frame.data)
        if sequence == 10 + REORDER_PACKETS - 1:
            assert buffer.given_up == 0  # packet 10 may still come
        if sequence == 10 + REORDER_PACKETS:
            assert buffer.given_up == 1
    assert out == gone_out(buffer, arrivals)
    assert buffer.given_up == 1 and buffer.late == 0


def test_a_packet_after_its_turn_is_dropped_and_counted() -> None:
    buffer = AudioJitterBuffer()
    arrivals = [0, 1, 2, 3, 5, 6, 7, 8, 9, 4, 10]
    assert feed(buffer, arrivals) == gone_out(buffer, [0, 1, 2, 3, 5, 6, 7, 8, 9, 10])
    assert buffer.given_up == 1 and buffer.late == 1


def test_duplicates_go_out_once() -> None:
    buffer = AudioJitterBuffer()
    arrivals = [0, 1, 1, 2, 3, 3, 4, 5, 6, 6, 7]
    assert feed(buffer, arrivals) == gone_out(buffer, list(range(8)))
    assert buffer.duplicates + buffer.late == 3


def test_sequence_numbers_wrap_around() -> None:
    buffer = AudioJitterBuffer()
    sequences = list(range(65530, 65545))  # 65530 … 65535, 0 … 8 on the wire
    sequences[7], sequences[8] = sequences[8], sequences[7]
    assert feed(buffer, sequences) == gone_out(buffer, list(range(65530, 65545)))
    assert ahead_of(2, 65534) == 4 and ahead_of(65534, 2) == -4


def test_a_restarted_sequence_starts_the_buffer_again() -> None:
    buffer = AudioJitterBuffer()
    feed(buffer, list(range(1000, 1010)))
    restart = 1010 - MAX_MISORDER - 50
    assert feed(buffer, [restart, restart + 1]) == names([restart, restart + 1])
    assert buffer.restarts == 1


def test_a_long_outage_costs_only_the_packets_it_took() -> None:
    buffer = AudioJitterBuffer()
    arrivals = list(range(10)) + list(range(3000, 3020))  # 2,990 packets (60 s) lost
    assert feed(buffer, arrivals) == gone_out(buffer, arrivals)
    assert buffer.given_up == 2990


def test_what_it_holds_is_bounded() -> None:
    rng = random.Random(7)
    buffer = AudioJitterBuffer()
    for _ in range(5000):
        buffer.add(packet(rng.randrange(65536)))
        assert buffer.stats()["held"] <= CAPACITY


def lossy_arrivals(seed: int, count: int = 550) -> list[int]:
    """Opus every 20 ms through 5 % loss and 30 ms ± 30 ms of delay (so, reordered)."""
    rng = random.Random(seed)
    sent = [(s * 0.020 + rng.uniform(0.0, 0.060), s) for s in range(count) if rng.random() >= 0.05]
    return [s for _, s in sorted(sent)]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_loss_and_jitter_cost_only_the_lost_packets(seed: int) -> None:
    """What `tests/webrtc/test_netns.py` does to the link, as arrivals: none received is lost."""
    arrivals = lossy_arrivals(seed)
    buffer = AudioJitterBuffer()
    out = feed(buffer, arrivals)
    assert buffer.late == 0  # 60 ms of jitter is 3 packets: inside the reorder window
    assert out == gone_out(buffer, sorted(arrivals))
    lost = 550 - len(arrivals)  # but the first's and those still held: not yet known lost
    assert lost - REORDER_PACKETS <= buffer.given_up <= lost


def test_aiortc_s_own_buffer_loses_far_more_on_the_same_arrivals() -> None:
    """Why the buffer is replaced: aiortc's drops received packets after a loss (#543)."""
    rtp = pytest.importorskip("aiortc.rtp", reason="the 'webrtc' extra")
    jitterbuffer = pytest.importorskip("aiortc.jitterbuffer", reason="the 'webrtc' extra")
    arrivals = lossy_arrivals(1)
    theirs = jitterbuffer.JitterBuffer(capacity=16, prefetch=4)  # aiortc's RTCRtpReceiver
    emitted = 0
    for sequence in arrivals:
        p = rtp.RtpPacket(sequence_number=sequence, timestamp=sequence * SAMPLES_PER_PACKET)
        p._data = b"x"
        _, frame = theirs.add(p)
        emitted += frame is not None
    ours = feed(AudioJitterBuffer(), arrivals)
    assert len(ours) >= len(arrivals) - REORDER_PACKETS
    assert emitted < len(arrivals) * 0.85, (emitted, len(arrivals))


def test_install_replaces_aiortc_s_audio_buffer() -> None:
    """On the aiortc installed: its receiver still keeps the buffer where `install` puts it."""
    aiortc = pytest.importorskip("aiortc", reason="the 'webrtc' extra")

    async def main() -> None:
        pc = aiortc.RTCPeerConnection()
        try:
            pc.addTransceiver("audio", direction="recvonly")
            pc.addTransceiver("video", direction="recvonly")
            buffers = install(pc)
            audio, video = pc.getTransceivers()
            assert len(buffers) == 1
            assert getattr(audio.receiver, RECEIVER_ATTRIBUTE) is buffers[0]
            assert not isinstance(getattr(video.receiver, RECEIVER_ATTRIBUTE), AudioJitterBuffer)
        finally:
            await pc.close()

    asyncio.run(main())
