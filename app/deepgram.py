"""`/v1/listen`, Deepgram's live streaming protocol: a thin adapter over the session core.

A client written for Deepgram (its SDKs, Pipecat, LiveKit Agents) points its
base URL here and keeps its code. The adapter only translates (Deepgram's
"Live Audio" API reference and feature pages, docs/COMPATIBILITY.md):

* the handshake's query (``model``, ``language``, ``encoding=linear16``,
  ``sample_rate``, ``interim_results``, ``punctuate``…) into a `StreamConfig`,
  refused with HTTP 400 and a Deepgram-shaped JSON body before the upgrade when
  it asks for what the server cannot do (`parse_listen_query`);
* ``Authorization: Token KEY`` (Deepgram's scheme) and the ``token, KEY``
  subprotocol into the ``Bearer`` form `app.auth` checks: the same keys as the
  native endpoint;
* binary frames into `Audio`; ``KeepAlive``, ``Finalize``, ``CloseStream`` into
  `Control`;
* the core's events into ``Results`` (interims ``is_final: false``; finals
  with ``speech_final`` when they end an utterance and ``from_finalize`` when a
  ``Finalize`` made them), ``SpeechStarted`` (``vad_events=true``),
  ``UtteranceEnd`` (``utterance_end_ms``), ``Error``, and ``Metadata`` last.

Limits, admission, drain and metrics are the core's (`app.core`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import json
import logging
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from starlette.datastructures import Headers, QueryParams
from starlette.websockets import WebSocket, WebSocketState

from app.asr.base import TextSpan, TimedWord
from app.auth import KEY_REQUIRED
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
    AuthError,
    CloseCode,
    ConfigError,
    IdleTimeout,
    ProtocolError,
    echo,
    http_status,
)
from app.languages import is_bcp47
from app.messages import StreamConfig
from app.plan import SessionPlan
from app.session import CompleteEvent, ErrorEvent, FlushedEvent, SpeechEvent, TranscriptEvent
from app.settings import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE
from app.ws import deny

logger = logging.getLogger(__name__)

PATH = "/v1/listen"

# Deepgram model names a client cannot avoid sending (the SDK requires ``model``):
# any name of these families runs the server's default model. Our own model names
# (``tiny.en``, ``base``, a model folder) pass through unchanged.
VENDOR_MODEL_PREFIXES = (
    "nova",
    "enhanced",
    "general",
    "phonecall",
    "meeting",
    "flux",
    "base-",  # Deepgram's base-general, base-meeting…; plain "base" is our multilingual model
    "whisper",  # Deepgram's hosted Whisper: whisper, whisper-tiny … whisper-large
)
VENDOR_MODELS: dict[str, str] = {}
"""Vendor name → our model, for a name that should not run the default model
(e.g. ``{"nova-3-general": "base"}``); empty: every vendor name runs the default."""

# Deepgram ends a stream that gets neither audio nor a text message for 10 s, with
# NET-0001 (developers.deepgram.com/docs/audio-keep-alive). IDLE_TIMEOUT_SEC, the
# core's limit for every door, still applies when it is shorter.
IDLE_SEC = 10.0
NET_0001 = "NET-0001"
# UtteranceEnd: a gap of ``utterance_end_ms`` after the last final word. The engine
# tells a new utterance (`SpeechEvent`) only after the pass that heard it, up to a
# step (1 s) plus the pass later, so the gap counts once audio this much past its
# end has arrived without one.
UTTERANCE_END_SLACK_SEC = 1.2
TIME_DECIMALS = 3
BYTES_PER_SAMPLE = 2
CHANNEL = [0, 1]  # [channel, of channels]: one channel
FAIL_SEND_TIMEOUT_SEC = 5.0
MAX_CLOSE_REASON_BYTES = 123  # RFC 6455 §5.5: a control frame's payload is at most 125 bytes
MAX_ECHO_MESSAGE_CHARS = 1000  # a SchemaError's ``message``: the client's text, cut past this

_BOOLEANS = {"true": True, "false": False}
_WORD = re.compile(r"[^\w']+", re.UNICODE)

# Accepted and ignored: they change nothing a client relies on, or only Deepgram's
# billing, logging or formatting extras (docs/COMPATIBILITY.md says which).
IGNORED = frozenset(
    {
        "tag",
        "extra",
        "version",
        "mip_opt_out",
        "numerals",
        "dictation",
        "profanity_filter",
        "filler_words",
        "keywords",
        "keyterm",
        "replace",
        "search",
        "detect_entities",
        "language_hint",
        "no_delay",
        "measurements",
        "paragraphs",
        "utterances",
        "smart_format_options",
    }
)
# Refused unless off: they would change the transcript's shape in ways we cannot give.
OFF_ONLY = frozenset({"diarize", "multichannel", "redact", "detect_language", "topics"})
# Refused outright.
REFUSED = {
    "callback": "callbacks are not supported: results come over this WebSocket",
    "callback_method": "callbacks are not supported: results come over this WebSocket",
    "diarize_model": "speaker diarization is not supported",
}
KNOWN = frozenset(
    {
        "model",
        "language",
        "encoding",
        "sample_rate",
        "channels",
        "interim_results",
        "punctuate",
        "smart_format",
        "endpointing",
        "utterance_end_ms",
        "vad_events",
        "token",  # app.auth: ?token=KEY
    }
)


# --------------------------------------------------------------------------- the query


@dataclass(frozen=True)
class ListenQuery:
    """A ``/v1/listen`` handshake's query, checked: what the session will run."""

    model: str | None  # None: the server's default
    language_code: str | None  # None: the server's default
    sample_rate: int
    interim_results: bool = False  # Deepgram's defaults
    punctuate: bool = False
    endpointing: bool = True
    utterance_end_sec: float | None = None
    vad_events: bool = False
    ignored: tuple[str, ...] = ()

    def stream_config(self) -> StreamConfig:
        return StreamConfig(
            sample_rate_hertz=self.sample_rate,
            encoding="LINEAR16",
            language_code=self.language_code,
            model=self.model,
            interim_results=self.interim_results,
            # Punctuation is kept for `punctuated_word`; `transcript` drops it when off.
            enable_automatic_punctuation=True,
            enable_word_time_offsets=True,
        )


