"""Stop, kill and resume, a grid shared by several workers, and bounded worker counts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from automl_core.errors import ConfigError
from automl_core.hosting import processes
from automl_core.model.space import SearchSpace
from automl_core.search import runner as search
from automl_core.search import workers
from automl_core.search.strategies import StrategyContext, get_strategy
from automl_core.storage import store
from automl_core.storage.settings import SearchSettings

ROOT = Path(__file__).resolve().parent.parent
GRID = {"num_conv_layers": [1, 2], "filters": [4], "activation": ["relu"], "latent_dim": [4, 8]}


def _grid_sampler(worker: int, study_seed: int = 0):
    context = StrategyContext(
        SearchSpace.from_dict(GRID), study_seed + worker, (8, 8, 1), 1, study_seed=study_seed
    )
    return get_strategy("grid").make_sampler(context)


def _recorder(space, seen):
    def objective(trial):
        seen.append(space.suggest(trial).to_dict())
        return 0.1

    return objective


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_a_grid_shared_by_workers_covers_every_configuration_once(workers):
    """Each worker's sampler has its own seed (search seed + offset); the grid's order must
    not depend on it, or workers map grid ids to different configurations."""
    storage = optuna.storages.InMemoryStorage()
    optuna.create_study(study_name="grid", storage=storage)
    studies = [
        optuna.load_study(study_name="grid", storage=storage, sampler=_grid_sampler(w))
        for w in range(workers)
    ]
    space = SearchSpace.from_dict(GRID)
    seen = []
    for turn in range(4):
        studies[turn % workers].optimize(_recorder(space, seen), n_trials=1)
    keys = {tuple(sorted((k, str(v)) for k, v in c.items())) for c in seen}
    assert len(keys) == 4


def test_a_replaced_worker_continues_the_same_grid():
    storage = optuna.storages.InMemoryStorage()
    optuna.create_study(study_name="grid", storage=storage)
    space = SearchSpace.from_dict(GRID)
    seen = []
    for worker in (0, 1, 5, 9):  # each replacement gets a new offset
        study = optuna.load_study(
            study_name="grid", storage=storage, sampler=_grid_sampler(worker)
        )
        study.optimize(_recorder(space, seen), n_trials=1)
    assert len({repr(sorted(c.items())) for c in seen}) == 4


class TestWorkerCount:
    def test_a_thousand_workers_are_refused_before_anything_starts(self, runs_dir):
        with pytest.raises(ConfigError, match="workers=1000 is more than the 64 allowed"):
            search.run_search(SearchSettings(study="many"), workers=1000)
        assert not (runs_dir / "logs").exists()  # no worker was spawned

    def test_the_named_limit_at_its_value(self, monkeypatch):
        monkeypatch.setenv("AUTOML_MAX_WORKERS", "2")
        monkeypatch.setattr(workers, "machine_worker_cap", lambda: (8, "test"))
        assert workers.check_workers(2) == 2
        with pytest.raises(ConfigError, match="AUTOML_MAX_WORKERS"):
            workers.check_workers(3)

    def test_the_machine_caps_workers_by_cores_and_memory(self, monkeypatch):
        monkeypatch.setattr(os, "cpu_count", lambda: 2)
        cap, why = workers.machine_worker_cap()
        assert 1 <= cap <= 4 and why
        monkeypatch.setattr(workers, "machine_worker_cap", lambda: (4, "2 CPU cores"))
        assert workers.check_workers(4) == 4
        with pytest.raises(ConfigError, match="at most 4 \\(2 CPU cores\\)"):
            workers.check_workers(5)

    def test_the_cli_names_the_value(self, runs_dir, capsys):
        from automl_core.cli import main

        assert main(["search", "--dataset", "digits", "--workers", "1000"]) == 2
        assert "workers=1000" in capsys.readouterr().err


def test_an_interrupt_reaches_a_worker_started_with_sigint_ignored(runs_dir, monkeypatch):
    """A background job of a shell starts with SIGINT ignored: the worker sets its own."""
    from tests.test_hardening_search import _settings

    settings = _settings(study="ignored", trials=2)
    search.prepare_study(settings)
    interrupted = []

    def before_trial(sampler, study, trial):
        if not interrupted:
            interrupted.append(trial.number)
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(optuna.samplers.RandomSampler, "before_trial", before_trial)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with pytest.raises(KeyboardInterrupt):
            search.run_worker("ignored")
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN  # given back as it was
    finally:
        signal.signal(signal.SIGINT, previous)
    study = store.load_study("ignored")
    assert {t.number: t.state.name for t in study.get_trials(deepcopy=False)} == {0: "FAIL"}


def test_supervisor_gone_reads_the_parent(monkeypatch):
    monkeypatch.setenv(workers.SUPERVISOR_PID_ENV, str(os.getppid()))
    assert not workers.supervisor_gone()
    monkeypatch.setenv(workers.SUPERVISOR_PID_ENV, str(os.getppid() + 100_000))
    assert workers.supervisor_gone()
    monkeypatch.delenv(workers.SUPERVISOR_PID_ENV)
    assert not workers.supervisor_gone()  # not started by a supervisor


SUPERVISOR = """
import sys, time
sys.path.insert(0, {root!r})
from automl_core.search import workers
child = workers.spawn_worker("orphan", None, 0, run="never-prepared")
print(child.pid, flush=True)
time.sleep(600)
"""


@pytest.mark.slow
def test_a_worker_ends_when_its_supervisor_is_killed(runs_dir):
    """SIGKILL of a search cannot stop its workers itself: the kernel interrupts them."""
    supervisor = subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR.format(root=str(ROOT))],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "AUTOML_HOME": str(runs_dir)},
    )
    worker = int(supervisor.stdout.readline())
    time.sleep(1.0)
    supervisor.kill()
    supervisor.wait()
    deadline = time.time() + 60
    while time.time() < deadline and workers.process_alive(worker):
        try:
            os.waitpid(worker, os.WNOHANG)  # not our child: only reaped by init
        except ChildProcessError:
            pass
        time.sleep(0.2)
    assert not workers.process_alive(worker) or _is_zombie(worker)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return False


def test_stale_caches_of_dead_runs_are_swept(runs_dir):
    host = workers.run_token().split(".")[0]
    cache = runs_dir / "cache"
    cache.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    files = {
        "dead": cache / f"my-study-{host}.{dead.pid}.abc123.npz",
        "dead_partial": cache / f"s-{host}.{dead.pid}.abc123.partial.npz",
        "live": cache / f"my-study-{host}.{os.getpid()}.abc123.npz",
        "other_host": cache / f"s-otherhost.{dead.pid}.abc123.npz",
        "legacy": cache / "s-0123456789abcdef0123456789abcdef.npz",
    }
    for path in files.values():
        path.write_bytes(b"x")
    removed = workers.sweep_stale_caches()
    assert set(removed) == {files["dead"], files["dead_partial"]}
    assert all(files[k].exists() for k in ("live", "other_host", "legacy"))


def test_a_run_token_names_its_process():
    host, pid, random = workers.run_token().split(".")
    assert host.isalnum() and int(pid) == os.getpid() and len(random) == 12


class TestResumeByName:
    """``search --study S`` alone resumes S with its stored settings."""

    @pytest.fixture
    def stored(self, runs_dir, monkeypatch):
        settings = SearchSettings(
            study="kept",
            dataset="digits",
            space={"num_conv_layers": [1], "filters": [4, 8], "latent_dim": [4]},
            strategy="random",
            trials=3,
            max_epochs=2,
            seed=7,
            max_images=120,
        )
        search.prepare_study(settings)
        seen = []

        def fake_run_search(settings, storage_url=None, **kwargs):
            seen.append(settings)
            return store.load_study(settings.study, storage_url)

        monkeypatch.setattr(search, "run_search", fake_run_search)
        monkeypatch.setattr("automl_core.cli._print_best", lambda study: None)
        return settings, seen

    def test_the_name_alone_resumes_with_the_stored_settings(self, stored, capsys):
        from automl_core.cli import main

        settings, seen = stored
        assert main(["search", "--study", "kept"]) == 0
        assert seen[0].to_dict() == {**settings.to_dict(), "space": seen[0].space}
        assert seen[0].search_space() == settings.search_space()
        first = capsys.readouterr().out.splitlines()[0]
        assert first == "study kept: dataset digits, strategy random, budget 3 trials"

    def test_a_budget_flag_extends_it(self, stored):
        from automl_core.cli import main

        _, seen = stored
        assert main(["search", "--study", "kept", "--trials", "5", "--max-epochs", "4"]) == 0
        assert (seen[0].trials, seen[0].max_epochs, seen[0].strategy) == (5, 4, "random")

    @pytest.mark.parametrize(
        "flags, named",
        [
            (["--strategy", "tpe"], "strategy='random', not 'tpe'"),
            (["--dataset", "mnist-5k"], "dataset='digits', not 'mnist-5k'"),
            (["--seed", "1"], "seed=7, not 1"),
            (["--filters", "16"], "space="),
        ],
    )
    def test_a_contradicting_flag_is_refused_naming_both_values(
        self, stored, capsys, flags, named
    ):
        from automl_core.cli import main

        assert main(["search", "--study", "kept", *flags]) == 2
        err = capsys.readouterr().err
        assert "already exists with" in err and named in err

    def test_a_new_study_still_takes_the_defaults(self, runs_dir, monkeypatch):
        from automl_core.cli import main

        seen = []
        monkeypatch.setattr(
            search, "run_search", lambda settings, *a, **k: seen.append(settings) or 1 / 0
        )
        with pytest.raises(ZeroDivisionError):
            main(["search", "--study", "fresh"])
        assert (seen[0].dataset, seen[0].strategy, seen[0].max_epochs, seen[0].seed) == (
            "mnist-5k",
            "tpe-cost-asha",
            20,
            0,
        )


class TestHostileSpaces:
    BOMB = "\n".join(
        ["a: &a [x, x, x, x, x, x, x, x, x]"]
        + [
            f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]"
            for i in range(8)
        ]
        + ["filters: *i"]
    )

    def test_a_yaml_alias_bomb_is_refused_before_it_expands(self, tmp_path):
        from automl_core.model.space import load_space

        path = tmp_path / "bomb.yaml"
        path.write_text(self.BOMB)
        assert path.stat().st_size < 400
        started = time.perf_counter()
        with pytest.raises(ConfigError, match="aliases .* are not allowed, found one at line 2"):
            load_space(path)
        assert time.perf_counter() - started < 5  # refused, not expanded (generous bound)

    def test_plain_yaml_still_loads(self, tmp_path):
        from automl_core.model.space import load_space

        path = tmp_path / "space.yaml"
        path.write_text("filters: [8, 16]\nlearning_rate: {low: 0.0001, high: 0.01, log: true}\n")
        assert load_space(path).parameters["filters"].values == (8, 16)

    def test_a_space_file_at_the_size_limit_is_read_and_above_it_refused(
        self, tmp_path, monkeypatch
    ):
        from automl_core.model.space import load_space

        monkeypatch.setenv("AUTOML_MAX_SPACE_FILE_BYTES", "64")
        path = tmp_path / "space.json"
        body = '{"filters": [8, 16]}'
        path.write_text(body + " " * (64 - len(body)))
        assert load_space(path).parameters["filters"].values == (8, 16)
        path.write_text(body + " " * (65 - len(body)))
        with pytest.raises(ConfigError, match="65 bytes, more than the 64 allowed"):
            load_space(path)

    def test_a_tiny_float_step_is_refused_with_a_message(self):
        with pytest.raises(ConfigError, match="learning_rate: the range .* holds about 9.9e\\+28"):
            SearchSpace.from_dict({"learning_rate": {"low": 0.0001, "high": 0.01, "step": 1e-31}})
        with pytest.raises(ConfigError, match="AUTOML_MAX_RANGE_VALUES"):
            SearchSpace.from_dict({"dropout": {"low": 0.0, "high": 0.5, "step": 1e-300}})

    def test_a_stepped_range_at_the_limit(self, monkeypatch):
        monkeypatch.setenv("AUTOML_MAX_RANGE_VALUES", "11")
        space = SearchSpace.from_dict({"dropout": {"low": 0.0, "high": 0.5, "step": 0.05}})
        assert space.parameters["dropout"].step == 0.05
        with pytest.raises(ConfigError, match="more than the 11 allowed"):
            SearchSpace.from_dict({"dropout": {"low": 0.0, "high": 0.5, "step": 0.04}})

    def test_an_integer_range_needs_a_whole_step(self):
        with pytest.raises(ConfigError, match="needs a whole step, got step=0.5"):
            SearchSpace.from_dict({"filters": {"low": 8, "high": 64, "step": 0.5}})

    def test_long_values_are_shortened_in_messages(self):
        with pytest.raises(ConfigError) as caught:
            SearchSpace.from_dict({"activation": ["x" * 100_000]})
        assert len(str(caught.value)) < 400
        with pytest.raises(ConfigError) as caught:
            SearchSpace.from_dict({"y" * 100_000: [1]})
        assert len(str(caught.value)) < 1000


@pytest.mark.slow
def test_stop_fails_and_queues_a_trial_whose_worker_ignored_the_interrupt(runs_dir):
    """A worker that swallows SIGINT (it landed in a garbage-collection callback) is killed
    after the grace period; its trial must not stay RUNNING."""
    import json

    from automl_core.storage.trials import RETRY_ATTR, WORKER_ATTR

    stubborn = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); "
            "print('ready', flush=True); time.sleep(600)",
        ],
        start_new_session=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert stubborn.stdout.readline().strip() == "ready"
    settings = SearchSettings(study="stubborn", dataset="digits", strategy="random")
    study = search.prepare_study(settings)
    trial = study.ask({"filters": optuna.distributions.CategoricalDistribution([4, 8])})
    trial.set_user_attr(WORKER_ATTR, workers.worker_id(stubborn.pid))
    host = workers.run_token().split(".")[0]
    cache = workers.run_cache_path("stubborn", f"{host}.{stubborn.pid}.abcdef")
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"x")
    log = workers.launches_dir() / "stubborn.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    record = processes.LaunchRecord("stubborn", stubborn.pid, time.time(), str(log))
    processes._record_path("stubborn").write_text(json.dumps(record.__dict__))

    assert processes.stop_search("stubborn", grace_seconds=1.0)
    stubborn.wait(timeout=10)
    trials_now = store.load_study("stubborn").get_trials(deepcopy=False)
    assert trials_now[0].state.name == "FAIL"
    assert [t.user_attrs.get(RETRY_ATTR) for t in trials_now[1:]] == [0]  # queued again
    assert trials_now[1].state.name == "WAITING"
    assert not cache.exists()
    assert "1 interrupted trial(s) failed and queued again" in log.read_text()


class TestOneLiveRun:
    @pytest.fixture
    def prepared(self, runs_dir):
        settings = SearchSettings(study="busy", dataset="digits", strategy="random", trials=1)
        return settings, search.prepare_study(settings)

    def _mark(self, study, token, age=0.0):
        from automl_core.storage.trials import RUN_ATTR, RUN_HEARTBEAT_ATTR

        study.set_user_attr(RUN_ATTR, token)
        study.set_user_attr(RUN_HEARTBEAT_ATTR, time.time() - age)

    def test_a_second_search_of_a_running_study_is_refused(self, prepared):
        settings, study = prepared
        host = workers.run_token().split(".")[0]
        self._mark(study, f"{host}.{os.getpid()}.abc")
        with pytest.raises(ConfigError, match="a search of study 'busy' is already running"):
            search.run_search(settings)
        assert not (workers.launches_dir().parent / "logs").exists()  # nothing spawned

    def test_a_run_on_another_machine_counts_while_its_heartbeat_is_fresh(self, prepared):
        _, study = prepared
        self._mark(study, "elsewhere.123.abc")
        assert search.live_run("busy") == "elsewhere.123.abc"
        self._mark(study, "elsewhere.123.abc", age=search.LIVE_RUN_SECONDS + 1)
        assert search.live_run("busy") is None

    def test_a_killed_run_of_this_machine_does_not_block(self, prepared):
        _, study = prepared
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        host = workers.run_token().split(".")[0]
        self._mark(study, f"{host}.{dead.pid}.abc")
        assert search.live_run("busy") is None

    def test_a_finished_search_says_it_is_over(self, tiny_study):
        from automl_core.storage.trials import RUN_ATTR, RUN_HEARTBEAT_ATTR

        study = store.load_study(*tiny_study)
        assert study.user_attrs[RUN_ATTR] and study.user_attrs[RUN_HEARTBEAT_ATTR] is None
        assert search.live_run(*tiny_study) is None


class TestExportFailsClosed:
    def test_an_export_folder_under_a_file_is_refused(self, tiny_study, tmp_path):
        from automl_core.analysis.export import ExportError, export_study

        (tmp_path / "passwd").write_text("root:x:0:0")
        with pytest.raises(ExportError, match="cannot make the export folder .*passwd/x"):
            export_study(tiny_study[0], tmp_path / "passwd" / "x", storage_url=tiny_study[1])

    def test_a_full_disk_leaves_no_partial_file(self, tiny_study, tmp_path, monkeypatch):
        from automl_core.analysis import export

        out = tmp_path / "out"
        real = Path.write_bytes

        def full_after_the_bundle(self, data):
            if self.name.endswith("-report.html.partial"):
                raise OSError(28, "No space left on device")
            return real(self, data)

        monkeypatch.setattr(Path, "write_bytes", full_after_the_bundle)
        with pytest.raises(export.ExportError, match="No space left on device"):
            export.export_study(tiny_study[0], out, storage_url=tiny_study[1])
        assert list(out.iterdir()) == []

    def test_the_cli_says_it_in_one_line(self, tiny_study, tmp_path, capsys):
        from automl_core.cli import main

        (tmp_path / "f").write_text("")
        code = main(["export", "--study", "tiny", "--out", str(tmp_path / "f" / "x")])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and "cannot make the export folder" in err


class TestUnwritableRunsFolder:
    def test_the_cli_says_it_in_one_line(self, tmp_path, monkeypatch, capsys):
        from automl_core.cli import main

        blocker = tmp_path / "file"
        blocker.write_text("")
        monkeypatch.setenv("AUTOML_HOME", str(blocker / "runs"))  # under a file: unwritable
        storage = f"sqlite:///{tmp_path / 'studies.db'}"  # the database itself is writable
        code = main(
            ["search", "--dataset", "digits", "--study", "ro", "--trials", "1"]
            + ["--storage", storage]
        )
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1
        assert "could not be read or written" in err and "Traceback" not in err

    def test_a_page_says_it_without_the_servers_paths(self, tmp_path):
        from streamlit.testing.v1 import AppTest

        def page():
            from dashboard import state

            with state.shown_errors():
                raise PermissionError(13, "Permission denied", "/srv/secret/runs/x")

        at = AppTest.from_function(page).run()
        assert not at.exception
        (error,) = at.error
        assert "Permission denied" in error.value and "/srv/secret" not in error.value


class TestExhaustedSpace:
    SPACE = {"num_conv_layers": [1], "filters": [4, 8], "activation": ["relu"], "latent_dim": [4]}

    @pytest.mark.slow
    def test_a_small_space_is_trained_once_and_the_search_says_it_is_exhausted(self, runs_dir):
        from automl_core.storage.trials import read_trials

        settings = SearchSettings(
            study="small",
            dataset="digits",
            space=self.SPACE,
            strategy="random",
            trials=12,  # more than the space holds
            max_epochs=1,
            max_images=120,
        )
        search.prepare_study(settings)
        study = search.run_worker("small")
        records = read_trials(study)
        trained = [r for r in records if r.duplicate_of is None and r.state == "COMPLETE"]
        assert sorted(r.config["filters"] for r in trained) == [4, 8]
        assert len(records) < 12  # it stopped when the space was exhausted
        assert "each of its 2 configurations" in search.exhausted_message(study)

    def test_an_untried_configuration_is_queued_after_a_repeat(self, runs_dir):
        from automl_core.storage.trials import read_trials

        settings = SearchSettings(study="q", dataset="digits", space=self.SPACE, trials=5)
        study = search.prepare_study(settings)
        space = settings.search_space()
        done = optuna.trial.create_trial(
            params={"filters": 4},
            distributions={"filters": optuna.distributions.CategoricalDistribution([4, 8])},
            value=0.1,
            user_attrs={"config": {**space.configurations()[0].to_dict()}, "artifact_dir": "x"},
        )
        study.add_trial(done)
        queued = search.queue_an_untried_configuration(study, space, read_trials(study), 0)
        assert queued["filters"] == 8
        # one waits in the queue: no second one is queued on top of it
        assert search.queue_an_untried_configuration(study, space, read_trials(study), 1) is None

    def test_a_configuration_stopped_at_its_rung_is_not_trained_again(self):
        from automl_core.storage.trials import TrialRecord, stopped_twin

        config = {"filters": 4}
        records = [
            TrialRecord(0, "PRUNED", config=config),
            TrialRecord(1, "PRUNED", config=config, duplicate_of=0),
        ]
        assert stopped_twin(records, config).number == 0
        assert stopped_twin(records, {"filters": 8}) is None
        assert records[1].note == "same configuration as trial 0, stopped at its rung"

    def test_repeats_do_not_use_up_a_finite_budget_but_do_an_infinite_one(self):
        from automl_core.storage.trials import BudgetCount, TrialRecord

        records = [
            TrialRecord(0, "COMPLETE", artifact_dir="a"),
            TrialRecord(1, "COMPLETE", artifact_dir="a", duplicate_of=0),
        ]
        assert BudgetCount.of(records, count_duplicates=False).done == 1
        assert BudgetCount.of(records).done == 2
