"""How many local-engine streams this node keeps in real time: a measured estimate.

A local engine (Whisper on this machine's cores) serves its streams in turns:
``workers`` passes run at once (`app.session.EngineLoad`), each on one core. A
stream costs ``cost`` core-seconds of engine time per second of audio (its
passes' time over the new audio they heard: the aggregate real-time factor).
The node keeps every stream in real time while

    streams × cost ≤ workers × target_utilization

so its capacity is ``floor(workers × target_utilization / cost)``. Past it the
engine's queue of turns grows and every stream falls behind together: refusing
the next stream (HTTP 503, so a balancer sends it to another node) beats
making all of them late.

``cost`` starts from a prior the engine measured at start-up (a timed pass,
`SupportsCostEstimate`), and is then learned from the passes the node really
runs, as an exponentially weighted mean over windows of `WINDOW_SEC`: speech
with pauses costs less than continuous speech (voice activity skips silence),
and a slower or busier machine costs more. Until live passes are measured the
node admits at least one stream per worker (the start-up pass may have been
timed on a busy machine). An engine that measured nothing and has run nothing
yet has no estimate: the node then trusts ``MAX_SESSIONS``.

Everything here is pure arithmetic over numbers, tested without a model.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

# Share of the engine's cores that admitted streams may use: the rest absorbs bursts
# (several streams ending an utterance at once) and the event loop's own work.
TARGET_UTILIZATION = 0.8
# Live passes are folded into the estimate per window of this many seconds, once the
# window heard at least `MIN_WINDOW_AUDIO_SEC` of audio (a handful of passes).
WINDOW_SEC = 10.0
MIN_WINDOW_AUDIO_SEC = 5.0
# Weight of a new window in the mean: about the last minute of load counts.
SMOOTHING = 0.2


@runtime_checkable
class SupportsCostEstimate(Protocol):
    """A loader that can say what one stream of its engine costs, measured at start-up."""

    def stream_cost(self) -> float | None:
        """Core-seconds of engine time per second of streamed audio, or None if unknown."""


@dataclass(frozen=True)
class CapacityPolicy:
    workers: int  # engine passes that run at once (one core each)
    ceiling: int  # MAX_SESSIONS: never more, whatever the estimate
    override: int | None = None  # LOCAL_CAPACITY: the operator's figure, measurement aside
    target_utilization: float = TARGET_UTILIZATION

    def streams_for(self, cost: float | None) -> int:
        """Streams kept in real time at ``cost`` per stream (at least 1, at most the ceiling)."""
        if self.override is not None:
            return min(self.override, self.ceiling)
        if cost is None or cost <= 0.0:
            return self.ceiling
        return min(self.fits(cost), self.ceiling)

    def fits(self, cost: float) -> int:
        """Streams at ``cost`` (> 0) the workers carry at the target use: at least 1."""
        return max(1, math.floor(self.workers * self.target_utilization / cost))


def busy_sessions(policy: CapacityPolicy, cost: float | None) -> int:
    """Local sessions past which the engine is busy (`app.session.EngineLoad`), when
    BUSY_SESSIONS leaves it to the node: the streams the start-up ``cost`` fits.

    That cost assumes continuous speech at the full buffer, so it is where the
    node starts to queue passes, whatever LOCAL_CAPACITY admits: on 2 cores
    (AMD EPYC) 3 for ``tiny.en``, 1 for ``base``, whose lag of finals past those
    counts was lower with the busy buffer. Two per worker when nothing was measured.
    """
    if cost is None or cost <= 0.0:
        return 2 * policy.workers
    return policy.fits(cost)


class CapacityEstimate:
    """The live estimate: a prior, then the mean cost of the passes really run.

    `observe` is called from recognition threads; the rest from the event loop.
    """

    def __init__(self, policy: CapacityPolicy, prior_cost: float | None = None) -> None:
        self.policy = policy
        self.prior_cost = prior_cost
        self.cost: float | None = prior_cost
        self._lock = threading.Lock()
        self._audio = 0.0  # this window's audio and engine seconds
        self._spent = 0.0
        self._window_start: float | None = None
        self.windows = 0  # windows folded in: 0 while the estimate is the prior

    def set_prior(self, cost: float | None) -> None:
        """The engine's start-up measurement; kept only until live windows replace it."""
        self.prior_cost = cost
        if self.windows == 0:
            self.cost = cost

    def observe(self, audio_sec: float, spent_sec: float) -> None:
        """One engine pass: ``spent_sec`` of engine time for ``audio_sec`` of new audio."""
        with self._lock:
            self._audio += audio_sec
            self._spent += spent_sec

    def roll(self, now: float) -> None:
        """Fold the current window into the estimate when it is long and full enough."""
        if self._window_start is None:
            self._window_start = now
            return
        if now - self._window_start < WINDOW_SEC:
            return
        with self._lock:
            audio, spent = self._audio, self._spent
            if audio < MIN_WINDOW_AUDIO_SEC:
                return  # too little heard to say: keep accumulating
            self._audio = self._spent = 0.0
        self._window_start = now
        measured = spent / audio
        if self.windows == 0 or self.cost is None:
            self.cost = measured
        else:
            self.cost = (1.0 - SMOOTHING) * self.cost + SMOOTHING * measured
        self.windows += 1

    @property
    def capacity(self) -> int:
        streams = self.policy.streams_for(self.cost)
        if self.windows == 0 and self.policy.override is None:
            # The start-up pass is timed on a machine that may be busy (other nodes
            # warming up beside it): never fewer than one stream per worker until
            # live passes say so, since one stream per core keeps up with any engine
            # that streams at all.
            streams = max(streams, min(self.policy.workers, self.policy.ceiling))
        return streams

    @property
    def source(self) -> str:
        """Where the figure comes from, for `/ready` and the logs."""
        if self.policy.override is not None:
            return "setting"
        if self.windows:
            return "measured"
        return "start-up" if self.cost is not None else "ceiling"