def _refuse(param: str, detail: str, code: str = "invalid_query_parameter") -> ConfigError:
    return ConfigError(f"Query parameter '{param}': {detail}", code=code, field=param)


def _boolean(query: QueryParams, name: str, default: bool) -> bool:
    raw = query.get(name)
    if raw is None:
        return default
    value = _BOOLEANS.get(raw.strip().lower())
    if value is None:
        raise _refuse(name, f"{echo(raw)} is not true or false.")
    return value


def _integer(query: QueryParams, name: str) -> int | None:
    raw = query.get(name)
    if raw is None:
        return None
    digits = raw.strip()
    # ASCII digits only: str.isdigit() also takes '²', which int() refuses.
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 9:
        raise _refuse(name, f"{echo(raw)} is not a whole number.")
    return int(digits)


def model_for(name: str | None, vendor_models: dict[str, str]) -> str | None:
    """Our model for a ``model`` parameter: None runs the server's default."""
    if not name:
        return None
    if name in vendor_models:
        return vendor_models[name] or None
    if "/" not in name and name.lower().startswith(VENDOR_MODEL_PREFIXES):
        return None  # a vendor's name, not a model folder's path
    return name


def parse_listen_query(
    query: QueryParams, vendor_models: dict[str, str] | None = None
) -> ListenQuery:
    """Check a handshake's query; raise `ConfigError` (HTTP 400) naming the parameter."""
    for name in query:
        if name in REFUSED:
            raise _refuse(name, REFUSED[name] + ".", code="unsupported_parameter")
        if name in OFF_ONLY and any(v.strip().lower() != "false" for v in query.getlist(name)):
            raise _refuse(
                name,
                "is not supported here; leave it out or set it false.",
                code="unsupported_parameter",
            )
        if name not in KNOWN | IGNORED | OFF_ONLY:
            raise _refuse(name, "is not a parameter of /v1/listen.", code="unknown_parameter")
    for name in KNOWN - {"token"}:
        if len(query.getlist(name)) > 1:
            raise _refuse(name, "is given more than once.")

    encoding = query.get("encoding")
    if encoding is None:
        raise _refuse(
            "encoding",
            "is required: send raw audio with encoding=linear16 and its sample_rate "
            "(containerized audio is not supported).",
            code="unsupported_encoding",
        )
    if encoding.strip().lower() != "linear16":
        raise _refuse(
            "encoding",
            f"{echo(encoding)} is not supported; the supported encoding is linear16 "
            "(raw little-endian 16-bit PCM).",
            code="unsupported_encoding",
        )
    rate = _integer(query, "sample_rate")
    if rate is None:
        raise _refuse(
            "sample_rate", "is required with encoding=linear16.", code="unsupported_sample_rate"
        )
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise _refuse(
            "sample_rate",
            f"{rate} Hz is not supported; send audio between {MIN_SAMPLE_RATE} and "
            f"{MAX_SAMPLE_RATE} Hz.",
            code="unsupported_sample_rate",
        )
    channels = _integer(query, "channels")
    if channels is not None and channels != 1:
        raise _refuse(
            "channels",
            f"{channels} channels are not supported; send mono audio (channels=1).",
            code="unsupported_channels",
        )

    language = query.get("language")
    if language is not None and not is_bcp47(language):
        raise _refuse(
            "language",
            f"{echo(language)} is not supported; give one BCP-47 language tag "
            "(examples: en, en-US, ar-EG). Automatic detection ('multi') is not supported.",
            code="unsupported_language",
        )

    endpointing = True
    raw_endpointing = query.get("endpointing")
    if raw_endpointing is not None:
        lowered = raw_endpointing.strip().lower()
        if lowered in _BOOLEANS:
            endpointing = _BOOLEANS[lowered]
        else:
            _integer(query, "endpointing")  # milliseconds: the server's pause applies

    utterance_end_ms = _integer(query, "utterance_end_ms")
    if utterance_end_ms is not None and utterance_end_ms < 1:
        raise _refuse("utterance_end_ms", "must be at least 1 (Deepgram advises 1000 or more).")

    return ListenQuery(
        model=model_for(
            query.get("model"), VENDOR_MODELS if vendor_models is None else vendor_models
        ),
        language_code=language,
        sample_rate=rate,
        interim_results=_boolean(query, "interim_results", False),
        punctuate=_boolean(query, "punctuate", False) or _boolean(query, "smart_format", False),
        endpointing=endpointing,
        utterance_end_sec=None if utterance_end_ms is None else utterance_end_ms / 1000,
        vad_events=_boolean(query, "vad_events", False),
        ignored=tuple(sorted(name for name in query if name in IGNORED)),
    )


