"""REINFORCE: the controller's policy, its updates, its state rebuilt from the study."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from automl_core.errors import ConfigError
from automl_core.model.space import SearchSpace
from automl_core.search.controller import (
    RANGE_LEVELS,
    ControllerState,
    ReinforceSampler,
    controller_decisions,
    controller_probabilities,
    replay,
)
from automl_core.search.strategies import STRATEGIES, StrategyContext

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACE = SearchSpace.from_dict(
    {"filters": [4, 8, 16, 32], "activation": ["relu", "elu", "tanh"], "latent_dim": [4, 8]}
)


def _synthetic(trial: optuna.Trial) -> float:
    """A validation-MSE stand-in: 16 filters is ten times better than anything else."""
    config = SPACE.suggest(trial)
    return (0.01 if config.filters == 16 else 0.1) * (1.2 if config.activation == "tanh" else 1)


def _probability(frame, update, parameter, value) -> float:
    row = frame[
        (frame.updates == update) & (frame.parameter == parameter) & (frame.value == value)
    ]
    return float(row.probability.iloc[0])


def test_probabilities_move_toward_the_rewarded_choice():
    study = optuna.create_study(sampler=ReinforceSampler(SPACE, seed=0))
    study.optimize(_synthetic, n_trials=40)
    frame = controller_probabilities(study, SPACE)
    last = int(frame.updates.max())
    assert last == 40
    assert _probability(frame, 0, "filters", "16") == pytest.approx(0.25)
    assert _probability(frame, last, "filters", "16") > 0.5
    assert _probability(frame, last, "activation", "tanh") < 1 / 3
    # the later trials chose the rewarded value more often than the first ones
    chosen = [t.params["filters"] == 16 for t in study.trials]
    assert sum(chosen[-10:]) > sum(chosen[:10])


def test_state_after_a_restart_equals_the_state_before(tmp_path):
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    study = optuna.create_study(
        study_name="rl", storage=storage, sampler=ReinforceSampler(SPACE, seed=1)
    )
    study.optimize(_synthetic, n_trials=8)
    before = ReinforceSampler(SPACE, seed=1).state(study).to_dict()
    # a restart: a new process loads the study with a fresh sampler
    restarted = optuna.load_study(
        study_name="rl", storage=storage, sampler=ReinforceSampler(SPACE, seed=1)
    )
    assert restarted.sampler.state(restarted).to_dict() == before
    assert before["updates"] == 8
    # two workers on one study: each proposes from the same policy, seeded by trial number
    restarted.optimize(_synthetic, n_trials=3)
    study.optimize(_synthetic, n_trials=3)
    a = ReinforceSampler(SPACE, seed=1).state(study).to_dict()
    b = ReinforceSampler(SPACE, seed=1).state(restarted).to_dict()
    assert a == b and a["updates"] == 14


def test_a_proposal_depends_only_on_the_seed_and_the_study():
    study = optuna.create_study(sampler=ReinforceSampler(SPACE, seed=2))
    study.optimize(_synthetic, n_trials=5)
    study.ask()
    pending = study.trials[-1]
    space = ReinforceSampler(SPACE, seed=2).infer_relative_search_space(study, pending)
    first = ReinforceSampler(SPACE, seed=2).sample_relative(study, pending, space)
    assert ReinforceSampler(SPACE, seed=2).sample_relative(study, pending, space) == first


def test_the_policy_is_autoregressive():
    state = ControllerState.initial([2, 2])
    # the second choice pays only when it matches the first
    for _ in range(60):
        for choices, reward in (([0, 0], 1.0), ([1, 1], 1.0), ([0, 1], 0.0), ([1, 0], 0.0)):
            state.learn(choices, reward)
    given_first = state.probabilities(1, np.array([[0], [1]]))
    assert given_first[0, 0] > 0.7 and given_first[1, 1] > 0.7


def test_the_entropy_bonus_flattens_a_policy_without_advantage():
    state = ControllerState.initial([3])
    state.bias[0][:] = [2.0, 0.0, 0.0]
    state.baseline = 1.0
    before = state.probabilities(0, np.zeros((1, 0), dtype=int))[0, 0]
    state.learn([1], reward=1.0, entropy_weight=0.5, baseline_decay=0.5)
    assert state.probabilities(0, np.zeros((1, 0), dtype=int))[0, 0] < before


def test_an_impossible_configuration_gets_the_worst_reward_so_far():
    study = optuna.create_study()
    for value in (0.1, 0.01):
        trial = study.ask()
        SPACE.suggest(trial)
        study.tell(trial, value)
    failed = study.ask()
    SPACE.suggest(failed)
    failed.set_user_attr("fail_reason", "impossible configuration")
    study.tell(failed, state=optuna.trial.TrialState.FAIL)
    rewards = []
    replay(
        controller_decisions(SPACE),
        study.get_trials(),
        on_update=lambda state, t: rewards.append(state.baseline),
    )
    assert len(rewards) == 3  # the failure taught the controller too


def test_ranges_are_discretised_as_documented():
    space = SearchSpace.from_dict(
        {
            "learning_rate": {"low": 1e-4, "high": 1e-2, "log": True},
            "latent_dim": {"low": 2, "high": 8},
            "filters": {"low": 4, "high": 128, "log": True},
            "dropout": {"low": 0.0, "high": 0.5, "step": 0.1},
        }
    )
    decisions = {d.name: d for d in controller_decisions(space)}
    assert decisions["learning_rate"].values == pytest.approx(
        (1e-4, 3.16e-4, 1e-3, 3.16e-3, 1e-2), rel=1e-2
    )
    assert decisions["latent_dim"].values == (2, 3, 4, 5, 6, 7, 8)
    assert len(decisions["filters"].values) == RANGE_LEVELS
    assert decisions["dropout"].values == pytest.approx((0.0, 0.1, 0.2, 0.3, 0.4, 0.5))
    study = optuna.create_study(sampler=ReinforceSampler(space, seed=0))
    study.optimize(lambda t: space.suggest(t).latent_dim * 0.01, n_trials=6)
    assert all(t.state.name == "COMPLETE" for t in study.trials)
    assert decisions["filters"].index_of(20) == 2  # nearest level in log space: 4, 9.5, 22.6


def test_a_stepped_range_with_too_many_values_is_refused_with_its_numbers():
    space = SearchSpace.from_dict({"filters": {"low": 4, "high": 1000, "step": 1}})
    with pytest.raises(ConfigError, match="filters from 4 to 1000 in steps of 1 has 997"):
        ReinforceSampler(space, seed=0)
    context = StrategyContext(space, seed=0, input_shape=(8, 8, 1), max_epochs=1)
    with pytest.raises(ConfigError, match="give a larger step"):
        STRATEGIES["reinforce"].make_sampler(context)


@pytest.mark.parametrize(
    ("option", "value", "match"),
    [("learning_rate", 0.0, "learning_rate=0.0"), ("baseline_decay", 1.0, "baseline_decay=1.0")],
)
def test_invalid_options_are_refused(option, value, match):
    with pytest.raises(ConfigError, match=match):
        ReinforceSampler(SPACE, **{option: value})


def test_a_space_with_nothing_to_decide_gives_an_empty_chart():
    space = SearchSpace.from_dict({"filters": [8]})
    study = optuna.create_study(sampler=ReinforceSampler(space, seed=0))
    study.optimize(lambda t: space.suggest(t).filters * 0.01, n_trials=2)
    assert controller_probabilities(study, space).empty


def test_the_chart_has_one_line_per_value_and_a_panel_per_parameter():
    from automl_core.analysis.charts import controller_probabilities_figure

    study = optuna.create_study(sampler=ReinforceSampler(SPACE, seed=0))
    study.optimize(_synthetic, n_trials=3)
    figure = controller_probabilities_figure(controller_probabilities(study, SPACE))
    assert len(figure.data) == 4 + 3 + 2
    assert {t.name for t in figure.data} >= {"filters=16", "activation=tanh", "latent_dim=8"}
    assert list(figure.data[0].x) == [0, 1, 2, 3]
    empty = controller_probabilities_figure(
        controller_probabilities(study, SearchSpace.from_dict({}))
    )
    assert "no choice" in empty.layout.title.text


def test_the_search_refuses_an_unusable_range_before_anything_trains(runs_dir):
    from automl_core.search.preflight import check_search
    from automl_core.storage.settings import SearchSettings

    settings = SearchSettings(
        study="rl",
        dataset="digits",
        space={"filters": {"low": 4, "high": 1000, "step": 1}},
        strategy="reinforce",
    )
    with pytest.raises(ConfigError, match="filters from 4 to 1000 in steps of 1 has 997"):
        check_search(settings, f"sqlite:///{runs_dir / 'studies.db'}")
    assert not (runs_dir / "studies.db").exists()
