"""Runaway work and lost results: failures count and stop a search, models never overwrite
each other, a stale trial is waited for, an oversized model is a failed trial."""

from __future__ import annotations

import os
import signal
import time
from types import SimpleNamespace

import optuna
import pytest

from automl_core.errors import ConfigError, StorageError, TrialFailure
from automl_core.model.models import build_autoencoder, estimate_parameters
from automl_core.model.space import ModelConfig, SearchSpace
from automl_core.search import runner as search
from automl_core.search import workers
from automl_core.storage import store, trials
from automl_core.storage.settings import SearchSettings

TINY = {"num_conv_layers": [1], "filters": [4], "latent_dim": [4, 8], "batch_size": [32]}


def _settings(**overrides) -> SearchSettings:
    values = dict(
        study="h", dataset="digits", space=TINY, strategy="random", max_epochs=1, max_images=60
    )
    values.update(overrides)
    return SearchSettings(**values)


class TestSpaceAndModelCaps:
    def test_grid_at_the_limit_is_accepted_and_one_past_it_refused(self, monkeypatch):
        monkeypatch.setenv("AUTOML_MAX_GRID_SIZE", "4")
        space = SearchSpace.from_dict({"filters": [4, 8], "latent_dim": [4, 8]})
        assert len(space.configurations()) == 4
        bigger = SearchSpace.from_dict({"filters": [4, 8], "latent_dim": [4, 8, 16]})
        with pytest.raises(ConfigError, match="6 configurations, more than the 4 allowed"):
            bigger.grid()

    def test_a_billion_point_grid_is_refused_without_allocating(self):
        values = list(range(1, 33))
        spec = {"filters": values, "latent_dim": values, "batch_size": values, "kernel_size": [3]}
        spec.update(num_conv_layers=[1, 2, 3, 4], activation=["relu", "elu", "tanh", "gelu"])
        with pytest.raises(ConfigError, match="more than the 100,000 allowed"):
            SearchSpace.from_dict(spec).grid()

    def test_huge_values_are_refused_by_the_parameter_caps(self):
        with pytest.raises(ConfigError, match="filters must be at most 1024, got filters=100000"):
            SearchSpace.from_dict({"filters": [100000]})
        with pytest.raises(ConfigError, match="latent_dim must be at most 4096"):
            SearchSpace.from_dict({"latent_dim": [10**9]})

    def test_estimate_matches_keras(self):
        for config in (ModelConfig(), ModelConfig(block="strided", num_conv_layers=3)):
            built = build_autoencoder(config, (30, 45, 3)).autoencoder
            assert estimate_parameters(config, (30, 45, 3)) == built.count_params()

    def test_model_over_the_parameter_limit_is_refused_before_it_is_built(self, monkeypatch):
        config = ModelConfig(num_conv_layers=1, filters=1024, latent_dim=4096)
        assert estimate_parameters(config, (28, 28, 1)) > 50_000_000
        with pytest.raises(ConfigError, match="more than the 50,000,000 allowed"):
            build_autoencoder(config, (28, 28, 1))
        monkeypatch.setenv(
            "AUTOML_MAX_MODEL_PARAMETERS", str(estimate_parameters(config, (8, 8, 1)))
        )
        build_autoencoder(ModelConfig(num_conv_layers=1, filters=4, latent_dim=4), (8, 8, 1))


class _Unsaveable:
    def save(self, path):
        path.write_bytes(b"partial")
        raise OSError(28, "No space left on device")


class TestArtifacts:
    def test_failed_save_leaves_no_staging_folder(self, tmp_path):
        with pytest.raises(StorageError, match="could not be saved.*No space left"):
            store.save_trial_artifacts(tmp_path, "s-1", 0, _Unsaveable(), {}, {}, {})
        assert list((tmp_path / "s-1").iterdir()) == []

    def test_an_existing_trial_folder_is_never_replaced(self, tmp_path):
        kept = tmp_path / "s-1" / "trial_00000"
        kept.mkdir(parents=True)
        (kept / "model.keras").write_text("someone else's model")

        class Saveable:
            def save(self, path):
                path.write_text("new")

        with pytest.raises(StorageError, match="already exists"):
            store.save_trial_artifacts(tmp_path, "s-1", 0, Saveable(), {}, {}, {})
        assert (kept / "model.keras").read_text() == "someone else's model"
        assert sorted(p.name for p in (tmp_path / "s-1").iterdir()) == ["trial_00000"]

    def test_same_study_name_in_two_storages_gets_two_folders(self, runs_dir):
        a = search.prepare_study(_settings(study="same"), f"sqlite:///{runs_dir / 'a.db'}")
        b = search.prepare_study(_settings(study="same"), f"sqlite:///{runs_dir / 'b.db'}")
        folder_a, folder_b = store.study_artifact_folder(a), store.study_artifact_folder(b)
        assert folder_a != folder_b and folder_a.startswith("same-")
        # a re-run of one study keeps its folder
        again = search.prepare_study(_settings(study="same"), f"sqlite:///{runs_dir / 'a.db'}")
        assert store.study_artifact_folder(again) == folder_a