# --------------------------------------------------------------------------- results


def _t(seconds: float) -> float:
    return round(seconds, TIME_DECIMALS)


def bare_word(word: str) -> str:
    """Deepgram's ``word``: lower case, no punctuation."""
    return _WORD.sub("", word).lower()


def span_words(span: TextSpan) -> list[TimedWord]:
    """The span's words; an engine that gives text only gets its words spread over the span."""
    if span.words:
        return [w for w in span.words if w.word.strip()]
    tokens = span.text.split()
    if not tokens:
        return []
    step = (span.end - span.start) / len(tokens)
    return [
        TimedWord(span.start + i * step, span.start + (i + 1) * step, token, span.confidence)
        for i, token in enumerate(tokens)
    ]


@dataclass
class ResultsFormatter:
    """Core events → Deepgram messages, for one stream."""

    query: ListenQuery
    request_id: str
    model_name: str = ""
    model_uuid: str = ""
    cursor: float = 0.0  # where the last final ended: Results cover the audio back to back
    last_word_end: float | None = None
    utterance_closed: bool = True  # the last final ended an utterance (speech_final sent)

    def started(self, plan: SessionPlan, backend: str, model: str) -> None:
        self.model_name = f"{backend}/{model}" if model else backend
        self.model_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"asr-stream:{self.model_name}"))

    def results(self, event: TranscriptEvent) -> dict[str, Any]:
        span = event.span
        words = span_words(span)
        speech_final = event.ends_utterance and (self.query.endpointing or event.cause != "pause")
        message = self._results(
            words,
            start=self.cursor,
            end=max(span.end, self.cursor),
            is_final=event.is_final,
            speech_final=event.is_final and speech_final,
            from_finalize=event.from_finalize,
            confidence=span.confidence,
        )
        if event.is_final:
            self.cursor = max(self.cursor, span.end)
            if words:
                self.last_word_end = words[-1].end
                self.utterance_closed = speech_final
            elif speech_final:
                self.utterance_closed = True
        return message

    def closing_final(self, at: float) -> dict[str, Any] | None:
        """An empty final with ``speech_final`` when an utterance ended after a final without it.

        The engine's pause may commit nothing new (agreement already committed every
        word); a client that waits for ``speech_final`` to close a turn still gets it.
        """
        if self.utterance_closed or not self.query.endpointing:
            return None
        self.utterance_closed = True
        end = max(at, self.cursor)
        message = self._results(
            [],
            start=self.cursor,
            end=end,
            is_final=True,
            speech_final=True,
            from_finalize=False,
            confidence=None,
        )
        self.cursor = end
        return message

    def _results(
        self,
        words: list[TimedWord],
        *,
        start: float,
        end: float,
        is_final: bool,
        speech_final: bool,
        from_finalize: bool,
        confidence: float | None,
    ) -> dict[str, Any]:
        entries = []
        for w in words:
            entry: dict[str, Any] = {
                "word": bare_word(w.word) or w.word.strip(),
                "start": _t(w.start),
                "end": _t(w.end),
                "confidence": _confidence(w.probability, confidence),
            }
            if self.query.punctuate:
                entry["punctuated_word"] = w.word.strip()
            entries.append(entry)
        key = "punctuated_word" if self.query.punctuate else "word"
        probabilities = [e["confidence"] for e in entries]
        overall = (
            _confidence(confidence, None)
            if confidence is not None
            else round(sum(probabilities) / len(probabilities), 4)
            if probabilities
            else 0.0
        )
        return {
            "type": "Results",
            "channel_index": CHANNEL,
            "duration": _t(max(0.0, end - start)),
            "start": _t(start),
            "is_final": is_final,
            "speech_final": speech_final,
            "from_finalize": from_finalize,
            "channel": {
                "alternatives": [
                    {
                        "transcript": " ".join(e[key] for e in entries),
                        "confidence": overall,
                        "words": entries,
                    }
                ]
            },
            "metadata": {
                "request_id": self.request_id,
                "model_info": {"name": self.model_name, "version": "", "arch": "whisper"},
                "model_uuid": self.model_uuid,
            },
        }


