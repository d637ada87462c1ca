"""Takes the README's screenshots: the Leaderboard and the Latent space page of the demo study.

Starts ``streamlit run app.py`` on a free port with a fresh runs folder (the demo study is
installed on start, as on a new machine), opens each page in headless Chromium (Debian's
``chromium``, driven by Playwright) and writes a PNG per page beside this file.

Usage: python assets/screenshots/capture.py   (from the repository root; about a minute)
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.request import urlopen

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
CHROMIUM = "/usr/bin/chromium"
VIEWPORT = {"width": 1400, "height": 900}
# page path, the heading to wait for, the file written, and what must be drawn before the shot
SHOTS = (
    ("leaderboard?study=demo-mnist-5k", "Leaderboard", "leaderboard.png", "stDataFrame"),
    (
        "latent_space?study=demo-mnist-5k&trial=3",
        "Latent space",
        "latent-space.png",
        "stPlotlyChart",
    ),
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(url: str, seconds: float = 90) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if urlopen(f"{url}/_stcore/health", timeout=2).status == 200:
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"the dashboard did not answer at {url} within {seconds:.0f} s")


def capture(url: str) -> list[Path]:
    """Opens each page of :data:`SHOTS` and saves its screenshot; returns the files."""
    from playwright.sync_api import expect, sync_playwright

    written = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page(viewport=VIEWPORT, device_scale_factor=1)
        page.set_default_timeout(120_000)
        for path, heading, name, drawn in SHOTS:
            page.goto(f"{url}/{path}")
            expect(page.get_by_role("heading", name=heading).first).to_be_visible()
            expect(page.get_by_test_id(drawn).first).to_be_visible()
            # the script has finished when Streamlit's running indicator is gone
            page.wait_for_function(
                "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"
            )
            page.wait_for_timeout(2500)  # Plotly's and the grid's first paint
            target = HERE / name
            page.screenshot(path=str(target))
            written.append(target)
        browser.close()
    return written


def main() -> int:
    """Runs a dashboard on the demo study and writes the screenshots."""
    port = _free_port()
    with tempfile.TemporaryDirectory() as home:
        server = subprocess.Popen(
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
            env={**os.environ, "AUTOML_HOME": home},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_healthy(url)
            for path in capture(url):
                print(f"wrote {path.relative_to(ROOT)}")
        finally:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
