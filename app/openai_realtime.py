"""`/v1/realtime?intent=transcription`: OpenAI's Realtime transcription protocol over the core.

A client written for OpenAI's Realtime API (the official ``openai`` SDK's
``client.realtime.connect(extra_query={"intent": "transcription"})``, or the
beta ``client.beta.realtime.connect`` with ``OpenAI-Beta: realtime=v1``)
transcribes through this server unchanged. Like `app.ws`, this module only
translates; auth, admission, limits, drain and metrics are the core's
(`app.core`).

    client event                        core                     server events
    ------------                        ----                     -------------
    session.update (beta:               the config               session.updated
      transcription_session.update)
    input_audio_buffer.append           Audio (base64 → PCM)
    input_audio_buffer.commit           Control("finalize")      committed, item added,
                                        … FlushedEvent           …deltas, completed
    input_audio_buffer.clear            Control("finalize"),     cleared
                                        its text dropped
    finals (never revised)                                       …transcription.delta
    voice activity (server_vad)         SpeechEvent              speech_started/stopped,
                                                                 committed, completed

OpenAI transcribes a turn once it is committed; this server streams its finals
as they come, so deltas of a turn may arrive before its ``committed``, and
``completed`` carries the turn's deltas joined. Docs: docs/COMPATIBILITY.md.

Unlike the native protocol, the SDK does not wait for ``session.created``: it
may send audio before any ``session.update``. The first client event decides
the session's config (a ``session.update``, or the defaults), and whatever
came first is handed to the core in order.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import time
import uuid
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr
from pydantic import ValidationError as PydanticValidationError
from starlette.websockets import WebSocket, WebSocketState

from app.asr.base import TextSpan
from app.core import (
    Audio,
    ClientGone,
    Control,
    Inbound,
    Invalid,
    Outbound,
    OverHTTP,
    Started,
)
from app.errors import (
    ASRError,
    AudioFormatError,
    AuthError,
    CloseCode,
    ConfigError,
    LimitError,
    ProtocolError,
    echo,
)
from app.languages import is_bcp47, to_whisper_language
from app.messages import StreamConfig
from app.session import CompleteEvent, ErrorEvent, FlushedEvent, SpeechEvent, TranscriptEvent
from app.ws import deny, strip_punctuation

logger = logging.getLogger(__name__)

PATH = "/v1/realtime"
BETA_HEADER = "openai-beta"  # "realtime=v1": the beta protocol (transcription_session.*)
INTENT = "transcription"
# OpenAI's PCM is 16-bit mono little-endian at 24 kHz only; G.711 is 8 kHz.
PCM_RATE = 24_000
G711_RATE = 8_000
# OpenAI refuses to commit less than this much audio (`input_audio_buffer_commit_empty`).
MIN_COMMIT_MS = 100
# Vendor model names a client cannot avoid sending: all run on the server's default model.
VENDOR_MODEL_PREFIXES = ("gpt-", "whisper-1")
# OpenAI's defaults for a transcription session's server VAD (its API reference).
DEFAULT_SERVER_VAD: dict[str, Any] = {
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 500,
}
# Notices OpenAI has no event for, which its clients would take as a failure: an
# `error` is "most errors are recoverable" at best, and sending faster than real time
# (a file in one go) is allowed there. Logged instead.
QUIET_NOTICES = frozenset({"engine_behind"})
SESSION_TTL_SEC = 30 * 60  # `expires_at`: OpenAI's session limit; ours is MAX_SESSION_SEC
# How long telling a client its fatal error may take before the close.
FAIL_SEND_TIMEOUT_SEC = 5.0

Mode = Literal["ga", "beta"]
Format = Literal["pcm16", "g711_ulaw", "g711_alaw"]


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


# --------------------------------------------------------------------------- errors


class RealtimeEventError(ProtocolError):
    """A client event OpenAI would answer with an ``error`` event; the session goes on.

    ``param`` names the field at fault as OpenAI does (``session.audio.input.format``),
    ``event_id`` is the client event's own id, if it had one.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str,
        param: str | None = None,
        event_id: str | None = None,
    ) -> None:
        super().__init__(message, code=code, fatal=False)
        self.param = param
        self.event_id = event_id


def _error_type(error: ASRError) -> str:
    """OpenAI's error ``type``: the client's fault, or the server's."""
    client_side = (ConfigError, ProtocolError, AudioFormatError, LimitError, AuthError)
    return "invalid_request_error" if isinstance(error, client_side) else "server_error"


def error_event(error: ASRError) -> dict[str, Any]:
    """An `ASRError` as OpenAI's ``error`` server event."""
    body: dict[str, Any] = {
        "type": _error_type(error),
        "code": error.code,
        "message": error.detail,
        "param": getattr(error, "param", None) or getattr(error, "field", None),
        "event_id": getattr(error, "event_id", None),
    }
    return {"type": "error", "event_id": _id("event"), "error": body}


# --------------------------------------------------------------------------- session config
# What a client may put in a session update, field for field as the SDK's types
# have it; anything else is an `unknown_parameter`, as OpenAI answers.


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _AudioFormat(_Strict):
    type: Literal["audio/pcm", "audio/pcmu", "audio/pcma"] | None = None
    rate: Literal[24000] | None = None


