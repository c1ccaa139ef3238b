"""Admission in-process: a full or draining node answers 503 before the upgrade.

`/ready` shows the figures a balancer or an autoscaler reads; `POST /drain`
ends the node's service without ending the process.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse

from app.asr.registry import Registry
from app.capacity import WINDOW_SEC
from app.core import SessionCore
from app.main import create_app
from app.settings import Settings
from tests.endpoint.test_ws import CONFIG, URL, send_audio, start
from tests.support.scripted import CountingLoader
from tests.support.ws import drain


def scripted_settings(**values: object) -> Settings:
    """Settings of a node whose default engine is the scripted one."""
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        default_backend="scripted",
        default_model="counting",
        **values,  # type: ignore[arg-type]
    )


def make_client(**values: object) -> TestClient:
    settings = scripted_settings(shutdown_grace_sec=0.5, **values)
    registry = Registry(settings, entries={})
    registry.register_loader("scripted", CountingLoader())
    return TestClient(create_app(settings, registry))


@pytest.fixture
def small() -> Iterator[TestClient]:
    with make_client(local_capacity=2, api_keys="k1") as client:
        yield client


AUTH = {"Authorization": "Bearer k1"}


def refusal(client: TestClient, headers: dict[str, str] | None = None) -> WebSocketDenialResponse:
    with pytest.raises(WebSocketDenialResponse) as refused:  # noqa: SIM117
        with client.websocket_connect(URL, headers=headers or AUTH):
            pass
    return refused.value


def metric(client: TestClient, name: str) -> float:
    text = client.get("/metrics", headers=AUTH).text
    match = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.MULTILINE)
    assert match, name
    return float(match.group(1))


def test_a_full_node_answers_503_with_retry_after_before_the_upgrade(small: TestClient) -> None:
    with (
        small.websocket_connect(URL, headers=AUTH) as a,
        small.websocket_connect(URL, headers=AUTH) as b,
    ):
        start(a)
        start(b)
        ready = small.get("/ready").json()
        assert (ready["active_sessions"], ready["capacity"], ready["accepting"]) == (2, 2, False)
        assert ready["capacity_source"] == "setting" and ready["retry_after_sec"] == 5
        refused = refusal(small)
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "5"
        body = json.loads(refused.content)
        assert body["type"] == "error" and body["code"] == "server_full"
        assert "try again in 5 s" in body["detail"]
        # A wrong key is still told so first (401), full or not.
        assert refusal(small, {"Authorization": "Bearer nope"}).status_code == 401
        assert (
            metric(small, 'asr_admission_refused_total{code="server_full",stage="handshake"}') == 1
        )
        assert metric(small, 'asr_sessions_active{pool="local"}') == 2
        assert metric(small, 'asr_session_capacity{pool="local"}') == 2
        assert metric(small, "asr_load_ratio") == 1.0
        a.send_text('{"type": "stop"}')
        assert drain(a)[1] == 1000
    # A slot freed: the next session starts.
    with small.websocket_connect(URL, headers=AUTH) as c:
        start(c)
        c.send_text('{"type": "stop"}')
        assert drain(c)[1] == 1000


def test_a_session_whose_pool_filled_after_the_door_gets_server_full_and_1013() -> None:
    with make_client(local_capacity=1) as client:
        with client.websocket_connect(URL) as early, client.websocket_connect(URL) as late:
            start(early)  # both passed the door; the first config takes the only slot
            late.send_text(json.dumps(CONFIG))
            messages, code = drain(late)
            assert [m["code"] for m in messages] == ["server_full"] and code == 1013
            early.send_text('{"type": "stop"}')
            drain(early)
        assert (
            metric_plain(client, 'asr_admission_refused_total{code="server_full",stage="config"}')
            == 1
        )


def metric_plain(client: TestClient, name: str) -> float:
    text = client.get("/metrics").text
    match = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.MULTILINE)
    assert match, name
    return float(match.group(1))


def test_drain_refuses_new_sessions_lets_running_ones_finish_and_keeps_the_process(
    small: TestClient,
) -> None:
    assert small.post("/drain").status_code == 401  # the same keys as the stream
    with small.websocket_connect(URL, headers=AUTH) as running:
        start(running)
        send_audio(running, 1.0)
        answer = small.post("/drain", headers=AUTH)
        assert (answer.status_code, answer.json()) == (
            202,
            {"status": "draining", "active_sessions": 1},
        )
        ready = small.get("/ready")
        assert ready.status_code == 503 and ready.json()["status"] == "draining"
        # Not accepting: as a full node's answer, with when to retry (STREAMING.md §10).
        assert ready.json()["accepting"] is False and ready.json()["checks"] == {}
        assert ready.json()["retry_after_sec"] >= 1
        refused = refusal(small)
        assert refused.status_code == 503 and json.loads(refused.content)["code"] == "shutting_down"
        # Within the grace the running session ends on its own terms: every word, then 1000.
        send_audio(running, 1.0)
        running.send_text('{"type": "stop"}')
        messages, code = drain(running)
        finals = "".join(m["text"] for m in messages if m.get("is_final"))
        assert (finals.split(), code) == (["w0", "w1", "end32000"], 1000)
    assert small.get("/health").status_code == 200  # the process still serves
    assert small.post("/drain", headers=AUTH).status_code == 202  # again: the same drain


def test_past_the_grace_a_drain_ends_sessions_with_their_finals_complete_and_1012(
    small: TestClient,
) -> None:
    with small.websocket_connect(URL, headers=AUTH) as running:
        start(running)
        send_audio(running, 2.0)
        small.post("/drain", headers=AUTH)  # grace 0.5 s, and the client never stops
        messages, code = drain(running)
    assert code == 1012
    assert [m["code"] for m in messages if m["type"] == "error"] == ["shutting_down"]
    assert messages[-1] == {"type": "complete"}
    finals = "".join(m["text"] for m in messages if m.get("is_final"))
    assert finals.split() == ["w0", "w1", "end32000"]  # every second sent is final


def test_the_engine_reads_busy_past_busy_sessions_and_idle_again_after() -> None:
    with make_client(busy_sessions=1, api_keys="k1") as client:
        assert metric(client, "asr_engine_busy") == 0
        with client.websocket_connect(URL, headers=AUTH) as a:
            start(a)
            send_audio(a, 0.5)
            assert metric(client, "asr_engine_busy") == 0  # one session: not past one
            with client.websocket_connect(URL, headers=AUTH) as b:
                start(b)
                send_audio(b, 0.5)
                assert until(lambda: metric(client, "asr_engine_busy") == 1)
            assert until(lambda: metric(client, "asr_engine_busy") == 0)


def until(condition: Callable[[], bool], timeout_sec: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_sec
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


class MeasuredLoader(CountingLoader):
    """A loader whose start-up pass measured 0.5 core-seconds per audio second."""

    def stream_cost(self) -> float | None:
        return 0.5


@pytest.mark.parametrize(("setting", "busy_sessions"), [(0, 3), (7, 7)])
def test_ready_shows_where_the_engine_turns_busy(setting: int, busy_sessions: int) -> None:
    settings = scripted_settings(whisper_num_workers=2, busy_sessions=setting)
    registry = Registry(settings, entries={})
    registry.register_loader("scripted", MeasuredLoader())
    with TestClient(create_app(settings, registry)) as client:
        ready = client.get("/ready").json()
    # 0: the streams the start-up cost fits, 2 workers x 0.8 / 0.5; else the setting.
    assert (ready["busy"], ready["busy_sessions"]) == (False, busy_sessions)
    assert ready["speaking_sessions"] == 0


class BusyMeasuredLoader(MeasuredLoader):
    """...whose start-up also timed a busy engine's pass: 0.2 per audio second."""

    def busy_stream_cost(self) -> float | None:
        return 0.2