def _confidence(value: float | None, fallback: float | None) -> float:
    """A probability for the wire: the engine's own; else the span's; else 0 (unknown)."""
    chosen = value if value is not None else fallback
    return 0.0 if chosen is None else round(min(max(chosen, 0.0), 1.0), 4)


# --------------------------------------------------------------------------- the transport


@dataclass
class _Audio:
    """What the client sent: for ``Metadata`` and for timing ``UtteranceEnd``."""

    rate: int = 16_000
    bytes_in: int = 0
    sha256: Any = field(default_factory=hashlib.sha256)

    @property
    def seconds(self) -> float:
        return self.bytes_in / BYTES_PER_SAMPLE / self.rate


class DeepgramWebSocket(OverHTTP):
    """One ``/v1/listen`` connection as a `Transport` of the core."""

    def __init__(
        self,
        websocket: WebSocket,
        vendor_models: dict[str, str] | None = None,
        idle_sec: float = IDLE_SEC,
    ) -> None:
        self.websocket = self.connection = websocket
        self.vendor_models = VENDOR_MODELS if vendor_models is None else vendor_models
        self.idle_sec = idle_sec
        self.request_id = str(uuid.uuid4())
        self.created = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
        self.query: ListenQuery | None = None
        self._format: ResultsFormatter | None = None
        self._audio = _Audio()
        self._closing = False  # CloseStream received: the idle timer stops
        self._end_code: str | None = None  # the error that ended the stream, if any
        self._utterance_end_due: float | None = None  # stream time an UtteranceEnd is due
        self._send_lock = asyncio.Lock()  # UtteranceEnd goes out from the reader too
        self._headers, self._subprotocol = _deepgram_auth(websocket.headers)

    # -- handshake ----------------------------------------------------------------

    @property
    def headers(self) -> Headers:
        """The request's headers, Deepgram's ``Token`` scheme given as ``Bearer`` for `app.auth`."""
        return self._headers

    async def refuse(self, error: ASRError, retry_after: int) -> None:
        """HTTP 400/401/403/503 with Deepgram's error body and ``dg-error`` header."""
        status = http_status(error)
        if isinstance(error, AuthError) and error.detail.startswith(KEY_REQUIRED):
            error = AuthError(
                f"{KEY_REQUIRED}: send 'Authorization: Token KEY' (Deepgram's scheme), "
                "'Authorization: Bearer KEY', the WebSocket subprotocols ['token', KEY], "
                "or '?token=KEY'.",
                code=error.code,
            )
        body = {
            "err_code": _err_code(error, status),
            "err_msg": error.detail,
            "request_id": self.request_id,
            "code": error.code,
        }
        # A header carries latin-1 only: the detail, escaped to ASCII (an echoed value's cut
        # mark is "…").
        ascii_detail = error.detail.encode("ascii", "backslashreplace").decode("ascii")
        headers = {"dg-request-id": self.request_id, "dg-error": ascii_detail}
        await deny(self.websocket, error, retry_after, body, headers)

    def check_request(self) -> StreamConfig | None:
        self.query = parse_listen_query(self.websocket.query_params, self.vendor_models)
        self._audio.rate = self.query.sample_rate
        if self.query.ignored:
            logger.info("/v1/listen: ignored parameters %s", ", ".join(self.query.ignored))
        return self.query.stream_config()

    async def accept(self, subprotocol: str | None) -> None:
        # Deepgram sends ``dg-request-id`` on every handshake answer, the upgrade too.
        headers = [(b"dg-request-id", self.request_id.encode("ascii"))]
        await self.websocket.accept(subprotocol=self._subprotocol or subprotocol, headers=headers)

    async def receive_config(self) -> StreamConfig:
        """Deepgram has no config message: the query is the config."""
        assert self.query is not None, "check_request runs before the upgrade"
        return self.query.stream_config()

    # -- client → server ------------------------------------------------------------

    async def receive(self) -> Inbound:
        message = await self._receive()
        if message["type"] == "websocket.disconnect":
            raise ClientGone
        data = message.get("bytes")
        if data is not None:
            self._audio.bytes_in += len(data)
            self._audio.sha256.update(data)
            await self._maybe_utterance_end()
            return Audio(data)
        return self._control(str(message.get("text")))

    async def _receive(self) -> Any:
        if self._closing:
            return await self.websocket.receive()
        try:
            return await asyncio.wait_for(self.websocket.receive(), self.idle_sec)
        except TimeoutError:
            self._end_code = IdleTimeout.code
            raise IdleTimeout(
                f"No audio or KeepAlive for {self.idle_sec:g} s ({NET_0001}); the stream was "
                "closed. "
                'Send {"type": "KeepAlive"} every few seconds to keep a quiet stream open.'
            ) from None

    def _control(self, text: str) -> Inbound:
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):
            data = None
        kind = data.get("type") if isinstance(data, dict) else None
        if kind == "KeepAlive":
            return Control("keepalive")
        if kind == "Finalize":
            return Control("finalize")
        if kind == "CloseStream":
            self._closing = True
            return Control("stop")
        if kind == "Configure":
            detail = "Configure is not supported by this server; the stream goes on unchanged."
            return Invalid(ProtocolError(detail, code="unsupported_message", fatal=False))
        return Invalid(UnparsedMessage(text))

    # -- server → client ------------------------------------------------------------

    async def send(self, event: Outbound) -> None:
        if isinstance(event, Started):
            assert self.query is not None
            self._format = ResultsFormatter(self.query, self.request_id)
            self._format.started(event.plan, event.info.backend, event.info.model)
            return  # Deepgram says nothing when a stream opens
        fmt = self._format
        assert fmt is not None, "an event before the session started"
        if isinstance(event, TranscriptEvent):
            if event.is_final and event.span.words:
                self._utterance_end_due = None  # words: the gap starts again after them
            await self._send_json(fmt.results(event))
        elif isinstance(event, SpeechEvent):
            await self._on_speech(fmt, event)
        elif isinstance(event, FlushedEvent):
            # Nothing: Deepgram's answer to a Finalize is its ``from_finalize`` final, which
            # "typically occurs when there is a noticeable amount of audio buffered"
            # (developers.deepgram.com/docs/finalize): no message says a Finalize is done.
            pass
        elif isinstance(event, ErrorEvent):
            self._end_code = event.error.code
            await self._send_json(_error_message(event.error))
        elif isinstance(event, CompleteEvent):
            if self._utterance_end_due is not None:  # the stream ended: so did the utterance
                await self._send_utterance_end()
            await self._send_json(self._metadata())

    async def _on_speech(self, fmt: ResultsFormatter, event: SpeechEvent) -> None:
        query = fmt.query
        if event.kind == "started":
            due = self._utterance_end_due
            if due is not None and event.at >= due:  # the gap before it was long enough
                await self._send_utterance_end()
            self._utterance_end_due = None
            if query.vad_events:
                await self._send_json(
                    {"type": "SpeechStarted", "channel": CHANNEL, "timestamp": _t(event.at)}
                )
            return
        closing = fmt.closing_final(event.at)
        if closing is not None:
            await self._send_json(closing)
        if query.utterance_end_sec is not None and fmt.last_word_end is not None:
            self._utterance_end_due = fmt.last_word_end + query.utterance_end_sec
            await self._maybe_utterance_end()  # the audio past the gap may be in already

    async def _maybe_utterance_end(self) -> None:
        due = self._utterance_end_due
        if due is not None and self._audio.seconds >= due + UTTERANCE_END_SLACK_SEC:
            await self._send_utterance_end()

    async def _send_utterance_end(self) -> None:
        fmt = self._format
        self._utterance_end_due = None
        if fmt is None or fmt.last_word_end is None:
            return
        message = {
            "type": "UtteranceEnd",
            "channel": CHANNEL,
            "last_word_end": _t(fmt.last_word_end),
        }
        await self._send_json(message)

    def _metadata(self) -> dict[str, Any]:
        fmt = self._format
        assert fmt is not None
        return {
            "type": "Metadata",
            "transaction_key": "deprecated",
            "request_id": self.request_id,
            "sha256": self._audio.sha256.hexdigest(),
            "created": self.created,
            "duration": _t(self._audio.seconds),
            "channels": 1,
            "models": [fmt.model_uuid],
            "model_info": {
                fmt.model_uuid: {"name": fmt.model_name, "version": "", "arch": "whisper"}
            },
        }

    async def close(self, code: CloseCode) -> None:
        wire, reason = _close_frame(code, self._end_code)
        await self.websocket.close(code=wire, reason=reason)

    async def fail(self, error: ASRError) -> None:
        if self.websocket.application_state != WebSocketState.CONNECTED:
            return
        with contextlib.suppress(Exception):
            text = json.dumps(_error_message(error))
            await asyncio.wait_for(self.websocket.send_text(text), FAIL_SEND_TIMEOUT_SEC)
            if error.close_code is not None:
                wire, reason = _close_frame(error.close_code, error.code)
                await self.websocket.close(code=wire, reason=reason)

    async def _send_json(self, message: dict[str, Any]) -> None:
        text = json.dumps(message, separators=(",", ":"))
        async with self._send_lock:
            try:
                await self.websocket.send_text(text)
            except Exception as exc:  # the transport's own error types vary
                raise ClientGone from exc


