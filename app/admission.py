"""Who may open a session on this node: one policy for every front door.

Two moments, because the engine a session wants is only known from its config:

1. At the door (before a WebSocket upgrade, a WebRTC answer…): the node refuses
   with HTTP 503 and ``Retry-After`` while it drains, while the pool of the
   *default* backend is full (most sessions use it), or at ``MAX_SESSIONS``. A
   load balancer then sends the connection to another node.
2. At the config: the chosen engine's pool must have room, checked and counted
   in one step on the event loop. A session that passed the door but finds its
   pool full (another backend's pool, or a burst that filled the pool between
   the two moments) gets ``server_full`` and close 1013: the fallback, counted
   in ``asr_admission_refused_total{stage="config"}``.

Pools: ``local`` engines run passes on this machine's cores and are limited by
the measured capacity (`app.capacity`), and refused outright while half or more
of the running local streams (two at least) are behind, whatever the estimate
says (unless ``LOCAL_CAPACITY`` fixes the figure: the operator's word wins);
``remote`` engines (Google) cost little CPU here and are limited only by
``MAX_SESSIONS``, which bounds both together.
Connections still sending their config are not sessions: they take no slot,
and have their own bound (``MAX_PENDING_CONNECTIONS``).

Per client address (the socket's, or the one a trusted proxy names: see
`app.server`), at most ``MAX_PENDING_PER_CLIENT`` connections may wait for
their config and ``MAX_SESSIONS_PER_CLIENT`` stream; past that the door
answers HTTP 429 with ``Retry-After``. So one client that opens connections
and never configures them fills its own allowance, not the node.
"""

from __future__ import annotations

import enum
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from app.capacity import CapacityEstimate
from app.errors import Overloaded, TooManyConnections
from app.settings import Settings


class Pool(enum.StrEnum):
    LOCAL = "local"  # passes on this node's cores: the measured capacity
    REMOTE = "remote"  # an engine elsewhere (Google): only MAX_SESSIONS


class Admission:
    """The node's sessions by pool, its capacity, and whether it drains."""

    def __init__(
        self,
        settings: Settings,
        estimate: CapacityEstimate,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.estimate = estimate
        self.clock = clock
        self.active: Counter[Pool] = Counter()
        self.pending = 0  # connections that have not sent a valid config yet
        self.pending_by: Counter[str] = Counter()  # the same, per client address
        self.active_by: Counter[str] = Counter()  # sessions per client address
        self.draining = False
        # Whether the local engines are behind on their streams now (the core says, from
        # its sessions' backlogs): the live check beside the measured capacity.
        self.behind: Callable[[], bool] = lambda: False
        # Told of each refusal: (stage "handshake" or "config", error code), for metrics.
        self.on_refusal: Callable[[str, str], None] | None = None

    # -- figures -------------------------------------------------------------------

    @property
    def local_capacity(self) -> int:
        """Local-engine streams this node keeps in real time (or all, with admission off)."""
        if not self.settings.admission_control:
            return self.settings.max_sessions
        self.estimate.roll(self.clock())
        return self.estimate.capacity

    def capacity(self, pool: Pool) -> int:
        return self.local_capacity if pool is Pool.LOCAL else self.settings.max_sessions

    @property
    def sessions(self) -> int:
        return sum(self.active.values())

    def has_room(self, pool: Pool) -> bool:
        return (
            not self.draining
            and self.sessions < self.settings.max_sessions
            and self.active[pool] < self.capacity(pool)
        )

    @property
    def load_ratio(self) -> float:
        """Local sessions over local capacity: the autoscaler's target (1.0 is full)."""
        return self.active[Pool.LOCAL] / max(1, self.local_capacity)

    @property
    def retry_after(self) -> int:
        return self.settings.retry_after_sec

    # -- the two checks ------------------------------------------------------------

    def check_door(self, default_pool: Pool, client: str) -> None:
        """Before the upgrade: raise `TooManyConnections` (→ HTTP 429) for a client over its
        own limits, `Overloaded` (→ HTTP 503) if no session could start."""
        settings = self.settings
        if self.pending_by[client] >= settings.max_pending_per_client:
            self._refuse(
                "handshake",
                TooManyConnections(
                    f"This client has {self.pending_by[client]} connections that have not sent "
                    f"their config; send the config at once, or retry in {self.retry_after} s."
                ),
            )
        per_client = settings.max_sessions_per_client
        if per_client and self.active_by[client] >= per_client:
            self._refuse(
                "handshake",
                TooManyConnections(
                    f"This client is streaming its maximum of {per_client} sessions; "
                    f"retry in {self.retry_after} s."
                ),
            )
        if self.pending >= self.settings.max_pending_connections:
            self._refuse(
                "handshake",
                Overloaded(
                    f"The server has {self.pending} connections waiting for their config; "
                    f"try again in {self.retry_after} s."
                ),
            )
        self._check("handshake", default_pool)

    @contextmanager
    def pending_connection(self, client: str) -> Iterator[None]:
        """A connection between its upgrade and its config (or its end)."""
        self.pending += 1
        self.pending_by[client] += 1
        try:
            yield
        finally:
            self.pending -= 1
            _decrement(self.pending_by, client)

    def admit(self, pool: Pool, client: str) -> None:
        """After the config: take a slot in ``pool`` or raise `Overloaded` (→ 1013)."""
        self._check("config", pool)
        self.active[pool] += 1
        self.active_by[client] += 1

    def release(self, pool: Pool, client: str) -> None:
        self.active[pool] -= 1
        _decrement(self.active_by, client)

    def _check(self, stage: str, pool: Pool) -> None:
        if self.draining:
            self._refuse(
                stage,
                Overloaded(
                    "The server is shutting down and takes no new sessions; "
                    f"reconnect in {self.retry_after} s (to another node behind a balancer).",
                    code="shutting_down",
                ),
            )
        if self.sessions >= self.settings.max_sessions:
            self._refuse(
                stage,
                Overloaded(
                    f"The server is serving its maximum of {self.settings.max_sessions} "
                    f"sessions; try again in {self.retry_after} s."
                ),
            )
        measured = self.settings.admission_control and not self.settings.local_capacity
        if pool is Pool.LOCAL and measured and self.behind():
            self._refuse(
                stage,
                Overloaded(
                    "The server's local engines are behind on the streams they serve; "
                    f"try again in {self.retry_after} s."
                ),
            )
        capacity = self.capacity(pool)
        if self.active[pool] >= capacity:
            self._refuse(
                stage,
                Overloaded(
                    f"The server's {pool.value} engines are serving the {capacity} streams they "
                    f"keep in real time; try again in {self.retry_after} s."
                ),
            )

    def _refuse(self, stage: str, error: Overloaded | TooManyConnections) -> None:
        if self.on_refusal is not None:
            self.on_refusal(stage, error.code)
        raise error


def _decrement(counts: Counter[str], key: str) -> None:
    """One less for ``key``; a client with none left is forgotten (the map stays small)."""
    counts[key] -= 1
    if counts[key] <= 0:
        del counts[key]
