"""The service's exception tree and its one mapping to wire error codes and close codes.

    ASRError                      code                    close
    ├── ConfigError               invalid_config et al.   1008 (policy / bad config)
    │   └── GoogleInvalidArgument google_invalid_argument 1008 (Google refused the config)
    ├── ProtocolError             protocol_error          1008
    │   └── UpgradeRequired       websocket_required      HTTP 426: plain HTTP to a WebSocket path
    ├── AudioFormatError          invalid_audio           1008
    ├── LimitError                limit_exceeded          1008
    │   ├── FrameTooLarge         frame_too_large         1009 (message too big)
    │   ├── IdleTimeout           idle_timeout            1008
    │   ├── TooManyConnections    too_many_connections    HTTP 429 + Retry-After at the handshake
    │   └── SessionTooLong        max_duration_exceeded   1008
    ├── AuthError                 unauthorized,           HTTP 401/403 at the handshake
    │                             origin_not_allowed      (1008 if the server cannot deny)
    ├── BackendUnavailable        backend_unavailable     1008
    │   ├── GoogleCredentialsError google_credentials     1008
    │   └── GooglePermissionDenied google_permission_denied 1008
    ├── BackendFailure            engine_failure,         1011 (internal error)
    │   │                         engine_timeout, google_error
    │   └── GoogleUnavailable     google_unavailable      1011 (reconnects exhausted)
    └── Overloaded                server_full,            HTTP 503 + Retry-After at the handshake;
        │                         shutting_down           1013 once past it (try again later)
        ├── ShuttingDown          shutting_down           1012 (service restart, running sessions)
        └── GoogleQuotaExceeded   google_quota_exceeded   1013

Non-fatal notices use the base class with ``fatal=False`` (``engine_behind``,
``audio_after_stop``…): an ``error`` message, and the session goes on.

Each subclass carries a stable ``code`` (the ``error`` message's ``code``) and a
``close_code`` (``None`` for a non-fatal error that leaves the session open).
The ``detail`` is the exception's message: a sentence a person can act on. It
must never contain a traceback, a file path or a credential; the server log
holds the full story.
"""

from __future__ import annotations

from enum import IntEnum

# A value a client supplied is echoed in an `error` detail or a log line as its
# repr (control, bidi and other unprintable characters escaped) cut to this many
# characters: a 15 MB language_code came back whole in the reply and the log.
MAX_ECHO_CHARS = 40
# A backstop for every detail, whatever built it: never more than this.
MAX_DETAIL_CHARS = 600


def echo(value: object) -> str:
    """A client-supplied value, safe to put in an error detail or a log line."""
    text = repr(value)
    if len(text) <= MAX_ECHO_CHARS:
        return text
    length = len(value) if isinstance(value, str) else len(text)  # the value's, not its quotes'
    return f"{text[:MAX_ECHO_CHARS]}…(cut: {length} characters)"


def _bounded(detail: str) -> str:
    """Escape what a terminal or log pipeline would act on; cut what is too long."""
    if not detail.isprintable():
        detail = "".join(c if c.isprintable() else repr(c)[1:-1] for c in detail)
    if len(detail) > MAX_DETAIL_CHARS:
        detail = detail[:MAX_DETAIL_CHARS] + "…(cut)"
    return detail


class CloseCode(IntEnum):
    """WebSocket close codes used by the service (RFC 6455 §7.4.1)."""

    NORMAL = 1000
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013


class ASRError(Exception):
    """Root of every error the service reports to a client."""

    code: str = "internal_error"
    close_code: CloseCode | None = CloseCode.INTERNAL_ERROR

    def __init__(self, detail: str, *, code: str | None = None, fatal: bool = True) -> None:
        detail = _bounded(detail)
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        if not fatal:
            self.close_code = None

    @property
    def fatal(self) -> bool:
        return self.close_code is not None


