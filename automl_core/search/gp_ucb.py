"""GP-UCB: Bayesian optimisation with a scikit-learn Gaussian process, without PyTorch.

Optuna's ``GPSampler`` needs PyTorch. This sampler fits scikit-learn's
``GaussianProcessRegressor`` (a Matérn 5/2 kernel with one length scale per feature, plus
noise) to the study's finished trials and proposes the configuration with the lowest
confidence bound ``mean - kappa_t * std`` (the upper confidence bound of the negated
objective; Srinivas et al., 2010). ``kappa_t`` grows slowly with the number of observations
(``sqrt(0.2 * 2 log(d t^2 pi^2 / 0.6))``, the scaled schedule of Kandasamy et al.), so the
search explores more as the model grows more certain.

Features: a numeric range is scaled to [0, 1] (in log space when the range is log-scaled);
numeric choices by their rank; other choices (text, booleans) one-hot. Objectives that are
all positive (validation MSE) are modelled in log space. A trial that failed for a reason of
its own (an impossible configuration) counts as the worst value seen, so the model steers
away from it; trials running in other workers are added at the model's own prediction
("kriging believer"), which shrinks the uncertainty there so parallel workers spread out.

The sampler keeps no state of its own: each proposal refits the model from the study and
draws its candidates from a generator seeded by ``(seed, trial number)``, so a restarted or
second worker proposes exactly what the first would have.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial, TrialState

from automl_core.search.samplers import JointSampler
from automl_core.storage.trials import FAIL_REASON_ATTR

RANDOM_CANDIDATES = 2048
LOCAL_CANDIDATES = 64  # around each of the best few observations
LOCAL_CENTRES = 5
LOCAL_SCALE = 0.1  # standard deviation of local moves, in [0, 1] feature units


class GPUCBSampler(JointSampler):
    """Gaussian-process upper-confidence-bound sampler over a fixed space (single objective).

    Args:
        distributions: Every parameter's distribution; single-valued ones are not modelled.
        seed: Seed of the candidate draws and the GP's optimiser restarts. Defaults to None.
        n_startup_trials: Random proposals before the model takes over. Defaults to 5.
        kappa: A fixed exploration weight; None (default) uses the growing schedule.
    """

    def __init__(
        self,
        distributions: dict[str, BaseDistribution],
        seed: int | None = None,
        n_startup_trials: int = 5,
        kappa: float | None = None,
    ) -> None:
        if n_startup_trials < 1:
            raise ValueError(
                f"n_startup_trials must be a positive integer, got n_startup_trials="
                f"{n_startup_trials}"
            )
        # the whole space minus single-valued parameters, modelled jointly
        super().__init__({n: d for n, d in distributions.items() if not d.single()}, seed)
        self._start_up = n_startup_trials
        self._kappa = kappa
        self._encoder = FeatureEncoder(self._space)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        """The candidate with the lowest confidence bound (random during the start-up)."""
        if not search_space:
            return {}
        if len(study.directions) > 1:
            raise ValueError("GP-UCB optimises one objective; use nsga2 for two")
        rng = self.trial_rng(trial)
        trials = study.get_trials(deepcopy=False)
        x, y, pending = self._observations(trials, trial.number)
        tried = {self._encoder.key(p) for p in self._all_params(trials, trial.number)}
        candidates = self._encoder.random(rng, RANDOM_CANDIDATES)
        if len(y) < self._start_up:
            return self._first_untried(candidates, tried)
        if len(x):
            candidates = np.vstack([candidates, self._local_moves(rng, x, y)])
        model = self._fit(x, y, rng)
        if len(pending):
            x = np.vstack([x, pending])
            y = np.concatenate([y, model.predict(pending)])
            model = self._fit(x, y, rng)
        mean, std = model.predict(candidates, return_std=True)
        bound = mean - self.kappa(len(y)) * std
        order = np.argsort(bound, kind="stable")
        return self._first_untried(candidates[order], tried)

    def kappa(self, observations: int) -> float:
        """The exploration weight after ``observations`` finished trials."""
        if self._kappa is not None:
            return self._kappa
        dims = max(1, self._encoder.width)
        t = max(1, observations)
        return math.sqrt(0.2 * 2 * math.log(dims * t * t * math.pi**2 / 0.6))

    def _all_params(self, trials: Sequence[FrozenTrial], current: int) -> list[dict[str, Any]]:
        """Parameters of every other trial that holds the whole modelled space."""
        return [
            t.params for t in trials if t.number != current and set(self._space) <= set(t.params)
        ]

    def _observations(
        self, trials: Sequence[FrozenTrial], current: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Features and values of finished trials, and features of running ones."""
        finished, failed, running = [], [], []
        for t in trials:
            if t.number == current or not set(self._space) <= set(t.params):
                continue
            if t.state == TrialState.COMPLETE and t.values and math.isfinite(t.values[0]):
                finished.append((t.params, float(t.values[0])))
            elif t.state == TrialState.FAIL and t.user_attrs.get(FAIL_REASON_ATTR):
                failed.append(t.params)
            elif t.state == TrialState.RUNNING:
                running.append(t.params)
        values = np.array([v for _, v in finished], dtype=float)
        if len(values) and np.all(values > 0):
            values = np.log(values)
        if len(values) and failed:
            values = np.concatenate([values, np.full(len(failed), values.max())])
        params = [p for p, _ in finished] + (failed if len(finished) else [])
        x = self._encoder.encode(params)
        return x, values, self._encoder.encode(running)

    def _local_moves(self, rng: np.random.Generator, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Candidates near the best observations: small moves in [0, 1] feature space."""
        centres = x[np.argsort(y, kind="stable")[:LOCAL_CENTRES]]
        moved = np.repeat(centres, LOCAL_CANDIDATES, axis=0)
        moved = moved + rng.normal(0.0, LOCAL_SCALE, moved.shape)
        return self._encoder.snap(rng, moved, flip=0.2)

    def _fit(self, x: np.ndarray, y: np.ndarray, rng: np.random.Generator):
        """A Gaussian process fitted to ``(x, y)``."""
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

        kernel = ConstantKernel(1.0, (1e-3, 1e3)) * Matern(
            length_scale=np.ones(x.shape[1]), length_scale_bounds=(1e-2, 1e2), nu=2.5
        ) + WhiteKernel(1e-3, (1e-6, 1e-1))
        model = GaussianProcessRegressor(
            kernel,
            normalize_y=True,
            n_restarts_optimizer=2,
            random_state=int(rng.integers(2**31 - 1)),
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(x, y)
        return model

    def _first_untried(self, candidates: np.ndarray, tried: set[tuple]) -> dict[str, Any]:
        """The first candidate not tried yet (the first one when all were)."""
        decoded = [self._encoder.decode(row) for row in candidates]
        for params in decoded:
            if self._encoder.key(params) not in tried:
                return params
        return decoded[0]


class FeatureEncoder:
    """Maps configurations to points of [0, 1]^d and back.

    Args:
        space: The modelled parameters' distributions.
    """

    def __init__(self, space: dict[str, BaseDistribution]) -> None:
        self.space = space
        self._slices: dict[str, slice] = {}
        start = 0
        for name, d in space.items():
            width = len(d.choices) if _one_hot(d) else 1
            self._slices[name] = slice(start, start + width)
            start += width
        self.width = start

    def encode(self, params_list: Sequence[dict[str, Any]]) -> np.ndarray:
        """One row of features per configuration."""
        out = np.zeros((len(params_list), self.width))
        for row, params in enumerate(params_list):
            for name, d in self.space.items():
                where, value = self._slices[name], params[name]
                if isinstance(d, CategoricalDistribution):
                    index = d.to_internal_repr(value)
                    if _one_hot(d):
                        out[row, where.start + int(index)] = 1.0
                    else:
                        out[row, where] = _rank(d, value)
                else:
                    out[row, where] = _unit(d, value)
        return out

    def decode(self, row: np.ndarray) -> dict[str, Any]:
        """The configuration of a feature row (already on the space's grid)."""
        params: dict[str, Any] = {}
        for name, d in self.space.items():
            part = row[self._slices[name]]
            if isinstance(d, CategoricalDistribution):
                if _one_hot(d):
                    params[name] = d.choices[int(np.argmax(part))]
                else:
                    ranked = sorted(d.choices)
                    params[name] = ranked[int(round(float(part[0]) * (len(ranked) - 1)))]
            else:
                params[name] = _from_unit(d, float(part[0]))
        return params

    def random(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """``count`` uniform draws from the space, as feature rows."""
        return self.snap(rng, rng.random((count, self.width)), flip=1.0)

    def snap(self, rng: np.random.Generator, rows: np.ndarray, flip: float) -> np.ndarray:
        """Rounds free rows onto the grid; one-hot groups redraw with probability ``flip``."""
        rows = np.clip(rows, 0.0, 1.0)
        for name, d in self.space.items():
            where = self._slices[name]
            if isinstance(d, CategoricalDistribution) and _one_hot(d):
                current = np.argmax(rows[:, where], axis=1)
                redraw = rng.random(len(rows)) < flip
                chosen = np.where(redraw, rng.integers(len(d.choices), size=len(rows)), current)
                rows[:, where] = np.eye(len(d.choices))[chosen]
            elif isinstance(d, CategoricalDistribution):
                steps = len(d.choices) - 1
                rows[:, where] = np.round(rows[:, where] * steps) / max(steps, 1)
            else:
                values = [_from_unit(d, float(v)) for v in rows[:, where.start]]
                rows[:, where.start] = [_unit(d, v) for v in values]
        return rows

    def key(self, params: dict[str, Any]) -> tuple:
        """A hashable identity of a configuration."""
        return tuple((name, repr(params[name])) for name in self.space)


def _one_hot(d: BaseDistribution) -> bool:
    """Whether a choice parameter is encoded one-hot (text or booleans) rather than by rank."""
    return isinstance(d, CategoricalDistribution) and not all(
        isinstance(c, (int, float)) and not isinstance(c, bool) for c in d.choices
    )


def _rank(d: CategoricalDistribution, value: Any) -> float:
    """A numeric choice's rank among the choices, scaled to [0, 1]."""
    ranked = sorted(d.choices)
    return ranked.index(value) / max(1, len(ranked) - 1)


def _unit(d: IntDistribution | FloatDistribution, value: float) -> float:
    """A range value scaled to [0, 1] (log space for log ranges)."""
    low, high, value = float(d.low), float(d.high), float(value)
    if d.log:
        low, high, value = math.log(low), math.log(high), math.log(value)
    return 0.0 if high == low else (value - low) / (high - low)


def _from_unit(d: IntDistribution | FloatDistribution, unit: float) -> float | int:
    """The range value at ``unit`` in [0, 1], on the range's step."""
    low, high = float(d.low), float(d.high)
    unit = min(max(unit, 0.0), 1.0)
    if d.log:
        value = math.exp(math.log(low) + unit * (math.log(high) - math.log(low)))
    else:
        value = low + unit * (high - low)
    step = d.step
    if isinstance(d, IntDistribution):
        step = step or 1
        return int(min(d.high, max(d.low, d.low + round((value - d.low) / step) * step)))
    if step is not None:
        steps = math.floor((high - low) / step + 1e-9)
        value = low + min(steps, max(0, round((value - low) / step))) * step
    return float(min(high, max(low, value)))