def _deepgram_auth(headers: Headers) -> tuple[Headers, str | None]:
    """Deepgram's credentials in the form `app.auth` reads, and the subprotocol to accept.

    ``Authorization: Token KEY`` becomes ``Bearer KEY``; ``Bearer`` (Deepgram's
    temporary tokens) passes as is. Browsers offer the subprotocols ``token, KEY``
    (developers.deepgram.com/docs/using-the-sec-websocket-protocol); the server
    must answer with ``token``.
    """
    raw = [(k, v) for k, v in headers.raw if k.lower() != b"authorization"]
    scheme, _, value = headers.get("authorization", "").partition(" ")
    subprotocol = None
    key = value.strip() if scheme.lower() in ("token", "bearer") else ""
    if not key:
        offered = [p.strip() for p in headers.get("sec-websocket-protocol", "").split(",")]
        if len(offered) >= 2 and offered[0].lower() == "token" and offered[1]:
            key, subprotocol = offered[1], offered[0]
    if key:
        raw.append((b"authorization", f"Bearer {key}".encode("latin-1")))
    elif "authorization" in headers:
        raw.append((b"authorization", headers["authorization"].encode("latin-1")))
    return Headers(raw=raw), subprotocol


def _err_code(error: ASRError, status: int) -> str:
    if isinstance(error, AuthError):
        return "INVALID_AUTH" if status == 401 else "ACCESS_DENIED"
    if status == 400:
        return "Bad Request"
    if status == 503:
        return "SERVICE_UNAVAILABLE"
    return "INTERNAL_SERVER_ERROR"


