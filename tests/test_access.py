"""Sharing in the core: modes, roles x actions, ownership, quotas, passwords, lockout, abuse."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time

import numpy as np
import pytest

from automl_core import limits
from automl_core.errors import ConfigError, PermissionDenied
from automl_core.hosting import access, processes, uploads
from automl_core.search import workers
from automl_core.storage import store
from automl_core.storage.settings import SearchSettings

VIEWER = access.User("vera", "viewer")
ALICE = access.User("alice", "operator")
BOB = access.User("bob", "operator")
ADMIN = access.User("root", "admin")
USERS = {"viewer": VIEWER, "operator": ALICE, "admin": ADMIN}
TINY = {
    "num_conv_layers": [1],
    "filters": [4],
    "activation": ["relu"],
    "latent_dim": [4],
    "batch_size": [32],
}


@pytest.fixture(scope="module")
def alice_hash():
    return access.hash_password("alice-secret-1")


@pytest.fixture
def secrets(alice_hash):
    return {
        "automl": {
            "mode": "shared",
            "users": {
                "alice": {"role": "operator", "password_hash": alice_hash},
                "root": {"role": "admin", "password_hash": alice_hash},
            },
            "oidc_roles": {"bob@example.org": "admin"},
        }
    }


def _npz_bytes(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _sleeper() -> subprocess.Popen:
    """A process whose command line names automl_core, as a launched search's does."""
    return subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "automl_core"],
        start_new_session=True,
    )


def _record(study: str, process: subprocess.Popen, owner: str) -> None:
    workers.launches_dir().mkdir(parents=True, exist_ok=True)
    record = processes.LaunchRecord(study, process.pid, time.time(), "", [], owner)
    (workers.launches_dir() / f"{study}.json").write_text(json.dumps(record.__dict__))


@pytest.fixture
def running(runs_dir):
    """Starts fake launched searches: ``running(study, owner)``; all killed at the end."""
    started = []

    def start(study: str, owner: str) -> subprocess.Popen:
        process = _sleeper()
        started.append(process)
        _record(study, process, owner)
        return process

    yield start
    for process in started:
        process.kill()
        process.wait()


def _settings(study: str = "s1", **overrides) -> SearchSettings:
    values = dict(
        study=study,
        dataset="digits",
        space=TINY,
        strategy="grid",
        trials=1,
        max_epochs=1,
        max_images=60,
    )
    return SearchSettings(**{**values, **overrides})


class TestModes:
    def test_local_is_the_default(self, monkeypatch, tmp_path):
        monkeypatch.delenv("AUTOML_MODE", raising=False)
        monkeypatch.setenv("AUTOML_SECRETS", str(tmp_path / "none.toml"))
        assert access.current_mode() == "local"
        assert access.resolve_actor(None) == access.LOCAL_ADMIN

    def test_secrets_file_sets_shared(self, monkeypatch, tmp_path):
        monkeypatch.delenv("AUTOML_MODE", raising=False)
        path = tmp_path / "secrets.toml"
        path.write_text('[automl]\nmode = "shared"\n')
        monkeypatch.setenv("AUTOML_SECRETS", str(path))
        assert access.current_mode() == "shared"

    def test_environment_wins(self, monkeypatch, secrets):
        monkeypatch.setenv("AUTOML_MODE", "local")
        assert access.current_mode(secrets) == "local"

    def test_unknown_mode_is_named(self, monkeypatch):
        monkeypatch.setenv("AUTOML_MODE", "public")
        with pytest.raises(ConfigError, match="unknown mode 'public'"):
            access.current_mode()

    def test_shared_mode_needs_an_actor(self, monkeypatch, runs_dir):
        monkeypatch.setenv("AUTOML_MODE", "shared")
        with pytest.raises(PermissionDenied, match="needs the acting user"):
            access.resolve_actor(None)
        with pytest.raises(PermissionDenied, match="needs the acting user"):
            processes.stop_search("s1")
        with pytest.raises(PermissionDenied, match="needs the acting user"):
            uploads.save_upload("d.npz", _npz_bytes(x=np.zeros((5, 4, 4))))
        assert not (runs_dir / "uploads").exists()

    def test_a_forged_actor_is_refused(self):
        with pytest.raises(PermissionDenied, match="must be an access.User"):
            access.resolve_actor({"name": "x", "role": "admin"})

    @pytest.mark.parametrize("name", ["", "../root", "<script>", "a b", "x" * 101])
    def test_bad_user_names(self, name):
        with pytest.raises(ConfigError, match="invalid user name"):
            access.User(name, "viewer")

    def test_unknown_role(self):
        with pytest.raises(ConfigError, match="unknown role 'root'"):
            access.User("a", "root")