def test_a_fresh_node_admits_what_its_start_up_busy_pass_fits() -> None:
    settings = scripted_settings(whisper_num_workers=2)
    registry = Registry(settings, entries={})
    registry.register_loader("scripted", BusyMeasuredLoader())
    with TestClient(create_app(settings, registry)) as client:
        ready = client.get("/ready").json()
        busy_cost = metric(client, "asr_stream_cost_busy")
    # Busy past 3 (2 x 0.8 / 0.5); past 3 the busy cost fits 2 x 0.8 / 0.2 = 8.
    assert (ready["busy_sessions"], ready["capacity"], ready["capacity_source"]) == (
        3,
        8,
        "start-up",
    )
    assert busy_cost == 0.2
    settings = scripted_settings(whisper_num_workers=2)
    registry = Registry(settings, entries={})
    registry.register_loader("scripted", MeasuredLoader())  # timed no busy pass
    with TestClient(create_app(settings, registry)) as client:
        assert client.get("/ready").json()["capacity"] == 3


def test_the_node_learns_a_streams_cost_from_steady_and_busy_passes_not_light_ones() -> None:
    settings = scripted_settings(whisper_num_workers=2, busy_sessions=3)
    core = SessionCore(settings, Registry(settings, entries={}))
    estimate = core.admission.estimate
    estimate.roll(0.0)
    core._observe_pass(10.0, 6.0, "light")  # a lone stream's passes and previews: 0.6
    estimate.roll(WINDOW_SEC)
    assert estimate.windows == 0  # nothing learned from them
    core._observe_pass(10.0, 2.5, "steady")
    estimate.roll(2 * WINDOW_SEC)
    assert (estimate.cost, estimate.busy_cost, estimate.capacity) == (0.25, None, 6)
    core._observe_pass(10.0, 1.6, "busy")
    estimate.roll(3 * WINDOW_SEC)
    # 2 workers x 0.8 / 0.16: past the engine's busy_sessions (3), the busy cost sets it,
    # risen from 6 by half again per window.
    assert (estimate.busy_cost, estimate.capacity) == (pytest.approx(0.16), 9)
    core._observe_pass(10.0, 1.6, "busy")
    estimate.roll(4 * WINDOW_SEC)
    assert estimate.capacity == 10
    core.engine_load.busy_sessions = 12  # busy only past 12: 7 to 12 streams run steady
    assert estimate.capacity == 6
    core.engine_load.busy_sessions = 1
    assert estimate.capacity == 10