class _NoiseReduction(_Strict):
    type: Literal["near_field", "far_field"] | None = None
    strength: StrictFloat | None = None


class _Transcription(_Strict):
    model: StrictStr | None = None
    language: StrictStr | None = None
    prompt: StrictStr | None = None
    keywords: list[StrictStr] | None = None
    languages: list[StrictStr] | None = None
    delay: Literal["minimal", "low", "medium", "high", "xhigh"] | None = None


class _ServerVad(_Strict):
    type: Literal["server_vad"]
    threshold: StrictFloat | None = None
    prefix_padding_ms: StrictInt | None = None
    silence_duration_ms: StrictInt | None = None
    create_response: StrictBool | None = None
    interrupt_response: StrictBool | None = None
    idle_timeout_ms: StrictInt | None = None


class _SemanticVad(_Strict):
    type: Literal["semantic_vad"]
    eagerness: Literal["low", "medium", "high", "auto"] | None = None
    create_response: StrictBool | None = None
    interrupt_response: StrictBool | None = None


class _AudioInput(_Strict):
    format: _AudioFormat | None = None
    noise_reduction: _NoiseReduction | None = None
    transcription: _Transcription | None = None
    turn_detection: Annotated[_ServerVad | _SemanticVad, Field(discriminator="type")] | None = None


class _Audio(_Strict):
    input: _AudioInput | None = None


class GaSession(_Strict):
    """``session`` of a GA ``session.update`` for a transcription session."""

    type: Literal["transcription"]
    audio: _Audio | None = None
    include: list[Literal["item.input_audio_transcription.logprobs"]] | None = None


class _BetaTranscription(_Strict):
    model: StrictStr | None = None
    language: StrictStr | None = None
    prompt: StrictStr | None = None


class _BetaTurnDetection(_Strict):
    type: Literal["server_vad", "semantic_vad"] | None = None
    threshold: StrictFloat | None = None
    prefix_padding_ms: StrictInt | None = None
    silence_duration_ms: StrictInt | None = None
    create_response: StrictBool | None = None
    interrupt_response: StrictBool | None = None
    eagerness: Literal["low", "medium", "high", "auto"] | None = None


class _BetaNoiseReduction(_Strict):
    type: Literal["near_field", "far_field"] | None = None


class BetaSession(_Strict):
    """``session`` of a beta ``transcription_session.update``."""

    input_audio_format: Literal["pcm16", "g711_ulaw", "g711_alaw"] | None = None
    input_audio_transcription: _BetaTranscription | None = None
    turn_detection: _BetaTurnDetection | None = None
    input_audio_noise_reduction: _BetaNoiseReduction | None = None
    include: list[StrictStr] | None = None
    modalities: list[Literal["text", "audio"]] | None = None
    client_secret: dict[str, Any] | None = None


_GA_FORMATS: dict[str | None, Format] = {
    None: "pcm16",
    "audio/pcm": "pcm16",
    "audio/pcmu": "g711_ulaw",
    "audio/pcma": "g711_alaw",
}
_GA_FORMAT_NAMES = {"pcm16": "audio/pcm", "g711_ulaw": "audio/pcmu", "g711_alaw": "audio/pcma"}


@dataclass(frozen=True)
class SessionSettings:
    """A session's OpenAI settings, whichever protocol set them; echoed in ``session.*``."""

    format: Format = "pcm16"
    model: str | None = None  # as the client named it
    language: str | None = None
    prompt: str | None = None
    turn_detection: dict[str, Any] | None = field(default_factory=lambda: dict(DEFAULT_SERVER_VAD))
    noise_reduction: dict[str, Any] | None = None
    include: tuple[str, ...] = ()

    @property
    def server_vad(self) -> bool:
        """Turns end at the speaker's pauses (else only at a commit)."""
        return self.turn_detection is not None

    @property
    def sample_rate(self) -> int:
        return PCM_RATE if self.format == "pcm16" else G711_RATE

    def updated_ga(self, session: GaSession) -> SessionSettings:
        """This session with a GA ``session.update`` applied: fields left out stay."""
        changes: dict[str, Any] = {}
        if session.include is not None:
            changes["include"] = tuple(session.include)
        audio_in = session.audio.input if session.audio else None
        if audio_in is None:
            return replace(self, **changes)
        given = audio_in.model_fields_set
        if audio_in.format is not None:
            changes["format"] = _GA_FORMATS[audio_in.format.type]
        if "noise_reduction" in given:
            nr = audio_in.noise_reduction
            changes["noise_reduction"] = nr.model_dump(exclude_none=True) if nr else None
        if audio_in.transcription is not None:
            t = audio_in.transcription
            changes.update(_transcription_changes(t))
        if "turn_detection" in given:
            td = audio_in.turn_detection
            changes["turn_detection"] = (
                None
                if td is None
                else {**_vad_defaults(td.type), **td.model_dump(exclude_none=True)}
            )
        return replace(self, **changes)

    def updated_beta(self, session: BetaSession) -> SessionSettings:
        """This session with a beta ``transcription_session.update`` applied."""
        changes: dict[str, Any] = {}
        given = session.model_fields_set
        if session.input_audio_format is not None:
            changes["format"] = session.input_audio_format
        if session.input_audio_transcription is not None:
            t = session.input_audio_transcription
            changes.update(_transcription_changes(t))
        if "turn_detection" in given:
            td = session.turn_detection
            changes["turn_detection"] = (
                None
                if td is None
                else {**_vad_defaults(td.type or "server_vad"), **td.model_dump(exclude_none=True)}
            )
        if "input_audio_noise_reduction" in given:
            nr = session.input_audio_noise_reduction
            changes["noise_reduction"] = nr.model_dump(exclude_none=True) if nr else None
        if session.include is not None:
            changes["include"] = tuple(session.include)
        return replace(self, **changes)

    # -- echo ------------------------------------------------------------------

    def ga_json(self, session_id: str, expires_at: int) -> dict[str, Any]:
        fmt: dict[str, Any] = {"type": _GA_FORMAT_NAMES[self.format]}
        if self.format == "pcm16":
            fmt["rate"] = PCM_RATE
        return {
            "type": "transcription",
            "object": "realtime.transcription_session",
            "id": session_id,
            "expires_at": expires_at,
            "audio": {
                "input": {
                    "format": fmt,
                    "noise_reduction": self.noise_reduction,
                    "transcription": self._transcription_json(),
                    "turn_detection": self.turn_detection,
                }
            },
            "include": list(self.include) or None,
        }

    def beta_json(self, session_id: str, expires_at: int) -> dict[str, Any]:
        return {
            "id": session_id,
            "object": "realtime.transcription_session",
            "expires_at": expires_at,
            "modalities": ["text"],
            "input_audio_format": self.format,
            "input_audio_transcription": self._transcription_json(),
            "turn_detection": self.turn_detection,
            "input_audio_noise_reduction": self.noise_reduction,
            "include": list(self.include) or None,
        }

    def _transcription_json(self) -> dict[str, Any]:
        return {"model": self.model, "language": self.language, "prompt": self.prompt or ""}


