"""Before a search starts: one settings document, one way to resolve settings, bad input
refused before any worker, and the worker pool a search runs its trials in."""

from __future__ import annotations

import json
import re
import signal

import pytest

from automl_core import cli
from automl_core.errors import ConfigError
from automl_core.search import preflight, runner, workers
from automl_core.storage.settings import SearchSettings
from automl_core.storage.trials import WORKER_ATTR
from tests.conftest import TINY_SPACE


def _no_process(*args, **kwargs):
    pytest.fail("a worker process was started for a search that should have been refused")


class TestSettingsDocument:
    def test_round_trip(self):
        settings = SearchSettings(
            study="s", dataset="digits", space={"filters": [4]}, trials=3, timeout=9.5
        )
        assert SearchSettings.from_json(settings.to_json()) == settings

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("{", r"the search settings is not JSON \(Expecting property name"),
            ("[1, 2]", "holds a JSON list; expected an object of settings"),
            ('{"dataset": "digits"}', "name no study; expected a 'study' value"),
            ('{"study": "s", "epochs": 3}', "unknown search setting\\(s\\) epochs; expected"),
            ('{"study": "s", "trials": "3"}', "invalid search settings"),
            ('{"study": "s", "trials": 0}', "trials must be a positive integer, got trials=0"),
            ('{"study": "../x"}', "invalid study name"),
        ],
    )
    def test_a_bad_document_is_named(self, text, message):
        with pytest.raises(ConfigError, match=message):
            SearchSettings.from_json(text)


class TestResolveSettings:
    def test_a_new_study_takes_the_defaults(self, runs_dir):
        settings = preflight.resolve_settings({"dataset": "digits", "trials": None})
        assert settings.study == "digits-tpe-cost-asha" and settings.trials is None
        assert settings.space == preflight.default_space("tpe-cost-asha")

    def test_a_stored_study_is_the_default_and_a_contradiction_is_refused(self, tiny_study):
        name, url = tiny_study
        resumed = preflight.resolve_settings({"study": name, "trials": 9}, url)
        assert resumed.dataset == "digits" and resumed.strategy == "grid" and resumed.trials == 9
        with pytest.raises(ConfigError, match="already exists with dataset='digits'"):
            preflight.resolve_settings({"study": name, "dataset": "mnist-5k"}, url)

    def test_a_space_is_built_over_the_stored_one(self, tiny_study):
        name, url = tiny_study
        seen = []

        def space(base):
            seen.append(base)
            return {**base, "filters": [4]}

        resumed = preflight.resolve_settings({"study": name}, url, space)
        assert seen[0]["latent_dim"] == TINY_SPACE["latent_dim"]
        assert resumed.space["filters"] == [4]


