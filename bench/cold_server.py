"""A cold server's first page: from ``streamlit run app.py`` to a complete landing page.

For each repeat a fresh, empty AUTOML_HOME is made and two cases run one after the other: a
new install (the server installs the bundled demo study on its first request) and a
restarted server on the same folder; a restart whose readiness probe is Streamlit's script
health check (``/_stcore/script-health-check``, on in ``.streamlit/config.toml``: it runs the
landing page once, so imports, the storage and caches are warm before the first visitor);
then, as the floor no code of ours can go below, a bare
Streamlit script that shows the same visible elements (``bench/bare_streamlit_page.py``).
Each starts its server as its own process. The script
polls ``/_stcore/health`` until the server answers, then opens the landing page in headless
Chromium (Playwright) and waits until it is complete: the "Autoencoder AutoML" title, the
"Best trial: #" heading, and at least two loaded images in the main area (the strips of
test images and their reconstructions). Times measured per repeat:

- server start to ready: process start until the health endpoint answers 200;
- first request to title: ``page.goto`` until the h1 title is visible;
- first request to complete page: ``page.goto`` until the page is complete;
- server start to complete page: process start until the page is complete.

The target of the speed issue is the first page under 3 s (first request to complete page).
The machine's speed (GFLOP/s of a float32 matmul, usable cores, UTC time) is printed first,
since machines of this kind differ by day.

Usage (from the repository root, with the venv active)::

    python bench/cold_server.py [--repeats 3] [--out FILE.json]

Pin it to a core to keep it off other work, e.g. ``taskset -c 0 python bench/cold_server.py``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.request import urlopen

from machine import machine_speed  # bench/ is the script's folder

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
TITLE = "Autoencoder AutoML"
BEST = "Best trial: #"
MIN_IMAGES = 2
TARGET_SECONDS = 3.0
READY_TIMEOUT = 120.0
BARE_CASE = "bare Streamlit page"
BARE_PAGE = "bench/bare_streamlit_page.py"
PROBED_CASE = "restarted, readiness by script health check"
CASES = ("new install", "restarted server", PROBED_CASE, BARE_CASE)
PAGE_TIMEOUT_MS = 180_000
# loaded <img> elements in the main area (not the sidebar's logo)
LOADED_IMAGES_JS = """
() => Array.from(document.querySelectorAll('[data-testid="stMain"] img'))
    .filter((img) => img.complete && img.naturalWidth > 0).length
"""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(home: Path, port: int, log, script: str = "app.py") -> subprocess.Popen:
    """``streamlit run <script>`` on ``port`` with AUTOML_HOME=``home``, output to ``log``."""
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        script,
        "--server.headless",
        "true",
        "--server.port",
        str(port),
        "--server.address",
        "127.0.0.1",
        "--browser.gatherUsageStats",
        "false",
    ]
    env = {**os.environ, "AUTOML_HOME": str(home), "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_ready(url: str, process: subprocess.Popen) -> float:
    """Poll the health endpoint until it answers 200; the perf_counter time it did."""
    deadline = time.perf_counter() + READY_TIMEOUT
    while time.perf_counter() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"streamlit exited with {process.returncode} before ready")
        try:
            with urlopen(f"{url}/_stcore/health", timeout=2) as answer:
                if answer.status == 200:
                    return time.perf_counter()
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"streamlit not ready after {READY_TIMEOUT:.0f} s")


def stop_server(process: subprocess.Popen) -> None:
    """Terminate the server and its children (the UMAP warm-up), as a service manager stops
    a service, so the next case starts on an idle machine; kill them if they do not go."""
    import signal

    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 15)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            time.sleep(0.5)  # the children get the same signal
            return
        except subprocess.TimeoutExpired:
            continue


def load_first_page(browser, url: str) -> tuple[float, float, float, int]:
    """Open ``url`` in a new page: perf_counter times of the request, the visible title and
    the complete page, and how many images had loaded in the main area."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    try:
        t_request = time.perf_counter()
        page.goto(url, wait_until="commit")
        page.get_by_role("heading", name=TITLE, level=1).first.wait_for(state="visible")
        t_title = time.perf_counter()
        page.get_by_text(BEST).first.wait_for(state="visible")
        page.wait_for_function(f"({LOADED_IMAGES_JS})() >= {MIN_IMAGES}", polling=50)
        t_done = time.perf_counter()
        images = page.evaluate(LOADED_IMAGES_JS)
    finally:
        page.close()
    return t_request, t_title, t_done, images


