"""Training and search: stored trials, resume, failures, strategies, budgets."""

from __future__ import annotations

import json

import numpy as np
import pytest

from automl_core.errors import ConfigError, StorageError
from automl_core.model.datasets import load_dataset
from automl_core.model.space import ModelConfig
from automl_core.model.training import train_autoencoder
from automl_core.search.runner import run_search
from automl_core.search.strategies import STRATEGIES, get_strategy
from automl_core.storage import store
from automl_core.storage.results import best_trial, trials_frame
from automl_core.storage.settings import SearchSettings

TINY = {"num_conv_layers": [1], "filters": [4], "latent_dim": [4, 8], "batch_size": [32]}


def _settings(**overrides) -> SearchSettings:
    values = dict(
        study="s", dataset="digits", space=TINY, strategy="grid", max_epochs=1, max_images=120
    )
    values.update(overrides)
    return SearchSettings(**values)


@pytest.mark.slow
def test_train_autoencoder_reports_metrics():
    data = load_dataset("digits", max_images=120)
    trained = train_autoencoder(ModelConfig(num_conv_layers=1, filters=4, latent_dim=4), data, 2)
    m = trained.metrics
    assert m.epochs == 2 and len(trained.history["val_loss"]) == 2
    assert m.val_mse > 0 and np.isfinite(m.test_psnr) and -1 <= m.test_ssim <= 1
    assert m.compression_ratio == 64 / 4
    assert m.param_count == trained.models.autoencoder.count_params()


@pytest.mark.slow
def test_tiny_study_is_stored_and_loads_back(tiny_study):
    name, url = tiny_study
    study = store.load_study(name, url)
    frame = trials_frame(study)
    assert len(frame) == 4 and set(frame["state"]) == {"COMPLETE"}
    best = best_trial(study)
    folder = store.trial_artifact_dir(study, best)
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["val_mse"] == pytest.approx(frame["val_mse"].min())
    model = store.load_trial_model(study, best.number)
    x = load_dataset("digits", max_images=150).x_test[:2]
    assert model.predict(x, verbose=0).shape == x.shape
    assert store.load_trial_history(study, best.number)["val_loss"]


@pytest.mark.slow
def test_rerun_trains_nothing_new(runs_dir):
    seen = []
    run_search(_settings(), on_trial=lambda s, t: seen.append(t.number))
    assert seen == [0, 1]
    study = run_search(_settings(), on_trial=lambda s, t: seen.append(t.number))
    assert seen == [0, 1] and len(study.trials) == 2


@pytest.mark.slow
def test_diverging_trial_is_failed_with_reason_and_search_goes_on(runs_dir):
    space = {**TINY, "latent_dim": [4], "optimizer": ["sgd", "adam"], "learning_rate": [1e12]}
    study = run_search(_settings(space=space, max_epochs=2))
    frame = trials_frame(study)
    assert len(frame) == 2
    failed = frame[frame["state"] == "FAIL"]
    assert len(failed) >= 1 and failed["note"].str.contains("diverged").all()


def test_missing_model_file_is_reported(tiny_study, tmp_path, monkeypatch):
    import shutil

    name, url = tiny_study
    copy = tmp_path / "copy"
    shutil.copytree(store.runs_home(), copy)
    monkeypatch.setenv("AUTOML_HOME", str(copy))
    study = store.load_study(name, f"sqlite:///{copy / 'studies.db'}")
    study.set_user_attr(store.ARTIFACT_ROOT_ATTR, str(copy / "artifacts"))
    shutil.rmtree(copy / "artifacts")
    with pytest.raises(store.ArtifactMissing, match="model file of trial 0 .* is missing"):
        store.load_trial_model(study, 0)


@pytest.mark.parametrize("name", ["../evil", "a/b", "<script>", "", "x" * 101, "a b"])
def test_bad_study_names(name):
    with pytest.raises(ConfigError, match="invalid study name"):
        _settings(study=name)


def test_unknown_strategy(runs_dir):
    with pytest.raises(
        ConfigError, match="unknown strategy 'bayes'; expected one of grid, random"
    ):
        run_search(_settings(strategy="bayes"))


def test_grid_over_a_range_says_why(runs_dir):
    space = {**TINY, "learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}}
    with pytest.raises(ConfigError, match="grid search needs a list.*learning_rate is a range"):
        run_search(_settings(space=space))


@pytest.mark.parametrize(
    "url", ["not-a-url", "nosuchdb://x/y", "postgresql://nobody@127.0.0.1:1/none"]
)
def test_malformed_or_unreachable_storage(runs_dir, url):
    with pytest.raises(StorageError, match="storage"):
        run_search(_settings(), storage_url=url)


def test_workers_and_budget_values(runs_dir):
    with pytest.raises(ConfigError, match="workers must be a positive integer, got workers=0"):
        run_search(_settings(), workers=0)
    with pytest.raises(
        ConfigError, match="timeout must be a positive number of seconds, got timeout=-5"
    ):
        _settings(timeout=-5)
    with pytest.raises(ConfigError, match="trials must be a positive integer"):
        _settings(trials=0)


def test_worker_for_missing_study(runs_dir):
    from automl_core.search.runner import run_worker

    with pytest.raises(StorageError, match="no study named 'ghost'"):
        run_worker("ghost")


def test_resume_with_other_settings_is_refused(tiny_study, tmp_path, monkeypatch):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(store.runs_home(), copy)
    monkeypatch.setenv("AUTOML_HOME", str(copy))
    with pytest.raises(ConfigError, match="already exists with dataset='digits', not 'mnist-5k'"):
        run_search(_settings(study="tiny", dataset="mnist-5k"))


def test_every_strategy_is_registered_with_a_description():
    for name, strategy in STRATEGIES.items():
        assert strategy.description
        if strategy.requires is None:
            assert get_strategy(name) is strategy


def test_gp_without_torch_says_how_to_enable_it(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a)
    )
    with pytest.raises(
        ConfigError, match="strategy 'gp' needs the package 'torch'.*pip install torch"
    ):
        get_strategy("gp")
