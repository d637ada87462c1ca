"""Search spaces and configurations: parsing, validation, round trips."""

from __future__ import annotations

import json

import optuna
import pytest

from automl_core.errors import ConfigError
from automl_core.model.space import (
    DEFAULT_SPACE,
    Choice,
    ModelConfig,
    Range,
    SearchSpace,
    load_space,
    parse_parameter_text,
)


def test_default_space_is_the_original_sixteen_grid():
    space = SearchSpace.from_dict(DEFAULT_SPACE)
    assert space.grid_size() == 16
    assert len({c for c in space.configurations()}) == 16


def test_round_trip_through_json():
    space = SearchSpace.from_dict(
        {"filters": [16, 32], "learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}}
    )
    again = SearchSpace.from_dict(json.loads(json.dumps(space.to_dict())))
    assert again == space
    assert isinstance(again.parameters["learning_rate"], Range)
    assert again.parameters["kernel_size"] == Choice((3,))


def test_model_config_round_trip():
    config = ModelConfig(num_conv_layers=3, filters=8, activation="elu", optimizer="lion")
    assert ModelConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_grid_of_a_range_says_why():
    space = SearchSpace.from_dict({"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}})
    assert space.grid_size() is None
    with pytest.raises(ConfigError, match="grid search needs a list.*learning_rate is a range"):
        space.grid()


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"filters": []}, "filters: the list of choices is empty"),
        ({"latent_dim": [0]}, "latent_dim must be a positive integer, got latent_dim=0"),
        ({"latent_dim": [-4]}, "latent_dim must be a positive integer, got latent_dim=-4"),
        ({"activation": ["relu", "softmaxx"]}, "unknown activation 'softmaxx'"),
        ({"optimizer": ["adamm"]}, "unknown optimizer 'adamm'; expected one of adam"),
        ({"filter": [16]}, "unknown parameter 'filter'"),
        ({"learning_rate": [0.0]}, "learning_rate must be a positive number"),
        ({"batch_size": [True]}, "batch_size must be a positive integer"),
        ({"learning_rate": {"low": 1e-2, "high": 1e-4}}, "low must not exceed high"),
        ({"learning_rate": {"low": 1e-2}}, "needs 'low' and 'high'"),
        ({"activation": {"low": 1, "high": 2}}, "takes a list of choices"),
    ],
)
def test_invalid_spaces_name_the_parameter(spec, message):
    with pytest.raises(ConfigError, match=message):
        SearchSpace.from_dict(spec)


def test_depth_too_large_for_the_image():
    space = SearchSpace.from_dict({"num_conv_layers": [1, 4]})
    space.validate_for((28, 28, 1))
    with pytest.raises(
        ConfigError, match="num_conv_layers=4 would shrink the 8x8 image below 1x1; at most 3"
    ):
        space.validate_for((8, 8, 1))


def test_kernel_larger_than_image():
    with pytest.raises(ConfigError, match="kernel_size=9 is larger than the 8x8 image"):
        SearchSpace.from_dict({"kernel_size": [3, 9], "num_conv_layers": [1]}).validate_for(
            (8, 8, 1)
        )


def test_parse_parameter_text():
    assert parse_parameter_text("filters", "16, 32") == [16, 32]
    assert parse_parameter_text("activation", "relu,tanh") == ["relu", "tanh"]
    assert parse_parameter_text("learning_rate", "1e-4:1e-2:log") == {
        "low": 1e-4,
        "high": 0.01,
        "log": True,
    }
    with pytest.raises(ConfigError, match="filters: expected a number, got 'many'"):
        parse_parameter_text("filters", "many")
    with pytest.raises(ConfigError, match="the list of choices is empty"):
        parse_parameter_text("filters", " , ")


def test_load_yaml_and_json(tmp_path):
    (tmp_path / "s.yaml").write_text(
        "filters: [8, 16]\nlearning_rate: {low: 0.0001, high: 0.01, log: true}\n"
    )
    assert load_space(tmp_path / "s.yaml").parameters["filters"] == Choice((8, 16))
    (tmp_path / "s.json").write_text('{"latent_dim": [4]}')
    assert load_space(tmp_path / "s.json").parameters["latent_dim"] == Choice((4,))


def test_malformed_and_missing_files(tmp_path):
    (tmp_path / "bad.json").write_text("{filters: [16,")
    with pytest.raises(ConfigError, match="is not valid JSON/YAML"):
        load_space(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="does not exist"):
        load_space(tmp_path / "missing.yaml")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_space(tmp_path / "list.json")


def test_suggest_draws_inside_the_space():
    space = SearchSpace.from_dict(
        {
            "filters": [8, 16],
            "latent_dim": {"low": 2, "high": 6},
            "learning_rate": {"low": 1e-4, "high": 1e-2, "log": True},
        }
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(5):
        config = space.suggest(study.ask())
        assert config.filters in (8, 16) and 2 <= config.latent_dim <= 6
        assert 1e-4 <= config.learning_rate <= 1e-2
