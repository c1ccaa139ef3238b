"""Capacity and admission as pure arithmetic: numbers in, streams and refusals out."""

from __future__ import annotations

import pytest

from app.admission import Admission, Pool
from app.capacity import (
    MIN_WINDOW_AUDIO_SEC,
    SMOOTHING,
    WINDOW_SEC,
    CapacityEstimate,
    CapacityPolicy,
    busy_sessions,
)
from app.errors import Overloaded, TooManyConnections, http_status
from app.settings import Settings


def test_capacity_is_the_streams_whose_cost_fits_the_workers_at_the_target_use() -> None:
    policy = CapacityPolicy(workers=2, ceiling=32, target_utilization=0.8)
    # 0.2 core-s per audio-s: 2 cores x 0.8 / 0.2 = 8 streams (the measured tiny.en figure).
    assert policy.streams_for(0.2) == 8
    assert policy.streams_for(0.21) == 7  # floor: the 8th would not fit
    assert policy.streams_for(5.0) == 1  # a slow engine still serves one stream
    assert policy.streams_for(0.001) == 32  # never past MAX_SESSIONS
    assert policy.streams_for(None) == 32  # nothing measured: the ceiling is all there is


def test_the_operators_figure_wins_but_not_over_the_ceiling() -> None:
    assert CapacityPolicy(workers=2, ceiling=32, override=5).streams_for(0.01) == 5
    assert CapacityPolicy(workers=2, ceiling=4, override=10).streams_for(None) == 4


def test_the_engine_is_busy_past_the_streams_the_start_up_cost_fits() -> None:
    policy = CapacityPolicy(workers=2, ceiling=32, target_utilization=0.8)
    assert busy_sessions(policy, 0.45) == 3  # tiny.en's start-up pass on 2 AMD EPYC cores
    assert busy_sessions(policy, 1.2) == 1  # base's
    assert busy_sessions(policy, 5.0) == 1  # never busy with one stream
    assert busy_sessions(policy, None) == 4  # unmeasured: two per worker
    # LOCAL_CAPACITY admits what the operator says; the engine's queue starts where it does.
    assert busy_sessions(CapacityPolicy(workers=2, ceiling=32, override=20), 0.45) == 3


def test_live_windows_replace_the_prior_then_move_it_by_their_weight() -> None:
    estimate = CapacityEstimate(CapacityPolicy(workers=2, ceiling=32), prior_cost=0.4)
    assert (estimate.capacity, estimate.source) == (4, "start-up")
    estimate.roll(0.0)  # the first window opens
    estimate.observe(audio_sec=20.0, spent_sec=4.0)  # 0.2 per audio-second
    estimate.roll(WINDOW_SEC / 2)
    assert estimate.cost == 0.4  # the window is not over
    estimate.roll(WINDOW_SEC)
    assert estimate.cost == pytest.approx(0.2)  # the first window replaces the prior
    assert (estimate.capacity, estimate.source) == (6, "measured")  # 8 fit: half again, at most
    estimate.observe(audio_sec=10.0, spent_sec=1.0)  # 0.1: speech with pauses
    estimate.roll(2 * WINDOW_SEC)
    assert estimate.cost == pytest.approx((1 - SMOOTHING) * 0.2 + SMOOTHING * 0.1)
    assert estimate.capacity == 8  # 0.18 fits 8, under the next rise's limit (9)


def test_until_measured_live_the_node_admits_a_stream_per_worker_whatever_the_prior() -> None:
    estimate = CapacityEstimate(CapacityPolicy(workers=2, ceiling=32), prior_cost=1.5)
    assert estimate.capacity == 2  # a start-up pass timed on a busy machine said 1
    estimate.roll(0.0)
    estimate.observe(audio_sec=10.0, spent_sec=15.0)  # live: slower than real time
    estimate.roll(WINDOW_SEC)
    assert estimate.capacity == 1