# what each role may do: action -> roles allowed (on their own search / someone else's)
EXPECTED = {
    ("view", False): {"viewer", "operator", "admin"},
    ("export", False): {"viewer", "operator", "admin"},
    ("launch", False): {"operator", "admin"},
    ("upload", False): {"operator", "admin"},
    ("stop", True): {"operator", "admin"},
    ("stop", False): {"admin"},
    ("view_log", True): {"operator", "admin"},
    ("view_log", False): {"admin"},
    ("delete", False): {"admin"},
}


class TestRoles:
    @pytest.mark.parametrize("role", list(USERS))
    @pytest.mark.parametrize("action,own", list(EXPECTED))
    def test_role_by_action(self, role, action, own):
        user = USERS[role]
        owner = user.name if own else "someone-else"
        assert access.allowed(user, action, owner) == (role in EXPECTED[(action, own)])

    def test_refusal_names_the_needed_role(self):
        with pytest.raises(PermissionDenied, match="needs the operator role"):
            access.check_allowed(access.VISITOR, "launch")
        with pytest.raises(PermissionDenied, match="operators act on their own searches"):
            access.check_allowed(BOB, "stop", "alice")

    def test_unknown_action(self):
        with pytest.raises(ConfigError, match="unknown action 'rm'"):
            access.check_allowed(ADMIN, "rm")


class TestCoreActions:
    """Every role x action pair through the core's own functions."""

    @pytest.mark.parametrize("user", [VIEWER, access.VISITOR])
    def test_viewer_cannot_launch(self, runs_dir, user):
        with pytest.raises(PermissionDenied, match="may not launch"):
            processes.launch_search(_settings(), actor=user)
        assert not workers.launches_dir().exists()

    def test_stop_by_role_and_owner(self, running):
        process = running("s1", "alice")
        with pytest.raises(PermissionDenied, match="may not stop"):
            processes.stop_search("s1", actor=VIEWER)
        with pytest.raises(PermissionDenied, match="may not stop alice's search"):
            processes.stop_search("s1", actor=BOB)
        assert process.poll() is None
        assert processes.stop_search("s1", grace_seconds=2, actor=ADMIN)
        process.wait(timeout=10)

    def test_owner_stops_their_own(self, running):
        process = running("s1", "alice")
        assert processes.stop_search("s1", grace_seconds=2, actor=ALICE)
        process.wait(timeout=10)

    def test_log_is_for_the_owner_and_admins(self, running):
        running("s1", "alice")
        log = processes.read_record("s1")
        assert log.owner == "alice"
        with pytest.raises(PermissionDenied, match="may not view log"):
            processes.log_tail("s1", actor=BOB)
        with pytest.raises(PermissionDenied):
            processes.log_tail("s1", actor=VIEWER)
        assert processes.log_tail("s1", actor=ALICE) == ""
        assert processes.log_tail("s1", actor=ADMIN) == ""

    def test_old_records_belong_to_the_local_user(self, runs_dir):
        workers.launches_dir().mkdir(parents=True)
        (workers.launches_dir() / "old.json").write_text(
            json.dumps({"study": "old", "pid": 1, "started": 0, "log": "", "command": []})
        )
        assert processes.read_record("old").owner == "local"

    @pytest.mark.parametrize("user", [VIEWER, ALICE])
    def test_only_admins_delete(self, tiny_copy, user):
        with pytest.raises(PermissionDenied, match="may not delete"):
            processes.delete_study("tiny", store.default_storage_url(), actor=user)
        assert "tiny" in store.study_names(store.default_storage_url())

    def test_admin_deletes_a_study_and_its_models(self, tiny_copy):
        url = store.default_storage_url()
        folder = store.artifact_root()
        assert any(folder.iterdir())
        processes.delete_study("tiny", url, actor=ADMIN)
        assert "tiny" not in store.study_names(url)
        assert not any(folder.iterdir())

    def test_a_running_study_is_not_deleted(self, tiny_copy, running):
        running("tiny", "alice")
        with pytest.raises(ConfigError, match="is running"):
            processes.delete_study("tiny", store.default_storage_url(), actor=ADMIN)

    def test_delete_of_an_unknown_study(self, tiny_copy):
        with pytest.raises(Exception, match="no study named 'nope'"):
            processes.delete_study("nope", store.default_storage_url(), actor=ADMIN)