def serve_once(
    browser, home: Path, script: str = "app.py", script_health_check: bool = False
) -> dict:
    """Starts a server on ``home``, loads its first page, stops it: the times in seconds.
    With ``script_health_check``, the server is first asked for Streamlit's script health
    check (which runs the script once, as a deployment's readiness probe would)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = home.parent / f"{home.name}.log"
    with open(log_path, "wb") as log:
        t0 = time.perf_counter()
        process = start_server(home, port, log, script)
        try:
            t_ready = wait_ready(url, process)
            warmed = 0.0
            if script_health_check:
                started = time.perf_counter()
                with urlopen(
                    f"{url}/_stcore/script-health-check", timeout=READY_TIMEOUT
                ) as answer:
                    answer.read()
                warmed = time.perf_counter() - started
            t_request, t_title, t_done, images = load_first_page(browser, f"{url}/")
        except Exception:
            log.flush()
            print(log_path.read_text(errors="replace")[-4000:], file=sys.stderr)
            raise
        finally:
            stop_server(process)
    log_path.unlink(missing_ok=True)
    return {
        "start_to_ready_s": t_ready - t0,
        "request_to_title_s": t_title - t_request,
        "request_to_complete_s": t_done - t_request,
        "start_to_complete_s": t_done - t0,
        "ready_to_request_s": t_request - t_ready,
        "script_health_check_s": warmed,
        "images_loaded": images,
    }


def one_repeat(browser, index: int) -> list[dict]:
    """A new install (an empty AUTOML_HOME: the demo study is installed on the first page),
    a restart of the server on the same folder, a restart whose readiness is Streamlit's
    script health check (it runs the landing page once before the visitor comes), and
    Streamlit's floor (the same visible elements from a bare script); all cleaned up."""
    home = Path(tempfile.mkdtemp(prefix="automl-cold-"))
    try:
        rows = []
        for case in CASES:
            script = BARE_PAGE if case == BARE_CASE else "app.py"
            probe = case == PROBED_CASE
            rows.append(
                {"repeat": index, "case": case, **serve_once(browser, home, script, probe)}
            )
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return rows


def print_table(rows: list[dict]) -> dict:
    """The Markdown table of the repeats and, per case, their medians; the medians."""
    columns = (
        "start_to_ready_s",
        "request_to_title_s",
        "request_to_complete_s",
        "start_to_complete_s",
    )
    print(
        "\n| case | repeat | server start to ready (s) | first request to title (s) "
        "| first request to complete page (s) | server start to complete page (s) |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    medians = {}
    for case in CASES:
        ran = [row for row in rows if row["case"] == case]
        for row in ran:
            print(
                f"| {case} | {row['repeat']} | "
                + " | ".join(f"{row[c]:.2f}" for c in columns)
                + " |"
            )
        medians[case] = {c: statistics.median(row[c] for row in ran) for c in columns}
        print(
            f"| {case} | median | " + " | ".join(f"{medians[case][c]:.2f}" for c in columns) + " |"
        )
    return medians


def main() -> None:
    """Machine speed, then the repeats, the table, the verdict and optionally the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="cold servers to start")
    parser.add_argument("--out", type=Path, help="write the raw numbers here as JSON")
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        sys.exit(f"no Chromium at {CHROMIUM}")

    from playwright.sync_api import sync_playwright

    speed = machine_speed()
    cores = len(os.sched_getaffinity(0))
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    print(f"machine: {speed:.0f} GFLOP/s (2048x2048 float32 matmul), {cores} usable cores, {now}")
    print(f"cold server's first page, {args.repeats} repeats", flush=True)

    rows = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for index in range(1, args.repeats + 1):
                for row in one_repeat(browser, index):
                    rows.append(row)
                    print(
                        f"  repeat {index}, {row['case']}: ready {row['start_to_ready_s']:.2f} s, "
                        f"title {row['request_to_title_s']:.2f} s, "
                        f"complete {row['request_to_complete_s']:.2f} s "
                        f"({row['images_loaded']} images)",
                        flush=True,
                    )
        finally:
            browser.close()

    medians = print_table(rows)
    met = {case: medians[case]["request_to_complete_s"] < TARGET_SECONDS for case in CASES}
    for case in CASES:
        print(
            f"target, {case}: first page under {TARGET_SECONDS:.0f} s (first request to "
            f"complete page): {'met' if met[case] else 'missed'} "
            f"(median {medians[case]['request_to_complete_s']:.2f} s)"
        )
    if args.out is not None:
        record = {
            "machine": {"gflops": speed, "usable_cores": cores, "utc": now},
            "target_s": TARGET_SECONDS,
            "repeats": rows,
            "medians": medians,
            "target_met": met,
        }
        args.out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
