"""End to end: the real dashboard server in headless Chromium launches a tiny search."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.request import urlopen

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server(runs_dir, chromium):
    """``streamlit run app.py`` on a free port with AUTOML_HOME in tmp; yields its URL."""
    port = _free_port()
    log = open(runs_dir.parent / "streamlit.log", "wb")  # noqa: SIM115 - closed in finally
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            "app.py",
            "--server.headless",
            "true",
            "--server.port",
            str(port),
            "--server.address",
            "127.0.0.1",
            "--browser.gatherUsageStats",
            "false",
        ],
        cwd=ROOT,
        env={**os.environ, "AUTOML_HOME": str(runs_dir)},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if urlopen(f"{url}/_stcore/health", timeout=2).status == 200:
                    break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail(
                "streamlit did not start: " + (runs_dir.parent / "streamlit.log").read_text()
            )
        yield url
    finally:
        from automl_core.hosting import processes

        for study in processes.running_studies():
            processes.stop_search(study, grace_seconds=3)
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def _set_number(page, label: str, value: int) -> None:
    field = page.get_by_label(label, exact=True)
    field.fill(str(value))
    field.press("Enter")
    page.wait_for_timeout(400)


def test_launch_a_tiny_search_and_see_it_on_the_leaderboard(server):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(30_000)
        expect.set_options(timeout=30_000)
        page.goto(f"{server}/search")
        expect(page.get_by_role("heading", name="Search").first).to_be_visible(timeout=60_000)
        sidebar = page.get_by_test_id("stSidebar")
        sidebar.get_by_test_id("stSelectbox").filter(has_text="Dataset").locator("input").click()
        page.get_by_role("option").filter(has_text="digits").first.click()
        sidebar.get_by_test_id("stSelectbox").filter(has_text="Strategy").locator("input").click()
        page.get_by_role("option").filter(has_text="grid").first.click()
        _set_number(page, "Trials", 2)
        _set_number(page, "Max epochs per trial", 1)
        sidebar.get_by_text("Advanced").click()
        _set_number(page, "Max images (0 = all)", 120)
        name = sidebar.get_by_test_id("stTextInput").filter(has_text="Study name").locator("input")
        name.fill("e2e-tiny")
        name.press("Enter")
        launch = page.get_by_role("button", name="Launch search")
        expect(launch).to_be_enabled()
        launch.click()
        expect(page.get_by_text("Study e2e-tiny")).to_be_visible()
        expect(page.get_by_text("Search finished with 2 trials")).to_be_visible(timeout=180_000)
        page.get_by_role("link", name="Leaderboard").click()
        expect(page.get_by_role("heading", name="Leaderboard").first).to_be_visible()
        study_box = sidebar.get_by_test_id("stSelectbox").filter(has_text="Study")
        study_box.locator("input").click()
        page.get_by_role("option", name="e2e-tiny").click()
        expect(page.get_by_test_id("stMetricValue").nth(1)).to_have_text("2", timeout=30_000)
        browser.close()


def test_deep_link_on_a_fresh_server_opens_the_page_with_its_query(server):
    """A link straight to an inspection page, as the first request of a new server, lands
    on that page inside the router (navigation shown) with its study and trial kept."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(30_000)
        page.goto(f"{server}/filters?study=demo-mnist-5k&trial=1")
        expect(page.get_by_role("heading", name="Filters").first).to_be_visible(timeout=60_000)
        expect(page.get_by_test_id("stSidebarNav")).to_be_visible()
        expect(page.get_by_role("link", name="Leaderboard")).to_be_visible()
        page.wait_for_timeout(1500)
        assert "study=demo-mnist-5k" in page.url and "trial=1" in page.url
        assert "/filters" in page.url
        browser.close()
