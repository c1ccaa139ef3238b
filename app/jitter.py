"""The WebRTC receiver's audio jitter buffer: reorder briefly, give up on a lost packet soon.

aiortc's own audio buffer (``JitterBuffer(capacity=16, prefetch=4)`` in its
``RTCRtpReceiver``) emits nothing while a missing packet is among the next five,
so after a loss it fills, and then makes room by dropping the oldest packets it
*received*: measured with 5 % loss, about 29 % of the audio never reached the
decoder, and the buffer stayed full (320 ms late) afterwards (aiortc/aiortc#543;
the open rewrite aiortc/aiortc#1418). Speech recognition pays for every 20 ms
thrown away.

`AudioJitterBuffer` keeps aiortc's interface (``add(packet)`` returns the PLI
flag and at most one frame) with another rule:

* the stream's first `REORDER_PACKETS` are held, so the first in sequence is known;
  after that a packet that is next in sequence goes out at once;
* a missing packet is waited for until `REORDER_PACKETS` later packets have come
  (80 ms at Opus's 20 ms: a packet delayed that much behind its successors is
  late), then given up: the oldest packet held goes out. The session hears the
  gap as silence, from the frames' timestamps (`app.webrtc.RealTimeASRHandler`);
* a packet that comes after its turn was given up on is dropped (counted);
  one from more than `MAX_MISORDER` packets back means the sender restarted its
  sequence: the buffer starts again from it.

One frame per packet in means the buffer keeps the depth it started with and
reordering gave it: `REORDER_PACKETS` - 1 packets (60 ms), where aiortc's holds
4, and 16 after a loss. Nothing here asks for a retransmission: browsers send audio
without NACK, and a late packet is no use to a live transcript.

`install` puts one in every audio receiver of a peer connection. aiortc keeps its
buffer in a private attribute; if a release renames it, `install` logs a warning
and aiortc's buffer stays (tests/unit/test_jitter.py fails on that release).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

logger = logging.getLogger(__name__)

# A missing packet is given up once this many later packets have come (20 ms each).
REORDER_PACKETS = 4
# The most packets held: far above what the rule above keeps, a bound all the same.
CAPACITY = 64
# A packet this far behind the next expected one is a restarted sequence, not a late one.
MAX_MISORDER = 100
SEQUENCE_SPAN = 1 << 16
# aiortc's RTCRtpReceiver keeps its buffer here (name-mangled ``__jitter_buffer``).
RECEIVER_ATTRIBUTE = "_RTCRtpReceiver__jitter_buffer"


class RtpPacket(Protocol):
    """What the buffer reads of aiortc's ``RtpPacket`` (``_data``: the depayloaded frame)."""

    sequence_number: int
    timestamp: int
    _data: bytes


@dataclass
class Frame:
    """aiortc's ``JitterFrame``: one encoded frame and its RTP timestamp."""

    data: bytes
    timestamp: int


def ahead_of(sequence: int, origin: int) -> int:
    """How many packets ``sequence`` comes after ``origin``, modulo 2^16, in [-2^15, 2^15)."""
    delta = (sequence - origin) % SEQUENCE_SPAN
    return delta - SEQUENCE_SPAN if delta >= SEQUENCE_SPAN // 2 else delta


class AudioJitterBuffer:
    """Packets in, frames out in sequence order; a missing packet is given up on soon."""

    def __init__(self, reorder: int = REORDER_PACKETS, capacity: int = CAPACITY) -> None:
        self.reorder = reorder
        self.capacity = capacity
        self._held: dict[int, RtpPacket] = {}
        self._next: int | None = None  # the sequence number that goes out next
        self.received = 0
        self.emitted = 0
        self.given_up = 0  # packets never received: their time is silence
        self.late = 0  # received after they were given up on: dropped
        self.duplicates = 0
        self.restarts = 0

    def add(self, packet: RtpPacket) -> tuple[bool, Frame | None]:
        """aiortc's ``JitterBuffer.add``: (send a PLI, the frame to decode now or None)."""
        self.received += 1
        sequence = packet.sequence_number
        if self._next is None:
            return False, self._prefetch(packet)
        ahead = ahead_of(sequence, self._next)
        if ahead < -MAX_MISORDER:
            self.restarts += 1
            self._held.clear()
            self._next = sequence
        elif ahead < 0:
            self.late += 1
            return False, None
        if sequence in self._held:
            self.duplicates += 1
            return False, None
        self._held[sequence] = packet
        if len(self._held) > self.capacity:
            self._give_up()
        return False, self._pop()

    def _prefetch(self, packet: RtpPacket) -> Frame | None:
        """The stream's first packets: held until `reorder` have come, so the first is known."""
        if packet.sequence_number in self._held:
            self.duplicates += 1
            return None
        self._held[packet.sequence_number] = packet
        if len(self._held) < self.reorder:
            return None
        origin = packet.sequence_number
        self._next = min(self._held, key=lambda sequence: ahead_of(sequence, origin))
        return self._pop()

    def _pop(self) -> Frame | None:
        assert self._next is not None
        if self._next not in self._held:
            newest = max(ahead_of(sequence, self._next) for sequence in self._held)
            if newest < self.reorder:
                return None  # the missing packet may still come
            self._give_up()
        packet = self._held.pop(self._next)
        self._next = (self._next + 1) % SEQUENCE_SPAN
        self.emitted += 1
        return Frame(data=packet._data, timestamp=packet.timestamp)

    def _give_up(self) -> None:
        """The oldest packet held is next: the ones missing before it are lost."""
        assert self._next is not None
        origin = self._next
        oldest = min(self._held, key=lambda sequence: ahead_of(sequence, origin))
        self.given_up += ahead_of(oldest, origin)
        self._next = oldest

    def stats(self) -> dict[str, int]:
        return {
            "received": self.received,
            "emitted": self.emitted,
            "given_up": self.given_up,
            "late": self.late,
            "duplicates": self.duplicates,
            "held": len(self._held),
        }


def install(pc: Any) -> list[AudioJitterBuffer]:
    """An `AudioJitterBuffer` in each audio receiver of ``pc`` (before media flows)."""
    buffers = []
    for transceiver in pc.getTransceivers():
        receiver = transceiver.receiver
        if transceiver.kind != "audio" or receiver is None:
            continue
        if not hasattr(receiver, RECEIVER_ATTRIBUTE):
            logger.warning(
                "this aiortc keeps no %s: its own audio jitter buffer stays", RECEIVER_ATTRIBUTE
            )
            continue
        buffer = AudioJitterBuffer()
        setattr(receiver, RECEIVER_ATTRIBUTE, buffer)
        buffers.append(buffer)
    return buffers
