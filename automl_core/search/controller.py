"""REINFORCE: a controller policy over the search space's choices, learned by policy gradient.

The controller (after Zoph and Le, 2017, with a table in place of their recurrent network)
chooses one value per parameter, in the parameter table's order. Its policy is
autoregressive: the logits of a decision are a bias per value plus, for every earlier
decision, a learned row chosen by the value taken there, so one choice can depend on the
earlier ones (a kernel size on the depth, say).

Each finished trial is one episode. Its reward is ``-log(validation MSE)`` (higher is
better; the log makes a halving of the error worth the same anywhere on the scale), a
trial that failed for a reason of its own (an impossible configuration) gets the worst
reward seen so far, and the policy takes one REINFORCE step ``lr * (reward - baseline) *
grad log p(choices)`` plus an entropy bonus that keeps it from settling too early. The
baseline is an exponential moving average of the rewards.

Ranges: a range with a step is enumerated when it holds at most
:data:`MAX_STEPPED_VALUES` values (refused with a clear message otherwise); an integer
range without a step is enumerated when it holds at most :data:`MAX_EXACT_INTEGERS`
values; any other range is discretised into :data:`RANGE_LEVELS` evenly spaced levels
(geometrically spaced for a log range), and a trial's value counts as its nearest level.

The controller keeps no state outside the study: before each proposal it replays every
finished trial, in the order they finished, from the same initial policy. So a restarted
worker, or a second one, holds exactly the same policy, and the proposal of trial ``n``
is drawn with a generator seeded by ``(seed, n)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from automl_core.errors import ConfigError
from automl_core.model.space import PARAMETERS, Choice, Range, SearchSpace
from automl_core.search.samplers import JointSampler
from automl_core.storage.settings import study_settings
from automl_core.storage.trials import FAIL_REASON_ATTR

MAX_STEPPED_VALUES = 32
MAX_EXACT_INTEGERS = 16
RANGE_LEVELS = 5
LEARNING_RATE = 0.5
ENTROPY_WEIGHT = 0.02
BASELINE_DECAY = 0.8
MARGINAL_SAMPLES = 512


@dataclass(frozen=True)
class Decision:
    """One choice the controller makes.

    Attributes:
        name: The parameter.
        values: The values it chooses among, in order.
        log: A discretised log range: nearest level measured in log space.
        discretised: The values are levels of a continuous range, not all its values.
    """

    name: str
    values: tuple
    log: bool = False
    discretised: bool = False

    def index_of(self, value: Any) -> int | None:
        """The index of a trial's value among :attr:`values` (its nearest level for ranges)."""
        if not self.discretised:
            return self.values.index(value) if value in self.values else None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        levels = np.array(self.values, dtype=float)
        if self.log:
            if value <= 0:
                return None
            return int(np.argmin(np.abs(np.log(levels) - math.log(value))))
        return int(np.argmin(np.abs(levels - value)))


def controller_decisions(space: SearchSpace) -> list[Decision]:
    """The controller's decisions over a space: every parameter with more than one value.

    Args:
        space: The search space.

    Returns:
        One decision per free parameter, in the parameter table's order.

    Raises:
        ConfigError: A stepped range holds more than :data:`MAX_STEPPED_VALUES` values.
    """
    decisions = []
    for name, parameter in space.parameters.items():
        if isinstance(parameter, Choice):
            decision = Decision(name, tuple(parameter.values))
        else:
            decision = _discretise(name, parameter)
        if len(decision.values) > 1:
            decisions.append(decision)
    return decisions