def test_past_the_busy_threshold_the_node_admits_what_the_busy_cost_fits() -> None:
    """A busy engine's passes are cheaper (shorter buffers): they set the streams past it."""
    policy = CapacityPolicy(workers=2, ceiling=32)
    estimate = CapacityEstimate(policy, prior_cost=0.45, busy_sessions=lambda: 3)
    assert estimate.capacity == 3  # start-up: 2 x 0.8 / 0.45
    estimate.roll(0.0)
    estimate.observe(audio_sec=20.0, spent_sec=5.0)  # steady: 0.25, 6 streams
    estimate.roll(WINDOW_SEC)
    assert (estimate.cost, estimate.busy_cost, estimate.capacity) == (0.25, None, 5)  # 6 fit
    estimate.observe(audio_sec=20.0, spent_sec=3.2, busy=True)  # busy: 0.16, 10 streams
    estimate.roll(2 * WINDOW_SEC)
    assert estimate.cost == 0.25  # no steady passes in that window: unchanged
    assert (estimate.busy_cost, estimate.capacity) == (pytest.approx(0.16), 8)  # risen from 5
    estimate.observe(audio_sec=20.0, spent_sec=3.2, busy=True)
    estimate.roll(3 * WINDOW_SEC)
    assert (estimate.busy_cost, estimate.capacity) == (pytest.approx(0.16), 10)
    assert estimate.source == "measured"


def test_the_figure_rises_by_half_again_per_window_and_falls_at_once() -> None:
    """Without a busy prior the busy mean starts from its first window, which streams
    that just started make the cheapest: a few windows said 13, where the node keeps 8."""
    policy = CapacityPolicy(workers=2, ceiling=32)
    estimate = CapacityEstimate(policy, prior_cost=0.45, busy_sessions=lambda: 3)
    assert estimate.capacity == 3
    estimate.roll(0.0)
    seen = []
    for window, cost in enumerate([0.12, 0.2, 0.2, 0.2], start=1):
        estimate.observe(audio_sec=10.0, spent_sec=10.0 * cost, busy=True)
        estimate.roll(window * WINDOW_SEC)
        seen.append((policy.streams_for(estimate.busy_cost), estimate.capacity))
    # What the busy mean fits, and what is admitted: 3 -> 5 -> 8 -> 12 at most.
    assert seen == [(13, 5), (11, 8), (10, 10), (10, 10)]
    estimate.observe(audio_sec=10.0, spent_sec=10.0, busy=True)  # a window at 1.0
    estimate.roll(5 * WINDOW_SEC)
    assert estimate.capacity == policy.streams_for(estimate.busy_cost) == 4  # at once
    fixed = CapacityEstimate(CapacityPolicy(workers=2, ceiling=32, override=20))
    fixed.roll(0.0)
    fixed.observe(audio_sec=10.0, spent_sec=1.0, busy=True)
    fixed.roll(WINDOW_SEC)
    assert fixed.capacity == 20  # LOCAL_CAPACITY is not limited


def test_a_busy_cost_that_fits_fewer_than_the_threshold_leaves_the_steady_figure_up_to_it() -> None:
    policy = CapacityPolicy(workers=2, ceiling=32)
    estimate = CapacityEstimate(policy, prior_cost=0.25, busy_sessions=lambda: 3)
    estimate.roll(0.0)
    estimate.observe(audio_sec=10.0, spent_sec=8.0, busy=True)  # 0.8: 2 streams
    estimate.roll(WINDOW_SEC)
    assert estimate.capacity == 3  # 6 at the steady cost, but past 3 the engine is busy
    unthresholded = CapacityEstimate(policy, prior_cost=0.25)  # never busy: steady only
    unthresholded.roll(0.0)
    unthresholded.observe(audio_sec=10.0, spent_sec=8.0, busy=True)
    unthresholded.roll(WINDOW_SEC)
    assert unthresholded.capacity == 6
    with_setting = CapacityPolicy(workers=2, ceiling=32, override=5)
    fixed = CapacityEstimate(with_setting, prior_cost=0.25, busy_sessions=lambda: 3)
    fixed.roll(0.0)
    fixed.observe(audio_sec=10.0, spent_sec=1.0, busy=True)
    fixed.roll(WINDOW_SEC)
    assert fixed.capacity == 5  # LOCAL_CAPACITY, whatever was measured


