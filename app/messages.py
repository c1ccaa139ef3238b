"""Wire messages of `/ws/asr-stream` (protocol version 1), defined once.

The server, the Python client and the tests all use these models; the browser
client uses the same ``type`` strings. See STREAMING.md for the prose contract.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    TypeAdapter,
)
from pydantic import ValidationError as PydanticValidationError

from app.errors import ConfigError, ProtocolError, echo

PROTOCOL_VERSION = 1

# --------------------------------------------------------------------------- client → server


def _unicode(text: str) -> str:
    # JSON's "\ud800" escape gives a lone surrogate, which no UTF-8 encoder takes:
    # a model named so failed the metadata reply as an internal error (bench/fuzz.py).
    text.encode("utf-8")  # UnicodeEncodeError is a ValueError: pydantic reports it
    return text


Text = Annotated[StrictStr, AfterValidator(_unicode)]
# A resumed stream's offset: at most ~115 days of audio, finite, never negative.
MAX_STREAM_OFFSET_SEC = 10_000_000.0
StreamOffset = Annotated[StrictFloat, Field(ge=0.0, le=MAX_STREAM_OFFSET_SEC, allow_inf_nan=False)]


class StreamConfig(BaseModel):
    """The first message of a session. Types are strict: ``"16000"`` is not a rate."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sample_rate_hertz: StrictInt
    encoding: Text
    language_code: Text | None = None
    backend: Text | None = None
    model: Text | None = None
    interim_results: StrictBool | None = None
    enable_automatic_punctuation: StrictBool | None = None
    enable_word_time_offsets: StrictBool = False
    # Stream time of this connection's first sample, for a client resuming a dropped
    # stream (STREAMING.md, "Resuming a stream"): every start/end continues from it.
    stream_offset_sec: StreamOffset = 0.0


class ControlMessage(BaseModel):
    """A text message after the config: ``{"type": "stop" | "keepalive" | "finalize"}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["stop", "keepalive", "finalize"]


_CONFIG_FIELDS = frozenset(StreamConfig.model_fields)
CONTROL_TYPES = ("stop", "keepalive", "finalize")


def _load_json_object(text: str, what: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    # ValueError: not only JSONDecodeError, also an integer of over 4,300 digits.
    except (ValueError, RecursionError):
        raise ProtocolError(f"The {what} must be valid JSON.", code="invalid_json") from None
    if not isinstance(data, dict):
        raise ProtocolError(f"The {what} must be a JSON object.", code="invalid_json")
    return data


def parse_config(text: str) -> StreamConfig:
    """Parse the first message; raise `ConfigError` naming the offending field."""
    data = _load_json_object(text, "config message")
    for key in data:
        if key not in _CONFIG_FIELDS and not _is_unicode(key):
            # pydantic reports a key with an unpaired surrogate as an error of no field
            raise _unknown_field(key)
    try:
        return StreamConfig.model_validate(data)
    except PydanticValidationError as exc:
        raise _config_error(exc) from None


def _unknown_field(field: str) -> ConfigError:
    known = ", ".join(sorted(_CONFIG_FIELDS))
    return ConfigError(
        f"Unknown field {echo(field)} in config; known fields are: {known}.",
        code="unknown_field",
        field=field,
    )


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _config_error(exc: PydanticValidationError) -> ConfigError:
    err = exc.errors(include_url=False)[0]
    field = ".".join(str(part) for part in err["loc"]) or "config"
    kind = err["type"]
    if kind == "extra_forbidden":
        return _unknown_field(field)
    if kind == "missing":
        return ConfigError(
            f"Field '{field}' is required in the config.", code="missing_field", field=field
        )
    if kind == "value_error":  # `_unicode`
        return ConfigError(
            f"Field '{field}' must be Unicode text: it holds an unpaired surrogate escape "
            "(\\ud800 to \\udfff).",
            code="invalid_field_type",
            field=field,
        )
    if field == "stream_offset_sec" and kind != "float_type":
        return ConfigError(
            f"Field 'stream_offset_sec' must be a finite number of seconds from 0 to "
            f"{MAX_STREAM_OFFSET_SEC:g}: the 'end' of the last final the client received.",
            code="invalid_stream_offset",
            field=field,
        )
    expected = {
        "sample_rate_hertz": "an integer",
        "stream_offset_sec": "a number",
        "encoding": "a string",
        "language_code": "a string",
        "backend": "a string",
        "model": "a string",
    }.get(field, "true or false")
    return ConfigError(
        f"Field '{field}' must be {expected}.", code="invalid_field_type", field=field
    )


def parse_control(text: str) -> ControlMessage:
    """Parse a text message sent after the config. Errors here are non-fatal."""
    try:
        data = _load_json_object(text, "control message")
    except ProtocolError as exc:
        raise ProtocolError(exc.detail, code="invalid_json", fatal=False) from None
    kind = data.get("type")
    if kind is None and _CONFIG_FIELDS & data.keys():
        raise ProtocolError(
            "The config was already received; send it only once, as the first message.",
            code="config_already_sent",
            fatal=False,
        )
    if kind is None:
        raise ProtocolError(
            "A control message needs a 'type': one of "
            f'{", ".join(CONTROL_TYPES)} (as {{"type": "stop"}}).',
            code="unknown_message_type",
            fatal=False,
        )
    if kind not in CONTROL_TYPES:
        raise ProtocolError(
            f"Unknown control message type {echo(kind)}; supported: {', '.join(CONTROL_TYPES)}.",
            code="unknown_message_type",
            fatal=False,
        )
    try:
        return ControlMessage.model_validate(data)
    except PydanticValidationError:
        extra = echo(", ".join(sorted(set(data) - {"type"})))
        raise ProtocolError(
            f"The {kind!r} message takes no other fields (got: {extra}).",
            code="invalid_control_message",
            fatal=False,
        ) from None


# --------------------------------------------------------------------------- server → client


class _ServerMessage(BaseModel):
    model_config = ConfigDict(frozen=True)

    # Optional fields left out of the JSON when unset rather than sent as null.
    OMIT_IF_NONE: ClassVar[frozenset[str]] = frozenset()

    def to_json(self) -> str:
        omit = {name for name in self.OMIT_IF_NONE if getattr(self, name) is None}
        return self.model_dump_json(exclude=omit)


class Metadata(_ServerMessage):
    type: Literal["metadata"] = "metadata"
    status: Literal["ready"] = "ready"
    session_id: str
    language_code: str
    sample_rate_hertz: int
    encoding: str
    backend: str
    model: str


class Word(BaseModel):
    model_config = ConfigDict(frozen=True)

    word: str
    start: float
    end: float


class Transcript(_ServerMessage):
    OMIT_IF_NONE = frozenset({"words", "stability"})

    type: Literal["transcript"] = "transcript"
    text: str
    is_final: bool
    confidence: float | None
    start: float
    end: float
    words: list[Word] | None = None
    stability: float | None = None


class ErrorMessage(_ServerMessage):
    type: Literal["error"] = "error"
    detail: str
    code: str


class Complete(_ServerMessage):
    type: Literal["complete"] = "complete"


ServerMessage = Annotated[
    Metadata | Transcript | ErrorMessage | Complete, Field(discriminator="type")
]
_server_adapter: TypeAdapter[ServerMessage] = TypeAdapter(ServerMessage)


def parse_server_message(text: str | bytes) -> ServerMessage:
    """Parse a server → client message (for clients and tests)."""
    return _server_adapter.validate_json(text)
