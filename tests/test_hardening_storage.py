"""Storage hardening (#10): hidden passwords, damaged databases, read-only commands and
folders, creation races, study names."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest
import sqlalchemy.exc

from automl_core.cli import main
from automl_core.errors import ConfigError, StorageError
from automl_core.storage import store

ROOT = Path(__file__).resolve().parent.parent
SECRET_URL = "postgresql://bob:s3cret@127.0.0.1:1/x"  # nothing listens on port 1


def _random_bytes_db(folder: Path) -> Path:
    """A ``studies.db`` of random bytes (a file that is not a database at all)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "studies.db"
    path.write_bytes(os.urandom(16_384))
    return path


def _damaged_db(folder: Path) -> Path:
    """A real study database (200 trials) whose middle pages are overwritten."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "studies.db"
    storage = optuna.storages.RDBStorage(f"sqlite:///{path}")
    study = optuna.create_study(
        study_name="s", storage=storage, sampler=optuna.samplers.RandomSampler(0)
    )
    for value in range(200):
        trial = study.ask()
        trial.suggest_float("x", 0, 1)
        trial.set_user_attr("note", "n" * 200)
        study.tell(trial, value)
    storage.engine.dispose()  # let the file be checkpointed and closed
    with contextlib.closing(sqlite3.connect(path)) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with open(path, "r+b") as file:
        file.seek(path.stat().st_size // 2)
        file.write(b"\xa5" * 8192)
    return path


def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    status = main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


class TestSecrets:
    @pytest.mark.parametrize(
        "url, shown",
        [
            (SECRET_URL, "postgresql://bob:***@127.0.0.1:1/x"),
            (
                "postgresql+psycopg://bob:s3cret@db:5432/x",
                "postgresql+psycopg://bob:***@db:5432/x",
            ),
            ("postgresql://bob@db/x", "postgresql://bob@db/x"),
            ("sqlite:////tmp/runs/studies.db", "sqlite:////tmp/runs/studies.db"),
            # SQLAlchemy cannot parse these: the pattern masks the password anyway
            ("postgresql://bob:s3cret@[::1/x", "postgresql://bob:***@[::1/x"),
            ("bob:s3cret@host", "bob:s3cret@host"),  # no scheme: nothing that looks like a URL
            (
                "postgresql://db/x?user=bob&password=s3cret",
                "postgresql://db/x?password=***&user=bob",  # SQLAlchemy sorts the query
            ),
        ],
    )
    def test_safe_url_hides_the_password(self, url, shown):
        assert store.safe_url(url) == shown

    def test_unreachable_storage_says_so_without_the_password(self):
        with pytest.raises(StorageError, match="unreachable") as caught:
            store.open_storage(SECRET_URL)
        assert "s3cret" not in str(caught.value)
        assert "bob:***@127.0.0.1:1/x" in str(caught.value)

    def test_no_command_prints_the_password(self, runs_dir, capsys):
        for argv in (
            ["leaderboard", "--study", "s", "--storage", SECRET_URL],
            ["filters", "--study", "s", "--storage", SECRET_URL],
            ["worker", "--study", "s", "--storage", SECRET_URL],
            ["leaderboard", "--study", "s", "--storage", "postgresql+nope://bob:s3cret@h/x"],
        ):
            status, out, err = _cli(argv, capsys)
            assert status == 2
            assert err.startswith("error: ") and err.count("\n") == 1, err
            assert "s3cret" not in out + err

    def test_a_storage_error_hides_the_password_in_the_drivers_words(self):
        failure = sqlalchemy.exc.OperationalError(
            "connect", {}, Exception(f"could not connect with {SECRET_URL} (password s3cret)")
        )
        message = str(store.storage_error(failure, SECRET_URL))
        assert "s3cret" not in message and "***" in message


class TestDamagedDatabase:
    def test_random_bytes_is_a_storage_error_naming_the_file(self, runs_dir):
        path = _random_bytes_db(runs_dir)
        for read in (
            lambda: store.open_storage(),
            lambda: store.study_names(),
            lambda: store.study_names(create=False),
            lambda: store.load_study("s", create=False),
        ):
            with pytest.raises(StorageError, match="file is not a database") as caught:
                read()
            assert str(path) in str(caught.value)
            assert "not a study database" in str(caught.value)

    def test_random_bytes_on_the_command_line_is_one_line(self, runs_dir, capsys):
        path = _random_bytes_db(runs_dir)
        status, _, err = _cli(["leaderboard", "--study", "s"], capsys)
        assert status == 2 and err.count("\n") == 1
        assert err.startswith(f"error: the study database {path} cannot be used as SQLite")

    def test_a_partly_overwritten_database_is_one_line_too(self, runs_dir, capsys):
        path = _damaged_db(runs_dir)
        status, _, err = _cli(["leaderboard", "--study", "s"], capsys)
        assert status == 2 and err.count("\n") == 1, err
        assert err.startswith(f"error: the study database {path} cannot be used")
        assert "malformed" in err

    def test_a_read_deep_in_optuna_is_translated(self, runs_dir):
        failure = optuna.exceptions.StorageInternalError("An exception is raised during commit")
        failure.__cause__ = sqlalchemy.exc.DatabaseError(
            "SELECT", {}, sqlite3.DatabaseError("database disk image is malformed")
        )
        error = store.storage_error(failure)
        assert isinstance(error, StorageError)
        assert "database disk image is malformed" in str(error)
        assert str(runs_dir / "studies.db") in str(error)


class TestReadOnlyCommands:
    @pytest.mark.parametrize("command", ["leaderboard", "filters"])
    def test_a_missing_database_is_reported_not_created(self, runs_dir, capsys, command):
        status, _, err = _cli([command, "--study", "s"], capsys)
        assert status == 2
        assert err == f"error: no study database at {runs_dir / 'studies.db'}; " + (
            "expected an existing studies.db (run a search first, or point AUTOML_HOME / "
            "AUTOML_STORAGE / --storage at one)\n"
        )
        assert not runs_dir.exists()

    def test_listing_a_missing_database_finds_no_study_and_creates_nothing(self, runs_dir):
        assert store.study_names(create=False) == []
        assert not store.storage_exists()
        assert not runs_dir.exists()

    def test_writers_still_create_the_database(self, runs_dir):
        assert store.study_names() == []
        assert (runs_dir / "studies.db").is_file()


def _read_only_copy(tiny_study_home: Path, target: Path) -> Path:
    """A copy of the tiny study's database alone, checkpointed, with no WAL side files."""
    target.mkdir()
    shutil.copyfile(tiny_study_home / "studies.db", target / "studies.db")
    for suffix in ("-wal", "-shm"):
        source = tiny_study_home / f"studies.db{suffix}"
        if source.exists():
            shutil.copyfile(source, target / f"studies.db{suffix}")
    with contextlib.closing(sqlite3.connect(target / "studies.db")) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # the last connection closed: SQLite removed the side files, as after a clean stop
    return target


