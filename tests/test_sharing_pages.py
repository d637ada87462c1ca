"""A shared dashboard with AppTest: login, lockout, what each role sees and can do, exports."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from automl_core.hosting import access, processes
from automl_core.search import workers
from automl_core.storage import store

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 90
ALICE = access.User("alice", "operator")
BOB = access.User("bob", "operator")
ADMIN = access.User("root", "admin")


def FORCED_SEARCH_PAGE():  # noqa: N802
    """The Search page with every button read as clicked, as a crafted request would."""
    import runpy
    from pathlib import Path

    import streamlit as st

    import automl_core

    real = st.button
    st.button = lambda *args, **kwargs: (real(*args, **kwargs), True)[1]
    try:
        runpy.run_path(str(Path(automl_core.__file__).parent.parent / "pages" / "search.py"))
    finally:
        st.button = real


def LOGIN_PAGE():  # noqa: N802 - a page, named like the page paths it stands beside
    """Only the sidebar's login block."""
    from dashboard import auth

    auth.login_ui()


@pytest.fixture(scope="module")
def password_hash():
    return access.hash_password("alice-secret-1")


@pytest.fixture
def shared(runs_dir, monkeypatch, password_hash):
    """``shared(path, user=None)``: an AppTest of a page in shared mode (as ``user``)."""
    monkeypatch.delenv("AUTOML_MODE", raising=False)
    monkeypatch.setenv("AUTOML_SECRETS", str(runs_dir / "no-secrets.toml"))

    def make(path, user: access.User | None = None) -> AppTest:
        if callable(path):
            at = AppTest.from_function(path, default_timeout=TIMEOUT)
        else:
            at = AppTest.from_file(str(ROOT / path), default_timeout=TIMEOUT)
        at.secrets["automl"] = {
            "mode": "shared",
            "users": {
                "alice": {"role": "operator", "password_hash": password_hash},
                "root": {"role": "admin", "password_hash": password_hash},
            },
        }
        if user is not None:
            at.session_state["_access_user"] = user
        return at

    return make


@pytest.fixture
def alices_search(runs_dir):
    """A running fake search of study ``busy`` launched by alice."""
    process = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "automl_core"],
        start_new_session=True,
    )
    workers.launches_dir().mkdir(parents=True, exist_ok=True)
    log = workers.launches_dir() / "busy.log"
    log.write_text("alice's secret log line\n")
    record = processes.LaunchRecord("busy", process.pid, time.time(), str(log), [], "alice")
    (workers.launches_dir() / "busy.json").write_text(json.dumps(record.__dict__))
    yield process
    process.kill()
    process.wait()


def _texts(elements) -> str:
    return " | ".join(str(e.value) for e in elements)


class TestLogin:
    def test_local_mode_shows_no_login(self, runs_dir, monkeypatch):
        monkeypatch.delenv("AUTOML_MODE", raising=False)
        monkeypatch.setenv("AUTOML_SECRETS", str(runs_dir / "none.toml"))
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT).run()
        assert not at.exception
        assert not [t for t in at.text_input if t.key == "login_name"]

    def test_router_shows_the_login_in_shared_mode(self, shared):
        at = shared("app.py").run()
        assert not at.exception
        assert "Viewing as a visitor" in _texts(at.sidebar.caption)
        assert at.text_input(key="login_name") and at.button(key="login")

    def test_visitor_logs_in_and_out(self, shared):
        # the login block alone: AppTest re-runs a routed page without app.py on later runs
        at = shared(LOGIN_PAGE).run()
        assert not at.exception
        at.text_input(key="login_name").set_value("alice")
        at.text_input(key="login_password").set_value("alice-secret-1")
        at.button(key="login").click().run()
        assert not at.exception and not at.sidebar.error
        assert "Signed in as **alice** (operator)" in _texts(at.sidebar.caption)
        assert at.session_state["login_password"] == ""  # not kept
        at.button(key="logout").click().run()
        assert "Viewing as a visitor" in _texts(at.sidebar.caption)

    def test_wrong_password_then_lockout(self, shared, monkeypatch):
        monkeypatch.setenv("AUTOML_MAX_LOGIN_FAILURES", "2")
        at = shared(LOGIN_PAGE).run()
        for _ in range(2):
            at.text_input(key="login_name").set_value("alice")
            at.text_input(key="login_password").set_value("guess")
            at.button(key="login").click().run()
            assert "wrong user name or password" in _texts(at.sidebar.error)
        at.text_input(key="login_password").set_value("alice-secret-1")
        at.button(key="login").click().run()
        assert "too many failed logins for 'alice'" in _texts(at.sidebar.error)
        assert "Viewing as a visitor" in _texts(at.sidebar.caption)

    def test_unknown_user_gets_the_same_answer(self, shared):
        at = shared(LOGIN_PAGE).run()
        at.text_input(key="login_name").set_value("mallory")
        at.text_input(key="login_password").set_value("alice-secret-1")
        at.button(key="login").click().run()
        assert _texts(at.sidebar.error) == "wrong user name or password"

    def test_oidc_button_only_with_a_provider(self, shared):
        at = shared(LOGIN_PAGE).run()
        assert not [b for b in at.button if b.key == "login_oidc"]
        at = shared(LOGIN_PAGE)
        at.secrets["auth"] = {"redirect_uri": "http://localhost:8501/oauth2callback"}
        at.run()
        assert not at.exception and at.button(key="login_oidc")