def _discretise(name: str, p: Range) -> Decision:
    """The values the controller tries for a range (see the module's docstring)."""
    integer = PARAMETERS[name].kind == "int"
    if p.step is not None:
        count = math.floor((p.high - p.low) / p.step + 1e-9) + 1
        if count > MAX_STEPPED_VALUES:
            raise ConfigError(
                f"reinforce chooses among at most {MAX_STEPPED_VALUES} values of a stepped "
                f"range, but {name} from {p.low:g} to {p.high:g} in steps of {p.step:g} has "
                f"{count}; give a larger step, drop the step (the controller then tries "
                f"{RANGE_LEVELS} evenly spaced levels), or list the choices"
            )
        values = [p.low + k * p.step for k in range(count)]
        values = [int(round(v)) if integer else float(v) for v in values]
        return Decision(name, tuple(values))
    if integer and p.high - p.low + 1 <= MAX_EXACT_INTEGERS:
        return Decision(name, tuple(range(int(p.low), int(p.high) + 1)))
    spaced = (
        np.geomspace(p.low, p.high, RANGE_LEVELS)
        if p.log
        else np.linspace(p.low, p.high, RANGE_LEVELS)
    )
    spaced = np.clip(spaced, p.low, p.high)
    values: list = []
    for v in spaced:
        level = int(round(v)) if integer else float(v)
        if level not in values:
            values.append(level)
    return Decision(name, tuple(values), log=p.log, discretised=True)


@dataclass
class ControllerState:
    """The controller's policy and baseline after some updates.

    Attributes:
        sizes: Values per decision.
        bias: Per decision, a logit per value.
        links: Per pair ``(i, j)`` with ``j < i``, a ``sizes[j] x sizes[i]`` table: the
            logits decision ``i`` adds when decision ``j`` took a value.
        baseline: Moving average of the rewards (None before the first).
        updates: Trials learned from.
    """

    sizes: list[int]
    bias: list[np.ndarray] = field(default_factory=list)
    links: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)
    baseline: float | None = None
    updates: int = 0

    @classmethod
    def initial(cls, sizes: Sequence[int]) -> ControllerState:
        """A uniform policy (every logit zero)."""
        sizes = [int(s) for s in sizes]
        return cls(
            sizes,
            [np.zeros(s) for s in sizes],
            {(i, j): np.zeros((sizes[j], sizes[i])) for i in range(len(sizes)) for j in range(i)},
        )

    def to_dict(self) -> dict[str, Any]:
        """The state as JSON-ready values (for comparison and display)."""
        return {
            "sizes": list(self.sizes),
            "bias": [b.tolist() for b in self.bias],
            "links": {f"{i},{j}": w.tolist() for (i, j), w in sorted(self.links.items())},
            "baseline": self.baseline,
            "updates": self.updates,
        }

    def logits(self, i: int, earlier: np.ndarray) -> np.ndarray:
        """Logits of decision ``i`` for rows of earlier choices (``n x i`` indices)."""
        out = np.tile(self.bias[i], (len(earlier), 1))
        for j in range(i):
            out += self.links[(i, j)][earlier[:, j]]
        return out

    def probabilities(self, i: int, earlier: np.ndarray) -> np.ndarray:
        """Choice probabilities of decision ``i`` for rows of earlier choices."""
        logits = self.logits(i, earlier)
        logits -= logits.max(axis=1, keepdims=True)
        weights = np.exp(logits)
        return weights / weights.sum(axis=1, keepdims=True)

    def sample(self, rng: np.random.Generator, count: int = 1) -> np.ndarray:
        """``count`` rows of choices, each decision drawn given the earlier ones."""
        chosen = np.zeros((count, len(self.sizes)), dtype=int)
        for i in range(len(self.sizes)):
            p = self.probabilities(i, chosen[:, :i])
            draws = rng.random(count)[:, None]
            chosen[:, i] = np.minimum((p.cumsum(axis=1) < draws).sum(axis=1), self.sizes[i] - 1)
        return chosen

    def marginals(self, rng: np.random.Generator, samples: int = MARGINAL_SAMPLES) -> list:
        """Per decision, the probability of each value averaged over the earlier choices."""
        chosen = self.sample(rng, samples)
        return [self.probabilities(i, chosen[:, :i]).mean(axis=0) for i in range(len(self.sizes))]

    def learn(
        self,
        choices: Sequence[int],
        reward: float,
        learning_rate: float = LEARNING_RATE,
        entropy_weight: float = ENTROPY_WEIGHT,
        baseline_decay: float = BASELINE_DECAY,
    ) -> None:
        """One REINFORCE step from one episode, with the moving-average baseline.

        Args:
            choices: The value index taken at each decision.
            reward: The episode's reward.
            learning_rate: Step size. Defaults to :data:`LEARNING_RATE`.
            entropy_weight: Weight of the entropy bonus. Defaults to :data:`ENTROPY_WEIGHT`.
            baseline_decay: Share of the old baseline kept. Defaults to
                :data:`BASELINE_DECAY`.
        """
        if self.baseline is None:
            self.baseline = reward
        advantage = reward - self.baseline
        earlier = np.array([choices], dtype=int)
        steps = []
        for i in range(len(self.sizes)):
            p = self.probabilities(i, earlier[:, :i])[0]
            taken = np.eye(self.sizes[i])[choices[i]]
            entropy = -float(np.sum(p * np.log(p + 1e-12)))
            # d log p(a) / d logits, and d entropy / d logits
            step = advantage * (taken - p) + entropy_weight * (-p * (np.log(p + 1e-12) + entropy))
            steps.append(learning_rate * step)
        for i, step in enumerate(steps):
            self.bias[i] += step
            for j in range(i):
                self.links[(i, j)][choices[j]] += step
        self.baseline = baseline_decay * self.baseline + (1 - baseline_decay) * reward
        self.updates += 1


