"""Prometheus metrics (`GET /metrics`), one registry per app so apps never share counters."""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

if TYPE_CHECKING:
    from app.admission import Admission

LAG_BUCKETS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 13.0, 30.0)
RTF_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.active_sessions = Gauge("asr_active_sessions", "Sessions streaming now", registry=r)
        self.sessions = Counter(
            "asr_sessions", "Sessions ended, by outcome", ["outcome"], registry=r
        )
        self.audio_received = Counter(
            "asr_audio_received_seconds", "Seconds of audio received from clients", registry=r
        )
        self.audio_transcribed = Counter(
            "asr_audio_transcribed_seconds", "Seconds of audio the engines processed", registry=r
        )
        self.errors = Counter("asr_errors", "Error messages sent, by code", ["code"], registry=r)
        self.final_lag = Histogram(
            "asr_final_lag_seconds",
            "Final sent − arrival of the audio its last word ends in",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.engine_rtf = Histogram(
            "asr_engine_real_time_factor",
            "Engine pass time / seconds of new audio the pass covered",
            buckets=RTF_BUCKETS,
            registry=r,
        )
        self.threads = Gauge(
            "asr_recognition_threads", "Recognition threads alive in this process", registry=r
        )
        self.threads.set_function(
            lambda: sum(t.name.startswith("asr-") for t in threading.enumerate())
        )

    def watch_engine_turns(
        self,
        waiting: Callable[[], int],
        running: Callable[[], int],
        busy: Callable[[], bool],
        speaking: Callable[[], int],
    ) -> None:
        """Report the engine's turns and whether it is busy (`app.session.EngineLoad`)."""
        r = self.registry
        Gauge(
            "asr_engine_passes_waiting", "Sessions waiting for a turn at the engine", registry=r
        ).set_function(waiting)
        Gauge("asr_engine_passes_running", "Engine passes running now", registry=r).set_function(
            running
        )
        Gauge(
            "asr_engine_busy",
            "1 while more than BUSY_SESSIONS local sessions speak (shorter buffers)",
            registry=r,
        ).set_function(lambda: float(busy()))
        Gauge(
            "asr_engine_sessions_speaking",
            "Local sessions whose buffer holds speech (those that count toward busy)",
            registry=r,
        ).set_function(speaking)

    def watch_admission(self, admission: Admission) -> None:
        """Capacity and load per pool at each scrape: what an autoscaler or balancer reads."""
        from app.admission import Pool

        r = self.registry
        capacity = Gauge(
            "asr_session_capacity",
            "Sessions this node admits now, by pool (local: measured real-time capacity)",
            ["pool"],
            registry=r,
        )
        active = Gauge(
            "asr_sessions_active", "Sessions streaming now, by pool", ["pool"], registry=r
        )
        for pool in Pool:
            capacity.labels(pool.value).set_function(partial(admission.capacity, pool))
            active.labels(pool.value).set_function(partial(admission.active.__getitem__, pool))
        Gauge(
            "asr_load_ratio",
            "Local sessions / local capacity (1.0: full; the autoscaling target)",
            registry=r,
        ).set_function(lambda: admission.load_ratio)
        Gauge(
            "asr_stream_cost",
            "Engine core-seconds per second of audio per local stream (start-up measure until "
            "live passes replace it; 0: unknown)",
            registry=r,
        ).set_function(lambda: admission.estimate.cost or 0.0)
        Gauge(
            "asr_stream_cost_busy",
            "The same while the engine is busy (shorter buffers; 0: unknown)",
            registry=r,
        ).set_function(lambda: admission.estimate.busy_cost or 0.0)
        Gauge("asr_draining", "1 while the node drains", registry=r).set_function(
            lambda: float(admission.draining)
        )
        refused = Counter(
            "asr_admission_refused",
            "Sessions refused: at the handshake (HTTP 503) or at the config (close 1013)",
            ["stage", "code"],
            registry=r,
        )
        admission.on_refusal = lambda stage, code: refused.labels(stage, code).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class SessionFigures:
    """One session's own lag and real-time factor, for its closing log line.

    The recognition thread adds passes, the event loop adds lags; each field has
    one writer, so no lock is needed.
    """

    def __init__(self) -> None:
        self.audio_sec = 0.0
        self.engine_sec = 0.0
        self.finals = 0
        self.lag_sum = 0.0
        self.lag_max = 0.0

    def add_pass(self, audio_sec: float, spent_sec: float) -> None:
        self.audio_sec += audio_sec
        self.engine_sec += spent_sec

    def add_lag(self, lag: float) -> None:
        self.finals += 1
        self.lag_sum += lag
        self.lag_max = max(self.lag_max, lag)

    def summary(self) -> str:
        rtf = self.engine_sec / self.audio_sec if self.audio_sec else 0.0
        mean = self.lag_sum / self.finals if self.finals else 0.0
        return (
            f"audio {self.audio_sec:.1f} s, engine real-time factor {rtf:.2f}, "
            f"{self.finals} finals, lag mean {mean:.2f} s max {self.lag_max:.2f} s"
        )