def test_a_busy_pass_timed_at_start_up_sets_the_streams_past_the_threshold_until_measured() -> None:
    """A fresh node admits what a busy pass fits, not only what the whole-window pass fits."""
    policy = CapacityPolicy(workers=2, ceiling=32)
    estimate = CapacityEstimate(policy, busy_sessions=lambda: 3)
    estimate.set_prior(0.45, busy_cost=0.17)  # tiny.en on 2 AMD EPYC cores
    assert (estimate.capacity, estimate.source) == (9, "start-up")  # 2 x 0.8 / 0.17
    assert estimate.busy_cost == 0.17
    estimate.roll(0.0)
    estimate.observe(audio_sec=20.0, spent_sec=5.0)  # steady passes: 0.25
    estimate.roll(WINDOW_SEC)
    assert (estimate.cost, estimate.busy_cost, estimate.capacity) == (0.25, 0.17, 9)
    estimate.observe(audio_sec=10.0, spent_sec=2.5, busy=True)  # busy passes said 0.25
    estimate.roll(2 * WINDOW_SEC)
    # A pass of the same kind timed at start-up: live windows move it by their weight.
    moved = (1 - SMOOTHING) * 0.17 + SMOOTHING * 0.25
    assert (estimate.busy_cost, estimate.capacity) == (pytest.approx(moved), 8)
    for window in range(3, 13):  # a minute and a half of busy passes at 0.25
        estimate.observe(audio_sec=10.0, spent_sec=2.5, busy=True)
        estimate.roll(window * WINDOW_SEC)
    assert (estimate.busy_cost, estimate.capacity) == (pytest.approx(0.25, abs=0.01), 6)
    slow = CapacityEstimate(policy, busy_sessions=lambda: 3)
    slow.set_prior(0.45, busy_cost=0.8)  # fits 2, fewer than the threshold: not used
    assert slow.capacity == 3
    fixed = CapacityEstimate(CapacityPolicy(workers=2, ceiling=32, override=4))
    fixed.set_prior(0.45, busy_cost=0.17)
    assert fixed.capacity == 4  # LOCAL_CAPACITY wins
    unthresholded = CapacityEstimate(policy)  # an engine that is never busy
    unthresholded.set_prior(0.45, busy_cost=0.17)
    assert unthresholded.capacity == 3


def test_a_window_that_heard_too_little_waits_for_more() -> None:
    estimate = CapacityEstimate(CapacityPolicy(workers=2, ceiling=32), prior_cost=0.4)
    estimate.roll(0.0)
    estimate.observe(audio_sec=MIN_WINDOW_AUDIO_SEC / 2, spent_sec=0.1)
    estimate.roll(WINDOW_SEC)
    assert (estimate.cost, estimate.windows) == (0.4, 0)  # one short pass says little
    estimate.observe(audio_sec=MIN_WINDOW_AUDIO_SEC, spent_sec=1.4)
    estimate.roll(WINDOW_SEC + 1)
    assert estimate.cost == pytest.approx(1.5 / (1.5 * MIN_WINDOW_AUDIO_SEC))


C = "192.0.2.1"  # a client address


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


def admission(capacity: int, **values: object) -> Admission:
    s = settings(local_capacity=capacity, **values)
    policy = CapacityPolicy(workers=2, ceiling=s.max_sessions, override=capacity)
    return Admission(s, CapacityEstimate(policy))


