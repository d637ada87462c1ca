"""The hosted (shared-mode) dashboard's audit: login races, upload bombs, URLs, users' folders."""

from __future__ import annotations

import io
import math
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from automl_core import limits
from automl_core.errors import ConfigError, DatasetError, PermissionDenied, StorageError
from automl_core.hosting import access, uploads
from automl_core.storage import store

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 90


@pytest.fixture(scope="module")
def password_hash():
    return access.hash_password("alice-secret-1")


@pytest.fixture
def secrets(password_hash):
    return {
        "automl": {
            "mode": "shared",
            "users": {
                "alice": {"role": "operator", "password_hash": password_hash},
                "root": {"role": "admin", "password_hash": password_hash},
            },
            "oidc_roles": {"Bob@Example.org": "admin"},
        }
    }


@pytest.fixture
def verified(monkeypatch):
    """Counts the passwords actually checked (the real argon2 check still runs)."""
    calls = []
    real = access.verify_password

    def counting(password_hash: str, password: str) -> bool:
        calls.append(password)
        return real(password_hash, password)

    monkeypatch.setattr(access, "verify_password", counting)
    return calls


# --- 1. the login lockout: atomic, never lowered, and per client --------------------------------


class TestLoginLockout:
    def test_parallel_wrong_guesses_are_checked_at_most_the_limit(
        self, runs_dir, secrets, monkeypatch
    ):
        checked = []

        def slow_wrong(password_hash: str, password: str) -> bool:
            checked.append(password)
            time.sleep(0.2)  # every guess is in flight at once, as 40 parallel requests are
            return False

        monkeypatch.setattr(access, "verify_password", slow_wrong)
        answers = []

        def guess(i: int) -> None:
            try:
                access.authenticate("root", f"guess-{i}", secrets)
            except PermissionDenied as exc:
                answers.append(str(exc))

        threads = [threading.Thread(target=guess, args=(i,)) for i in range(40)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert len(answers) == 40
        assert len(checked) == limits.get("max_login_failures") == 5
        assert access.locked_for("root") > 0

    def test_a_failure_under_the_limit_does_not_end_a_lockout(
        self, runs_dir, secrets, monkeypatch
    ):
        monkeypatch.setenv("AUTOML_MAX_LOGIN_FAILURES", "3")
        real = access.verify_password
        now = 1000.0
        depth = []

        def outer_then_inner(password_hash: str, password: str) -> bool:
            if not depth:  # while the first guess is being checked, three more arrive
                depth.append(1)
                for i in range(3):
                    with pytest.raises(PermissionDenied):
                        access.authenticate("alice", f"inner-{i}", secrets, now=now)
            return real(password_hash, password)

        monkeypatch.setattr(access, "verify_password", outer_then_inner)
        with pytest.raises(PermissionDenied, match="wrong user name or password"):
            access.authenticate("alice", "outer", secrets, now=now)
        # the first guess failed last, under the limit on its own: the lockout stays
        assert access.locked_for("alice", now) == pytest.approx(
            limits.get("login_lockout_seconds")
        )
        with pytest.raises(PermissionDenied, match="too many failed logins for 'alice'"):
            access.authenticate("alice", "alice-secret-1", secrets, now=now + 1)

    def test_the_client_limit_is_below_the_user_limit(self):
        assert limits.get("max_client_login_failures") < limits.get("max_login_failures")

    def test_one_client_cannot_lock_a_user_out(self, runs_dir, secrets, verified):
        now = 1000.0
        allowed = limits.get("max_client_login_failures")
        for i in range(allowed):  # at the limit: each of these is checked
            with pytest.raises(PermissionDenied, match="^wrong user name or password$"):
                access.authenticate("root", f"guess-{i}", secrets, now=now, client="tab-1")
        assert len(verified) == allowed
        with pytest.raises(PermissionDenied, match="too many failed logins from this client"):
            access.authenticate("root", "alice-secret-1", secrets, now=now + 1, client="tab-1")
        assert len(verified) == allowed  # refused without checking, nor counting for root
        assert access.locked_for("root", now + 1) == 0
        user = access.authenticate("root", "alice-secret-1", secrets, now=now + 2, client="tab-2")
        assert user.name == "root" and user.role == "admin"

    def test_the_client_limit_is_read_from_the_environment(self, runs_dir, secrets, monkeypatch):
        monkeypatch.setenv("AUTOML_MAX_CLIENT_LOGIN_FAILURES", "2")
        for i in range(2):
            with pytest.raises(PermissionDenied, match="wrong"):
                access.authenticate("alice", f"guess-{i}", secrets, now=1000.0, client="c")
        with pytest.raises(PermissionDenied, match=r"from this client: try again in 30[01] s"):
            access.authenticate("alice", "guess-3", secrets, now=1000.0, client="c")
        later = 1000.0 + limits.get("login_lockout_seconds") + 1
        assert access.authenticate("alice", "alice-secret-1", secrets, now=later, client="c")

    def test_many_clients_still_lock_a_user_name(self, runs_dir, secrets):
        for i in range(limits.get("max_login_failures")):
            with pytest.raises(PermissionDenied, match="wrong"):
                access.authenticate("alice", "bad", secrets, now=1000.0, client=f"c{i}")
        with pytest.raises(PermissionDenied, match="too many failed logins for 'alice'"):
            access.authenticate("alice", "alice-secret-1", secrets, now=1001.0, client="c9")

    def test_a_right_password_resets_the_clients_count(self, runs_dir, secrets, monkeypatch):
        monkeypatch.setenv("AUTOML_MAX_CLIENT_LOGIN_FAILURES", "2")
        with pytest.raises(PermissionDenied, match="wrong"):
            access.authenticate("alice", "bad", secrets, now=1000.0, client="c")
        assert access.authenticate("alice", "alice-secret-1", secrets, now=1001.0, client="c")
        with pytest.raises(PermissionDenied, match="^wrong user name or password$"):
            access.authenticate("alice", "bad", secrets, now=1002.0, client="c")

    def test_a_client_key_is_never_stored_as_typed(self, runs_dir, secrets):
        with pytest.raises(PermissionDenied):
            access.authenticate("alice", "bad", secrets, client="203.0.113.7")
        table = (runs_dir / "access" / "login_failures.json").read_text(encoding="utf-8")
        assert "203.0.113.7" not in table


def LOGIN_PAGE():  # noqa: N802 - a page, named like the page paths it stands beside
    """Only the sidebar's login block."""
    from dashboard import auth

    auth.login_ui()


@pytest.fixture
def shared(runs_dir, monkeypatch, password_hash):
    """``shared(page)``: an AppTest of a page function in shared mode."""
    monkeypatch.delenv("AUTOML_MODE", raising=False)
    monkeypatch.setenv("AUTOML_SECRETS", str(runs_dir / "no-secrets.toml"))

    def make(page) -> AppTest:
        at = AppTest.from_function(page, default_timeout=TIMEOUT)
        at.secrets["automl"] = {
            "mode": "shared",
            "users": {"alice": {"role": "operator", "password_hash": password_hash}},
        }
        return at

    return make


def _texts(elements) -> str:
    return " | ".join(str(e.value) for e in elements)


def _log_in(at: AppTest, name: str, password: str) -> None:
    at.text_input(key="login_name").set_value(name)
    at.text_input(key="login_password").set_value(password)
    at.button(key="login").click().run()


def test_the_login_page_throttles_its_own_client_only(shared, monkeypatch):
    monkeypatch.setenv("AUTOML_MAX_CLIENT_LOGIN_FAILURES", "2")
    at = shared(LOGIN_PAGE).run()
    for guess in ("guess-1", "guess-2"):
        _log_in(at, "alice", guess)
        assert "wrong user name or password" in _texts(at.sidebar.error)
    _log_in(at, "alice", "alice-secret-1")
    assert "too many failed logins from this client" in _texts(at.sidebar.error)
    assert "Viewing as a visitor" in _texts(at.sidebar.caption)
    other = shared(LOGIN_PAGE).run()  # another visitor: alice is not locked out
    _log_in(other, "alice", "alice-secret-1")
    assert not other.exception and not other.sidebar.error
    assert "Signed in as **alice** (operator)" in _texts(other.sidebar.caption)


# --- 2. an upload declaring far more than its size ---------------------------------------------


def _npz(path: Path, compressed: bool = True, **arrays) -> Path:
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    path.write_bytes(buffer.getvalue())
    return path


class TestUploadDeclaredSize:
    def test_small_npz_of_zeros_declaring_much_more_is_refused(self, runs_dir):
        buffer = io.BytesIO()
        np.savez_compressed(buffer, x=np.zeros((4096, 64, 64), np.float32))  # 64 MiB
        data = buffer.getvalue()
        assert len(data) < 200_000
        with pytest.raises(
            DatasetError,
            match=r"^upload 'zeros.npz' .* declare 64 MiB .*AUTOML_MAX_UPLOAD_EXPANSION",
        ):
            uploads.save_upload("zeros.npz", data)
        assert not any((runs_dir / "uploads").iterdir())  # nothing kept

    def test_refused_before_decoding(self, tmp_path, monkeypatch):
        path = _npz(tmp_path / "z.npz", x=np.zeros((256, 64, 64), np.uint8))

        def no_read(*args, **kwargs):
            raise AssertionError("the data was read")

        monkeypatch.setattr(np.lib.format, "read_array", no_read)
        with pytest.raises(DatasetError, match="declare 4 MiB"):
            uploads.check_declared_size(path, "z.npz")

    def test_expansion_at_the_limit(self, tmp_path, monkeypatch):
        x = np.random.default_rng(0).integers(0, 4, (64, 16, 16), dtype=np.uint8)
        path = _npz(tmp_path / "d.npz", x=x)
        declared = x.size * 4  # counted as float32, as it is held once loaded
        ratio = declared / path.stat().st_size
        monkeypatch.setenv("AUTOML_MAX_UPLOAD_EXPANSION", str(math.ceil(ratio)))
        uploads.check_declared_size(path, "d.npz")
        monkeypatch.setenv("AUTOML_MAX_UPLOAD_EXPANSION", str(math.floor(ratio)))
        with pytest.raises(
            DatasetError,
            match=rf"^upload 'd.npz' is .* but its arrays declare 64 KiB once loaded, more "
            rf"than {math.floor(ratio)} times",
        ):
            uploads.check_declared_size(path, "d.npz")

    def test_declared_bytes_at_the_limit(self, tmp_path, monkeypatch):
        x = np.random.default_rng(0).random((32, 8, 8)).astype(np.float32)
        y = np.arange(32) % 3
        path = _npz(tmp_path / "d.npz", compressed=False, x=x, y=y)
        declared = x.size * 4 + y.size * 8
        monkeypatch.setenv("AUTOML_MAX_UPLOAD_DECLARED_BYTES", str(declared))
        uploads.check_declared_size(path, "d.npz")
        monkeypatch.setenv("AUTOML_MAX_UPLOAD_DECLARED_BYTES", str(declared - 1))
        with pytest.raises(
            DatasetError,
            match=rf"^upload 'd.npz': its arrays declare {declared:,} bytes once loaded, more "
            rf"than the {declared - 1:,} bytes allowed for an upload "
            r"\(AUTOML_MAX_UPLOAD_DECLARED_BYTES\)",
        ):
            uploads.check_declared_size(path, "d.npz")

    def test_the_upload_cap_is_below_the_dataset_cap(self):
        assert limits.get("max_upload_declared_bytes") < limits.get("max_dataset_bytes")

    def test_an_ordinary_upload_passes(self, runs_dir):
        buffer = io.BytesIO()
        x = np.random.default_rng(0).integers(0, 255, (50, 16, 16), dtype=np.uint8)
        np.savez_compressed(buffer, x=x, y=np.arange(50) % 5)
        assert uploads.save_upload("ok.npz", buffer.getvalue()).is_file()


# --- 3. passwords in malformed storage URLs -----------------------------------------------------


class TestStorageUrls:
    @pytest.mark.parametrize(
        "url, secret, shown",
        [
            (
                "postgresql+psycopg:/user:PWsecret@host/db",
                ["PWsecret"],
                "postgresql+psycopg:/user:***@host/db",
            ),
            (
                "postgresql+psycopg://user:pw1@secret2@db:5432/x",
                ["pw1", "secret2"],
                "postgresql+psycopg://user:***@db:5432/x",
            ),
            (
                "postgresql://user:a/b@cd@efg@db/x?sslmode=require",
                ["a/b", "cd@", "efg"],
                "postgresql://user:***@db/x?sslmode=require",
            ),
        ],
    )
    def test_safe_url_masks_up_to_the_last_at(self, url, secret, shown):
        assert store.safe_url(url) == shown
        assert not any(part in store.safe_url(url) for part in secret)

    @pytest.mark.parametrize(
        "url, secret",
        [
            ("postgresql+psycopg:/user:PWsecret@127.0.0.1:1/db", ["PWsecret"]),
            ("postgresql+psycopg://user:pw1@secret2@127.0.0.1:1/db", ["pw1", "secret2"]),
        ],
    )
    def test_opening_such_a_storage_does_not_show_the_password(self, runs_dir, url, secret):
        with pytest.raises(StorageError) as caught:
            store.open_storage(url)
        message = str(caught.value)
        assert not any(part in message for part in secret), message
        assert "user:***@" in message


# --- 4. one upload folder per user --------------------------------------------------------------


class TestUserFolders:
    NAMES = [
        "bob@example.org",
        "bob_example.org",
        "bob+x@example.org",
        "bob_x_example.org",
        "Bob_example.org",
        "alice",
        "local",
    ]

    def test_folder_names_are_injective_and_safe(self):
        folders = [access.user_folder_name(access.User(name, "operator")) for name in self.NAMES]
        assert len(set(folders)) == len(folders) == len({f.lower() for f in folders})
        for folder in folders:
            assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", folder) and ".." not in folder

    def test_plain_names_keep_their_folder_and_others_stay_readable(self):
        assert access.user_folder_name(access.User("alice", "operator")) == "alice"
        folder = access.user_folder_name(access.User("bob@example.org", "operator", "oidc"))
        assert folder.startswith("bob_example.org+")

    def test_two_users_upload_to_two_folders(self, runs_dir):
        data = io.BytesIO()
        np.savez(data, x=np.random.default_rng(0).random((5, 4, 4)))
        first = uploads.save_upload(
            "d.npz", data.getvalue(), actor=access.User("bob@example.org", "operator", "oidc")
        )
        second = uploads.save_upload(
            "d.npz", data.getvalue(), actor=access.User("bob_example.org", "operator")
        )
        assert first.parent != second.parent and first.parent.parent == second.parent.parent


# --- 5. OpenID Connect e-mails ------------------------------------------------------------------


class TestOidcUsers:
    def test_the_address_is_lower_cased(self, secrets):
        for email in ("Bob@Example.org", "bob@example.org", " BOB@EXAMPLE.ORG "):
            assert access.oidc_user(email, secrets) == access.User(
                "bob@example.org", "admin", "oidc"
            )

    @pytest.mark.parametrize(
        "email",
        ["o'brien@example.org", "josé.müller@exämple.de", "a.b+tag@sub.example.co.uk"],
    )
    def test_valid_addresses_are_accepted(self, secrets, email):
        user = access.oidc_user(email, secrets)
        assert user.name == email.lower() and user.role == "viewer"

    def test_length_at_the_limit(self, secrets):
        limit = limits.get("max_email_length")
        longest = "a" * (limit - len("@example.org")) + "@example.org"
        assert len(longest) == limit > 100
        assert access.oidc_user(longest, secrets).name == longest
        with pytest.raises(
            ConfigError, match=rf"is {limit + 1} characters long, more than the {limit}"
        ):
            access.oidc_user("a" + longest, secrets)

    @pytest.mark.parametrize("email", ["no-at-sign", "a@b@example.org", "<x>@example.org"])
    def test_what_is_not_an_address_is_refused(self, secrets, email):
        with pytest.raises(ConfigError, match="not an e-mail address"):
            access.oidc_user(email, secrets)


def OIDC_PAGE():  # noqa: N802 - a page, named like the page paths it stands beside
    """The login block with an OpenID Connect user whose e-mail is too long."""
    import streamlit as st

    from dashboard import auth

    class LoggedIn(dict):
        is_logged_in = True

    real = st.user
    st.user = LoggedIn(email="a" * 300 + "@example.org")
    try:
        auth.login_ui()
    finally:
        st.user = real


def test_a_refused_oidc_login_shows_why_and_a_log_out_button(shared):
    at = shared(OIDC_PAGE)
    at.secrets["auth"] = {"redirect_uri": "http://localhost:8501/oauth2callback"}
    at.run()
    assert not at.exception
    assert "more than the 254 accepted" in _texts(at.sidebar.error)
    assert at.button(key="logout")


# --- 6. the Docker build context ----------------------------------------------------------------


def test_env_files_stay_out_of_the_image():
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert ".env" in lines and "*.env" in lines
