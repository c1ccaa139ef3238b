"""Registry entry of backend ``google``: credentials, shared channels, a recognizer per session.

Importing this module needs nothing from Google: ``google-cloud-speech`` is
imported when a session first asks for the backend, and its absence is a
`BackendUnavailable` that names the extra to install.

All sessions share a few `SpeechClient`s. A gRPC channel is thread-safe and
multiplexes many streams over one HTTP/2 connection, but Google's front ends
allow about 100 concurrent streams per connection and gRPC queues the rest
silently, so each channel carries at most `STREAMS_PER_CHANNEL` sessions and
gets its own connection (a local subchannel pool); more sessions open more
channels.
"""

from __future__ import annotations

import importlib
import json
import logging
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.asr.base import EngineInfo, EngineRequest
from app.errors import BackendUnavailable, ConfigError, GoogleCredentialsError, echo
from app.settings import Settings

if TYPE_CHECKING:
    from google.auth.credentials import Credentials
    from google.cloud.speech_v1 import SpeechClient

    from app.asr.google.bridge import GoogleRecognizer

logger = logging.getLogger(__name__)

BACKEND = "google"
EXTRA_HINT = "pip install 'asr-stream[google]'"
SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
GOOGLE_HOST = "speech.googleapis.com"

STREAMS_PER_CHANNEL = 80
"""Sessions per channel: under the ~100 concurrent streams Google's front ends
allow per HTTP/2 connection, with room for a restart's overlapping stream."""

COMMON_MODELS = (
    "latest_long",
    "latest_short",
    "command_and_search",
    "phone_call",
    "video",
    "telephony",
    "telephony_short",
    "medical_conversation",
    "medical_dictation",
    "default",
)
"""Listed by ``GET /backends``; any other name is passed on and Google decides."""


def import_speech() -> Any:
    """``google.cloud.speech_v1``, or `BackendUnavailable` saying what to install."""
    try:
        importlib.import_module("grpc")
        speech_v1 = importlib.import_module("google.cloud.speech_v1")
    except ImportError as exc:
        raise BackendUnavailable(
            f"Backend '{BACKEND}' needs the Google Cloud Speech client, which is not "
            f"installed; install it with: {EXTRA_HINT}"
        ) from exc
    return speech_v1


@dataclass
class _Channel:
    client: SpeechClient
    active: int = 0