def test_the_door_refuses_when_the_default_pool_is_full_and_the_config_when_its_pool_is() -> None:
    node = admission(2, max_sessions=3)
    node.admit(Pool.LOCAL, C)
    node.admit(Pool.LOCAL, C)
    with pytest.raises(Overloaded) as full:
        node.check_door(Pool.LOCAL, C)
    assert full.value.code == "server_full" and "2 streams" in full.value.detail
    node.check_door(Pool.REMOTE, C)  # a Google default still has room
    node.admit(Pool.REMOTE, C)
    with pytest.raises(Overloaded):  # MAX_SESSIONS bounds both pools together
        node.admit(Pool.REMOTE, C)
    with pytest.raises(Overloaded):
        node.check_door(Pool.REMOTE, C)  # 3 sessions: the ceiling, whatever the pool
    node.release(Pool.LOCAL, C)
    node.check_door(Pool.LOCAL, C)
    node.admit(Pool.LOCAL, C)
    assert dict(node.active) == {Pool.LOCAL: 2, Pool.REMOTE: 1}


def test_pending_connections_take_no_slot_but_have_their_own_bound() -> None:
    node = admission(1, max_pending_connections=2, max_pending_per_client=5)
    refused: list[tuple[str, str]] = []
    node.on_refusal = lambda stage, code: refused.append((stage, code))
    with node.pending_connection(C), node.pending_connection(C):
        node.admit(Pool.LOCAL, C)  # two connections still sending configs did not fill the node
        node.release(Pool.LOCAL, C)
        with pytest.raises(Overloaded):
            node.check_door(Pool.LOCAL, C)
    assert node.pending == 0
    node.check_door(Pool.LOCAL, C)
    assert refused == [("handshake", "server_full")]


def test_a_draining_node_refuses_with_its_own_code_at_both_stages() -> None:
    node = admission(4)
    node.draining = True
    for check in (node.check_door, node.admit):
        with pytest.raises(Overloaded) as refused:
            check(Pool.LOCAL, C)
        assert refused.value.code == "shutting_down"
    assert node.sessions == 0


def test_admission_off_keeps_only_max_sessions() -> None:
    s = settings(admission_control=False, max_sessions=5)
    node = Admission(s, CapacityEstimate(CapacityPolicy(2, 5), prior_cost=2.0))
    assert node.local_capacity == 5  # the estimate (1 stream) is not applied
    assert node.load_ratio == 0.0


def test_one_client_fills_its_own_allowance_not_the_node() -> None:
    node = admission(10, max_pending_per_client=2, max_sessions_per_client=3)
    flood, other = "192.0.2.66", "198.51.100.7"
    with node.pending_connection(flood), node.pending_connection(flood):
        with pytest.raises(TooManyConnections) as refused:
            node.check_door(Pool.LOCAL, flood)
        assert refused.value.code == "too_many_connections" and http_status(refused.value) == 429
        node.check_door(Pool.LOCAL, other)  # another client is not affected
    for _ in range(3):
        node.admit(Pool.LOCAL, flood)
    with pytest.raises(TooManyConnections):
        node.check_door(Pool.LOCAL, flood)
    node.check_door(Pool.LOCAL, other)
    node.release(Pool.LOCAL, flood)
    node.check_door(Pool.LOCAL, flood)
    for _ in range(2):
        node.release(Pool.LOCAL, flood)
    assert not node.pending_by and not node.active_by  # nothing kept for gone clients


def test_local_engines_behind_refuse_whatever_the_estimate() -> None:
    s = settings(max_sessions=10)
    node = Admission(s, CapacityEstimate(CapacityPolicy(workers=2, ceiling=10), prior_cost=0.1))
    node.behind = lambda: True
    with pytest.raises(Overloaded) as refused:
        node.check_door(Pool.LOCAL, C)
    assert "behind" in refused.value.detail
    node.check_door(Pool.REMOTE, C)  # Google's streams do not wait for local cores
    node.settings.admission_control = False
    node.check_door(Pool.LOCAL, C)  # with admission off, only MAX_SESSIONS counts
    fixed = admission(4)  # LOCAL_CAPACITY: the operator's figure, not the live check
    fixed.behind = lambda: True
    fixed.check_door(Pool.LOCAL, C)
