"""The strategy registry: one contract for every entry, one way to add one."""

from __future__ import annotations

import importlib.util

import optuna
import pytest

from automl_core.errors import ConfigError
from automl_core.model.space import SearchSpace
from automl_core.search import strategies
from automl_core.search.strategies import STRATEGIES, StrategyContext, get_strategy
from automl_core.storage.settings import DEFAULT_STRATEGY

SPACE = SearchSpace.from_dict({"filters": [4, 8], "latent_dim": [4, 8]})
CONTEXT = StrategyContext(SPACE, seed=0, input_shape=(8, 8, 1), max_epochs=3)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
class TestEveryStrategy:
    def test_builds_a_sampler_and_a_pruner_from_one_context(self, name):
        strategy = STRATEGIES[name]
        if strategy.requires and importlib.util.find_spec(strategy.requires) is None:
            with pytest.raises(ConfigError, match=f"pip install {strategy.requires}"):
                get_strategy(name)
            return
        assert isinstance(strategy.make_sampler(CONTEXT), optuna.samplers.BaseSampler)
        assert isinstance(strategy.make_pruner(CONTEXT), optuna.pruners.BasePruner)

    def test_describes_itself_and_knows_its_name(self, name):
        assert STRATEGIES[name].name == name and STRATEGIES[name].description


def test_default_is_registered():
    assert DEFAULT_STRATEGY in STRATEGIES


def test_unknown_strategy_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown strategy 'bogus'; expected one of grid"):
        get_strategy("bogus")


def test_hyperband_reads_the_epoch_budget_from_the_context():
    pruner = STRATEGIES["hyperband"].make_pruner(CONTEXT)
    assert isinstance(pruner, optuna.pruners.HyperbandPruner)


def test_register_strategy_adds_an_entry(monkeypatch):
    monkeypatch.setattr(strategies, "STRATEGIES", dict(STRATEGIES))

    @strategies.register_strategy("always-random", "uniform draws, for this test")
    def _make(context):
        return optuna.samplers.RandomSampler(seed=context.seed)

    entry = strategies.get_strategy("always-random")
    assert entry.prunes and not entry.needs_grid
    assert isinstance(entry.make_sampler(CONTEXT), optuna.samplers.RandomSampler)