def trial_reward(trial: FrozenTrial, worst: float | None) -> float | None:
    """A finished trial's reward: ``-log`` of its value; the worst so far for a failure.

    Args:
        trial: A finished trial.
        worst: The lowest reward seen before it, or None.

    Returns:
        The reward, or None when the trial teaches nothing (interrupted, or failed before
        any reward was seen).
    """
    if trial.state == TrialState.COMPLETE and trial.values:
        value = float(trial.values[0])
    elif trial.state == TrialState.PRUNED and trial.intermediate_values:
        value = float(min(trial.intermediate_values.values()))
    elif trial.state == TrialState.FAIL and trial.user_attrs.get(FAIL_REASON_ATTR):
        return worst
    else:
        return None
    if not math.isfinite(value):
        return worst
    return -math.log(max(value, 1e-12))


def replay(
    decisions: Sequence[Decision],
    trials: Sequence[FrozenTrial],
    learning_rate: float = LEARNING_RATE,
    entropy_weight: float = ENTROPY_WEIGHT,
    baseline_decay: float = BASELINE_DECAY,
    on_update=None,
) -> ControllerState:
    """The controller's state after learning from ``trials`` in the order they finished.

    Args:
        decisions: The controller's decisions (:func:`controller_decisions`).
        trials: A study's trials (unfinished ones are skipped).
        learning_rate: Step size. Defaults to :data:`LEARNING_RATE`.
        entropy_weight: Entropy bonus. Defaults to :data:`ENTROPY_WEIGHT`.
        baseline_decay: Baseline's decay. Defaults to :data:`BASELINE_DECAY`.
        on_update: Called with ``(state, trial)`` after each update. Defaults to None.

    Returns:
        The state.
    """
    state = ControllerState.initial([len(d.values) for d in decisions])
    finished = sorted(
        (t for t in trials if t.state.is_finished() and t.datetime_complete is not None),
        key=lambda t: (t.datetime_complete, t.number),
    )
    worst: float | None = None
    for trial in finished:
        choices = [d.index_of(trial.params.get(d.name)) for d in decisions]
        reward = trial_reward(trial, worst)
        if reward is None or any(c is None for c in choices):
            continue
        worst = reward if worst is None else min(worst, reward)
        state.learn(choices, reward, learning_rate, entropy_weight, baseline_decay)  # type: ignore[arg-type]
        if on_update is not None:
            on_update(state, trial)
    return state


