"""Smart, parallel and fault-tolerant search: pruning, Pareto fronts, workers, kills, budgets."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import optuna
import pytest

from automl_core.search.runner import prepare_study, run_search, run_worker
from automl_core.storage import store
from automl_core.storage.results import trials_frame
from automl_core.storage.settings import SearchSettings

pytestmark = pytest.mark.slow

RANGE_SPACE = {
    "num_conv_layers": [1],
    "filters": [4, 8],
    "latent_dim": [4, 8],
    "batch_size": [32],
    "learning_rate": {"low": 1e-5, "high": 3e-2, "log": True},
}
COMPLETE = optuna.trial.TrialState.COMPLETE


def _settings(**overrides) -> SearchSettings:
    values = dict(
        study="p",
        dataset="digits",
        space=RANGE_SPACE,
        strategy="random",
        max_epochs=1,
        max_images=120,
        trials=2,
    )
    values.update(overrides)
    return SearchSettings(**values)


def test_successive_halving_prunes(runs_dir):
    study = run_search(_settings(strategy="asha", trials=8, max_epochs=4))
    states = trials_frame(study)["state"].tolist()
    assert "PRUNED" in states and "COMPLETE" in states
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert all(not t.user_attrs.get(store.ARTIFACT_ATTR) for t in pruned)


def test_nsga2_gives_a_pareto_front(runs_dir):
    study = run_search(_settings(strategy="nsga2", trials=4))
    assert len(study.directions) == 2
    front = study.best_trials
    assert 1 <= len(front) <= 4
    for trial in front:
        assert trial.values[1] == trial.user_attrs["metrics"]["compression_ratio"]


def test_cost_aware_search_with_two_workers_records_what_its_time_model_needs(
    process_workers, runs_dir
):
    from automl_core.model.space import SearchSpace
    from automl_core.search.strategies import STRATEGIES, StrategyContext
    from automl_core.storage.settings import study_settings

    space = {**RANGE_SPACE, "num_conv_layers": [1, 2], "filters": [4, 16]}
    study = run_search(
        _settings(strategy="tpe-cost", space=space, trials=7, max_epochs=2), workers=2
    )
    complete = [t for t in study.get_trials() if t.state == COMPLETE]
    assert len(complete) >= 7
    # every trial reported each epoch: the time model's seconds per epoch come from these
    assert all(len(t.intermediate_values) == t.user_attrs["metrics"]["epochs"] for t in complete)
    settings = study_settings(study)
    sampler = STRATEGIES["tpe-cost"].make_sampler(
        StrategyContext(SearchSpace.from_dict(settings.space), 0, (8, 8, 1), 2)
    )
    sampler.fit_time_model(study.get_trials())
    cheap = {
        "num_conv_layers": 1,
        "filters": 4,
        "latent_dim": 4,
        "batch_size": 32,
        "learning_rate": 1e-3,
    }
    assert sampler.predicted_cost(cheap) < sampler.predicted_cost(
        {**cheap, "num_conv_layers": 2, "filters": 16}
    )


def test_timeout_stops_cleanly(runs_dir):
    started = time.monotonic()
    study = run_search(_settings(trials=None, timeout=5, max_epochs=1))
    assert time.monotonic() - started < 120
    states = {t.state for t in study.trials}
    assert optuna.trial.TrialState.RUNNING not in states and COMPLETE in states


def test_two_local_workers_share_a_study_while_a_reader_polls(process_workers, runs_dir):
    import threading

    errors: list[Exception] = []
    finished = threading.Event()

    def reader():  # what the dashboard does while a search runs
        while not finished.is_set():
            try:
                trials_frame(store.load_study("p"))
            except store.StorageError:
                pass  # not created yet
            except Exception as exc:  # "database is locked" would land here
                errors.append(exc)
            time.sleep(0.05)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        study = run_search(_settings(trials=4), workers=2)
    finally:
        finished.set()
        thread.join()
    assert not errors, errors
    complete = [t for t in study.get_trials() if t.state == COMPLETE]
    assert 4 <= len(complete) <= 5  # two workers may both start the last trial
    numbers = [t.number for t in complete]
    assert len(set(numbers)) == len(numbers)
    folders = {t.user_attrs[store.ARTIFACT_ATTR] for t in complete}
    assert len(folders) == len(complete)


def _wait_for_running(name: str, url: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            study = store.load_study(name, url)
        except store.StorageError:  # the process has not created it yet
            time.sleep(0.2)
            continue
        if any(t.state == optuna.trial.TrialState.RUNNING for t in study.get_trials()):
            return
        time.sleep(0.2)
    raise AssertionError("no trial started running")


def test_killed_worker_trial_is_retried_and_study_completes(runs_dir, monkeypatch):
    monkeypatch.setenv("AUTOML_HEARTBEAT_SECONDS", "1")
    url = f"sqlite:///{runs_dir / 'killed.db'}"
    settings = _settings(study="killed", trials=2, max_epochs=3, max_images=600)
    prepare_study(settings, url)
    worker = subprocess.Popen(
        [sys.executable, "-m", "automl_core", "worker", "--study", "killed", "--storage", url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_running("killed", url)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    time.sleep(3.5)  # past the grace period: the heartbeat is stale
    study = run_worker("killed", url)
    trials = study.get_trials()
    complete = [t for t in trials if t.state == COMPLETE]
    assert len(complete) == 2
    killed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(killed) == 1
    retried = [optuna.storages.RetryFailedTrialCallback.retried_trial_number(t) for t in complete]
    assert killed[0].number in retried
    assert not any(t.state == optuna.trial.TrialState.RUNNING for t in trials)


def test_ctrl_c_stops_the_search_and_a_rerun_resumes(process_workers, runs_dir):
    command = [
        sys.executable,
        "-m",
        "automl_core",
        "search",
        "--dataset",
        "digits",
        "--max-images",
        "600",
        "--strategy",
        "random",
        "--trials",
        "2",
        "--max-epochs",
        "20",  # trials long enough to be interrupted: training is fast
        "--filters",
        "4",
        "--latent-dim",
        "4",
        "--num-conv-layers",
        "1",
        "--study",
        "interrupted",
        "--workers",
        "2",
    ]
    search = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = store.default_storage_url()
    try:
        _wait_for_running("interrupted", url)
    finally:
        os.killpg(search.pid, signal.SIGINT)
        output = search.communicate(timeout=120)[0].decode()
    assert search.returncode == 130, output
    study = store.load_study("interrupted", url)
    assert not any(t.state == optuna.trial.TrialState.RUNNING for t in study.get_trials())
    time.sleep(0.5)
    children = subprocess.run(
        ["pgrep", "-f", "automl_core worker --study interrupted"], capture_output=True, text=True
    )
    assert children.stdout.strip() == "", "worker processes outlived the stopped search"
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    study = store.load_study("interrupted", url)
    assert len([t for t in study.get_trials() if t.state == COMPLETE]) >= 2


@pytest.mark.postgres
def test_two_workers_share_a_study_over_postgresql(process_workers, runs_dir, postgres_url):
    name = f"pg-{uuid.uuid4().hex[:8]}"
    try:
        study = run_search(_settings(study=name, trials=4), storage_url=postgres_url, workers=2)
        complete = [t for t in study.get_trials() if t.state == COMPLETE]
        assert 4 <= len(complete) <= 5
        assert len({t.number for t in complete}) == len(complete)
        for trial in complete:
            assert store.load_trial_model(study, trial.number) is not None
    finally:
        try:
            optuna.delete_study(study_name=name, storage=store.open_storage(postgres_url))
        except KeyError:
            pass