class ConfigError(ASRError):
    """The session config is malformed or asks for something unsupported."""

    code = "invalid_config"
    close_code = CloseCode.POLICY_VIOLATION

    def __init__(self, detail: str, *, code: str | None = None, field: str | None = None) -> None:
        super().__init__(detail, code=code)
        self.field = field


class ProtocolError(ASRError):
    """A message arrived that the protocol does not allow at this point."""

    code = "protocol_error"
    close_code = CloseCode.POLICY_VIOLATION


class UpgradeRequired(ProtocolError):
    """A plain HTTP request (no WebSocket upgrade) to a WebSocket endpoint."""

    code = "websocket_required"


class AudioFormatError(ASRError):
    """Audio bytes that cannot be LINEAR16 PCM."""

    code = "invalid_audio"
    close_code = CloseCode.POLICY_VIOLATION


class LimitError(ASRError):
    """A configured limit was exceeded."""

    code = "limit_exceeded"
    close_code = CloseCode.POLICY_VIOLATION


class FrameTooLarge(LimitError):
    code = "frame_too_large"
    close_code = CloseCode.MESSAGE_TOO_BIG


class IdleTimeout(LimitError):
    code = "idle_timeout"


class SessionTooLong(LimitError):
    code = "max_duration_exceeded"


class TooManyConnections(LimitError):
    """One client address over its own limit of pending or streaming connections."""

    code = "too_many_connections"


class AuthError(ASRError):
    """Missing or wrong API key, or an origin that is not allowed."""

    code = "unauthorized"
    close_code = CloseCode.POLICY_VIOLATION


class Overloaded(ASRError):
    """No room for another session now; try again later."""

    code = "server_full"
    close_code = CloseCode.TRY_AGAIN_LATER


class ShuttingDown(Overloaded):
    code = "shutting_down"
    close_code = CloseCode.SERVICE_RESTART


class BackendUnavailable(ASRError):
    """The chosen engine cannot run here (missing extra, model, platform)."""

    code = "backend_unavailable"
    close_code = CloseCode.POLICY_VIOLATION


class BackendFailure(ASRError):
    """The engine failed while recognising; only its own session is affected."""

    code = "engine_failure"
    close_code = CloseCode.INTERNAL_ERROR


# --------------------------------------------------------------------------- Google bridge
# Google's gRPC status codes mapped to stable codes (app/asr/google/bridge.py).


class GoogleInvalidArgument(ConfigError):
    """Google refused the stream's settings (INVALID_ARGUMENT): language, model, rate…"""

    code = "google_invalid_argument"


class GoogleCredentialsError(BackendUnavailable):
    """No Google credentials, an unreadable key file, or credentials Google rejects."""

    code = "google_credentials"


class GooglePermissionDenied(BackendUnavailable):
    """The credentials may not use Speech-to-Text (PERMISSION_DENIED)."""

    code = "google_permission_denied"


class GoogleUnavailable(BackendFailure):
    """Google stayed unreachable (UNAVAILABLE, DEADLINE_EXCEEDED) through every reconnect."""

    code = "google_unavailable"


class GoogleQuotaExceeded(Overloaded):
    """The project's Speech-to-Text quota is used up for now (RESOURCE_EXHAUSTED)."""

    code = "google_quota_exceeded"


# Refusals worth retrying later: they carry a Retry-After header.
RETRY_LATER_STATUSES = frozenset({429, 503})


def http_status(error: ASRError) -> int:
    """The HTTP status of a refusal before the upgrade (or of a REST request)."""
    if isinstance(error, AuthError):
        return 403 if error.code == "origin_not_allowed" else 401
    if isinstance(error, Overloaded):
        return 503
    if isinstance(error, TooManyConnections):
        return 429
    if isinstance(error, UpgradeRequired):
        return 426
    if isinstance(error, ConfigError | ProtocolError | AudioFormatError | LimitError):
        return 400
    return 500