class TestFailuresCount:
    def _study_with_running_trial(self, runs_dir, worker: str):
        study = search.prepare_study(_settings(study="dead"), f"sqlite:///{runs_dir / 's.db'}")
        trial = study.ask()
        trial.set_user_attr(trials.WORKER_ATTR, worker)
        return study, trial.number

    def test_trial_of_a_dead_worker_fails_with_the_reason_and_counts(self, runs_dir):
        pid = 999_999
        study, number = self._study_with_running_trial(runs_dir, workers.worker_id(pid))
        storage = store.open_storage(f"sqlite:///{runs_dir / 's.db'}")
        child = SimpleNamespace(pid=pid, returncode=-9)
        search._fail_trial_of_dead_worker(storage, study, child, "Killed")
        record = trials.read_trials(study)[number]
        assert record.state == "FAIL" and record.counts_toward_budget
        assert record.fail_reason == "its worker process died (exit status -9): Killed"

    def test_search_stops_after_the_limit_of_failures_in_a_row(self, monkeypatch):
        monkeypatch.setenv("AUTOML_MAX_CONSECUTIVE_FAILURES", "3")
        study = optuna.create_study()
        for reason in ("disk full", "disk full", "disk full"):
            trial = study.ask()
            trial.set_user_attr(trials.FAIL_REASON_ATTR, reason)
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        records = trials.read_trials(study)
        search._stop_if_failing("s", records[:2], 0.0, 0, "")  # two: goes on
        with pytest.raises(TrialFailure, match="the last 3 trials of study 's' failed.*disk full"):
            search._stop_if_failing("s", records, 0.0, 0, "")
        # failures from before this run started do not stop it
        search._stop_if_failing("s", records, time.time() + 60, 0, "")

    def test_a_success_ends_the_run_of_failures(self):
        study = optuna.create_study()
        for outcome in ("fail", "fail", "ok", "fail"):
            trial = study.ask()
            if outcome == "fail":
                trial.set_user_attr(trials.FAIL_REASON_ATTR, "boom")
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            else:
                study.tell(trial, 0.1)
        assert [r.number for r in trials.failures_in_a_row(trials.read_trials(study))] == [3]

    def test_workers_that_keep_crashing_stop_the_search(self, monkeypatch):
        monkeypatch.setenv("AUTOML_MAX_CONSECUTIVE_FAILURES", "2")
        with pytest.raises(TrialFailure, match="exited 2 times in a row.*ImportError"):
            search._stop_if_failing("s", [], 0.0, 2, "ImportError: no module")


@pytest.mark.slow
def test_full_artifact_disk_fails_trials_and_stops_the_search(runs_dir, monkeypatch):
    blocker = runs_dir.parent / "not-a-folder"
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("a file where the artifact folder should be")
    monkeypatch.setenv("AUTOML_ARTIFACTS", str(blocker / "artifacts"))
    monkeypatch.setenv("AUTOML_MAX_CONSECUTIVE_FAILURES", "2")
    with pytest.raises(TrialFailure, match="the last 2 trials .* failed.*could not be saved"):
        search.run_search(_settings(study="full", trials=6))
    study = store.load_study("full")
    failed = [r for r in trials.read_trials(study) if r.state == "FAIL"]
    # a trial in flight when the search stopped is failed without a reason of its own (and
    # queued again); every trial that failed by itself says why
    own = [r for r in failed if r.fail_reason]
    assert len(own) >= 2 and all("could not be saved" in r.fail_reason for r in own), failed
    assert not list(runs_dir.rglob(".trial_*"))


@pytest.mark.slow
def test_rerun_waits_for_a_stale_running_trial_instead_of_exiting(runs_dir, monkeypatch):
    monkeypatch.setenv("AUTOML_HEARTBEAT_SECONDS", "1")
    store._open_storage.cache_clear()
    url = f"sqlite:///{runs_dir / 'studies.db'}"
    settings = _settings(study="stale", trials=1)
    study = search.prepare_study(settings, url)
    # a trial left RUNNING by a search killed mid-trial, with its last heartbeat
    storage = store.open_storage(url)
    orphan = study.ask()
    study_id = storage.get_study_id_from_name("stale")
    storage.record_heartbeat(storage.get_trial_id_from_study_id_trial_number(study_id, 0))
    try:
        finished = search.run_search(settings, url)
    finally:
        store._open_storage.cache_clear()
    records = trials.read_trials(finished)
    assert records[orphan.number].state == "FAIL"
    assert [r.state for r in records].count("COMPLETE") == 1


def test_an_interrupt_while_a_trial_is_created_fails_it_instead_of_leaving_it_running(
    runs_dir, monkeypatch
):
    """Ctrl-C landing inside ``study.ask()``, before the trial names its worker, is held until
    it does: the trial ends FAIL (it drew no parameters, so there is nothing to queue again)
    and does not count toward the budget, instead of staying RUNNING unowned."""
    settings = _settings(study="ask", trials=2)
    search.prepare_study(settings)
    interrupted = []

    def before_trial(sampler, study, trial):
        if not interrupted:
            interrupted.append(trial.number)
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(optuna.samplers.RandomSampler, "before_trial", before_trial)
    with pytest.raises(KeyboardInterrupt):
        search.run_worker("ask")
    study = store.load_study("ask")
    states = {t.number: t.state.name for t in study.get_trials(deepcopy=False)}
    assert interrupted == [0] and states == {0: "FAIL"}
    assert study.trials[0].user_attrs[trials.WORKER_ATTR] == workers.worker_id()
    assert trials.BudgetCount.of(trials.read_trials(study)).done == 0


def test_an_interrupt_hold_delivers_the_held_signal_on_release():
    seen = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    try:
        with workers.InterruptHold() as hold:
            os.kill(os.getpid(), signal.SIGTERM)
            assert seen == []
            hold.release()
            assert seen == [signal.SIGTERM]
        assert seen == [signal.SIGTERM]  # delivered once
    finally:
        signal.signal(signal.SIGTERM, previous)