def _transcription_changes(t: _Transcription | _BetaTranscription) -> dict[str, Any]:
    """The transcription fields an update names (a field it leaves out keeps its value)."""
    names = {"model": t.model, "language": t.language, "prompt": t.prompt}
    return {name: value for name, value in names.items() if name in t.model_fields_set}


def _vad_defaults(kind: str) -> dict[str, Any]:
    return dict(DEFAULT_SERVER_VAD) if kind == "server_vad" else {"type": kind}


def engine_model(name: str | None) -> str | None:
    """An OpenAI model name runs on the server's default model; our own names pass through."""
    if name is None or name.startswith(VENDOR_MODEL_PREFIXES):
        return None
    return name


def parse_session(
    mode: Mode, data: Any, current: SessionSettings, event_id: str | None
) -> SessionSettings:
    """A session update's ``session`` applied to ``current``; `RealtimeEventError` if bad."""
    prefix = "session"
    try:
        if mode == "ga":
            settings = current.updated_ga(GaSession.model_validate(data))
        else:
            settings = current.updated_beta(BetaSession.model_validate(data))
    except PydanticValidationError as exc:
        raise _validation_error(exc, prefix, event_id) from None
    language = settings.language
    if language is not None and to_whisper_language(language) is None:
        param = (
            "session.audio.input.transcription.language"
            if mode == "ga"
            else "session.input_audio_transcription.language"
        )
        raise RealtimeEventError(
            f"Invalid value: {echo(language)}. Expected an ISO-639-1 language code "
            "(examples: 'en', 'ar') this server's engines know.",
            code="invalid_value",
            param=param,
            event_id=event_id,
        )
    return settings


def _validation_error(
    exc: PydanticValidationError, prefix: str, event_id: str | None
) -> RealtimeEventError:
    """The first problem of a session update, as OpenAI words it."""
    err = exc.errors(include_url=False)[0]
    # Union members and discriminator tags add non-field parts to the location.
    parts = [str(p) for p in err["loc"] if not str(p).startswith(("_", "function-"))]
    parts = [p for p in parts if p not in ("server_vad", "semantic_vad")]
    param = ".".join([prefix, *parts])
    kind = err["type"]
    if kind == "extra_forbidden":
        return RealtimeEventError(
            f"Unknown parameter: {echo(param)}.",
            code="unknown_parameter",
            param=param,
            event_id=event_id,
        )
    if kind == "missing":
        return RealtimeEventError(
            f"Missing required parameter: {echo(param)}.",
            code="missing_required_parameter",
            param=param,
            event_id=event_id,
        )
    if kind in ("literal_error", "union_tag_invalid", "enum"):
        expected = err.get("ctx", {}).get("expected") or err.get("ctx", {}).get("expected_tags")
        supported = f" Supported values are: {expected}." if expected else ""
        return RealtimeEventError(
            f"Invalid value: {echo(err.get('input'))}.{supported}",
            code="invalid_value",
            param=param,
            event_id=event_id,
        )
    return RealtimeEventError(
        f"Invalid type for {echo(param)}: {err['msg'].lower()}.",
        code="invalid_type",
        param=param,
        event_id=event_id,
    )


# --------------------------------------------------------------------------- audio