class TestSettingsFile:
    def test_the_cli_reads_a_settings_file_and_flags_override_it(self, runs_dir, tmp_path):
        settings = SearchSettings(study="from-file", dataset="digits", space=TINY_SPACE)
        path = tmp_path / "s.json"
        path.write_text(settings.to_json(), "utf-8")
        args = cli._build_parser().parse_args(["search", "--settings", str(path), "--trials", "2"])
        resolved = cli._settings_from_args(args)
        expected = {**settings.to_dict(), "trials": 2, "space": settings.search_space().to_dict()}
        assert resolved == SearchSettings(**expected)

    @pytest.mark.parametrize(
        ("content", "message"),
        [
            (None, "settings file '.*missing.json' does not exist"),
            (b"\xff\xfe{", "settings file '.*s.json' is not JSON"),
            (b'{"study": "s", "nope": 1}', "unknown search setting\\(s\\) nope"),
        ],
    )
    def test_a_bad_settings_file_is_one_line(
        self, runs_dir, tmp_path, monkeypatch, capsys, content, message
    ):
        monkeypatch.setattr(workers, "spawn_worker", _no_process)
        path = tmp_path / ("missing.json" if content is None else "s.json")
        if content is not None:
            path.write_bytes(content)
        assert cli.main(["search", "--settings", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ")
        assert re.search(message, err)

    def test_a_settings_file_at_the_size_limit(self, runs_dir, tmp_path, monkeypatch, capsys):
        monkeypatch.setenv("AUTOML_MAX_SPACE_FILE_BYTES", "200")
        path = tmp_path / "s.json"
        text = json.dumps({"study": "s", "dataset": "digits"})
        path.write_text(text + " " * (200 - len(text)), "utf-8")  # at the limit: read
        assert cli._settings_file(str(path))["study"] == "s"
        path.write_text(text + " " * (201 - len(text)), "utf-8")  # one byte over: refused
        assert cli.main(["search", "--settings", str(path)]) == 2
        assert "is 201 bytes, more than the 200 allowed" in capsys.readouterr().err


class TestRefusedBeforeAnyWorker:
    @pytest.mark.parametrize(
        ("settings", "message"),
        [
            ({"space": {**TINY_SPACE, "num_conv_layers": [4]}}, "at most 3 layers"),
            ({"strategy": "nope"}, "unknown strategy 'nope'"),
            ({"dataset": "/no/such/file.npz"}, "does not exist"),
        ],
    )
    def test_run_search_refuses_before_spawning(self, runs_dir, monkeypatch, settings, message):
        monkeypatch.setenv(workers.WORKER_POOL_ENV, "process")
        monkeypatch.setattr(workers, "spawn_worker", _no_process)
        values = {"study": "s", "dataset": "digits", "space": TINY_SPACE, **settings}
        with pytest.raises(Exception, match=message):
            runner.run_search(SearchSettings(**values))
        assert not (runs_dir / "logs").exists()


class TestWorkerPool:
    def test_the_default_pool_is_processes(self, monkeypatch):
        monkeypatch.delenv(workers.WORKER_POOL_ENV, raising=False)
        assert workers.worker_pool() == "process"

    def test_an_unknown_pool_is_named(self, runs_dir, monkeypatch):
        monkeypatch.setenv(workers.WORKER_POOL_ENV, "threads")
        with pytest.raises(ConfigError, match="AUTOML_WORKER_POOL='threads' is not a worker pool"):
            runner.run_search(SearchSettings(study="s", dataset="digits", space=TINY_SPACE))

    def test_an_inline_search_trains_in_this_process(self, runs_dir, monkeypatch):
        monkeypatch.setenv(workers.WORKER_POOL_ENV, "inline")
        monkeypatch.setattr(workers, "spawn_worker", _no_process)
        finished = []
        settings = SearchSettings(
            study="inline",
            dataset="digits",
            space={**TINY_SPACE, "num_conv_layers": [1]},
            strategy="grid",
            max_epochs=1,
            max_images=120,
        )
        study = runner.run_search(settings, on_trial=lambda s, t: finished.append(t.number))
        assert finished == [0, 1] and all(t.state.name == "COMPLETE" for t in study.trials)
        assert {t.user_attrs.get(WORKER_ATTR) for t in study.trials} == {workers.worker_id()}

    def test_an_inline_worker_that_fails_says_why(self, runs_dir, monkeypatch):
        def broken(*args, **kwargs):
            raise ConfigError("the data went away")

        monkeypatch.setattr(runner, "run_worker", broken)
        worker = runner.InlineWorker("s", None, 0, "run")
        assert worker.poll() == 1 and worker.error_line == "error: the data went away"

    def test_a_stopped_inline_worker_never_runs(self, monkeypatch):
        monkeypatch.setattr(runner, "run_worker", _no_process)
        worker = runner.InlineWorker("s", None, 0, "run")
        workers.stop_workers([worker])
        assert worker.poll() == -signal.SIGINT


def test_the_console_script_names_itself(monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["/venv/bin/automl", "--help"])
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert capsys.readouterr().out.startswith("usage: automl ")


class TestStudyRecord:
    def test_a_finished_search_reads_back_as_one_record(self, tiny_study):
        from automl_core.storage import store
        from automl_core.storage.settings import StudyRecord

        study = store.load_study(*tiny_study)
        record = StudyRecord.of(study)
        assert record.name == "tiny" and record.settings.dataset == "digits"
        assert record.precision.policy == "float32" and record.deadline is None
        assert record.run and record.heartbeat is None  # the run is over
        assert record.artifact_key and record.artifact_root

    def test_a_foreign_study_has_no_settings_and_says_so(self, tmp_path):
        import optuna

        from automl_core.errors import StorageError
        from automl_core.storage.settings import StudyRecord

        study = optuna.create_study(study_name="foreign", storage=f"sqlite:///{tmp_path}/f.db")
        record = StudyRecord.of(study)
        assert record.settings is None and record.run is None
        with pytest.raises(StorageError, match="'foreign' has no search settings"):
            record.search_settings()