class TestQuotas:
    """Refused before anything starts: no record, no process, no study."""

    def _refused(self, settings, match, workers=1, actor=ALICE):
        with pytest.raises(PermissionDenied, match=match):
            processes.launch_search(settings, workers, actor=actor)
        assert processes.read_record(settings.study) is None

    def test_workers(self, runs_dir, monkeypatch):
        monkeypatch.setenv("AUTOML_MAX_WORKERS_PER_SEARCH", "1")
        self._refused(_settings(), "2 workers, over the quota of 1", workers=2)

    def test_trials(self, runs_dir):
        self._refused(_settings(trials=201, strategy="random"), "201 trials.*max_trials")

    def test_wall_time(self, runs_dir):
        self._refused(_settings(timeout=7200.0), "7200 s.*AUTOML_MAX_LAUNCH_SECONDS")

    def test_total_concurrent(self, running, monkeypatch):
        monkeypatch.setenv("AUTOML_MAX_CONCURRENT_SEARCHES", "2")
        running("a", "bob")
        running("b", "root")
        self._refused(_settings(), "3 searches at once.*max_concurrent_searches")

    def test_per_operator(self, running):
        running("a", "alice")
        running("b", "alice")
        self._refused(_settings(), "3 searches of alice.*max_searches_per_operator")

    def test_missing_budget_gets_the_quota(self, runs_dir):
        checked = processes.check_quotas(_settings(trials=None, strategy="random"), 1, ALICE)
        assert checked.trials == limits.get("max_trials_per_launch")
        assert checked.timeout == limits.get("max_launch_seconds")

    def test_local_user_has_no_quota(self, runs_dir):
        big = _settings(trials=10_000, strategy="random")
        assert processes.check_quotas(big, 8, access.LOCAL_ADMIN) is big

    def test_a_second_simultaneous_launch_of_the_same_study(self, running):
        running("s1", "alice")
        with pytest.raises(ConfigError, match="already running"):
            processes.launch_search(_settings(), actor=ALICE)

    def test_someone_elses_study_is_not_resumed(self, tiny_copy):
        with pytest.raises(PermissionDenied, match="not launched by alice"):
            processes.launch_search(_settings("tiny"), actor=ALICE)

    def test_someone_elses_launched_study_is_not_resumed(self, running):
        process = running("s1", "bob")
        process.kill()
        process.wait()
        with pytest.raises(PermissionDenied, match="may not resume bob's search"):
            processes.launch_search(_settings("s1"), actor=ALICE)


class TestDatasetPaths:
    @pytest.mark.parametrize(
        "dataset", ["/etc/passwd", "../studies.db", "runs/uploads/bob/x.npz", "/tmp"]
    )
    def test_operator_names_only_registry_or_own_uploads(self, runs_dir, dataset):
        with pytest.raises(PermissionDenied, match="neither a registry dataset"):
            processes.launch_search(_settings(dataset=dataset), actor=ALICE)
        assert processes.read_record("s1") is None

    def test_another_users_upload_is_refused(self, runs_dir):
        path = uploads.save_upload("d.npz", _npz_bytes(x=np.zeros((5, 4, 4))), actor=BOB)
        with pytest.raises(PermissionDenied, match="alice's uploads"):
            processes.launch_search(_settings(dataset=str(path)), actor=ALICE)