def _g711_table(alaw: bool) -> np.ndarray[Any, np.dtype[np.int16]]:
    """The 256 G.711 code words as 16-bit PCM (ITU-T G.711; the same tables as audioop)."""
    codes = np.arange(256, dtype=np.int32)
    if alaw:
        a = codes ^ 0x55
        exponent = (a >> 4) & 0x07
        mantissa = a & 0x0F
        magnitude = np.where(
            exponent == 0,
            (mantissa << 4) + 8,
            ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0),
        )
        values = np.where(a & 0x80, magnitude, -magnitude)
    else:
        u = ~codes & 0xFF
        exponent = (u >> 4) & 0x07
        mantissa = u & 0x0F
        magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
        values = np.where(u & 0x80, -magnitude, magnitude)
    return values.astype("<i2")


_G711 = {"g711_ulaw": _g711_table(alaw=False), "g711_alaw": _g711_table(alaw=True)}


def to_pcm16(data: bytes, fmt: Format) -> bytes:
    """The client's audio as little-endian 16-bit PCM (G.711 expanded; PCM as it came)."""
    if fmt == "pcm16":
        return data
    return _G711[fmt][np.frombuffer(data, dtype=np.uint8)].tobytes()


# --------------------------------------------------------------------------- turns

# A turn ends at a stream time: a commit's (the audio appended until then), or the pause
# the engine's voice activity heard (server VAD). Its text is the finals' words spoken
# before that time, so a turn is completed once the engine shows it is past it. The
# sure sign is the core's `FlushedEvent`: a commit's flush covers exactly the audio
# appended before it, and the engine says when it has made every word of that audio
# final (after the flush's final, if any), also when it found nothing to say; so a
# commit completes at once, and with it every turn that ended before it. Other signs:
# a word spoken after a turn's end, or voice activity about later audio (a pause's
# words may become final only at a later pass).
#
# The timers below are a fallback. For a commit, only with an engine that never emits
# `FlushedEvent` (a `Recognizer` plugin; the local engines and the Google bridge emit
# it). For a turn a pause ended (nothing is flushed there), when neither a later word
# nor a commit shows the engine past it. Failing any sign, a turn is completed after a
# while without engine events: `FLUSH_QUIET_SEC` when voice activity had stopped before
# the turn's end (the utterance's finals came before its stop: nothing is left to say),
# else `FLUSH_SPEECH_WAIT_SEC` (words are coming, however slow the engine: MKL on an AMD
# CPU took over 2 s to flush a few seconds of speech).
FLUSH_QUIET_SEC = 2.0
FLUSH_SPEECH_WAIT_SEC = 10.0
FLUSH_LOOK_SEC = 0.25
# A `FlushedEvent` covers a turn that ended up to this much after it: the door counts the
# appended audio in seconds, the core in whole samples (an odd byte waits for the next
# frame). Far less than `MIN_COMMIT_MS` between two commits.
FLUSH_AT_SLACK_SEC = 0.001


@dataclass
class Ending:
    """A turn that ended at stream time ``at`` and waits for the rest of its words.

    ``commit``: the client's (the core flushes it, and says when with `FlushedEvent`);
    ``clear``: the client's too, its words dropped (``item`` None); ``pause``: voice
    activity ended it (server VAD).
    """

    item: Item | None
    at: float
    kind: Literal["commit", "clear", "pause"]
    asked: float  # loop time it ended


@dataclass
class Item:
    """One turn: a user message item whose audio is transcribed."""

    id: str
    audio_start_sec: float  # stream time its audio starts: where the turn before it ended
    audio_end_sec: float | None = None  # where it was committed (or its speech stopped)
    text: str = ""
    spoken: bool = False  # `speech_started` was sent for it
    previous_id: str | None = None  # the item committed before it (set at its commit)
    last_cause: str | None = None  # why its latest final was made


# The client events OpenAI defines that a transcription session does not take.
_OTHER_CLIENT_EVENTS = frozenset(
    {
        "response.create",
        "response.cancel",
        "conversation.item.create",
        "conversation.item.delete",
        "conversation.item.retrieve",
        "conversation.item.truncate",
        "output_audio_buffer.clear",
    }
)


