"""Default spaces: the seeds' grid for grid search, a roomier space for every other strategy."""

from __future__ import annotations

import pytest

from automl_core import cli
from automl_core.errors import ConfigError
from automl_core.model.shapes import check_space_fits
from automl_core.model.space import DEFAULT_SPACE, PARAMETERS, SEARCH_SPACE, SearchSpace
from automl_core.search.strategies import STRATEGIES, default_space


def test_grid_search_keeps_the_seeds_grid():
    assert default_space("grid") == DEFAULT_SPACE
    assert SearchSpace.from_dict(default_space("grid")).grid_size() == 16


@pytest.mark.parametrize("strategy", [s for s in STRATEGIES if s != "grid"])
def test_every_other_strategy_gets_room(strategy):
    space = default_space(strategy)
    assert space == SEARCH_SPACE
    assert SearchSpace.from_dict(space).grid_size() == 2592
    assert space["linear_path"] == [False, True]
    assert len(space["learning_rate"]) == 3 and len(space["filters"]) == 3


def test_searched_values_are_valid_and_offered_in_the_sidebar():
    space = SearchSpace.from_dict(SEARCH_SPACE)  # every value passes the parameter checks
    assert space.grid_size() > 0
    for name, values in SEARCH_SPACE.items():
        assert set(values) <= set(PARAMETERS[name].offered), name


@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3), (8, 8, 1)])
def test_the_search_space_builds_on_the_offline_datasets(shape):
    check_space_fits(SearchSpace.from_dict(SEARCH_SPACE), shape)


def test_a_copy_each_time():
    default_space("random")["filters"].append(4)
    assert default_space("random")["filters"] == [16, 32, 64]


def test_unknown_strategy_is_named():
    with pytest.raises(ConfigError, match="nope"):
        default_space("nope")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["search"], SEARCH_SPACE),
        (["search", "--strategy", "grid"], DEFAULT_SPACE),
        (["search", "--strategy", "hyperband"], SEARCH_SPACE),
    ],
)
def test_the_cli_starts_from_the_strategy_default(runs_dir, argv, expected):
    args = cli._build_parser().parse_args(argv)
    space = cli._settings_from_args(args).space
    assert space == SearchSpace.from_dict(expected).to_dict()


def test_a_flag_narrows_the_default(runs_dir):
    args = cli._build_parser().parse_args(["search", "--filters", "8"])
    space = cli._settings_from_args(args).space
    assert space["filters"] == [8] and space["linear_path"] == [False, True]
