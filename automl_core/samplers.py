"""A cost-aware Bayesian sampler: TPE that weighs expected improvement against training time.

Plain TPE treats a 3-layer, 64-filter model and a 1-layer, 8-filter one as equally cheap to
try. On a CPU the first can cost twenty times the second, and under a wall-clock budget
that decides how many configurations a search sees at all. This sampler ranks TPE's
candidates by improvement per predicted second (Snoek et al., 2012, "expected improvement
per second"), and draws its random start-up trials with probability inversely proportional
to their predicted cost, so the first minutes cover many cheap models rather than a few
expensive ones. Expensive configurations are still proposed when the model expects them to
be better by more than they cost.

The time model is learned from the study itself: seconds per reported epoch of every
finished trial against the work of its architecture (multiply-accumulates per image,
:func:`automl_core.models.architecture_work`), as ``seconds = overhead + rate * work``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

# Per-epoch overhead in units of multiply-accumulates per image, used until the study has
# timed two architectures: on 2 CPU cores an epoch of mnist-5k costs ~0.44 s plus
# ~0.15 s per million multiply-accumulates, i.e. the overhead is worth ~3 M of work.
PRIOR_OVERHEAD_WORK = 3.0e6
START_UP_CANDIDATES = 24
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class CostAwareTPESampler(optuna.samplers.TPESampler):
    """TPE over a fixed space whose proposals maximise improvement per second of training.

    Args:
        distributions: Every parameter's distribution (the space is known up front, so
            even the first trial's draw can take cost into account).
        work_of: Maps a full parameter dict to the work of training that configuration
            (any unit proportional to time per epoch beyond a fixed overhead).
        seed: Seed of the draws.
        n_startup_trials: Cost-weighted random trials before TPE's model takes over.
    """

    def __init__(
        self,
        distributions: dict[str, BaseDistribution],
        work_of: Callable[[dict[str, Any]], float],
        seed: int | None = None,
        n_startup_trials: int = 5,
    ) -> None:
        super().__init__(
            seed=seed, n_startup_trials=n_startup_trials, multivariate=True, constant_liar=True
        )
        self._distributions = dict(distributions)
        # single-valued parameters are not sampled, but the work of a configuration needs them
        self._fixed = {
            name: _only_value(d) for name, d in self._distributions.items() if d.single()
        }
        self._work_of = work_of
        self._start_up = n_startup_trials
        self._overhead_work = PRIOR_OVERHEAD_WORK
        self._tried: set[tuple] = set()
        self._uniform = optuna.samplers.RandomSampler(seed=seed)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        """The whole space minus single-valued parameters, sampled jointly from trial one."""
        return {name: d for name, d in self._distributions.items() if not d.single()}

    def predicted_cost(self, params: dict[str, Any]) -> float:
        """Relative seconds per epoch of a configuration under the current time model."""
        return self._overhead_work + self._work_of({**self._fixed, **params})

    def fit_time_model(self, trials: list[FrozenTrial]) -> None:
        """Re-estimates the per-epoch overhead from the finished, timed trials among ``trials``.

        Needs two architectures of different work; until then the prior stays.
        """
        points = []
        for trial in trials:
            epochs = len(trial.intermediate_values)
            if (
                trial.state in FINISHED
                and epochs
                and trial.duration is not None
                and set(self._distributions) <= set(trial.params)
            ):
                points.append(
                    (self._work_of(trial.params), trial.duration.total_seconds() / epochs)
                )
        work = np.array([w for w, _ in points], dtype=float)
        if len(np.unique(work)) < 2:
            return
        seconds = np.array([s for _, s in points], dtype=float)
        rate, overhead = np.polyfit(work, seconds, 1)
        if rate > 0:
            # bounded: a handful of noisy timings must not make cost irrelevant or absolute
            self._overhead_work = float(np.clip(overhead / rate, 1e5, 1e9))

    def _sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        # overrides TPESampler's private hook (stable from Optuna 3.x to 5.0; tested)
        if not search_space:
            return {}
        trials = study.get_trials(deepcopy=False)
        self.fit_time_model(trials)
        # configurations already run or running: in a discrete space, proposing one again
        # would spend a trial on a known answer
        self._tried = {
            _key(t.params, search_space) for t in trials if set(search_space) <= set(t.params)
        }
        if sum(t.state in FINISHED for t in trials) < self._start_up:
            return self._cheap_random_draw(search_space)
        return self._sample(study, trial, search_space)

    def _cheap_random_draw(self, search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        """A uniform draw, re-weighted by 1 / predicted cost: uniform per second of compute."""
        rng = self._rng.rng
        # RandomSampler.sample_independent only uses its own generator, not the study
        candidates = [
            {
                name: self._uniform.sample_independent(None, None, name, d)  # type: ignore[arg-type]
                for name, d in search_space.items()
            }
            for _ in range(START_UP_CANDIDATES)
        ]
        weights = np.array(
            [
                0.0 if _key(c, search_space) in self._tried else 1.0 / self.predicted_cost(c)
                for c in candidates
            ]
        )
        if not weights.any():
            weights[:] = 1.0
        return candidates[rng.choice(len(candidates), p=weights / weights.sum())]

    def _compute_acquisition_func(
        self, samples: dict[str, np.ndarray], mpe_below, mpe_above
    ) -> np.ndarray:
        # TPE's log l(x) / g(x), minus log predicted seconds: improvement per second
        scores = super()._compute_acquisition_func(samples, mpe_below, mpe_above)
        names = list(samples)
        candidates = [
            {n: self._distributions[n].to_external_repr(samples[n][i]) for n in names}
            for i in range(len(scores))
        ]
        costs = np.array([self.predicted_cost(c) for c in candidates])
        tried = np.array([_key(c, names) in self._tried for c in candidates])
        return np.where(tried, -np.inf, scores - np.log(costs))


def _key(params: dict[str, Any], names) -> tuple:
    """A hashable identity of a configuration over the given parameter names."""
    return tuple((name, repr(params[name])) for name in sorted(names))


def _only_value(distribution: BaseDistribution) -> Any:
    """The one value of a single-valued distribution."""
    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        return distribution.choices[0]
    return distribution.low