class GoogleLoader:
    """`RecognizerLoader` for Google Speech-to-Text; the registry builds it with `Settings`."""

    def __init__(self, settings: Settings, *, streams_per_channel: int = STREAMS_PER_CHANNEL):
        self.settings = settings
        self.streams_per_channel = streams_per_channel
        self._lock = threading.Lock()
        self._channels: list[_Channel] = []
        self._credentials: Credentials | None = None

    # -- registry / REST -------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """For ``GET /backends``: can it run here, against what, with which credentials."""
        try:
            import_speech()
        except BackendUnavailable as exc:
            return {"usable": False, "reason": exc.detail}
        settings = self.settings
        if settings.google_speech_endpoint:
            credentials = "none (emulator endpoint)"
        elif settings.google_application_credentials is not None:
            if not settings.google_application_credentials.is_file():
                return {"usable": False, "reason": _missing_key_file().detail}
            credentials = "GOOGLE_APPLICATION_CREDENTIALS"
        else:
            credentials = "application default credentials"
        return {
            "usable": True,
            "reason": None,
            "models": list(COMMON_MODELS),
            "default_model": settings.google_model,
            "endpoint": "emulator" if settings.google_speech_endpoint else GOOGLE_HOST,
            "credentials": credentials,
            "channels": len(self._channels),
        }

    # -- sessions --------------------------------------------------------------------

    def open_recognizer(
        self, request: EngineRequest, sample_rate_hertz: int
    ) -> tuple[GoogleRecognizer, EngineInfo]:
        """A recognizer for one session; fails here, at session start, on missing credentials."""
        import_speech()
        from google.cloud.speech_v1.types import cloud_speech

        from app.asr.google.bridge import BridgeTimings, GoogleRecognizer

        if request.task != "transcribe":
            raise ConfigError(
                f"Backend '{BACKEND}' only transcribes; "
                f"task {echo(request.task)} is not available.",
                code="unsupported_task",
            )
        model = self.model_for(request.model)
        if not self.settings.google_speech_endpoint:
            self._load_credentials()  # outside the lock: google.auth may take a while
        with self._lock:
            if not self._channels:  # the first session checks the credentials
                self._channels.append(_Channel(self._new_client()))
        config = cloud_speech.StreamingRecognitionConfig(
            config=cloud_speech.RecognitionConfig(
                encoding=cloud_speech.RecognitionConfig.AudioEncoding.LINEAR16,
                sample_rate_hertz=sample_rate_hertz,
                audio_channel_count=1,
                language_code=request.language_code,
                enable_automatic_punctuation=request.punctuation,
                enable_word_time_offsets=request.word_offsets,
                model=model,
            ),
            interim_results=request.interim_results,
        )
        settings = self.settings
        timings = BridgeTimings(
            restart_sec=settings.google_restart_sec,
            idle_sec=settings.google_idle_restart_sec,
            max_reconnects=settings.google_max_reconnects,
            backoff_sec=settings.google_reconnect_backoff_sec,
        )
        recognizer = GoogleRecognizer(self, config, sample_rate_hertz, timings)
        return recognizer, EngineInfo(backend=BACKEND, model=model)

    def model_for(self, requested: str) -> str:
        """The Google model: the session's, unless it is empty or the local engine's default."""
        if not requested or requested == self.settings.default_model:
            return self.settings.google_model
        return requested

    def acquire(self) -> tuple[SpeechClient, Callable[[], None]]:
        """A client on the least busy channel with room; a new channel when all are full."""
        with self._lock:
            room = [c for c in self._channels if c.active < self.streams_per_channel]
            if room:
                channel = min(room, key=lambda c: c.active)
            else:
                channel = _Channel(self._new_client())
                self._channels.append(channel)
                logger.info("google: opened channel %d", len(self._channels))
            channel.active += 1
        released = threading.Event()

        def release() -> None:
            if not released.is_set():
                released.set()
                with self._lock:
                    channel.active -= 1

        return channel.client, release

    def probe(self, timeout: float) -> None:
        """Readiness: credentials load and a channel connects to Google (or the emulator).

        Connecting (TCP, TLS, HTTP/2) proves the endpoint is reachable without a
        request, so it costs no quota. Raises `BackendUnavailable` or
        `GoogleCredentialsError` with a sentence that names no secret.
        """
        import_speech()
        import grpc

        if not self.settings.google_speech_endpoint:
            self._load_credentials()
        with self._lock:
            if not self._channels:
                self._channels.append(_Channel(self._new_client()))
            client = self._channels[0].client
        channel: grpc.Channel = client.transport.grpc_channel  # type: ignore[attr-defined]
        endpoint = self.settings.google_speech_endpoint
        try:
            grpc.channel_ready_future(channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            target = "the emulator endpoint" if endpoint else GOOGLE_HOST
            raise BackendUnavailable(
                f"Google Speech is not reachable: no connection to {target} within {timeout:g} s."
            ) from None

    def close(self) -> None:
        """Close every channel (sessions still running on them fail)."""
        with self._lock:
            channels, self._channels = self._channels, []
        for channel in channels:
            channel.client.transport.close()  # type: ignore[no-untyped-call]

    # -- clients and credentials -------------------------------------------------------

    def _new_client(self) -> SpeechClient:
        import grpc
        from google.cloud.speech_v1 import SpeechClient
        from google.cloud.speech_v1.services.speech.transports import SpeechGrpcTransport

        # Each pooled channel gets its own connection (by default, channels to the
        # same target share one), so the per-connection stream limit applies per channel.
        options = [("grpc.use_local_subchannel_pool", 1)]
        endpoint = self.settings.google_speech_endpoint
        if endpoint:
            channel = grpc.insecure_channel(endpoint, options=options)
            return SpeechClient(transport=SpeechGrpcTransport(channel=channel))
        credentials = self._load_credentials()

        def make_channel(host: str, **kwargs: Any) -> grpc.Channel:
            kwargs["options"] = [*kwargs.get("options", ()), *options]
            channel: grpc.Channel = SpeechGrpcTransport.create_channel(host, **kwargs)
            return channel

        transport = SpeechGrpcTransport(credentials=credentials, channel=make_channel)
        return SpeechClient(transport=transport)

    def _load_credentials(self) -> Credentials:
        if self._credentials is not None:
            return self._credentials
        import google.auth
        from google.auth.exceptions import GoogleAuthError

        path = self.settings.google_application_credentials
        try:
            if path is not None:
                credentials = _load_key_file(path)
            else:
                credentials = google.auth.default(scopes=SCOPES)[0]
        except (GoogleAuthError, ValueError, OSError, KeyError, TypeError) as exc:
            # The log may name the file; the client's message names only the setting.
            logger.warning("google credentials unusable: %s: %s", type(exc).__name__, exc)
            if path is None:
                raise GoogleCredentialsError(
                    "No Google credentials were found: set GOOGLE_APPLICATION_CREDENTIALS to a "
                    "service-account key file (or GOOGLE_SPEECH_ENDPOINT for an emulator)."
                ) from None
            if not path.is_file():
                raise _missing_key_file() from None
            raise GoogleCredentialsError(
                "The file named by GOOGLE_APPLICATION_CREDENTIALS is not a valid Google "
                "service-account key; download a new JSON key for the service account."
            ) from None
        self._credentials = credentials
        return credentials


def _load_key_file(path: Path) -> Credentials:
    """The operator's credentials file: a service-account key, or another ADC file type."""
    import google.auth
    from google.oauth2 import service_account

    info = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(info, dict):
        raise ValueError("the credentials file is not a JSON object")
    if info.get("type") == "service_account":
        # The type-specific loader, as google-auth recommends.
        key: Credentials = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
            info, scopes=SCOPES
        )
        return key
    # authorized_user, external_account…: the generic loader, which google-auth
    # deprecates for files from untrusted sources. This file is the operator's own
    # setting, the same trust google.auth.default() gives GOOGLE_APPLICATION_CREDENTIALS
    # (and, like it, we silence that warning).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        loaded = google.auth.load_credentials_from_file(  # type: ignore[no-untyped-call]
            str(path), scopes=SCOPES
        )
    credentials: Credentials = loaded[0]
    return credentials


def _missing_key_file() -> GoogleCredentialsError:
    return GoogleCredentialsError(
        "GOOGLE_APPLICATION_CREDENTIALS does not name a readable file on the server; set it "
        "to the path of a service-account JSON key."
    )
