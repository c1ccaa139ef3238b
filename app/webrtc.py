"""`POST /webrtc/offer`, WebRTC microphone input: a thin adapter over the session core.

A browser (or any WebRTC peer) sends its microphone as an audio track and opens
a data channel named ``asr``; it POSTs its offer with the native config::

    {"sdp": "v=0…", "type": "offer", "config": {"sample_rate_hertz": 16000, …}}

and gets the answer, ICE candidates gathered (no trickle). The data channel
then carries exactly the native JSON messages of ``/ws/asr-stream``
(STREAMING.md): ``metadata``, ``transcript``, ``error``, ``complete`` out;
``stop``, ``finalize``, ``keepalive`` in. Closing the peer connection, or the
track ending, ends the session like a WebSocket disconnect.

How an HTTP request fits the core's door (`app.core.SessionCore.serve`): the
route starts ``serve`` as a task for the session's life and awaits one
response. `PeerTransport` decides it: ``refuse`` (auth, origin, a full or
draining node, a bad offer or config: 400/401/403/429/503 with the native
error body) or ``fail`` before the session started (a config the plan refuses,
no room for its engine) give the JSON error; ``accept`` negotiates the peer
connection and the ``Started`` event, once the engine is open, gives the
answer SDP. So every config error is an HTTP 400, as the issue asks, and a
session that gets an answer has its engine ready.

Audio (`RealTimeASRHandler`): aiortc decodes the Opus track (48 kHz) into
``av.AudioFrame``s; they are resampled to 16-bit mono at the config's
``sample_rate_hertz`` (any rate the native endpoint takes) and fed as `Audio`
in ``CHUNK_SEC`` pieces. The frames' ``pts`` are the RTP timestamps: a jump
(lost packets `app.jitter.AudioJitterBuffer` gave up on, a sender that paused or used DTX)
is filled, so stream time stays the audio's time: its first 60 ms with the audio
just before it (aiortc's decoder has no concealment or in-band FEC, and a lost
packet's 20 ms of zeros costs the streamed transcript words: `app.concealment`),
the rest with silence. The receive queue aiortc fills is unbounded, so this side
reads it at once into an `Inbox` bounded to ``MAX_BUFFERED_SEC`` of audio;
what overflows while the engine holds the reader back is replaced by silence
(counted, not stored) and the client is told once (``audio_dropped``).

aiortc is an extra (``pip install 'asr-stream[webrtc]'``): imported only when an
offer arrives; without it the route answers 501 naming the extra.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import logging
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Final

import numpy as np
from prometheus_client import Gauge
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app.concealment import Pcm, conceal, tail_samples
from app.core import (
    Audio,
    ClientGone,
    Control,
    Inbound,
    Invalid,
    Outbound,
    OverHTTP,
    SessionCore,
    Started,
)
from app.errors import RETRY_LATER_STATUSES, ASRError, CloseCode, ProtocolError, http_status
from app.jitter import AudioJitterBuffer, install
from app.messages import (
    ErrorMessage,
    StreamConfig,
    parse_config,
    parse_control,
)
from app.ws import TranscriptFormatter, native_message

if TYPE_CHECKING:
    import av
    from aiortc import MediaStreamTrack, RTCDataChannel, RTCPeerConnection

logger = logging.getLogger(__name__)

PATH = "/webrtc/offer"
EXTRA = "webrtc"
DATA_CHANNEL = "asr"
BYTES_PER_SAMPLE = 2
# Audio goes to the core in pieces this long, as the native clients frame it (100 ms):
# WebRTC's 20 ms frames one by one would cost the core five times the messages.
CHUNK_SEC = 0.1
# Audio waiting for the core's reader (the engine holds it back): beyond this, silence.
MAX_BUFFERED_SEC = 5.0
# A frame starting this much after the last one ended is a gap (Opus frames are 20 ms).
GAP_TOLERANCE_SEC = 0.005
# `stop` waits this long for audio already on its way (the jitter buffer holds at most
# 3 packets, 60 ms, app/jitter.py), then later audio is ignored: RTP goes on until the track stops.
STOP_GRACE_SEC = 0.1
# After `complete`, the client has this long to hang up before the server does.
CLOSE_GRACE_SEC = 2.0
FAIL_SEND_TIMEOUT_SEC = 5.0
MAX_OFFER_BYTES = 256 * 1024
# Unsent data-channel bytes beyond which a send waits (the core's send timeout applies).
MAX_CHANNEL_BUFFER_BYTES = 1 << 20
CHANNEL_DRAIN_POLL_SEC = 0.02
# Control messages queued for the core's reader beyond this are dropped (a flood).
MAX_QUEUED_MESSAGES = 256
OFFER_FIELDS = frozenset({"sdp", "type", "config"})

IceServer = Mapping[str, str | list[str]]
ICE_SERVERS: Final[tuple[IceServer, ...]] = ()
"""STUN/TURN servers for the server's own ICE candidates: none, so nothing leaves the
machine and the answer holds host candidates only. Each entry is an RTCIceServer
(``{"urls": "turn:turn.example.com:3478", "username": "u", "credential": "p"}``)."""


def webrtc_available() -> bool:
    """aiortc is installed (the ``webrtc`` extra)."""
    return importlib.util.find_spec("aiortc") is not None


def unavailable_response() -> JSONResponse:
    body = ErrorMessage(
        detail=(
            f"WebRTC input needs the '{EXTRA}' extra, which this server does not have: "
            f"pip install 'asr-stream[{EXTRA}]'. The WebSocket /ws/asr-stream works without it."
        ),
        code="webrtc_unavailable",
    ).model_dump()
    return JSONResponse(body, status_code=501)


# --------------------------------------------------------------------------- the offer


@dataclass(frozen=True)
class Offer:
    sdp: str
    config: StreamConfig


def _invalid_offer(detail: str, code: str = "invalid_offer") -> ProtocolError:
    return ProtocolError(detail, code=code)


def parse_offer(body: bytes) -> Offer:
    """The POST body, checked: `ProtocolError` (bad JSON, SDP, no audio, no data channel)
    or the native `ConfigError` codes for the config (both HTTP 400)."""
    if len(body) > MAX_OFFER_BYTES:
        raise _invalid_offer(f"The offer is over {MAX_OFFER_BYTES} bytes.")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise _invalid_offer("The body must be JSON.", code="invalid_json") from None
    if not isinstance(data, dict):
        raise _invalid_offer("The body must be a JSON object.", code="invalid_json")
    extra = sorted(set(data) - OFFER_FIELDS)
    if extra:
        raise _invalid_offer(
            f"Unknown field {extra[0]!r:.40} in the offer; its fields are: sdp, type, config."
        )
    if data.get("type") != "offer":
        raise _invalid_offer("Field 'type' must be \"offer\".")
    sdp = data.get("sdp")
    if not isinstance(sdp, str) or not sdp.strip():
        raise _invalid_offer("Field 'sdp' must be the offer's SDP text.", code="invalid_sdp")
    if "config" not in data:
        raise _invalid_offer(
            "Field 'config' is required: the native config (STREAMING.md).", code="missing_field"
        )
    # The native rules and error codes, unchanged: the config as the first WebSocket message.
    config = parse_config(json.dumps(data["config"]))
    check_sdp(sdp)
    return Offer(sdp, config)


def check_sdp(sdp: str) -> None:
    """An offer this door can answer: it parses, sends audio, and has a data channel."""
    from aiortc.sdp import SessionDescription

    # aiortc's parser takes any text ("hello world" is an SDP of no media): an offer
    # starts with its version line and has media sections.
    if not sdp.lstrip().startswith("v=0") or "\nm=" not in sdp:
        raise _invalid_offer(
            "Field 'sdp' is not an SDP offer: it starts with 'v=0' and has media ('m=') "
            "sections; send RTCPeerConnection.localDescription.sdp after createOffer().",
            code="invalid_sdp",
        )
    try:
        description = SessionDescription.parse(sdp)
    except Exception:  # the parser's errors vary (ValueError, IndexError, KeyError)
        raise _invalid_offer("Field 'sdp' is not a valid SDP offer.", code="invalid_sdp") from None
    if not description.media or any(
        not m.dtls or not m.dtls.fingerprints for m in description.media
    ):
        # Else answered 200, then the DTLS transport failed (an assertion in aiortc)
        # and the session was dropped without a word.
        raise _invalid_offer(
            "The offer has no DTLS fingerprint ('a=fingerprint:') for every media section: "
            "WebRTC media is DTLS-SRTP, and the answer needs the client's certificate.",
            code="invalid_sdp",
        )
    kinds = {media.kind for media in description.media}
    sending = [
        m
        for m in description.media
        if m.kind == "audio" and m.direction in (None, "sendrecv", "sendonly")
    ]
    if not sending:
        raise _invalid_offer(
            "The offer sends no audio: add the microphone track before creating the offer.",
            code="no_audio_track",
        )
    if "application" not in kinds:
        raise _invalid_offer(
            f"The offer has no data channel: create one named '{DATA_CHANNEL}' before the "
            "offer; transcripts come back on it.",
            code="no_data_channel",
        )


# --------------------------------------------------------------------------- the inbox


_GONE = "gone"


class Inbox:
    """What the client sent, in order, for the core's reader: audio bounded in seconds.

    Silence is a count of samples, produced in ``CHUNK_SEC`` pieces when read, so a
    long gap costs no memory; audio that would overflow becomes such silence too.
    """

    def __init__(self, rate: int, max_buffered_sec: float = MAX_BUFFERED_SEC) -> None:
        self.rate = rate
        self.max_bytes = int(max_buffered_sec * rate) * BYTES_PER_SAMPLE
        self.chunk_samples = max(1, round(CHUNK_SEC * rate))
        self._items: deque[bytes | int | Inbound] = deque()
        self._bytes = 0
        self._messages = 0
        self._ready = asyncio.Event()
        self.gone: str | None = None  # why the client is gone
        self.audio_closed = False  # after `stop`: later audio is ignored
        self.dropped_samples = 0
        self._told_dropped = False

    def put_audio(self, pcm: bytes) -> None:
        if self.audio_closed or not pcm:
            return
        if self._bytes + len(pcm) > self.max_bytes:
            samples = len(pcm) // BYTES_PER_SAMPLE
            self.dropped_samples += samples
            self.put_silence(samples)
            if not self._told_dropped:
                self._told_dropped = True
                self.put(
                    Invalid(
                        ASRError(
                            f"The engine is over {self.max_bytes // BYTES_PER_SAMPLE / self.rate:g}"
                            " s behind this stream; live audio cannot wait, so what does not fit "
                            "is replaced by silence (the times stay true).",
                            code="audio_dropped",
                            fatal=False,
                        )
                    )
                )
            return
        self._bytes += len(pcm)
        self._append(pcm)

    def put_silence(self, samples: int) -> None:
        if self.audio_closed or samples <= 0:
            return
        if self._items and isinstance(self._items[-1], int):
            self._items[-1] += samples
        else:
            self._append(samples)

    def put(self, message: Inbound) -> None:
        if self._messages >= MAX_QUEUED_MESSAGES:
            return
        self._messages += 1
        self._append(message)

    def end(self, why: str) -> None:
        if self.gone is None:
            self.gone = why
        self._ready.set()

    def _append(self, item: bytes | int | Inbound) -> None:
        self._items.append(item)
        self._ready.set()

    async def get(self) -> Inbound:
        while True:
            if self.gone is not None:
                raise ClientGone(self.gone)
            if self._items:
                return self._pop()
            self._ready.clear()
            await self._ready.wait()

    def _pop(self) -> Inbound:
        item = self._items.popleft()
        if isinstance(item, bytes):
            self._bytes -= len(item)
            return Audio(item)
        if isinstance(item, int):
            take = min(item, self.chunk_samples)
            if item > take:
                self._items.appendleft(item - take)
            return Audio(bytes(take * BYTES_PER_SAMPLE))
        self._messages -= 1
        return item


# --------------------------------------------------------------------------- the track


class RealTimeASRHandler:
    """One WebRTC audio track into one session (the guides' name).

    Reads the decoded frames as they come (aiortc's queue is unbounded), converts
    them to 16-bit mono PCM at the session's rate, and puts them in the `Inbox`
    in ``CHUNK_SEC`` pieces; a jump of the frames' timestamps becomes silence.
    """

    def __init__(self, track: MediaStreamTrack, inbox: Inbox, session_id: str = "-") -> None:
        import av

        self.track = track
        self.inbox = inbox
        self.session_id = session_id
        self.rate = inbox.rate
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=self.rate)
        self._pending = bytearray()
        self._chunk_bytes = inbox.chunk_samples * BYTES_PER_SAMPLE
        self._expected: Fraction | None = None  # where the next frame should start (s)
        self._tail: Pcm = np.zeros(0, dtype=np.int16)  # the last audio out, for a hole after it
        self._tail_samples = tail_samples(self.rate)
        self.frames = 0
        self.gap_seconds = 0.0
        self.concealed_seconds = 0.0
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def _run(self) -> None:
        from aiortc.mediastreams import MediaStreamError

        try:
            while True:
                frame = await self.track.recv()
                self.take(frame)  # type: ignore[arg-type]  # an audio track gives AudioFrames
        except MediaStreamError:
            self._flush()
            logger.info("[%s] the audio track ended", self.session_id)
            self.inbox.end("the audio track ended")
        except Exception:
            logger.exception("[%s] the audio track failed", self.session_id)
            self.inbox.end("the audio track failed")

    def take(self, frame: av.AudioFrame) -> None:
        """One decoded frame: silence for a gap before it, then its audio."""
        self.frames += 1
        if frame.pts is not None and frame.time_base is not None:
            start = frame.pts * frame.time_base
            if self._expected is not None:
                gap = start - self._expected
                if gap > GAP_TOLERANCE_SEC:
                    self.gap_seconds += float(gap)
                    self._fill(round(gap * self.rate))
                elif gap < -GAP_TOLERANCE_SEC:
                    return  # a frame already covered (a duplicate): stream time goes forward
            self._expected = start + Fraction(frame.samples, frame.sample_rate)
        for out in self._resampler.resample(frame):
            pcm = out.to_ndarray().reshape(-1).astype(np.int16, copy=False)
            self._pending += pcm.tobytes()
            self._tail = np.concatenate([self._tail, pcm])[-self._tail_samples :]
        self._send_chunks()

    def _fill(self, samples: int) -> None:
        """A hole in the audio (lost packets, a pause): its start concealed, then silence."""
        audio, silence = conceal(self._tail, samples, self.rate)
        self.concealed_seconds += len(audio) / self.rate
        self._pending += audio.tobytes()
        if silence:
            self._flush()
            self.inbox.put_silence(silence)
            self._tail = np.zeros(0, dtype=np.int16)
        self._send_chunks()

    def _send_chunks(self) -> None:
        while len(self._pending) >= self._chunk_bytes:
            self.inbox.put_audio(bytes(self._pending[: self._chunk_bytes]))
            del self._pending[: self._chunk_bytes]

    def _flush(self) -> None:
        if self._pending:
            self.inbox.put_audio(bytes(self._pending))
            self._pending.clear()


# --------------------------------------------------------------------------- the transport


def _error_response(error: ASRError, retry_after: int) -> JSONResponse:
    status = http_status(error)
    body = ErrorMessage(detail=error.detail, code=error.code).model_dump()
    headers = {"Retry-After": str(retry_after)} if status in RETRY_LATER_STATUSES else None
    return JSONResponse(body, status_code=status, headers=headers)


class PeerTransport(OverHTTP):
    """One offer and its peer connection as a `Transport` of the core."""

    def __init__(self, door: WebRTCDoor, request: Request, body: bytes) -> None:
        self.door = door
        self.request = self.connection = request
        self.body = body
        self.response: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self.offer: Offer | None = None
        self.pc: RTCPeerConnection | None = None
        self.channel: RTCDataChannel | None = None
        self.handler: RealTimeASRHandler | None = None
        self.jitter: list[AudioJitterBuffer] = []
        self.inbox: Inbox | None = None
        self.session_id = "-"
        self._open = asyncio.Event()  # the data channel opened (or the client is gone)
        self._channel_closed = asyncio.Event()
        self._format: TranscriptFormatter | None = None
        self._closing = False  # `complete` sent: the session is over
        self._teardown: asyncio.Future[None] | None = None

    # -- the request ------------------------------------------------------------------

    async def refuse(self, error: ASRError, retry_after: int) -> None:
        self._respond(_error_response(error, retry_after))

    def check_request(self) -> StreamConfig | None:
        self.offer = parse_offer(self.body)
        self.inbox = Inbox(self.offer.config.sample_rate_hertz)
        return self.offer.config

    async def accept(self, subprotocol: str | None) -> None:
        """Negotiate: the answer is made (ICE gathered) but sent only with ``Started``."""
        from aiortc import RTCPeerConnection, RTCSessionDescription

        assert self.offer is not None and self.inbox is not None
        pc = RTCPeerConnection(self.door.configuration())
        self.pc = pc
        self.door.peers.add(pc)
        pc.on("track", self._on_track)
        pc.on("datachannel", self._on_datachannel)
        pc.on("connectionstatechange", self._on_state)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(self.offer.sdp, "offer"))
            _refuse_unread_media(pc)
            self.jitter = install(pc)  # before any packet: see app/jitter.py
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as exc:  # aiortc's negotiation errors vary (ValueError, others)
            logger.info("could not answer an offer: %r", exc)
            raise _invalid_offer(
                "The offer could not be answered: it offers no codec or transport this server "
                "takes (audio must be Opus; ICE and DTLS are required).",
                code="invalid_sdp",
            ) from None

    async def receive_config(self) -> StreamConfig:
        assert self.offer is not None
        return self.offer.config

    # -- the peer connection's events ----------------------------------------------------

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind != "audio" or self.handler is not None or self.inbox is None:
            return  # one audio track is the session's; video or more tracks are not read
        self.handler = RealTimeASRHandler(track, self.inbox, self.session_id)
        self.handler.start()

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if channel.label != DATA_CHANNEL or self.channel is not None:
            channel.close()
            return
        self.channel = channel
        channel.on("message", self._on_message)
        channel.on("close", self._on_channel_close)
        if channel.readyState == "open":
            self._open.set()
        else:
            channel.on("open", self._open.set)

    def _on_channel_close(self) -> None:
        self._channel_closed.set()
        self._gone("the data channel closed")

    def _on_state(self) -> None:
        assert self.pc is not None
        if self.pc.connectionState in ("failed", "closed"):
            self._gone(f"the peer connection {self.pc.connectionState}")

    def _on_message(self, message: str | bytes) -> None:
        inbox = self.inbox
        assert inbox is not None
        if not isinstance(message, str):
            detail = "Audio goes in the media track; the data channel takes JSON text messages."
            inbox.put(Invalid(ProtocolError(detail, code="unexpected_binary", fatal=False)))
            return
        try:
            control = parse_control(message)
        except ProtocolError as exc:
            inbox.put(Invalid(exc))
            return
        if control.type == "stop":
            asyncio.get_running_loop().call_later(STOP_GRACE_SEC, self._stop, inbox)
        else:
            inbox.put(Control(control.type))

    def _stop(self, inbox: Inbox) -> None:
        if self.handler is not None:
            self.handler._flush()
        inbox.put(Control("stop"))
        inbox.audio_closed = True

    def _gone(self, why: str) -> None:
        # After `complete` the client hanging up is the expected end, not a disconnect.
        if self.inbox is not None and not self._closing:
            self.inbox.end(why)
        self._open.set()  # a send waiting for the channel gives up

    # -- the session ---------------------------------------------------------------------

    async def receive(self) -> Inbound:
        assert self.inbox is not None
        return await self.inbox.get()

    async def send(self, event: Outbound) -> None:
        if isinstance(event, Started):
            assert self.pc is not None and self.pc.localDescription is not None
            self.session_id = event.session_id
            if self.handler is not None:
                self.handler.session_id = event.session_id
            self._format = TranscriptFormatter(event.plan)
            answer = self.pc.localDescription
            self._respond(
                JSONResponse(
                    {"sdp": answer.sdp, "type": answer.type, "session_id": event.session_id}
                )
            )
            await self._wait_open()
        text = native_message(event, self._format)
        if text is not None:
            await self._send_text(text)

    async def _wait_open(self) -> None:
        """The client connects and opens ``asr`` within the config timeout, or is gone."""
        within = self.door.connect_timeout_sec
        try:
            async with asyncio.timeout(within):
                await self._open.wait()
        except TimeoutError:
            logger.info(
                "[%s] the data channel '%s' did not open within %g s of the answer",
                self.session_id,
                DATA_CHANNEL,
                within,
            )
            raise ClientGone from None

    async def _send_text(self, text: str) -> None:
        await self._open.wait()
        channel = self.channel
        if channel is None or channel.readyState != "open" or self._teardown is not None:
            raise ClientGone
        while channel.bufferedAmount > MAX_CHANNEL_BUFFER_BYTES:  # a client not reading
            await asyncio.sleep(CHANNEL_DRAIN_POLL_SEC)
            if channel.readyState != "open":
                raise ClientGone
        try:
            channel.send(text)
        except Exception as exc:  # aiortc raises InvalidStateError once it is closing
            raise ClientGone from exc

    async def close(self, code: CloseCode) -> None:
        """After ``complete``: close ``asr`` (its messages go first), let the client hang up."""
        self._closing = True
        channel = self.channel
        if channel is not None and channel.readyState == "open":
            channel.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._channel_closed.wait(), CLOSE_GRACE_SEC)
        await self.shutdown()

    async def fail(self, error: ASRError) -> None:
        if self._respond(_error_response(error, self.door.core.admission.retry_after)):
            await self.shutdown()
            return
        with contextlib.suppress(Exception):
            text = ErrorMessage(detail=error.detail, code=error.code).to_json()
            if self.channel is not None and self.channel.readyState == "open":
                async with asyncio.timeout(FAIL_SEND_TIMEOUT_SEC):
                    await self._send_text(text)
        await self.close(error.close_code or CloseCode.NORMAL)

    def _respond(self, response: Response) -> bool:
        """Answer the POST, once; False if it was answered already."""
        if self.response.done():
            return False
        self.response.set_result(response)
        return True

    async def shutdown(self) -> None:
        """Free everything: the track's task, the peer connection (its threads and sockets).

        Shielded: the core cancels the writer (which may be closing) when the reader ends.
        """
        if self._teardown is None:
            self._teardown = asyncio.ensure_future(self._free())
        await asyncio.shield(self._teardown)

    async def _free(self) -> None:
        self._closing = True
        if self.handler is not None:
            await self.handler.stop()
            logger.info(
                "[%s] audio: %d frames, %.2f s of gaps (%.2f s concealed); RTP %s",
                self.session_id,
                self.handler.frames,
                self.handler.gap_seconds,
                self.handler.concealed_seconds,
                ", ".join(str(buffer.stats()) for buffer in self.jitter) or "-",
            )
        if self.pc is not None:
            try:
                await self.pc.close()
            except Exception:
                logger.exception("[%s] closing the peer connection failed", self.session_id)
            finally:
                self.door.peers.discard(self.pc)
        if self.inbox is not None:
            self.inbox.end("the session ended")


# --------------------------------------------------------------------------- the door


class WebRTCDoor:
    """``POST /webrtc/offer`` for one app: its sessions go through the app's core."""

    def __init__(
        self,
        core: SessionCore,
        ice_servers: Sequence[IceServer] = ICE_SERVERS,
        connect_timeout_sec: float | None = None,
    ) -> None:
        self.core = core
        self.ice_servers = tuple(ice_servers)
        # The client connects and opens the data channel within this of the answer, as
        # a WebSocket client sends its config within CONFIG_TIMEOUT_SEC of connecting.
        self.connect_timeout_sec = connect_timeout_sec or core.settings.config_timeout_sec
        self.peers: set[Any] = set()  # RTCPeerConnection, open or closing
        self.tasks: set[asyncio.Task[None]] = set()  # one `serve` per offer
        registry = core.metrics.registry
        Gauge(
            "asr_webrtc_peer_connections", "WebRTC peer connections open", registry=registry
        ).set_function(lambda: len(self.peers))
        Gauge(
            "asr_webrtc_sessions", "WebRTC offers being served (tasks)", registry=registry
        ).set_function(lambda: len(self.tasks))

    def configuration(self) -> Any:
        from aiortc import RTCConfiguration, RTCIceServer

        servers = [
            RTCIceServer(
                urls=server["urls"],
                username=_text(server.get("username")),
                credential=_text(server.get("credential")),
            )
            for server in self.ice_servers
        ]
        return RTCConfiguration(iceServers=servers)

    async def offer(self, request: Request) -> Response:
        """An offer in, the answer (or the refusal) out; the session goes on in a task."""
        if not webrtc_available():
            return unavailable_response()
        transport = PeerTransport(self, request, await request.body())
        task = asyncio.get_running_loop().create_task(self._serve(transport))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        await asyncio.wait((transport.response, task), return_when=asyncio.FIRST_COMPLETED)
        if transport.response.done():
            return transport.response.result()
        logger.error("a WebRTC session ended without answering its offer")
        return _error_response(ASRError("The server failed on this offer."), 0)

    async def _serve(self, transport: PeerTransport) -> None:
        try:
            await self.core.serve(transport)
        finally:
            await transport.shutdown()

    async def aclose(self) -> None:
        """At shutdown: end every session still open (the core has drained them already)."""
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def _text(value: str | list[str] | None) -> str | None:
    return value if isinstance(value, str) else None


def _refuse_unread_media(pc: RTCPeerConnection) -> None:
    """Answer every media section but the first audio one the client sends as inactive.

    The session reads one audio track. aiortc decodes whatever it receives into a
    queue that only a reader empties: an accepted video track grew the server's
    memory by about 13 MB a second for the whole session.
    """
    kept = False
    for transceiver in pc.getTransceivers():
        # aiortc keeps the offer's direction only here (the answer's comes from it).
        sends = transceiver._offerDirection in ("sendrecv", "sendonly")
        if transceiver.kind == "audio" and sends and not kept:
            kept = True
            continue
        transceiver.direction = "inactive"