def _chattr(flag: str, *paths: Path) -> bool:
    """Sets or clears the immutable flag (which binds root too); False where it cannot."""
    if shutil.which("chattr") is None:
        return False
    done = subprocess.run(["chattr", flag, *map(str, paths)], capture_output=True)
    return done.returncode == 0


class TestReadOnlyFolder:
    def test_leaderboard_reads_an_immutable_runs_folder(
        self, tiny_study_home, tmp_path, monkeypatch, capsys
    ):
        """A real read-only folder: tests run as root, which ignores file modes, but not
        the immutable attribute. Skipped where ``chattr`` cannot set it."""
        home = _read_only_copy(tiny_study_home, tmp_path / "read only #1")  # URI-unsafe
        monkeypatch.setenv("AUTOML_HOME", str(home))
        monkeypatch.delenv("AUTOML_STORAGE", raising=False)
        if not _chattr("+i", home / "studies.db", home):
            pytest.skip("chattr +i is not available here (see the simulated test)")
        try:
            with pytest.raises(OSError):  # really read-only, for root too
                (home / "probe").write_text("x")
            status, out, err = _cli(["leaderboard", "--study", "tiny", "--top", "2"], capsys)
            names = store.study_names(create=False)
        finally:
            _chattr("-i", home / "studies.db", home)
        assert status == 0, err
        assert len(out.strip().splitlines()) == 3  # the header and two trials
        assert names == ["tiny"]
        assert sorted(p.name for p in home.iterdir()) == ["studies.db"]

    def test_leaderboard_reads_a_folder_it_may_not_write_simulated(
        self, tiny_study_home, tmp_path, monkeypatch, capsys
    ):
        """Simulated, for where ``chattr`` is missing: the file and folder are reported as
        not writable (as for a non-root user in a chmod 0o555 folder), so the file is opened
        read-only, with no folder creation or WAL set-up, and is left byte for byte as it was.
        """
        home = _read_only_copy(tiny_study_home, tmp_path / "read only #1")  # URI-unsafe
        monkeypatch.setenv("AUTOML_HOME", str(home))
        monkeypatch.delenv("AUTOML_STORAGE", raising=False)
        monkeypatch.setattr(store, "_writable", lambda path: False)
        prepared = []
        monkeypatch.setattr(store, "_prepare_sqlite", prepared.append)
        before = (home / "studies.db").read_bytes()
        status, out, err = _cli(["leaderboard", "--study", "tiny"], capsys)
        assert status == 0, err
        # the header, four trials and the line that explains vs_pca_db
        assert len(out.strip().splitlines()) == 6
        assert prepared == []
        assert (home / "studies.db").read_bytes() == before

    def test_a_writer_on_a_folder_it_cannot_create_is_told(self, tmp_path, monkeypatch):
        blocker = tmp_path / "a-file"
        blocker.write_text("not a folder")
        url = f"sqlite:///{blocker / 'runs' / 'studies.db'}"
        with pytest.raises(StorageError, match="cannot be created"):
            store.open_storage(url)