class OpenAIRealtime(OverHTTP):
    """One ``/v1/realtime?intent=transcription`` connection as a `Transport` of the core."""

    def __init__(
        self,
        websocket: WebSocket,
        *,
        send_timeout_sec: float = 30.0,
        max_frame_bytes: int = 1_048_576,
    ) -> None:
        self.websocket = self.connection = websocket
        # OpenAI takes appends of up to 15 MiB: one is handed to the core as frames
        # of at most MAX_FRAME_BYTES (even, so no frame splits a sample).
        self.frame_bytes = max(2, max_frame_bytes - max_frame_bytes % 2)
        self._frames: deque[bytes] = deque()  # the rest of an append, for the next receives
        beta = websocket.headers.get(BETA_HEADER, "").replace(" ", "").lower()
        self.mode: Mode = "beta" if "realtime=v1" in beta else "ga"
        self.send_timeout_sec = send_timeout_sec
        self.session_id = _id("sess")
        self.expires_at = int(time.time()) + SESSION_TTL_SEC
        self.settings = SessionSettings()
        self._query_model = websocket.query_params.get("model")
        self._pending: deque[Any] = deque()  # client events read before the session started
        self._answer_update = False  # the first update is answered once the session started
        self._send_lock = asyncio.Lock()
        self._punctuation = True
        self._engine_model = ""  # what the session runs (from the core's plan)
        self._engine_language: str | None = None
        # Turns.
        self._item: Item | None = None  # the turn audio goes to now
        self._last_item_id: str | None = None  # the turn committed last
        # Turns that ended and wait for their last words, in stream order.
        self._endings: deque[Ending] = deque()
        self._last_engine_event = 0.0  # loop time of the latest final or speech event
        self._last_speech: SpeechEvent | None = None  # the engine's latest voice activity
        self._watcher: asyncio.Task[None] | None = None
        self._final_begins = False  # the next text piece opens a final
        self._audio_sec = 0.0  # stream time: seconds of audio the client appended
        self._boundary_sec = 0.0  # stream time of the last commit, clear or VAD stop
        self._client_ended_at = 0.0  # stream time of the last commit or clear

    @property
    def update_type(self) -> str:
        return "session.update" if self.mode == "ga" else "transcription_session.update"

    # -- Transport ---------------------------------------------------------------

    async def refuse(self, error: ASRError, retry_after: int) -> None:
        """HTTP 400/401/403/503 with OpenAI's error body (503 with ``Retry-After``)."""
        body = {"error": {k: v for k, v in error_event(error)["error"].items() if k != "event_id"}}
        await deny(self.websocket, error, retry_after, body)

    def check_request(self) -> StreamConfig | None:
        """Only transcription sessions: a conversation needs a speech-to-speech model.
        The config comes after the upgrade (``session.update``)."""
        intent = self.query_params.get("intent")
        if intent is not None and intent != INTENT:
            raise ConfigError(
                f"This server serves transcription sessions only: connect with "
                f"'?intent=transcription' (got intent={echo(intent)}).",
                code="unsupported_intent",
                field="intent",
            )
        return None

    async def accept(self, subprotocol: str | None) -> None:
        """Accept and say ``session.created`` at once, as OpenAI does: some clients wait for it."""
        await self.websocket.accept(subprotocol=subprotocol)
        created = "session.created" if self.mode == "ga" else "transcription_session.created"
        await self._send_json({"type": created, "session": self._session_json()})

    async def receive_config(self) -> StreamConfig:
        """The first client event decides: a session update, or the defaults.

        A bad first update is answered and the next event waited for; any other
        event starts the session with the defaults and is handed to `receive`.
        """
        while True:
            event = await self._read_event()
            if isinstance(event, dict) and event.get("type") == self.update_type:
                event_id = _event_id(event)
                try:
                    self.settings = self._parse_update(event, event_id)
                except RealtimeEventError as exc:
                    await self._send_json(error_event(exc))
                    continue
                self._answer_update = True
                return self._stream_config()
            self._pending.append(event)
            return self._stream_config()

    async def receive(self) -> Inbound:
        if self._frames:
            return Audio(self._frames.popleft())
        event = self._pending.popleft() if self._pending else await self._read_event()
        try:
            return await self._handle(event)
        except RealtimeEventError as exc:
            return Invalid(exc)

    async def send(self, event: Outbound) -> None:
        if isinstance(event, Started):
            self._punctuation = event.plan.punctuation
            self._engine_model = event.plan.request.model
            self._engine_language = event.plan.request.language
            logger.info(
                "[%s] OpenAI realtime (%s) session %s", event.session_id, self.mode, self.session_id
            )
            if self._answer_update:
                self._answer_update = False
                await self._send_updated()
        elif isinstance(event, TranscriptEvent):
            self._last_engine_event = asyncio.get_running_loop().time()
            if event.is_final:
                await self._on_final(event)
        elif isinstance(event, SpeechEvent):
            self._last_engine_event = asyncio.get_running_loop().time()
            await self._on_speech(event)
        elif isinstance(event, FlushedEvent):
            self._last_engine_event = asyncio.get_running_loop().time()
            await self._on_flushed(event)
        elif isinstance(event, ErrorEvent):
            if event.error.code in QUIET_NOTICES:
                logger.info("OpenAI realtime session %s: %s", self.session_id, event.error.detail)
                return
            await self._send_json(error_event(event.error))
        elif isinstance(event, CompleteEvent):
            await self._on_complete()

    async def close(self, code: CloseCode) -> None:
        self._stop_watching()
        await self.websocket.close(code=int(code))

    async def fail(self, error: ASRError) -> None:
        self._stop_watching()
        if self.websocket.application_state != WebSocketState.CONNECTED:
            return
        with contextlib.suppress(Exception):
            text = json.dumps(error_event(error))
            await asyncio.wait_for(self.websocket.send_text(text), FAIL_SEND_TIMEOUT_SEC)
            if error.close_code is not None:
                await self.websocket.close(code=int(error.close_code))

    def _stop_watching(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()

    # -- client events -------------------------------------------------------------

    async def _read_event(self) -> Any:
        """The next client event, parsed; a frame that is not JSON comes back as `Invalid`."""
        message = await self.websocket.receive()
        if message["type"] == "websocket.disconnect":
            raise ClientGone
        text = message.get("text")
        if text is None:
            data = message.get("bytes") or b""
            try:
                text = data.decode()
            except UnicodeDecodeError:
                return _NotJson()
        try:
            return json.loads(text)
        except (ValueError, RecursionError):
            return _NotJson()

    async def _handle(self, event: Any) -> Inbound:
        if isinstance(event, _NotJson):
            raise RealtimeEventError(
                "We could not parse the JSON body of your request. Client events are JSON "
                "objects with a 'type'.",
                code="invalid_json",
            )
        if not isinstance(event, dict):
            raise RealtimeEventError(
                "Client events are JSON objects with a 'type'.", code="invalid_json"
            )
        event_id = _event_id(event)
        if "event_id" in event and not isinstance(event["event_id"], str):
            raise RealtimeEventError(
                "Invalid type for 'event_id': expected a string.",
                code="invalid_type",
                param="event_id",
            )
        kind = event.get("type")
        if kind is None:
            raise RealtimeEventError(
                "Missing required parameter: 'type'.",
                code="missing_required_parameter",
                param="type",
                event_id=event_id,
            )
        if kind == "input_audio_buffer.append":
            return self._on_append(event, event_id)
        if kind == "input_audio_buffer.commit":
            return await self._on_commit(event, event_id)
        if kind == "input_audio_buffer.clear":
            return await self._on_clear(event, event_id)
        if kind == self.update_type:
            await self._on_update(event, event_id)
            return Control("keepalive")  # answered; resets the idle timer
        supported = f"'{self.update_type}', 'input_audio_buffer.append', " + (
            "'input_audio_buffer.commit', 'input_audio_buffer.clear'"
        )
        if isinstance(kind, str) and (
            kind in _OTHER_CLIENT_EVENTS or kind.endswith("session.update")
        ):
            message = (
                f"{echo(kind)} is not supported in a transcription session"
                f"{' of this protocol version' if kind.endswith('session.update') else ''}; "
                f"supported: {supported}."
            )
        else:
            message = f"Invalid value: {echo(kind)}. Supported values are: {supported}."
        raise RealtimeEventError(message, code="invalid_value", param="type", event_id=event_id)

    def _on_append(self, event: dict[str, Any], event_id: str | None) -> Inbound:
        _only(event, {"audio"}, event_id)
        audio = event.get("audio")
        if audio is None:
            raise RealtimeEventError(
                "Missing required parameter: 'audio'.",
                code="missing_required_parameter",
                param="audio",
                event_id=event_id,
            )
        if not isinstance(audio, str):
            raise RealtimeEventError(
                "Invalid type for 'audio': expected a base64-encoded string.",
                code="invalid_type",
                param="audio",
                event_id=event_id,
            )
        try:
            data = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise RealtimeEventError(
                "Invalid 'audio'. Expected base64-encoded audio bytes.",
                code="invalid_value",
                param="audio",
                event_id=event_id,
            ) from None
        if not data:
            return Control("keepalive")
        pcm = to_pcm16(data, self.settings.format)
        if self._item is None:
            self._item = Item(_id("item"), self._boundary_sec)
        self._audio_sec += len(pcm) / 2 / self.settings.sample_rate
        step = self.frame_bytes
        self._frames.extend(pcm[i : i + step] for i in range(step, len(pcm), step))
        return Audio(pcm[:step])

    async def _on_commit(self, event: dict[str, Any], event_id: str | None) -> Inbound:
        _only(event, set(), event_id)
        buffered_ms = (self._audio_sec - self._boundary_sec) * 1000
        if buffered_ms < MIN_COMMIT_MS:
            raise RealtimeEventError(
                "Error committing input audio buffer: buffer too small. Expected at least "
                f"{MIN_COMMIT_MS}ms of audio, but buffer only has {buffered_ms:.2f}ms of audio.",
                code="input_audio_buffer_commit_empty",
                event_id=event_id,
            )
        # Audio after a turn that voice activity ended has no item yet: it gets one now.
        item = self._item or Item(_id("item"), self._boundary_sec)
        self._boundary_sec = self._client_ended_at = item.audio_end_sec = self._audio_sec
        self._item = None
        await self._commit(item)
        self._ending(Ending(item, self._audio_sec, "commit", 0.0))
        return Control("finalize")

    async def _on_clear(self, event: dict[str, Any], event_id: str | None) -> Inbound:
        """OpenAI drops uncommitted audio; here it was heard already, so its text is dropped."""
        _only(event, set(), event_id)
        item, self._item = self._item, None
        self._boundary_sec = self._client_ended_at = self._audio_sec
        await self._send_json({"type": "input_audio_buffer.cleared", "event_id": _id("event")})
        if item is None:
            return Control("keepalive")
        self._ending(Ending(None, self._audio_sec, "clear", 0.0))
        return Control("finalize")

    async def _on_update(self, event: dict[str, Any], event_id: str | None) -> None:
        settings = self._parse_update(event, event_id)
        changed = self._engine_change(settings)
        if changed is not None:
            raise RealtimeEventError(
                f"Invalid value for '{changed}': the audio format, transcription model and "
                "language are fixed once the session has started; open a new session to change "
                "them.",
                code="invalid_value",
                param=changed,
                event_id=event_id,
            )
        self.settings = settings
        await self._send_updated()

    def _parse_update(self, event: dict[str, Any], event_id: str | None) -> SessionSettings:
        _only(event, {"session"}, event_id)
        if "session" not in event:
            raise RealtimeEventError(
                "Missing required parameter: 'session'.",
                code="missing_required_parameter",
                param="session",
                event_id=event_id,
            )
        return parse_session(self.mode, event["session"], self.settings, event_id)

    def _engine_change(self, settings: SessionSettings) -> str | None:
        """The parameter of an update that the running engine cannot follow, if any.

        An OpenAI model name, or a language the engine already runs, is no change.
        """
        ga = self.mode == "ga"
        if settings.format != self.settings.format:
            return "session.audio.input.format" if ga else "session.input_audio_format"
        prefix = "session.audio.input.transcription" if ga else "session.input_audio_transcription"
        model = engine_model(settings.model)
        if model is not None and model != self._engine_model:
            return f"{prefix}.model"
        language = settings.language
        if language is not None and to_whisper_language(language) != self._engine_language:
            return f"{prefix}.language"
        return None

    def _stream_config(self) -> StreamConfig:
        """The core's config for this session (interims off: OpenAI has none)."""
        language = self.settings.language
        return StreamConfig(
            sample_rate_hertz=self.settings.sample_rate,
            encoding="LINEAR16",
            language_code=language if language and is_bcp47(language) else None,
            model=engine_model(self.settings.model or self._query_model),
            interim_results=False,
        )

    # -- server events ---------------------------------------------------------------

    def _ending(self, ending: Ending) -> None:
        loop = asyncio.get_running_loop()
        ending.asked = loop.time()
        self._endings.append(ending)
        if self._watcher is None or self._watcher.done():
            self._watcher = loop.create_task(self._expire_endings())

    async def _expire_endings(self) -> None:
        """Complete a turn whose last words do not come (see `FLUSH_QUIET_SEC`)."""
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ClientGone):
            while self._endings:
                head = self._endings[0]
                speech = self._last_speech
                silent = speech is not None and speech.kind == "stopped" and speech.at <= head.at
                patience = FLUSH_QUIET_SEC if silent else FLUSH_SPEECH_WAIT_SEC
                wait = max(head.asked, self._last_engine_event) + patience - loop.time()
                if wait > 0:  # look again soon: an engine event may change the patience
                    await asyncio.sleep(min(wait, FLUSH_LOOK_SEC))
                    continue
                await self._ended(self._endings.popleft())

    async def _ended(self, ending: Ending) -> None:
        if ending.item is not None:
            await self._completed(ending.item)

    async def _on_final(self, event: TranscriptEvent) -> None:
        """Each word goes to the turn it was spoken in; a word after a turn's end completes
        that turn (a commit's own final is completed by the `FlushedEvent` after it)."""
        flushed = event.cause in ("finalize", "end")
        self._final_begins = True
        texts: list[tuple[Item | None, str]] = []  # (turn, its text), in order, not sent yet
        heard: list[Item] = []  # the turns this final has words for
        for at, text in self._words(event.span):
            # A flush's final is the commit's (the flush covers the audio before the
            # commit), whatever time the engine gives a word: only turns voice activity
            # ended go by time.
            while self._endings and at >= self._endings[0].at:
                if flushed and self._endings[0].kind != "pause":
                    break
                await self._flush_texts(texts)
                await self._ended(self._endings.popleft())
            if self._endings:
                target = self._endings[0].item
            else:
                if self._item is None:
                    self._item = Item(_id("item"), self._boundary_sec)
                target = self._item
            if texts and texts[-1][0] is target:
                texts[-1] = (target, texts[-1][1] + text)
            else:
                texts.append((target, text))
            if target is not None and target not in heard:
                heard.append(target)
        await self._flush_texts(texts)
        for target in heard:
            target.last_cause = event.cause

    async def _flush_texts(self, texts: list[tuple[Item | None, str]]) -> None:
        for target, text in texts:
            if target is not None:  # None: a cleared turn's words are dropped
                await self._delta(target, text, self._final_begins)
            self._final_begins = False
        texts.clear()

    def _words(self, span: TextSpan) -> list[tuple[float, str]]:
        """The final's text in pieces with their stream times (by word when the words
        join into the text, else whole at its middle)."""
        text = span.text if self._punctuation else strip_punctuation(span.text)
        words = span.words
        if words and self._punctuation and "".join(w.word for w in words) == span.text:
            return [(w.start, w.word) for w in words]
        return [((span.start + span.end) / 2, text)]

    async def _on_flushed(self, event: FlushedEvent) -> None:
        """A flush is done: every word before ``event.at`` is final. The commit (or clear)
        it answers is complete, and every turn that ended before it."""
        while self._endings and self._endings[0].at <= event.at + FLUSH_AT_SLACK_SEC:
            await self._ended(self._endings.popleft())

    async def _on_speech(self, event: SpeechEvent) -> None:
        self._last_speech = event
        # Voice activity about audio after a commit: the core flushed that commit.
        while self._endings and self._endings[0].kind != "pause" and event.at > self._endings[0].at:
            await self._ended(self._endings.popleft())
        if not self.settings.server_vad or event.at < self._client_ended_at:
            # (Voice activity the engine reports late, about audio a commit or a clear
            # already ended, makes no turn of its own.)
            return
        item = self._item
        if event.kind == "started":
            if item is None:
                item = self._item = Item(_id("item"), self._boundary_sec)
            if not item.spoken:
                item.spoken = True
                await self._send_json(
                    {
                        "type": "input_audio_buffer.speech_started",
                        "event_id": _id("event"),
                        "audio_start_ms": _ms(event.at),
                        "item_id": item.id,
                    }
                )
            return
        # stopped: the turn ends at the pause.
        if item is None or not (item.spoken or item.text):
            return
        await self._send_json(
            {
                "type": "input_audio_buffer.speech_stopped",
                "event_id": _id("event"),
                "audio_end_ms": _ms(event.at),
                "item_id": item.id,
            }
        )
        self._item = None
        self._boundary_sec = max(self._boundary_sec, event.at)
        item.audio_end_sec = event.at
        await self._commit(item)
        if event.settled or item.last_cause == "pause":
            # The engine made the utterance final whole at this pause: nothing is left.
            await self._completed(item)
        else:
            self._ending(Ending(item, event.at, "pause", 0.0))

    async def _on_complete(self) -> None:
        """The stream ended (a limit, drain): close every turn that is still open."""
        while self._endings:
            await self._ended(self._endings.popleft())
        item, self._item = self._item, None
        if item is not None and item.text:
            await self._commit(item)
            await self._completed(item)

    async def _commit(self, item: Item) -> None:
        previous, self._last_item_id = self._last_item_id, item.id
        item.previous_id = previous
        await self._send_json(
            {
                "type": "input_audio_buffer.committed",
                "event_id": _id("event"),
                "previous_item_id": previous,
                "item_id": item.id,
            }
        )
        added = "conversation.item.added" if self.mode == "ga" else "conversation.item.created"
        await self._send_json(
            {
                "type": added,
                "event_id": _id("event"),
                "previous_item_id": previous,
                "item": _item_json(item, transcript=None),
            }
        )

    async def _delta(self, item: Item, text: str, final_begins: bool) -> None:
        """Text for a turn; ``final_begins``: it opens a final (else it goes on one that
        a turn's end split, as the words themselves join)."""
        if not item.text:
            text = text.lstrip()
        elif final_begins and text and not text[0].isspace():
            text = " " + text  # deltas joined in order are the turn's transcript
        if not text:
            return
        item.text += text
        await self._send_json(
            {
                "type": "conversation.item.input_audio_transcription.delta",
                "event_id": _id("event"),
                "item_id": item.id,
                "content_index": 0,
                "delta": text,
            }
        )

    async def _completed(self, item: Item) -> None:
        end = self._audio_sec if item.audio_end_sec is None else item.audio_end_sec
        seconds = max(0.0, end - item.audio_start_sec)
        await self._send_json(
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "event_id": _id("event"),
                "item_id": item.id,
                "content_index": 0,
                "transcript": item.text,
                "usage": {"type": "duration", "seconds": round(seconds, 3)},
            }
        )
        if self.mode == "ga":
            await self._send_json(
                {
                    "type": "conversation.item.done",
                    "event_id": _id("event"),
                    "previous_item_id": item.previous_id,
                    "item": _item_json(item, transcript=item.text),
                }
            )

    async def _send_updated(self) -> None:
        updated = "session.updated" if self.mode == "ga" else "transcription_session.updated"
        await self._send_json({"type": updated, "session": self._session_json()})

    def _session_json(self) -> dict[str, Any]:
        if self.mode == "ga":
            return self.settings.ga_json(self.session_id, self.expires_at)
        return self.settings.beta_json(self.session_id, self.expires_at)

    async def _send_json(self, message: dict[str, Any]) -> None:
        """One server event. The core's writer and this adapter's own replies both send
        here, so a lock keeps them whole and in order."""
        message.setdefault("event_id", _id("event"))
        text = json.dumps(message)
        try:
            async with self._send_lock, asyncio.timeout(self.send_timeout_sec):
                await self.websocket.send_text(text)
        except TimeoutError:
            raise ClientGone from None
        except Exception as exc:  # the transport's own error types vary (uvicorn, websockets)
            raise ClientGone from exc


class _NotJson:
    """A frame that is not JSON (answered with ``invalid_json``)."""


def _event_id(event: dict[str, Any]) -> str | None:
    value = event.get("event_id")
    return value if isinstance(value, str) else None


def _only(event: dict[str, Any], allowed: set[str], event_id: str | None) -> None:
    extra = set(event) - allowed - {"type", "event_id"}
    if extra:
        name = sorted(extra)[0]
        raise RealtimeEventError(
            f"Unknown parameter: {echo(name)}.",
            code="unknown_parameter",
            param=name,
            event_id=event_id,
        )


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def _item_json(item: Item, transcript: str | None) -> dict[str, Any]:
    return {
        "id": item.id,
        "object": "realtime.item",
        "type": "message",
        "status": "completed",
        "role": "user",
        "content": [{"type": "input_audio", "transcript": transcript}],
    }
