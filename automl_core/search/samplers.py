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
:func:`automl_core.model.models.architecture_work`), as ``seconds = overhead + rate * work``.

In a multi-fidelity search (``fidelity_epochs`` set) most proposals are only trained to the
first rung, so what a proposal costs is the time to reach it: a trial's set-up (build,
tracing, the first validation) plus that share of an epoch. The sampler then models both
in seconds, from the timings every trial stores at its reports
(:data:`automl_core.storage.trials.COST_ATTR`), so the machine's own speed is learned from the first
trial on instead of a prior measured on another machine.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from automl_core.storage.trials import COST_ATTR, PRECISION_ATTR


class JointSampler(optuna.samplers.BaseSampler):
    """The part every sampler of this package that models a fixed set of parameters jointly
    shares (GP-UCB, the REINFORCE controller, DARTS): the joint ("relative") space is
    given up front, and a parameter outside it goes to a fallback sampler.

    A subclass sets the joint space and the fallback in its ``__init__`` through this one
    and writes :meth:`sample_relative`; :meth:`trial_rng` gives its draws a generator seeded
    per trial, so a trial's proposal does not depend on which worker drew it first.

    Args:
        space: The parameters sampled jointly, by name.
        seed: The sampler's seed (None: unseeded).
        fallback: The sampler of every other parameter (single-valued ones, or those the
            subclass leaves out). Defaults to a seeded random sampler.
    """

    def __init__(
        self,
        space: dict[str, BaseDistribution],
        seed: int | None = None,
        fallback: optuna.samplers.BaseSampler | None = None,
    ) -> None:
        self._space = dict(space)
        self._seed = seed
        self._fallback = fallback or optuna.samplers.RandomSampler(seed=seed)

    def trial_rng(self, trial: FrozenTrial) -> np.random.Generator:
        """A generator seeded by the sampler's seed and the trial's number."""
        return np.random.default_rng(None if self._seed is None else [self._seed, trial.number])

    def reseed_rng(self) -> None:
        """Reseeds the fallback sampler (joint proposals are seeded per trial)."""
        self._fallback.reseed_rng()

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        """The parameters this sampler models jointly."""
        return dict(self._space)

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        """A parameter outside the joint space: the fallback's draw."""
        return self._fallback.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Lets the fallback see the trial start."""
        self._fallback.before_trial(study, trial)

    def after_trial(self, study, trial, state, values) -> None:
        """Lets the fallback see the trial end."""
        self._fallback.after_trial(study, trial, state, values)


# Per-epoch overhead in units of multiply-accumulates per image, used until the study has
# timed two architectures: on 2 CPU cores an epoch of mnist-5k costs ~0.44 s plus
# ~0.15 s per million multiply-accumulates, i.e. the overhead is worth ~3 M of work.
PRIOR_OVERHEAD_WORK = 3.0e6
START_UP_CANDIDATES = 24
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# priors of the seconds model, per training image of an epoch (2 CPU cores, our loop),
# scaled by the first measurements: a fixed part and a part per multiply-accumulate
PRIOR_IMAGE_SECONDS = 5e-5
PRIOR_IMAGE_SECONDS_PER_WORK = 2.5e-11
PRIOR_SETUP_SECONDS = 1.0


class CostAwareTPESampler(optuna.samplers.TPESampler):
    """TPE over a fixed space whose proposals maximise improvement per second of training.

    Args:
        distributions: Every parameter's distribution (the space is known up front, so
            even the first trial's draw can take cost into account).
        work_of: Maps a full parameter dict to the work of training that configuration
            (any unit proportional to time per epoch beyond a fixed overhead).
        seed: Seed of the draws.
        n_startup_trials: Cost-weighted random trials before TPE's model takes over.
        fidelity_epochs: In a multi-fidelity search, the epochs of its first rung: a
            proposal then costs its set-up plus that much training, in seconds learned
            from the study's timings. None (default): the cost is per epoch, in work units.
        train_images: Training images per epoch, for the seconds model's prior.
        precision: The Keras policy this search's trials train with: the time model learns
            from trials timed under it, and from others only while none is (a float32
            timing overstates a bfloat16 trial's cost several times). Defaults to
            ``float32``.
    """

    def __init__(
        self,
        distributions: dict[str, BaseDistribution],
        work_of: Callable[[dict[str, Any]], float],
        seed: int | None = None,
        n_startup_trials: int = 5,
        fidelity_epochs: float | None = None,
        train_images: int = 4000,
        precision: str = "float32",
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
        self._precision = precision
        self._start_up = n_startup_trials
        self._overhead_work = PRIOR_OVERHEAD_WORK
        self._tried: set[tuple] = set()
        self._uniform = optuna.samplers.RandomSampler(seed=seed)
        self._fidelity = fidelity_epochs
        self._seconds = SecondsModel(train_images)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        """The whole space minus single-valued parameters, sampled jointly from trial one."""
        return {name: d for name, d in self._distributions.items() if not d.single()}

    def predicted_cost(self, params: dict[str, Any]) -> float:
        """Relative seconds per epoch of a configuration under the current time model.

        In a multi-fidelity search: predicted seconds to reach the first rung.
        """
        work = self._work_of({**self._fixed, **params})
        if self._fidelity is not None:
            return self._seconds.setup + self._fidelity * self._seconds.epoch(work)
        return self._overhead_work + work

    def fit_time_model(self, trials: list[FrozenTrial]) -> None:
        """Re-estimates the time model from the timed trials among ``trials``.

        Per-epoch work units: needs two architectures of different work; until then the
        prior stays. Multi-fidelity seconds: see :meth:`SecondsModel.fit`.
        """
        trials = same_precision(trials, self._precision)
        if self._fidelity is not None:
            self._seconds.fit(
                [
                    (self._work_of({**self._fixed, **t.params}), _cost_of(t))
                    for t in trials
                    if _cost_of(t) and set(self._distributions) - set(self._fixed) <= set(t.params)
                ]
            )
            return
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


class SecondsModel:
    """Seconds of a trial on this machine: ``setup`` once, then ``epoch(work)`` per epoch.

    ``epoch(work) = images * (fixed + per_work * work)``. Until a trial has reported, the
    priors hold. From the first timed trial on they are scaled to the measured speed; with
    epochs timed for two architectures of different work, both parts are fitted.

    Args:
        train_images: Training images per epoch.
    """

    def __init__(self, train_images: int = 4000) -> None:
        self.images = max(1, int(train_images))
        self.fixed = PRIOR_IMAGE_SECONDS
        self.per_work = PRIOR_IMAGE_SECONDS_PER_WORK
        self.setup = PRIOR_SETUP_SECONDS

    def epoch(self, work: float) -> float:
        """Predicted seconds of one epoch of training for that work per image."""
        return self.images * (self.fixed + self.per_work * work)

    def fit(self, points: list[tuple[float, dict[str, float]]]) -> None:
        """Learns from ``(work, timings)`` of trials (:data:`automl_core.storage.trials.COST_ATTR`)."""
        prior = SecondsModel(self.images)
        timed = [(w, c["epoch_seconds"]) for w, c in points if c.get("epoch_seconds", 0) > 0]
        if len({w for w, _ in timed}) >= 2:
            work = np.array([w for w, _ in timed], dtype=float)
            seconds = np.array([s for _, s in timed], dtype=float) / self.images
            per_work, fixed = np.polyfit(work, seconds, 1)
            if per_work > 0:
                self.per_work = float(per_work)
                self.fixed = float(max(fixed, 0.05 * float(np.min(seconds))))
            else:
                timed = timed[:1]
        if timed and len({w for w, _ in timed}) < 2:
            speed = float(np.median([s / prior.epoch(w) for w, s in timed]))
            self.fixed, self.per_work = prior.fixed * speed, prior.per_work * speed
        setups = [
            c["first_report_seconds"] - c.get("first_report_epochs", 0.0) * self.epoch(w)
            for w, c in points
            if c.get("first_report_seconds", 0) > 0
        ]
        if setups:
            self.setup = max(float(np.median(setups)), 0.05)
        if not timed and points:
            # only first reports: scale the whole prior to their measured seconds
            firsts = [
                (c["first_report_seconds"], c.get("first_report_epochs", 0.0), w)
                for w, c in points
                if c.get("first_report_seconds", 0) > 0
            ]
            if firsts:
                speed = float(
                    np.median([s / (prior.setup + e * prior.epoch(w)) for s, e, w in firsts])
                )
                self.fixed, self.per_work = prior.fixed * speed, prior.per_work * speed
                self.setup = prior.setup * speed


def same_precision(trials: list[FrozenTrial], policy: str) -> list[FrozenTrial]:
    """The trials trained under ``policy`` (trials without a record count as float32), or
    every trial when none was."""
    matching = [t for t in trials if t.user_attrs.get(PRECISION_ATTR, "float32") == policy]
    return matching or list(trials)


def _cost_of(trial: FrozenTrial) -> dict[str, float]:
    """The timings a trial stored at its reports (empty when none)."""
    cost = trial.user_attrs.get(COST_ATTR)
    return dict(cost) if isinstance(cost, dict) else {}


def _key(params: dict[str, Any], names) -> tuple:
    """A hashable identity of a configuration over the given parameter names."""
    return tuple((name, repr(params[name])) for name in sorted(names))


def _only_value(distribution: BaseDistribution) -> Any:
    """The one value of a single-valued distribution."""
    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        return distribution.choices[0]
    return distribution.low