class UnparsedMessage(ProtocolError):
    """A text message that is none of Deepgram's: ``SchemaError``, the stream goes on."""

    code = "SchemaError"

    def __init__(self, text: str) -> None:
        super().__init__(
            f"Unknown message {echo(text)}; supported: KeepAlive, Finalize, CloseStream "
            "(JSON text frames) and binary audio.",
            fatal=False,
        )
        # Deepgram's ``message``: "the original client message that could not be parsed".
        cut = text[:MAX_ECHO_MESSAGE_CHARS]
        self.text = cut if len(cut) == len(text) else cut + "…(cut)"


def _error_message(error: ASRError) -> dict[str, Any]:
    """Deepgram's ``Error`` message; ``variant`` carries our stable code."""
    return {
        "type": "Error",
        "variant": error.code,
        "description": error.detail,
        "message": error.text if isinstance(error, UnparsedMessage) else "",
        "code": error.code,
    }


def _close_frame(code: CloseCode, reason_code: str | None) -> tuple[int, str]:
    """The close code and reason: Deepgram's NET-0001 (1011) for an idle stream."""
    if reason_code == IdleTimeout.code:
        return int(CloseCode.INTERNAL_ERROR), NET_0001
    reason = (reason_code or "").encode()[:MAX_CLOSE_REASON_BYTES].decode(errors="ignore")
    return int(code), reason if code != CloseCode.NORMAL else ""
