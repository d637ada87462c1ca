"""How long a search will take on this machine, said before it starts.

A trial costs ``setup + epochs x epoch(work) + finish``: building and tracing the model up
to its first report, its epochs of training, then scoring and saving it. ``epoch(work)``
is the cost-aware sampler's own time model (:class:`automl_core.search.samplers.SecondsModel`:
seconds per training image, a fixed part plus a part per multiply-accumulate), and the
work of a configuration is counted without Keras (:func:`automl_core.model.shapes.estimate_work`),
averaged over the search space.

The model is fitted, in order of preference, to:

1. the timings that past trials on this storage stored (:data:`~automl_core.storage.trials.COST_ATTR`),
   those run on this machine (its host name) and in the search's number format;
2. the precision probe's measured training speed of this machine, when it has run
   (:mod:`automl_core.model.precision_probe`), scaling the sampler's priors;
3. the sampler's priors alone (two CPU cores).

:class:`SearchEstimate` says which it used, so a page can tell a measured estimate from a
rough one. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import math
import random
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from automl_core.errors import AutoMLError, ConfigError, StorageError
from automl_core.model.datasets import dataset_size, split_sizes
from automl_core.model.precision import POLICIES, choose_policy
from automl_core.model.precision_probe import PROBE_MODEL, PROBE_SHAPE, cached_probe
from automl_core.model.shapes import check_fits, estimate_work
from automl_core.model.space import PARAMETERS, ModelConfig, Range, SearchSpace
from automl_core.search.samplers import SecondsModel
from automl_core.search.strategies import REPORTS_PER_EPOCH, first_rung_thirds, get_strategy
from automl_core.storage import store
from automl_core.storage.settings import SearchSettings, study_settings
from automl_core.storage.trials import read_trials_once

# configurations drawn from a space to average its work over
WORK_SAMPLES = 128
# seconds of scoring and saving a trained model (test PSNR / SSIM, the PCA baseline, the
# model file and its preview) before any trial has been timed
PRIOR_FINISH_SECONDS = 2.0
# the pruners of this package keep this share of the trials at each rung
RUNG_KEEP = 1 / 3
# past trials enough to fit the time model: the newest studies are read until this many
PAST_TRIALS = 500
SOURCES = ("past", "probe", "prior")


@dataclass(frozen=True)
class TimedTrial:
    """One past trial's timings, as the estimate reads them.

    Attributes:
        work: Multiply-accumulates per image of its configuration on its images.
        train_images: Training images per epoch of its search.
        cost: The timings it stored (``first_report_seconds``, ``first_report_epochs``,
            ``epoch_seconds``).
        seconds: Its whole duration when it completed, else None.
        epochs: Epochs it trained when it completed (a fraction at a first rung), else None.
        policy: The Keras policy it trained with.
    """

    work: float
    train_images: int
    cost: dict[str, float]
    seconds: float | None = None
    epochs: float | None = None
    policy: str = "float32"


@dataclass(frozen=True)
class SearchEstimate:
    """What a search is expected to cost, and how that was estimated.

    Attributes:
        trial_seconds: Seconds of one trial (its expected epochs).
        epochs: Epochs a trial is expected to train (fewer than ``max_epochs`` where a
            pruner stops most trials early).
        max_epochs: The search's most epochs per trial.
        trials: Trials of the budget.
        workers: Worker processes sharing them.
        timeout: The search's time limit in seconds, or None.
        source: ``past`` (timings of past trials on this machine), ``probe`` (this
            machine's measured speed) or ``prior`` (no measurement of this machine).
        timed_trials: How many past trials the estimate learned from.
    """

    trial_seconds: float
    epochs: float
    max_epochs: int
    trials: int
    workers: int = 1
    timeout: float | None = None
    source: str = "prior"
    timed_trials: int = 0

    @property
    def budget_seconds(self) -> float:
        """Seconds to run the whole trial budget, ignoring the time limit."""
        return self.trial_seconds * self.trials / max(1, self.workers)

    @property
    def ends_by_timeout(self) -> bool:
        """Whether the time limit is expected to end the search before its budget."""
        return self.timeout is not None and self.budget_seconds > self.timeout

    @property
    def total_seconds(self) -> float:
        """Seconds the search is expected to run (the time limit where it comes first)."""
        if self.ends_by_timeout:
            return float(self.timeout)  # type: ignore[arg-type]
        return self.budget_seconds

    @property
    def trials_in_time(self) -> int:
        """Trials expected to finish within the time limit (the budget without one)."""
        if not self.ends_by_timeout:
            return self.trials
        per_trial = self.trial_seconds / max(1, self.workers)
        return int(self.timeout / per_trial) if per_trial > 0 else self.trials  # type: ignore[operator]

    @property
    def basis(self) -> str:
        """What the figures rest on, in words."""
        if self.source == "past":
            plural = "s" if self.timed_trials != 1 else ""
            return f"from {self.timed_trials} past trial{plural} on this machine"
        if self.source == "probe":
            return "rough: no trials timed yet on this machine; scaled to its measured speed"
        return "rough: no trials timed yet on this machine"

    def text(self) -> str:
        """One line: ``about 12 s per trial, about 4 min for 20 trials (from ...)``."""
        head = f"about {duration_text(self.trial_seconds)} per trial"
        if self.ends_by_timeout:
            limit = duration_text(self.timeout)  # type: ignore[arg-type]
            body = f"the {limit} time limit ends the search after about {self.trials_in_time:,} trials"
        else:
            plural = "s" if self.trials != 1 else ""
            body = f"about {duration_text(self.total_seconds)} for {self.trials:,} trial{plural}"
            if self.workers > 1:
                body += f" on {self.workers} workers"
        return f"{head}, {body} ({self.basis})"

    def notes(self) -> list[str]:
        """What the figures assume, one sentence each."""
        notes = []
        if self.epochs < self.max_epochs - 1e-9:
            notes.append(
                f"A trial trains about {self.epochs:.1f} of its {self.max_epochs} epochs on "
                "average: the pruner stops most trials at an early rung."
            )
        else:
            notes.append(
                f"Each trial counted at its {self.max_epochs} epochs; early stopping may end "
                "some sooner."
            )
        if self.workers > 1:
            notes.append("Workers are assumed to run side by side on cores of their own.")
        return notes


def duration_text(seconds: float) -> str:
    """Seconds as ``12 s``, ``4 min`` or ``2.5 h``."""
    if not math.isfinite(seconds):
        return "-"
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def expected_epochs(strategy: str, max_epochs: int, train_images: int) -> float:
    """Epochs a trial of ``strategy`` trains on average.

    Without a pruner: ``max_epochs``. With one, successive halving's arithmetic: a third of
    the trials that reach a rung go on to the next (three times as long), the rest stop
    there. The first rung is a share of an epoch in a multi-fidelity search, else one epoch.
    """
    chosen = get_strategy(strategy)
    if not chosen.stops_early:
        return float(max_epochs)
    first = 1.0
    if chosen.reports_per_epoch > 1:
        first = first_rung_thirds(train_images) / REPORTS_PER_EPOCH
    rungs, rung = [], first
    while rung < max_epochs:
        rungs.append(rung)
        rung *= 1 / RUNG_KEEP
    expected = sum(RUNG_KEEP**i * (1 - RUNG_KEEP) * r for i, r in enumerate(rungs))
    return expected + RUNG_KEEP ** len(rungs) * max_epochs


def mean_work(
    space: SearchSpace, input_shape: tuple[int, int, int], samples: int = WORK_SAMPLES
) -> float | None:
    """Average multiply-accumulates per image over configurations drawn from ``space``.

    Only the parameters that change a model's work are drawn (uniformly from choices,
    uniformly or log-uniformly from ranges, with a fixed seed); configurations that cannot
    be built are left out (they fail at once, costing nothing).

    Returns:
        The average, or None when no drawn configuration can be built.
    """
    rng = random.Random(0)
    costly = {n: p for n, p in space.parameters.items() if PARAMETERS[n].costly}
    works = []
    for _ in range(samples):
        values = {name: _draw(rng, name, p) for name, p in costly.items()}
        config = ModelConfig(**values)
        try:
            check_fits(config, input_shape)
        except ConfigError:
            continue
        works.append(estimate_work(config, input_shape))
    return float(np.mean(works)) if works else None


def _draw(rng: random.Random, name: str, parameter: Any) -> Any:
    """One value of a parameter: a choice, or a point of a range."""
    if not isinstance(parameter, Range):
        return rng.choice(parameter.values)
    low, high = parameter.low, parameter.high
    if parameter.log and low > 0:
        value = math.exp(rng.uniform(math.log(low), math.log(high)))
    else:
        value = rng.uniform(low, high)
    if parameter.step:
        value = low + round((value - low) / parameter.step) * parameter.step
    return int(round(value)) if PARAMETERS[name].kind == "int" else value


def seconds_model(
    timed: Iterable[TimedTrial],
    train_images: int,
    probe_images_per_second: float | None = None,
) -> tuple[SecondsModel, float, str]:
    """The time model of a search with ``train_images`` per epoch on this machine.

    Args:
        timed: Past trials on this machine (their epochs are rescaled to ``train_images``).
        train_images: Training images per epoch of the search to estimate.
        probe_images_per_second: The precision probe's training speed on this machine, in
            the search's policy, or None.

    Returns:
        ``(model, finish_seconds, source)``: the sampler's seconds model, seconds of scoring
        and saving a trained model, and which of :data:`SOURCES` it came from.
    """
    model = SecondsModel(train_images)
    points, finishes = [], []
    for trial in timed:
        cost = {k: float(v) for k, v in trial.cost.items() if isinstance(v, (int, float))}
        if cost.get("epoch_seconds", 0) <= 0 and cost.get("first_report_seconds", 0) <= 0:
            continue
        first, first_epochs = (
            cost.get("first_report_seconds", 0.0),
            cost.get("first_report_epochs", 0.0),
        )
        epoch = cost.get("epoch_seconds", 0.0)
        scaled = dict(cost)
        if epoch > 0:
            # an epoch of this search's images: the same per image
            scaled["epoch_seconds"] = epoch * train_images / max(1, trial.train_images)
            if first > 0:
                setup = first - first_epochs * epoch
                scaled["first_report_seconds"] = setup + first_epochs * scaled["epoch_seconds"]
            if trial.seconds is not None and trial.epochs is not None and first > 0:
                finishes.append(trial.seconds - first - (trial.epochs - first_epochs) * epoch)
        points.append((trial.work, scaled))
    if points:
        model.fit(points)
        finish = max(0.0, float(np.median(finishes))) if finishes else PRIOR_FINISH_SECONDS
        return model, finish, "past"
    if probe_images_per_second and probe_images_per_second > 0:
        probe_work = estimate_work(ModelConfig(**PROBE_MODEL), PROBE_SHAPE)
        prior_per_image = model.fixed + model.per_work * probe_work
        speed = (1.0 / probe_images_per_second) / prior_per_image
        model.fixed, model.per_work = model.fixed * speed, model.per_work * speed
        return model, PRIOR_FINISH_SECONDS, "probe"
    return model, PRIOR_FINISH_SECONDS, "prior"


def estimate(
    space: SearchSpace,
    input_shape: tuple[int, int, int],
    train_images: int,
    strategy: str,
    max_epochs: int,
    trials: int,
    timeout: float | None = None,
    workers: int = 1,
    timed: Iterable[TimedTrial] = (),
    probe_images_per_second: float | None = None,
) -> SearchEstimate:
    """Estimates a search's time per trial and for its whole budget.

    Args:
        space: The search space.
        input_shape: One image's (H, W, C).
        train_images: Training images per epoch.
        strategy: The strategy's name (its pruner shortens trials).
        max_epochs: Most epochs per trial.
        trials: The trial budget.
        timeout: The time limit in seconds, or None. Defaults to None.
        workers: Worker processes. Defaults to 1.
        timed: Past trials on this machine (see :func:`past_timings`). Defaults to none.
        probe_images_per_second: This machine's measured training speed, or None.

    Returns:
        The estimate.

    Raises:
        ConfigError: No configuration of the space can be built for these images.
    """
    timed = list(timed)
    work = mean_work(space, input_shape)
    if work is None:
        raise ConfigError(
            "no configuration of this search space can be built for "
            f"{'x'.join(map(str, input_shape))} images, so its time cannot be estimated"
        )
    model, finish, source = seconds_model(timed, train_images, probe_images_per_second)
    epochs = expected_epochs(strategy, max_epochs, train_images)
    seconds = model.setup + epochs * model.epoch(work) + finish
    return SearchEstimate(
        trial_seconds=float(seconds),
        epochs=epochs,
        max_epochs=int(max_epochs),
        trials=int(trials),
        workers=max(1, int(workers)),
        timeout=timeout,
        source=source,
        timed_trials=len(timed) if source == "past" else 0,
    )


def expected_policy(precision: str, home: Path) -> str:
    """The Keras policy a search with this ``precision`` setting will train in here, as far
    as it is known without measuring: ``auto`` reads the probe's cached result (float32
    when the probe has not run yet)."""
    if precision != "auto":
        return POLICIES.get(precision, "float32")
    probe = cached_probe(home)
    return choose_policy(probe)[0] if probe is not None else "float32"


def past_timings(
    storage_url: str | None,
    policy: str = "float32",
    host: str | None = None,
    most: int = PAST_TRIALS,
) -> list[TimedTrial]:
    """The timed trials of the studies on a storage that ran on this machine.

    Studies are read newest first until ``most`` timed trials are found. Trials of studies
    whose dataset cannot be read here are left out (their work per image is unknown), and so
    are trials of another machine. Trials trained in ``policy`` are preferred; when none was,
    all are used (as the cost-aware sampler does).

    Args:
        storage_url: The storage. Defaults to :func:`store.default_storage_url`.
        policy: The Keras policy of the search to estimate. Defaults to ``float32``.
        host: The machine's host name. Defaults to this one's.
        most: Stop reading studies once this many trials are found. Defaults to
            :data:`PAST_TRIALS`.

    Returns:
        The trials' timings.
    """
    host = host or socket.gethostname()
    sizes: dict[str, tuple[tuple[int, int, int], int] | None] = {}
    timed: list[TimedTrial] = []
    for name in reversed(store.study_names(storage_url, create=False)):
        if len(timed) >= most:
            break
        study = store.load_study(name, storage_url, create=False)
        try:
            settings = study_settings(study)
        except StorageError:
            continue
        if settings.dataset not in sizes:
            try:
                sizes[settings.dataset] = dataset_size(settings.dataset)
            except (AutoMLError, OSError):
                sizes[settings.dataset] = None
        size = sizes[settings.dataset]
        if size is None:
            continue
        shape, images = size
        try:
            train = split_sizes(
                name, images, settings.val_fraction, settings.test_fraction, settings.max_images
            )[0]
        except AutoMLError:
            continue
        for record in read_trials_once(study):  # a one-off read: in bulk where it can
            if not record.cost or record.worker.rpartition(":")[0] != host:
                continue
            try:
                work = estimate_work(ModelConfig.from_dict(record.config), shape)
            except (ConfigError, TypeError, ValueError, KeyError):
                continue
            complete = record.state == "COMPLETE" and record.duplicate_of is None
            epochs = record.live.get("epochs") if complete else None
            timed.append(
                TimedTrial(
                    work=work,
                    train_images=train,
                    cost=dict(record.cost),
                    seconds=record.seconds if complete and epochs is not None else None,
                    epochs=float(epochs) if epochs is not None else None,
                    policy=record.precision or "float32",
                )
            )
    return [t for t in timed if t.policy == policy] or timed


def estimate_search(
    settings: SearchSettings,
    storage_url: str | None = None,
    workers: int = 1,
    home: Path | None = None,
    timed: list[TimedTrial] | None = None,
) -> SearchEstimate:
    """Estimates a search about to launch, from what this machine and storage know.

    Args:
        settings: The search.
        storage_url: Where studies live. Defaults to :func:`store.default_storage_url`.
        workers: Worker processes. Defaults to 1.
        home: The runs folder (the probe's cache). Defaults to :func:`store.runs_home`.
        timed: Past trials' timings, when the caller has read them already (a dashboard
            caches them: reading a large storage takes seconds). Defaults to
            :func:`past_timings` of ``storage_url`` in the search's policy.

    Returns:
        The estimate.

    Raises:
        DatasetError: The dataset cannot be read.
        ConfigError: The space holds no configuration that fits its images.
    """
    home = home or store.runs_home()
    shape, images = dataset_size(settings.dataset)
    train = split_sizes(
        settings.dataset,
        images,
        settings.val_fraction,
        settings.test_fraction,
        settings.max_images,
    )[0]
    policy = expected_policy(settings.precision, home)
    probe = cached_probe(home)
    speed = probe.images_per_second.get(policy) if probe is not None else None
    return estimate(
        settings.search_space(),
        shape,
        train,
        settings.strategy,
        settings.max_epochs,
        settings.trial_budget(),
        settings.timeout,
        workers,
        past_timings(storage_url, policy) if timed is None else timed,
        speed,
    )
