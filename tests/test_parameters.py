"""The parameter table: the one declaration every reader of parameters is driven by."""

from __future__ import annotations

import dataclasses

import pytest

from automl_core import cli
from automl_core.errors import ConfigError
from automl_core.model.space import DEFAULT_SPACE, PARAMETERS, ModelConfig, SearchSpace


def test_model_config_has_one_field_per_row_in_table_order():
    names = [f.name for f in dataclasses.fields(ModelConfig)]
    assert names == list(PARAMETERS)
    defaults = ModelConfig()
    assert all(getattr(defaults, name) == p.default for name, p in PARAMETERS.items())


def test_model_config_round_trips_and_is_frozen():
    config = ModelConfig(filters=32, activation="tanh")
    assert ModelConfig.from_dict(config.to_dict()) == config
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.filters = 8  # type: ignore[misc]


@pytest.mark.parametrize("name", list(PARAMETERS))
def test_every_row_is_consistent(name):
    spec = PARAMETERS[name]
    assert spec.label and spec.help
    # the default, the grid and the offered values are all valid values
    SearchSpace.from_dict({name: [spec.default, *spec.grid, *spec.offered]})
    assert DEFAULT_SPACE[name] == list(spec.grid)
    if spec.rangeable:
        assert spec.numeric


@pytest.mark.parametrize("name", [n for n, p in PARAMETERS.items() if p.maximum is not None])
def test_each_capped_parameter_refuses_one_past_its_maximum(name):
    spec = PARAMETERS[name]
    at_limit = int(spec.maximum) if spec.kind == "int" else spec.maximum
    SearchSpace.from_dict({name: [at_limit]})
    past = at_limit + 1 if spec.kind == "int" else at_limit * 2
    with pytest.raises(ConfigError, match=f"{name} must be at most"):
        SearchSpace.from_dict({name: [past]})


def test_every_row_is_a_cli_flag_with_its_help():
    parser = cli._build_parser()
    text = parser._subparsers._group_actions[0].choices["search"].format_help()
    for name, spec in PARAMETERS.items():
        assert f"--{name.replace('_', '-')}" in text
        assert spec.help.split()[0] in text


def test_costly_rows_drive_the_cost_model_cache_key():
    from automl_core.model.models import architecture_work

    cheap = ModelConfig(num_conv_layers=1, filters=4, latent_dim=4)
    same_cost = ModelConfig(num_conv_layers=1, filters=4, latent_dim=4, learning_rate=0.01)
    dearer = ModelConfig(num_conv_layers=1, filters=8, latent_dim=4)
    shape = (8, 8, 1)
    assert architecture_work(cheap, shape) == architecture_work(same_cost, shape)
    assert architecture_work(dearer, shape) > architecture_work(cheap, shape)