class ReinforceSampler(JointSampler):
    """Optuna sampler whose proposals are drawn from the REINFORCE controller.

    Args:
        space: The search space (ranges are discretised as the module says).
        seed: Seed of the draws. Defaults to None.
        learning_rate: Policy-gradient step size. Defaults to :data:`LEARNING_RATE`.
        entropy_weight: Entropy bonus. Defaults to :data:`ENTROPY_WEIGHT`.
        baseline_decay: Share of the old baseline kept per update. Defaults to
            :data:`BASELINE_DECAY`.

    Raises:
        ConfigError: A range the controller cannot discretise.
    """

    def __init__(
        self,
        space: SearchSpace,
        seed: int | None = None,
        learning_rate: float = LEARNING_RATE,
        entropy_weight: float = ENTROPY_WEIGHT,
        baseline_decay: float = BASELINE_DECAY,
    ) -> None:
        if not learning_rate > 0:
            raise ConfigError(f"learning_rate must be positive, got learning_rate={learning_rate}")
        if not 0 <= baseline_decay < 1:
            raise ConfigError(
                f"baseline_decay must be in [0, 1), got baseline_decay={baseline_decay}"
            )
        self.decisions = controller_decisions(space)
        distributions = space.distributions()
        super().__init__({d.name: distributions[d.name] for d in self.decisions}, seed)
        self._options = (learning_rate, entropy_weight, baseline_decay)

    def state(self, study: optuna.Study) -> ControllerState:
        """The controller's state rebuilt from the study's finished trials."""
        return replay(self.decisions, study.get_trials(deepcopy=False), *self._options)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        """One draw of the controller's current policy."""
        if not search_space:
            return {}
        choices = self.state(study).sample(self.trial_rng(trial))[0]
        return {d.name: _plain(d.values[c]) for d, c in zip(self.decisions, choices, strict=True)}


def _plain(value: Any) -> Any:
    """A numpy scalar as the plain Python value Optuna stores."""
    return value.item() if isinstance(value, np.generic) else value


def controller_probabilities(
    study: optuna.Study, space: SearchSpace | None = None, seed: int = 0
) -> pd.DataFrame:
    """The controller's choice probabilities after each trial it learned from.

    The data step of the Leaderboard's controller chart. For a decision after the first,
    the probability is averaged over the earlier decisions' draws (the policy's marginal,
    estimated from :data:`MARGINAL_SAMPLES` draws with a fixed seed).

    Args:
        study: A study searched with ``reinforce``.
        space: Its search space. Defaults to the one stored in the study's settings.
        seed: Seed of the draws that estimate the marginals. Defaults to 0.

    Returns:
        Columns ``updates`` (trials learned from so far, 0 before any), ``trial`` (the trial learned from, -1 at
        update 0), ``parameter``, ``value`` (text), ``probability``. Empty when the space
        leaves the controller nothing to decide.

    Raises:
        ConfigError: The space has a range the controller cannot discretise.
    """
    if space is None:
        space = study_settings(study).search_space()
    decisions = controller_decisions(space)
    rows: list[dict[str, Any]] = []

    def record(state: ControllerState, trial: FrozenTrial | None) -> None:
        rng = np.random.default_rng(seed)
        for decision, p in zip(decisions, state.marginals(rng), strict=True):
            for value, probability in zip(decision.values, p, strict=True):
                rows.append(
                    {
                        "updates": state.updates,
                        "trial": -1 if trial is None else trial.number,
                        "parameter": decision.name,
                        "value": str(_plain(value)),
                        "probability": float(probability),
                    }
                )

    if decisions:
        record(ControllerState.initial([len(d.values) for d in decisions]), None)
        replay(decisions, study.get_trials(deepcopy=False), on_update=record)
    columns = ["updates", "trial", "parameter", "value", "probability"]
    return pd.DataFrame(rows, columns=columns)