RACER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from automl_core.storage import store

    url, ready, count = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    ready.touch()
    while len(list(ready.parent.glob("ready-*"))) < count:
        time.sleep(0.01)
    try:
        store.open_storage(url)
        print("ok")
    except Exception as exc:
        print(f"failed: {exc}")
    """
)


class TestCreationRace:
    def test_processes_creating_one_new_database_at_once_all_succeed(self, tmp_path):
        count = 4
        url = f"sqlite:///{tmp_path / 'runs' / 'studies.db'}"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        racers = [
            subprocess.Popen(
                [sys.executable, "-c", RACER, url, str(tmp_path / f"ready-{i}"), str(count)],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                env=env,
            )
            for i in range(count)
        ]
        outputs = [racer.communicate(timeout=180)[0].strip() for racer in racers]
        assert outputs == ["ok"] * count, outputs
        assert store.study_names(url) == []

    def test_a_lost_creation_race_is_retried(self, tmp_path, monkeypatch):
        real = optuna.storages.RDBStorage
        calls = []

        def racing(url, **kwargs):
            calls.append(url)
            if len(calls) < 3:
                raise sqlalchemy.exc.OperationalError(
                    "CREATE TABLE studies",
                    {},
                    sqlite3.OperationalError("table studies already exists"),
                )
            return real(url, **kwargs)

        monkeypatch.setattr(optuna.storages, "RDBStorage", racing)
        storage = store.open_storage(f"sqlite:///{tmp_path / 'studies.db'}")
        assert isinstance(storage, real) and len(calls) == 3

    def test_a_race_that_never_ends_is_reported(self, tmp_path, monkeypatch):
        def racing(url, **kwargs):
            raise sqlalchemy.exc.OperationalError(
                "CREATE TABLE studies",
                {},
                sqlite3.OperationalError("table studies already exists"),
            )

        monkeypatch.setattr(optuna.storages, "RDBStorage", racing)
        monkeypatch.setattr(store, "_RACE_RETRY_SECONDS", 0.5)
        with pytest.raises(StorageError, match="table studies already exists"):
            store.open_storage(f"sqlite:///{tmp_path / 'studies.db'}")

    def test_other_errors_are_not_retried(self, tmp_path, monkeypatch):
        calls = []

        def broken(url, **kwargs):
            calls.append(url)
            raise sqlalchemy.exc.OperationalError(
                "SELECT", {}, sqlite3.OperationalError("disk I/O error")
            )

        monkeypatch.setattr(optuna.storages, "RDBStorage", broken)
        with pytest.raises(StorageError, match="disk I/O error"):
            store.open_storage(f"sqlite:///{tmp_path / 'studies.db'}")
        assert len(calls) == 1


class TestStudyNames:
    @pytest.mark.parametrize("name", ["abc\n", "abc\r\n", "\nabc", "a b", "ab\x00"])
    def test_line_breaks_and_controls_are_refused(self, name):
        with pytest.raises(ConfigError, match="invalid study name"):
            store.validate_study_name(name)

    def test_a_plain_name_passes(self):
        assert store.validate_study_name("mnist-5k_tpe.1") == "mnist-5k_tpe.1"