class TestUploads:
    def test_per_user_folders_and_content_names(self, runs_dir):
        one = _npz_bytes(x=np.zeros((5, 4, 4)))
        two = _npz_bytes(x=np.ones((5, 4, 4)))
        a = uploads.save_upload("data.npz", one, actor=ALICE)
        b = uploads.save_upload("data.npz", two, actor=BOB)
        c = uploads.save_upload("data.npz", two, actor=ALICE)  # a second tab, other content
        assert a.parent.name == "alice" and b.parent.name == "bob" and a != c
        assert a.read_bytes() == one and b.read_bytes() == two and c.read_bytes() == two
        assert uploads.save_upload("data.npz", one, actor=ALICE) == a

    def test_viewer_cannot_upload(self, runs_dir):
        with pytest.raises(PermissionDenied, match="may not upload"):
            uploads.save_upload("d.npz", _npz_bytes(x=np.zeros((5, 4, 4))), actor=VIEWER)
        assert not (runs_dir / "uploads").exists()

    @pytest.mark.parametrize("name", ["model.keras", "weights.h5", "data.pkl", "x.npz.pkl"])
    def test_models_and_pickles_are_refused(self, runs_dir, name):
        with pytest.raises(Exception, match="expected an .npz file or a .zip"):
            uploads.save_upload(name, b"\x80\x04K\x01.", actor=ALICE)
        assert not (runs_dir / "uploads").exists()

    @pytest.mark.parametrize("name", ["../../etc/evil.npz", "/abs/path.npz", "<script>.npz"])
    def test_names_stay_in_the_users_folder(self, runs_dir, name):
        path = uploads.save_upload(name, _npz_bytes(x=np.zeros((5, 4, 4))), actor=ALICE)
        assert path.parent == runs_dir / "uploads" / "alice"
        assert "<" not in path.name and ".." not in path.name


class TestPasswords:
    def test_hash_round_trip(self, alice_hash):
        assert alice_hash.startswith("$argon2id$")
        assert access.verify_password(alice_hash, "alice-secret-1")
        assert not access.verify_password(alice_hash, "alice-secret-2")
        assert not access.verify_password("not a hash", "x")

    def test_short_password_refused(self):
        with pytest.raises(ConfigError, match="at least 8 characters"):
            access.hash_password("short")

    def test_login(self, runs_dir, secrets):
        user = access.authenticate("alice", "alice-secret-1", secrets)
        assert user == access.User("alice", "operator", "password")
        assert access.authenticate("root", "alice-secret-1", secrets).role == "admin"

    @pytest.mark.parametrize("name,password", [("alice", "wrong"), ("nobody", "x"), ("", "")])
    def test_one_message_for_unknown_user_and_wrong_password(
        self, runs_dir, secrets, name, password
    ):
        with pytest.raises(PermissionDenied, match="^wrong user name or password$"):
            access.authenticate(name, password, secrets)

    def test_lockout_after_repeated_failures(self, runs_dir, secrets, monkeypatch):
        monkeypatch.setenv("AUTOML_MAX_LOGIN_FAILURES", "3")
        now = 1000.0
        for _ in range(3):
            with pytest.raises(PermissionDenied, match="wrong"):
                access.authenticate("alice", "bad", secrets, now=now)
        with pytest.raises(PermissionDenied, match="too many failed logins for 'alice'"):
            access.authenticate("alice", "alice-secret-1", secrets, now=now + 1)
        assert access.authenticate("root", "alice-secret-1", secrets, now=now + 1)  # others not
        later = now + limits.get("login_lockout_seconds") + 1
        assert access.authenticate("alice", "alice-secret-1", secrets, now=later).name == "alice"

    def test_success_resets_the_count(self, runs_dir, secrets, monkeypatch):
        monkeypatch.setenv("AUTOML_MAX_LOGIN_FAILURES", "2")
        with pytest.raises(PermissionDenied):
            access.authenticate("alice", "bad", secrets)
        access.authenticate("alice", "alice-secret-1", secrets)
        with pytest.raises(PermissionDenied, match="wrong"):
            access.authenticate("alice", "bad", secrets)

    def test_oidc_roles(self, secrets):
        assert access.oidc_user("bob@example.org", secrets).role == "admin"
        assert access.oidc_user("eve@example.org", secrets).role == "viewer"
        assert access.oidc_user(None, secrets) == access.VISITOR

    def test_hash_password_command_reads_stdin(self):
        done = subprocess.run(
            [sys.executable, "-m", "automl_core", "hash-password"],
            input="correct horse\n",
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        printed = done.stdout.strip()
        assert access.verify_password(printed, "correct horse") and "correct" not in printed