class TestSearchPage:
    def test_visitor_sees_a_disabled_launch(self, shared):
        at = shared("pages/search.py").run()
        assert not at.exception
        assert "log in as an operator" in _texts(at.info)
        assert at.button(key="launch").disabled

    def test_a_forced_launch_of_a_visitor_is_refused_by_the_core(self, shared, runs_dir):
        at = shared(FORCED_SEARCH_PAGE).run()
        assert not at.exception
        assert "visitor (viewer) may not launch" in _texts(at.error)
        assert processes.running_studies() == []
        assert not list(workers.launches_dir().glob("*.json"))

    def test_another_operator_sees_progress_but_no_stop_nor_log(self, shared, alices_search):
        at = shared("pages/search.py", BOB).run()
        assert not at.exception
        assert "launched by alice" in _texts(at.caption)
        assert not [b for b in at.button if b.key == "stop"]
        assert "alice's secret log line" not in str([c.value for c in at.code])
        assert alices_search.poll() is None

    def test_owner_sees_the_log_and_stop(self, shared, alices_search):
        at = shared("pages/search.py", ALICE).run()
        assert not at.exception
        assert "alice's secret log line" in _texts(at.code)
        assert at.button(key="stop")

    def test_admin_stops_anyones_search(self, shared, alices_search):
        at = shared("pages/search.py", ADMIN).run()
        at.button(key="stop").click().run()
        assert not at.exception
        alices_search.wait(timeout=20)
        assert not processes.is_running("busy")


class TestUploadsOnThePage:
    def test_viewer_upload_is_refused_by_the_core(self, shared, runs_dir):
        def page():
            import io as _io

            import numpy as _np

            from dashboard import search_form

            buffer = _io.BytesIO()
            _np.savez(buffer, x=_np.zeros((5, 4, 4)))
            search_form.upload_ui("data.npz", buffer.getvalue())

        at = AppTest.from_function(page, default_timeout=TIMEOUT)
        at.secrets["automl"] = {"mode": "shared"}
        at.run()
        assert not at.exception
        assert "may not upload" in _texts(at.sidebar.error)
        assert not (runs_dir / "uploads").exists()

    def test_operator_upload_lands_in_their_folder(self, shared, runs_dir):
        def page():
            import io as _io

            import numpy as _np

            from dashboard import search_form

            buffer = _io.BytesIO()
            _np.savez(buffer, x=_np.zeros((5, 4, 4)))
            search_form.upload_ui("data.npz", buffer.getvalue())

        at = AppTest.from_function(page, default_timeout=TIMEOUT)
        at.secrets["automl"] = {"mode": "shared"}
        at.session_state["_access_user"] = ALICE
        at.run()
        assert not at.exception and not at.sidebar.error
        saved = list((runs_dir / "uploads" / "alice").iterdir())
        assert len(saved) == 1 and saved[0].name.startswith("data-")


class TestExportPage:
    def test_visitor_downloads_a_bundle_and_a_report(self, shared, tiny_copy):
        at = shared("pages/export.py").run()
        at.selectbox(key="study").set_value("tiny").run()
        assert not at.exception and not at.error
        assert not [t for t in at.text_input if t.key == "delete_confirm"]  # admins only
        # one click each: both downloads are offered at once, their files made on the click
        buttons = at.get("download_button")
        assert [b.proto.label.rsplit(".", 1)[-1] for b in buttons] == ["zip", "html"]
        assert all(b.proto.deferred_file_id for b in buttons)

    def test_admin_deletes_a_study(self, shared, tiny_copy):
        at = shared("pages/export.py", ADMIN).run()
        at.selectbox(key="study").set_value("tiny").run()
        assert at.button(key="delete").disabled
        at.text_input(key="delete_confirm").set_value("tiny").run()
        at.button(key="delete").click().run()
        assert not at.exception
        assert "deleted" in _texts(at.success)
        assert "tiny" not in store.study_names(store.default_storage_url())

    def test_crafted_query_parameters(self, shared, tiny_copy):
        at = shared("pages/export.py")
        at.query_params["study"] = "../../etc/<script>"
        at.query_params["trial"] = "-1"
        at.run()
        assert not at.exception
        assert at.selectbox(key="study").value in store.study_names(store.default_storage_url())


