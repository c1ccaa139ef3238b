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

A stream's cost depends on the load it runs under, so passes are learned by
the load they ran at (`app.session.PassLoad`). Passes of a lightly loaded
engine are left out: its previews are work that stops as streams are added.
Past ``busy_sessions`` speaking sessions the engine is busy and its passes are
cheaper (buffers trimmed sooner), so once busy passes were measured the node
admits what their cost fits, when that is past the busy threshold; until
then, what a busy pass timed at start-up fits (`SupportsBusyCostEstimate`). Learned
from all passes together, the figure followed the load the node happened to
have: a node that keeps 10 `tiny.en` streams admitted 3 to 7, and fell to 4
while two streams ran alone.

Once live windows count, the figure falls at once but rises by at most half
again per window (`MAX_RISE_PER_WINDOW`), like a congestion window: a cost
learned without a prior starts from its cheapest window.

Everything here is pure arithmetic over numbers, tested without a model.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
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
# Once live windows are measured, the figure rises by at most half again per window
# (one stream at least); it falls at once. A mean learned without a prior starts
# from its first window, which streams that just started make the cheapest (short
# buffers): without this, a node without a busy prior said 13-14 `tiny.en` streams
# for a few windows, where it keeps 9-10.
MAX_RISE_PER_WINDOW = 1.5


@runtime_checkable
class SupportsCostEstimate(Protocol):
    """A loader that can say what one stream of its engine costs, measured at start-up."""

    def stream_cost(self) -> float | None:
        """Core-seconds of engine time per second of streamed audio, or None if unknown."""


@runtime_checkable
class SupportsBusyCostEstimate(Protocol):
    """A loader that can also say what a stream costs while its engine is busy."""

    def busy_stream_cost(self) -> float | None:
        """Core-seconds per audio-second of one stream on a busy engine, or None."""


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


class _CostTrack:
    """Passes of one kind, folded per window into an exponentially weighted mean.

    The mean starts from a prior timed on passes of the same kind, if there is one:
    each window then moves it by its weight. Without one the first window is the
    mean. (The first windows of streams that just started are the cheapest, their
    buffers short: a fresh node that took one as the busy cost said 14 `tiny.en`
    streams and admitted all 12 offered, where it keeps 9-10.)
    """

    def __init__(self) -> None:
        self.cost: float | None = None
        self.windows = 0  # windows folded in
        self.audio = 0.0  # the current window's audio and engine seconds
        self.spent = 0.0

    def fold(self) -> bool:
        """Fold the current window in if it heard enough; whether it did."""
        if self.audio < MIN_WINDOW_AUDIO_SEC:
            return False  # too little heard to say: keep accumulating
        measured = self.spent / self.audio
        self.audio = self.spent = 0.0
        if self.cost is None:
            self.cost = measured
        else:
            self.cost = (1.0 - SMOOTHING) * self.cost + SMOOTHING * measured
        self.windows += 1
        return True


class CapacityEstimate:
    """The live estimate: a prior, then the mean cost of the passes really run.

    `observe` is called from recognition threads; the rest from the event loop.
    ``busy_sessions`` says where the engine turns busy (`app.session.EngineLoad`).
    """

    def __init__(
        self,
        policy: CapacityPolicy,
        prior_cost: float | None = None,
        busy_sessions: Callable[[], int | None] = lambda: None,
    ) -> None:
        self.policy = policy
        self.prior_cost = prior_cost
        self.busy_sessions = busy_sessions
        self._lock = threading.Lock()
        self._steady = _CostTrack()  # passes of an engine neither light nor busy
        self._busy = _CostTrack()
        self._window_start: float | None = None
        self._rise_limit: int | None = None  # the most the next windows may say

    def set_prior(self, cost: float | None, busy_cost: float | None = None) -> None:
        """The engine's start-up measurements.

        ``cost``, a pass on Whisper's whole window, stands in for the steady cost
        until the first window of steady passes replaces it: a steady pass is
        shorter. ``busy_cost`` was timed on a busy pass's shape, so it starts the
        busy mean, which live windows then move.
        """
        self.prior_cost = cost
        with self._lock:
            if not self._busy.windows:
                self._busy.cost = busy_cost

    def observe(self, audio_sec: float, spent_sec: float, *, busy: bool = False) -> None:
        """One engine pass: ``spent_sec`` of engine time for ``audio_sec`` of new audio."""
        track = self._busy if busy else self._steady
        with self._lock:
            track.audio += audio_sec
            track.spent += spent_sec

    def roll(self, now: float) -> None:
        """Fold the current window into the estimate when it is long and full enough."""
        if self._window_start is None:
            self._window_start = now
            return
        if now - self._window_start < WINDOW_SEC:
            return
        with self._lock:
            before = self.capacity
            folded = [track.fold() for track in (self._steady, self._busy)]
        if any(folded):
            self._window_start = now
            self._rise_limit = max(before + 1, math.ceil(before * MAX_RISE_PER_WINDOW))

    @property
    def cost(self) -> float | None:
        """Per stream, while the engine is not busy: measured, else the start-up prior."""
        return self._steady.cost if self._steady.windows else self.prior_cost

    @property
    def busy_cost(self) -> float | None:
        """Per stream while the engine is busy: the start-up prior moved by live windows."""
        return self._busy.cost

    @property
    def windows(self) -> int:
        """Windows of live passes folded in: 0 while the estimate is the prior."""
        return self._steady.windows + self._busy.windows

    @property
    def capacity(self) -> int:
        """Local streams admitted now: what the costs fit, risen by at most
        `MAX_RISE_PER_WINDOW` since the last window."""
        streams = self._fitted()
        if self._rise_limit is not None and self.policy.override is None:
            streams = min(streams, self._rise_limit)
        return streams

    def _fitted(self) -> int:
        """What the steady and busy costs fit, the start-up floor included."""
        streams = self.policy.streams_for(self.cost)
        threshold = self.busy_sessions()
        busy_cost = self.busy_cost
        if self.policy.override is None and busy_cost is not None and threshold is not None:
            # Up to the threshold the engine runs at the steady cost, past it at the busy one.
            busy_streams = self.policy.streams_for(busy_cost)
            streams = max(min(streams, threshold), busy_streams if busy_streams > threshold else 0)
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
