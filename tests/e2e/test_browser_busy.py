"""The page in real Chromium against a full node: it says "busy, retry in N s"."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from playwright.sync_api import sync_playwright
from websockets.sync.client import connect

from bench.server import running_server
from tests.e2e.test_browser import FAKE_MICROPHONE, launch_with_microphone, page_url, watch
from tests.e2e.test_hardening import BASE_ENV, CONFIG

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def one_slot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("browser-busy") / "server.log"
    env = {**BASE_ENV, "LOCAL_CAPACITY": "1", "RETRY_AFTER_SEC": "7"}
    with running_server(env=env, log_path=log) as url:
        yield url


def test_page_says_busy_when_the_node_refuses_the_handshake(one_slot: str) -> None:
    with connect(one_slot) as held, sync_playwright() as playwright:
        held.send(json.dumps(CONFIG))
        assert json.loads(held.recv())["type"] == "metadata"  # the only slot is taken
        browser = launch_with_microphone(playwright, FAKE_MICROPHONE)
        try:
            page = browser.new_page()
            problems = watch(page)
            page.goto(page_url(one_slot))
            page.click("#start")
            page.wait_for_function(
                "() => document.querySelector('#status').dataset.state === 'error'",
                timeout=20_000,
            )
            status = page.text_content("#status") or ""
        finally:
            browser.close()
    assert status == "error: busy: the server takes no new session now; retry in 7 s.", status
    # Chromium logs the refused handshake itself (a 503); the page adds no error of its own.
    assert all("503" in p or "WebSocket" in p for p in problems), problems