def _npz() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, x=np.zeros((5, 4, 4)))
    return buffer.getvalue()


class TestDeploy:
    """The container files, read statically (no registry here to pull a base image from)."""

    def _dockerfile(self) -> list[str]:
        text = (ROOT / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
        return [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]

    def test_base_image_is_a_build_argument(self):
        lines = self._dockerfile()
        first_from = next(i for i, line in enumerate(lines) if line.startswith("FROM "))
        assert any(line.startswith("ARG BASE_IMAGE=") for line in lines[:first_from])
        assert lines[first_from] == "FROM ${BASE_IMAGE}"

    def test_serves_as_a_non_root_user_with_a_health_check(self):
        lines = self._dockerfile()
        users = [line.split()[1] for line in lines if line.startswith("USER ")]
        assert users and users[-1] not in ("root", "0")
        assert any("useradd" in line and "automl" in line for line in lines)
        health = next(line for line in lines if line.startswith("HEALTHCHECK "))
        assert "/_stcore/health" in health
        cmd = next(line for line in lines if line.startswith("CMD "))
        assert json.loads(cmd[4:])[:3] == ["streamlit", "run", "app.py"]
        assert "EXPOSE 8501" in lines

    def test_dockerignore_keeps_secrets_and_state_out(self):
        ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
        assert {".streamlit/secrets.toml", ".git", ".venv", "runs"} <= set(ignored)

    def test_compose_runs_dashboard_postgres_and_workers_on_one_volume(self):
        import yaml

        compose = yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))
        services = compose["services"]
        assert {"dashboard", "worker", "db"} <= set(services)
        for name in ("dashboard", "worker"):
            env = services[name]["environment"]
            assert env["AUTOML_STORAGE"].startswith("postgresql+psycopg://automl:")
            assert "@db:5432/automl" in env["AUTOML_STORAGE"]
            assert any(v.startswith("automl-data:/data") for v in services[name]["volumes"])
            assert services[name]["depends_on"]["db"]["condition"] == "service_healthy"
        assert services["worker"]["command"][2:5] == ["automl_core", "worker", "--study"]
        assert "replicas" in services["worker"]["deploy"]
        assert "/_stcore/health" in " ".join(services["dashboard"]["healthcheck"]["test"])
        assert any(
            "secrets.toml" in v and v.endswith(":ro") for v in services["dashboard"]["volumes"]
        )
        assert "pg_isready" in " ".join(services["db"]["healthcheck"]["test"])

    def test_production_settings(self):
        import tomllib

        config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text(encoding="utf-8"))
        assert config["server"]["enableXsrfProtection"] is True
        assert config["browser"]["gatherUsageStats"] is False
        assert config["client"]["showErrorDetails"] == "none"
        assert config["server"]["maxUploadSize"] == 50

    @pytest.mark.slow
    def test_the_images_command_and_health_check_outside_a_container(self, runs_dir):
        """Runs the image's CMD on a free port and its HEALTHCHECK command against it."""
        import socket

        lines = self._dockerfile()
        cmd = json.loads(next(line for line in lines if line.startswith("CMD "))[4:])
        health = next(line for line in lines if line.startswith("HEALTHCHECK "))
        probe = json.loads(health[health.index("CMD ") + 4 :])
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [sys.executable, "-m", *cmd[:-2], "--server.address=127.0.0.1"]
        cmd += [f"--server.port={port}"]
        probe = [sys.executable, *probe[1:-1], probe[-1].replace("8501", str(port))]
        server = subprocess.Popen(
            cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            healthy = False
            for _ in range(120):
                if subprocess.run(probe, capture_output=True, timeout=10).returncode == 0:
                    healthy = True
                    break
                time.sleep(0.5)
            assert healthy
        finally:
            server.terminate()
            server.wait(timeout=20)
        assert subprocess.run(probe, capture_output=True, timeout=10).returncode != 0


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic"]
CHROMIUM_ARGS += ["--no-first-run", "--disable-background-networking", "--disable-sync"]


@pytest.fixture
def shared_server(runs_dir, tmp_path, password_hash, chromium):
    """``streamlit run app.py`` in shared mode with users in a secrets file; yields its URL."""
    import socket
    from urllib.request import urlopen

    users = {"alice": "operator", "bob": "operator", "carol": "operator", "root": "admin"}
    secrets_file = tmp_path / "secrets.toml"
    secrets_file.write_text(
        '[automl]\nmode = "shared"\n'
        + "".join(
            f'[automl.users.{name}]\nrole = "{role}"\npassword_hash = "{password_hash}"\n'
            for name, role in users.items()
        )
    )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "AUTOML_HOME": str(runs_dir), "AUTOML_SECRETS": str(secrets_file)}
    env["AUTOML_MAX_LOGIN_FAILURES"] = "2"
    env.pop("AUTOML_MODE", None)
    log = open(tmp_path / "streamlit.log", "wb")  # noqa: SIM115 - closed in finally
    command = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless=true"]
    command += [f"--server.port={port}", "--server.address=127.0.0.1"]
    command += [f"--secrets.files={secrets_file}"]
    server = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                if urlopen(f"{url}/_stcore/health", timeout=2).status == 200:
                    break
            except OSError:
                time.sleep(0.5)
        yield url
    finally:
        for study in processes.running_studies():
            processes.stop_search(study, grace_seconds=3, actor=ADMIN)
        server.terminate()
        server.wait(timeout=20)
        log.close()


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.timeout(600)  # a server, a browser and a launched search
def test_shared_dashboard_in_chromium(shared_server):
    """Visitor, wrong password and lockout, operator launch, another operator, an admin."""
    from playwright.sync_api import expect, sync_playwright

    def open_page(browser, path: str):
        page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
        page.set_default_timeout(120_000)  # a search trains on the same slow cores
        page.goto(f"{shared_server}/{path}")
        return page

    def log_in(page, name: str, password: str = "alice-secret-1") -> None:
        sidebar = page.get_by_test_id("stSidebar")
        sidebar.get_by_label("User name").fill(name)
        field = sidebar.get_by_label("Password", exact=True)
        field.fill(password)
        field.press("Enter")
        page.wait_for_timeout(500)
        sidebar.get_by_role("button", name="Log in", exact=True).click()
        # let the rerun the click started finish, so the next attempt is not swallowed by it
        page.wait_for_timeout(800)
        expect(page.get_by_test_id("stStatusWidget")).to_have_count(0, timeout=60_000)

    def settle(page) -> None:
        """Waits for the rerun a widget change started, so the next change does not cut it."""
        page.wait_for_timeout(400)
        expect(page.get_by_test_id("stStatusWidget")).to_have_count(0, timeout=60_000)

    def number(page, label: str, value: int) -> None:
        field = page.get_by_label(label, exact=True)
        field.fill(str(value))
        field.press("Enter")
        settle(page)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        expect.set_options(timeout=60_000)
        # a visitor sees every page; Launch is disabled and there is nothing to stop
        page = open_page(browser, "search")
        expect(page.get_by_text("log in as an operator to launch")).to_be_visible()
        expect(page.get_by_role("button", name="Launch search")).to_be_disabled()
        for title in ("Leaderboard", "Export", "Filters", "Reconstructions"):
            page.get_by_role("link", name=title).click()
            expect(page.get_by_role("heading", name=title).first).to_be_visible()
            expect(page.get_by_test_id("stException")).to_have_count(0)
        expect(page.get_by_role("button", name="Delete study")).to_have_count(0)
        # wrong password, then the lockout of that user name
        log_in(page, "carol", "guess-one")
        expect(page.get_by_text("wrong user name or password")).to_be_visible()
        log_in(page, "carol", "guess-two")
        log_in(page, "carol")
        expect(page.get_by_text("too many failed logins for 'carol'")).to_be_visible()

        # an operator logs in and launches a tiny search
        def operator_form():
            page = open_page(browser, "search")
            log_in(page, "alice")
            expect(page.get_by_text("Signed in as alice (operator)")).to_be_visible()
            sidebar = page.get_by_test_id("stSidebar")
            sidebar.get_by_test_id("stSelectbox").filter(has_text="Dataset").locator(
                "input"
            ).click()
            page.get_by_role("option").filter(has_text="digits").first.click()
            settle(page)
            sidebar.get_by_test_id("stSelectbox").filter(has_text="Strategy").locator(
                "input"
            ).click()
            page.get_by_role("option").filter(has_text="random").first.click()
            settle(page)
            number(page, "Trials", 50)
            number(page, "Max epochs per trial", 1)
            name = sidebar.get_by_test_id("stTextInput").filter(has_text="Study name")
            name.locator("input").fill("shared-e2e")
            name.locator("input").press("Enter")
            settle(page)
            return page

        alice = operator_form()
        if alice.get_by_text("Choose at least one value").count():
            # a known, rare race on Streamlit 1.67 (open on issue 21's note): quick reruns left
            # the space's choices empty; a fresh session fills the form once more
            alice.close()
            alice = operator_form()
        alice.get_by_role("button", name="Launch search").click()
        expect(alice.get_by_text("Study shared-e2e")).to_be_visible()
        expect(alice.get_by_role("button", name="Stop")).to_be_visible()
        assert processes.read_record("shared-e2e").owner == "alice"
        # another operator follows it but cannot stop it nor read its log
        bob = open_page(browser, "search")
        log_in(bob, "bob")
        # .first: while a slow rerun replaces the live fragment, its previous (stale) copy
        # is still on the page for a moment
        expect(bob.get_by_text("launched by alice").first).to_be_visible()
        bob.wait_for_timeout(3000)
        expect(bob.get_by_role("button", name="Stop")).to_have_count(0)
        expect(bob.get_by_text("Log", exact=True)).to_have_count(0)
        assert processes.is_running("shared-e2e")
        # an admin stops it
        root = open_page(browser, "search")
        log_in(root, "root")
        root.get_by_role("button", name="Stop").click()
        deadline = time.time() + 60
        while time.time() < deadline and processes.is_running("shared-e2e"):
            time.sleep(0.5)
        assert not processes.is_running("shared-e2e")
        browser.close()


