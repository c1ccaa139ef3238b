"""Service settings, read from the environment and `.env` (see `.env.example`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Whisper models take 16 kHz mono audio; every input rate is converted to this.
ENGINE_SAMPLE_RATE = 16_000
MIN_SAMPLE_RATE = 8_000
MAX_SAMPLE_RATE = 48_000
ICE_SERVER_KEYS = frozenset({"urls", "username", "credential"})  # WEBRTC_ICE_SERVERS entries


class Settings(BaseSettings):
    """Every knob of the service. Each field maps to the upper-case environment variable."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # Network
    host: str = "0.0.0.0"
    port: int = Field(default=8001, ge=1, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    # Session defaults (a client's config overrides them)
    default_backend: str = "faster-whisper"
    default_model: str = "tiny.en"
    default_language_code: str = "en-US"
    streaming_interim_results: bool = True
    enable_automatic_punctuation: bool = True

    # Local Whisper engine (faster-whisper / CTranslate2). DEFAULT_MODEL may be
    # "tiny.en", "base" or the path of a CTranslate2 Whisper model folder.
    model_cache_dir: Path = Path.home() / ".cache" / "asr-stream" / "models"
    # Where CTranslate2 runs the model: "auto" takes a CUDA GPU when CTranslate2 sees one.
    # "cuda" with none makes the backend unavailable (as the default, the server won't start).
    whisper_device: Literal["cpu", "cuda", "auto"] = "cpu"
    # Left unset, the device's default: int8 on the CPU, float16 on CUDA (faster-whisper's
    # GPU example); set, it is used on either device.
    whisper_compute_type: str = "int8"
    # Threads per model call, and model calls that run at once (0: one per CPU core).
    # Sessions share the model: 1 thread x one worker per core had 1.6x the throughput
    # of 4 threads x 1 worker on 2 cores (see bench/results/README.md).
    whisper_cpu_threads: int = Field(default=1, ge=0)
    whisper_num_workers: int = Field(default=0, ge=0)
    whisper_beam_size: int = Field(default=1, ge=1, le=10)
    whisper_vad_filter: bool = True
    whisper_short_window: bool = True
    # Voice activity (Silero, bundled with faster-whisper) in the streaming engine: skip
    # silence, cut trailing silence, commit the utterance at a pause this long.
    streaming_vad: bool = True
    # 0.5 -> 0.3 s (`bench.replay`, five clips): errors 18 -> 17 (en_long 5.7 -> 5.1 %,
    # the rest the same), passes 17 % cheaper (shorter buffers), finals sooner.
    # 0.2-0.3 s gave the same text; 0.35-0.5 s the old one.
    vad_pause_sec: float = Field(default=0.3, ge=0.1, le=5.0)

    # Plugins: "name=module:attr" loader factories, comma-separated (see docs/BACKENDS.md);
    # installed packages can also register through the "asr_stream.backends" entry points.
    asr_plugins: str = ""
    whisper_timestamped_model: Path | None = None

    # Google Cloud Speech-to-Text bridge (backend "google", extra "google").
    # A service-account key file; unset: Application Default Credentials.
    google_application_credentials: Path | None = None
    # "host:port" of an emulator or test server: insecure channel, no credentials.
    google_speech_endpoint: str | None = None
    google_model: str = "latest_long"
    # Google ends a stream after ~305 s (OUT_OF_RANGE); the bridge restarts before that.
    google_restart_sec: float = Field(default=290.0, gt=0.0, le=300.0)
    # No audio for this long: finish the Google stream; reopen when audio comes (Google
    # times out a stream that gets no audio for ~10 s).
    google_idle_restart_sec: float = Field(default=8.0, gt=0.0)
    google_max_reconnects: int = Field(default=5, ge=0)
    google_reconnect_backoff_sec: float = Field(default=0.5, gt=0.0)
    # GET /ready: how long to wait for a connection to Google when it is configured.
    ready_check_timeout_sec: float = Field(default=2.0, gt=0.0, le=30.0)

    # OnlineASRProcessor
    min_chunk_size: float = Field(default=1.0, gt=0.0, le=10.0)
    # While the process is lightly loaded (at most one local session per two CPU cores),
    # preview passes this often refresh interims between the committing passes: first
    # text 0.77 -> 0.48 s, finals unchanged (see bench/results/README.md). >= MIN_CHUNK_SIZE: off.
    min_chunk_size_light: float = Field(default=0.5, gt=0.0, le=10.0)
    # Until a stream has committed text, agreement commits only from a pass that heard
    # this much audio (0: from the second pass, as in whisper_streaming).
    first_commit_sec: float = Field(default=4.0, ge=0.0, le=10.0)
    buffer_trimming: Literal["segment", "sentence"] = "segment"
    buffer_trimming_sec: float = Field(default=15.0, gt=1.0, le=28.0)
    # While more than BUSY_SESSIONS local sessions stream (0: two per engine worker), each
    # trims its buffer past this long instead, keeping half of it: 12 streams kept in real
    # time on 2 cores instead of 6, at +0.5 points of WER (bench/results/README.md). 0: off.
    busy_buffer_trimming_sec: float = Field(default=6.0, ge=0.0, le=28.0)
    busy_sessions: int = Field(default=0, ge=0)
    max_buffer_sec: float = Field(default=25.0, gt=6.0, le=29.0)

    # Limits
    max_frame_bytes: int = Field(default=1_048_576, ge=2)
    # A real client sends its config at once; a connection that does not holds a pending
    # slot (not a session slot) until this deadline.
    config_timeout_sec: float = Field(default=5.0, gt=0.0)
    audio_queue_seconds: float = Field(default=30.0, gt=0.0)
    session_close_timeout_sec: float = Field(default=10.0, gt=0.0)
    # Hard ceiling of sessions of every engine; local engines are limited sooner, by
    # the measured capacity (app/capacity.py) while ADMISSION_CONTROL is on.
    max_sessions: int = Field(default=32, ge=1)
    admission_control: bool = True
    # Local-engine streams this node keeps in real time (0: measured; see app/capacity.py).
    local_capacity: int = Field(default=0, ge=0)
    # Connections between their upgrade and their config: their own bound, not session slots.
    max_pending_connections: int = Field(default=64, ge=1)
    # Per client address (the socket's, or X-Forwarded-For from a trusted proxy):
    # connections still sending their config, and sessions (0: no limit). Over: HTTP 429.
    # A gateway (a phone bridge, a voice-agent host) opens dozens of sessions at once from
    # one address, each pending for milliseconds: 32 lets that burst through, while a
    # flood of idle connections holds at most 32 for CONFIG_TIMEOUT_SEC. Sessions per
    # address are off by default for the same reason (and NATs): set it for the public.
    max_pending_per_client: int = Field(default=32, ge=1)
    max_sessions_per_client: int = Field(default=0, ge=0)
    # Proxies whose X-Forwarded-For (or RFC 7239 Forwarded) header names the client:
    # comma-separated addresses or networks, e.g. "127.0.0.1,10.0.0.0/8"; "*" any.
    # Empty: trust none.
    trusted_proxies: str = ""
    # The Retry-After of a 503 (a full or draining node) or a 429 (a client over its limit).
    retry_after_sec: int = Field(default=5, ge=1, le=3600)
    max_session_sec: float = Field(default=4 * 3600.0, gt=0.0)
    idle_timeout_sec: float = Field(default=30.0, gt=0.0)
    send_timeout_sec: float = Field(default=30.0, gt=0.0)
    max_backlog_sec: float = Field(default=10.0, gt=0.0)
    engine_pass_timeout_sec: float = Field(default=60.0, gt=0.0)
    shutdown_grace_sec: float = Field(default=30.0, ge=0.0)

    # Deepgram-compatible door (/v1/listen): Deepgram model names mapped to ours
    # ("nova-3=base,nova-2=tiny.en"); any other Deepgram name runs DEFAULT_MODEL. And the
    # idle limit Deepgram documents: no audio or message for this long ends the stream.
    deepgram_model_map: str = ""
    deepgram_idle_timeout_sec: float = Field(default=10.0, gt=0.0)

    # WebRTC door (POST /webrtc/offer, extra "webrtc"): STUN/TURN servers for the server's
    # ICE candidates, as JSON RTCIceServer objects. Empty: host candidates only.
    webrtc_ice_servers: list[dict[str, str | list[str]]] = Field(default_factory=list)

    # Auth (off while API_KEYS is empty) and browser origins (any while empty).
    # Both are comma-separated lists.
    api_keys: str = ""
    allowed_origins: str = ""

    @property
    def api_key_list(self) -> list[str]:
        return [key.strip() for key in self.api_keys.split(",") if key.strip()]

    @property
    def deepgram_models(self) -> dict[str, str]:
        pairs = (item.split("=", 1) for item in self.deepgram_model_map.split(",") if "=" in item)
        return {name.strip(): model.strip() for name, model in pairs if name.strip()}

    @property
    def allowed_origin_list(self) -> list[str]:
        return [o.strip().rstrip("/") for o in self.allowed_origins.split(",") if o.strip()]

    @model_validator(mode="after")
    def _cap_above_trimming(self) -> Self:
        if self.max_buffer_sec <= self.buffer_trimming_sec:
            raise ValueError("MAX_BUFFER_SEC must be greater than BUFFER_TRIMMING_SEC")
        if self.max_backlog_sec >= self.audio_queue_seconds:
            raise ValueError("MAX_BACKLOG_SEC must be less than AUDIO_QUEUE_SECONDS")
        for entry in self.trusted_proxies.split(","):
            if entry.strip() not in ("", "*") and not _is_network(entry.strip()):
                raise ValueError(
                    f"TRUSTED_PROXIES: {entry.strip()[:40]!r} is not an address or a network"
                )
        for number, server in enumerate(self.webrtc_ice_servers):
            # Caught here, not as a 500 on every offer (aiortc's RTCIceServer needs urls).
            unknown = sorted(set(server) - ICE_SERVER_KEYS)
            if "urls" not in server or unknown:
                raise ValueError(
                    f"WEBRTC_ICE_SERVERS entry {number}: an RTCIceServer has 'urls' and may "
                    f"have 'username' and 'credential'"
                    + (f"; not {', '.join(repr(k[:40]) for k in unknown)}" if unknown else "")
                )
        return self


def _is_network(entry: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return False
    return True
