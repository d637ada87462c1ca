"""The linear probe recorded with every finished trial: the metric, its limit, its column."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from optuna.trial import TrialState

from automl_core.analysis import leaderboard
from automl_core.errors import ConfigError
from automl_core.model.datasets import Dataset, load_dataset
from automl_core.model.models import build_autoencoder
from automl_core.model.representation import (
    ProbeResult,
    linear_probe,
    probe_metrics,
    probe_train_count,
)
from automl_core.model.space import ModelConfig
from automl_core.storage import results, store
from automl_core.storage.settings import study_dataset
from automl_core.storage.trials import METRICS_ATTR


def _tiny(labels: bool = True) -> Dataset:
    data = load_dataset("digits", seed=0, max_images=120)
    if labels:
        return data
    return dataclasses.replace(data, y_train=None, y_val=None, y_test=None)


def _encoder(data: Dataset):
    config = ModelConfig(num_conv_layers=1, filters=4, latent_dim=4)
    return build_autoencoder(config, data.input_shape).encoder


def test_probe_metrics_equal_a_probe_of_the_same_latents():
    data = _tiny()
    encoder = _encoder(data)
    metrics = probe_metrics(encoder, data)
    assert set(metrics) == {"probe_accuracy", "probe_chance"}
    z_train = encoder.predict(data.x_train, verbose=0)
    z_test = encoder.predict(data.x_test, verbose=0)
    direct = linear_probe(z_train, data.y_train, z_test, data.y_test)
    assert metrics["probe_accuracy"] == pytest.approx(direct.accuracy)
    assert metrics["probe_chance"] == pytest.approx(direct.chance)
    assert 0.0 <= metrics["probe_accuracy"] <= 1.0


def test_no_labels_no_probe():
    data = _tiny(labels=False)
    assert probe_metrics(_encoder(data), data) == {}


def test_one_class_no_probe():
    data = _tiny()
    one = dataclasses.replace(data, y_train=np.zeros_like(data.y_train))
    assert probe_metrics(_encoder(one), one) == {}


def test_probe_images_at_the_limit(monkeypatch):
    monkeypatch.setenv("AUTOML_MAX_PROBE_IMAGES", "50")
    assert probe_train_count(50) == 50
    assert probe_train_count(51) == 50
    assert probe_train_count(49) == 49


def test_a_bad_limit_leaves_the_probe_out_and_names_the_value(monkeypatch, caplog):
    monkeypatch.setenv("AUTOML_MAX_PROBE_IMAGES", "many")
    with pytest.raises(ConfigError, match="AUTOML_MAX_PROBE_IMAGES.*'many'"):
        probe_train_count(10)
    data = _tiny()
    assert probe_metrics(_encoder(data), data) == {}
    assert "AUTOML_MAX_PROBE_IMAGES" in caplog.text


def test_over_chance_is_in_points():
    assert ProbeResult(0.9, 0.11, 10, 10).over_chance_points == pytest.approx(79.0)


def test_a_search_records_the_probe_and_the_leaderboard_shows_it(tiny_study):
    name, url = tiny_study
    study = store.load_study(name, url)
    data = study_dataset(study)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert complete
    for trial in complete:
        metrics = trial.user_attrs[METRICS_ATTR]
        assert 0.0 <= metrics["probe_accuracy"] <= 1.0
        # the most common test label's share, as linear_probe counts chance
        labels, counts = np.unique(data.y_train, return_counts=True)
        expected_chance = float((data.y_test == labels[np.argmax(counts)]).mean())
        assert metrics["probe_chance"] == pytest.approx(expected_chance)
    frame = results.trials_frame(study)
    columns = leaderboard.display_columns(frame, with_study=False)
    assert columns.index("probe_accuracy") > columns.index("test_ssim")
    assert leaderboard.column_label("probe_accuracy") == "Linear probe"
    assert frame["probe_accuracy"].notna().sum() == len(complete)


def test_an_unlabelled_study_has_no_probe_column(tiny_study):
    name, url = tiny_study
    frame = results.trials_frame(store.load_study(name, url))
    frame["probe_accuracy"] = math.nan
    assert "probe_accuracy" not in leaderboard.display_columns(frame, with_study=False)