@pytest.mark.slow
def test_image_builds_and_serves_with_podman(tmp_path):
    """Builds the Dockerfile with podman on a local base image and serves its file system.

    No registry is reachable here, so the base must be a local image (for example a
    ``debootstrap`` of Debian with python3, pip and python-is-python3, imported with
    ``podman import``) named by ``AUTOML_PODMAN_BASE``; skipped without it. This sandbox lets
    podman build (chroot isolation) but not start containers (no cgroups, no setrlimit), so
    the built image's file system is exported and its CMD run there, chrooted, as its USER,
    with its environment, and its HEALTHCHECK command is run against it.
    """
    import socket

    base = os.environ.get("AUTOML_PODMAN_BASE")
    if not base or not shutil.which("podman"):
        pytest.skip("set AUTOML_PODMAN_BASE to a local base image (and install podman)")
    podman = ["podman", "--storage-driver=vfs", "--cgroup-manager=cgroupfs"]
    tag = "localhost/automl-workbench-test"
    build = [*podman, "build", "--format=docker", "--isolation=chroot", "--network=host"]
    build += ["--build-arg", f"BASE_IMAGE={base}", "-t", tag, "."]
    done = subprocess.run(build, cwd=ROOT, capture_output=True, text=True, timeout=3600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    inspected = json.loads(
        subprocess.run(
            [*podman, "image", "inspect", tag],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
    )[0]
    config = inspected["Config"]
    assert config["User"] == "automl"
    probe = inspected["Healthcheck"]["Test"]
    assert probe[0] == "CMD" and "_stcore/health" in probe[-1]
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    container = subprocess.run(
        [*podman, "create", tag], capture_output=True, text=True, timeout=120, check=True
    ).stdout.strip()
    try:
        export = subprocess.Popen([*podman, "export", container], stdout=subprocess.PIPE)
        subprocess.run(["tar", "-x", "-C", str(rootfs)], stdin=export.stdout, check=True)
        assert export.wait(timeout=600) == 0
    finally:
        subprocess.run([*podman, "rm", "-f", container], capture_output=True, timeout=120)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    subprocess.run(["mount", "--bind", "/dev", str(rootfs / "dev")], check=True)
    subprocess.run(["mount", "-t", "proc", "proc", str(rootfs / "proc")], check=True)
    env = dict(item.split("=", 1) for item in config["Env"])
    command = config["Cmd"] + [f"--server.port={port}"]
    chrooted = ["chroot", f"--userspec={config['User']}:{config['User']}", str(rootfs)]
    shell = f"cd {config['WorkingDir']} && exec " + " ".join(command)
    server = subprocess.Popen(
        [*chrooted, "/bin/sh", "-c", shell],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        check = [*chrooted, *probe[1:-1], probe[-1].replace("8501", str(port))]
        healthy = False
        for _ in range(240):
            if subprocess.run(check, env=env, capture_output=True, timeout=30).returncode == 0:
                healthy = True
                break
            time.sleep(0.5)
        assert healthy
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
        subprocess.run(["umount", str(rootfs / "proc")], check=False)
        subprocess.run(["umount", str(rootfs / "dev")], check=False)
