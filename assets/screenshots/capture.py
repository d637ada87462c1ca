"""Takes the README's screenshots: the Leaderboard and the Latent space page of the demo study.

Starts ``streamlit run app.py`` on a free port with a fresh runs folder (the demo study is
installed on start, as on a new machine), opens each page in headless Chromium (Debian's
``chromium``, driven by Playwright) and writes a PNG per page beside this file.

Usage: python assets/screenshots/capture.py   (from the repository root; about a minute)
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
# the server helpers of the cold-start benchmark: one way to run the dashboard for a browser
sys.path.insert(0, str(ROOT / "bench"))
from cold_server import (  # noqa: E402
    CHROMIUM,
    CHROMIUM_ARGS,
    free_port,
    start_server,
    stop_server,
    wait_ready,
)

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


def capture(url: str) -> list[Path]:
    """Opens each page of :data:`SHOTS` and saves its screenshot; returns the files."""
    from playwright.sync_api import expect, sync_playwright

    written = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
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
    port = free_port()
    with tempfile.TemporaryDirectory() as home:
        server = start_server(Path(home), port, subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_ready(url, server)
            for path in capture(url):
                print(f"wrote {path.relative_to(ROOT)}")
        finally:
            stop_server(server)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
