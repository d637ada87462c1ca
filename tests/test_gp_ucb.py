"""GP-UCB: the scikit-learn Gaussian-process sampler (no PyTorch), on cheap synthetic objectives."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest

from automl_core.model.space import SearchSpace
from automl_core.search.gp_ucb import FeatureEncoder, GPUCBSampler
from automl_core.search.strategies import STRATEGIES, StrategyContext

optuna.logging.set_verbosity(optuna.logging.WARNING)

DISTRIBUTIONS = {
    "x": optuna.distributions.FloatDistribution(-2.0, 2.0),
    "y": optuna.distributions.FloatDistribution(-2.0, 2.0),
    "rate": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True),
    "width": optuna.distributions.CategoricalDistribution([4, 8, 16, 32]),
    "shape": optuna.distributions.CategoricalDistribution(["a", "b", "c"]),
}


def _bowl(params: dict) -> float:
    """A smooth positive function with one minimum: x=0.7, y=-0.4, rate=3e-3, width=16, 'b'."""
    return (
        0.01
        + (params["x"] - 0.7) ** 2
        + (params["y"] + 0.4) ** 2
        + 0.3 * (math.log10(params["rate"]) + 2.5) ** 2
        + 0.2 * abs(math.log2(params["width"]) - 4)
        + (0.0 if params["shape"] == "b" else 0.5)
    )


def _best_after(sampler: optuna.samplers.BaseSampler, trials: int) -> float:
    study = optuna.create_study(sampler=sampler)
    study.optimize(
        lambda t: _bowl({n: _suggest(t, n, d) for n, d in DISTRIBUTIONS.items()}),
        n_trials=trials,
    )
    return study.best_value


def _suggest(trial: optuna.Trial, name: str, d):
    return trial._suggest(name, d)


def test_gp_ucb_beats_random_search_on_a_synthetic_function():
    seeds, trials = (0, 1, 2), 25
    gp = [_best_after(GPUCBSampler(DISTRIBUTIONS, seed=s), trials) for s in seeds]
    uniform = [_best_after(optuna.samplers.RandomSampler(seed=s), trials) for s in seeds]
    assert np.mean(gp) < np.mean(uniform)
    assert sum(g < u for g, u in zip(gp, uniform, strict=True)) >= 2


def test_a_restarted_sampler_proposes_what_the_first_would_have():
    study = optuna.create_study(sampler=GPUCBSampler(DISTRIBUTIONS, seed=3))
    study.optimize(
        lambda t: _bowl({n: _suggest(t, n, d) for n, d in DISTRIBUTIONS.items()}), n_trials=8
    )
    study.ask()
    pending = study.trials[-1]
    # a fresh sampler each time, as after a restart or in a second worker: the proposal
    # depends only on the seed and the study
    first = GPUCBSampler(DISTRIBUTIONS, seed=3).sample_relative(study, pending, DISTRIBUTIONS)
    second = GPUCBSampler(DISTRIBUTIONS, seed=3).sample_relative(study, pending, DISTRIBUTIONS)
    assert first == second
    other_seed = GPUCBSampler(DISTRIBUTIONS, seed=4).sample_relative(study, pending, DISTRIBUTIONS)
    assert other_seed != first


def test_an_impossible_configuration_counts_as_the_worst_value():
    sampler = GPUCBSampler(DISTRIBUTIONS, seed=0, n_startup_trials=2)
    study = optuna.create_study(sampler=sampler)
    for value in (0.5, 0.2):
        trial = study.ask(DISTRIBUTIONS)
        study.tell(trial, value)
    failed = study.ask(DISTRIBUTIONS)
    failed.set_user_attr("fail_reason", "impossible configuration: too big")
    study.tell(failed, state=optuna.trial.TrialState.FAIL)
    x, y, pending = sampler._observations(study.get_trials(), current=-1)
    assert len(x) == 3 and y[-1] == pytest.approx(math.log(0.5)) and len(pending) == 0


def test_features_round_trip_through_the_encoder():
    encoder = FeatureEncoder(DISTRIBUTIONS)
    rows = encoder.random(np.random.default_rng(0), 20)
    for row in rows:
        params = encoder.decode(row)
        assert encoder.decode(encoder.encode([params])[0]) == params
        for name, d in DISTRIBUTIONS.items():
            assert d._contains(d.to_internal_repr(params[name]))


def test_stepped_and_integer_ranges_stay_on_their_grid():
    space = {
        "n": optuna.distributions.IntDistribution(2, 64, log=True),
        "k": optuna.distributions.IntDistribution(1, 9, step=2),
        "p": optuna.distributions.FloatDistribution(0.0, 0.5, step=0.1),
    }
    encoder = FeatureEncoder(space)
    for row in encoder.random(np.random.default_rng(1), 50):
        params = encoder.decode(row)
        for name, d in space.items():
            assert d._contains(d.to_internal_repr(params[name])), (name, params[name])


def test_the_registered_strategy_runs_on_a_search_space_without_torch():
    space = SearchSpace.from_dict(
        {"filters": [4, 8], "latent_dim": {"low": 2, "high": 16}, "activation": ["relu", "elu"]}
    )
    sampler = STRATEGIES["gp-ucb"].make_sampler(StrategyContext(space, 0, (8, 8, 1), 2))
    study = optuna.create_study(sampler=sampler)
    study.optimize(lambda t: space.suggest(t).latent_dim / t.params["filters"], n_trials=8)
    assert len(study.trials) == 8 and study.best_value <= 0.5
    assert STRATEGIES["gp-ucb"].requires is None


def test_more_than_one_objective_is_refused():
    study = optuna.create_study(
        sampler=GPUCBSampler(DISTRIBUTIONS, seed=0), directions=["minimize", "minimize"]
    )
    with pytest.raises(ValueError, match="one objective"):
        study.optimize(lambda t: (t.suggest_float("x", -2, 2), 0.0), n_trials=1)


def test_start_up_must_be_positive():
    with pytest.raises(ValueError, match="n_startup_trials=0"):
        GPUCBSampler(DISTRIBUTIONS, n_startup_trials=0)


def test_a_trial_running_in_another_worker_is_not_proposed_again():
    study = optuna.create_study(sampler=GPUCBSampler(DISTRIBUTIONS, seed=5))
    study.optimize(
        lambda t: _bowl({n: _suggest(t, n, d) for n, d in DISTRIBUTIONS.items()}), n_trials=7
    )
    first = study.ask(DISTRIBUTIONS)  # still running: another worker trains it
    second = study.ask(DISTRIBUTIONS)
    assert first.params != second.params
    sampler = study.sampler
    x, y, pending = sampler._observations(study.get_trials(), current=second.number)
    assert len(y) == 7 and len(pending) == 1
