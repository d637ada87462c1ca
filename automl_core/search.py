"""The search: strategies (one registry), the budget, and the trial loop.

The space says what to try (:mod:`automl_core.space`), a strategy is Optuna's sampler and
pruner, and the loop here trains, reports each epoch, stores the artifacts and records the
trial. Progress flows out through callbacks ``(study, trial) -> None``.
"""

from __future__ import annotations

import gc
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna

from automl_core import store
from automl_core.datasets import Dataset, load_dataset
from automl_core.errors import ConfigError, StorageError, TrialFailure
from automl_core.space import SearchSpace

TrialCallback = Callable[[optuna.Study, optuna.trial.FrozenTrial], None]
FAIL_REASON_ATTR = "fail_reason"
LIVE_ATTR = "live"
METRICS_ATTR = "metrics"
CONFIG_ATTR = "config"
DEADLINE_ATTR = "deadline"
DUPLICATE_ATTR = "duplicate_of"
WORKER_ATTR = "worker"


def worker_id(pid: int | None = None) -> str:
    """``host:pid`` of a worker process (this one by default), as recorded on its trials."""
    import socket

    return f"{socket.gethostname()}:{pid or os.getpid()}"


def requeue_orphans(study: optuna.Study, workers: set[str]) -> int:
    """Fails and queues again the RUNNING trials of worker processes that are gone.

    Used after a supervisor stopped its workers: a worker interrupted at an awkward moment
    may leave its trial RUNNING, which heartbeats would only fix a minute later.

    Returns:
        How many trials were queued again.
    """
    queued = 0
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if trial.user_attrs.get(WORKER_ATTR) in workers:
            study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
            if trial.params:
                study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
            queued += 1
    return queued


SECOND_OBJECTIVES = {"compression_ratio": "maximize", "param_count": "minimize"}


@dataclass(frozen=True)
class Strategy:
    """One search algorithm: an Optuna sampler, a pruner, and the study's directions.

    Attributes:
        description: One line for ``--help`` and the sidebar.
        make_sampler: ``(space, seed, input_shape) -> optuna sampler``; ``input_shape`` is
            one image's (H, W, C), for samplers that weigh a model's cost.
        make_pruner: ``(max_epochs) -> optuna pruner``.
        multi_objective: Whether trials return (val_mse, second objective).
        needs_grid: Whether every parameter must be a list of choices.
        requires: A Python module the strategy imports, checked before the search starts.
    """

    description: str
    make_sampler: Callable[
        [SearchSpace, int | None, tuple[int, int, int]], optuna.samplers.BaseSampler
    ]
    make_pruner: Callable[[int], optuna.pruners.BasePruner] = lambda max_epochs: (
        optuna.pruners.NopPruner()
    )
    multi_objective: bool = False
    needs_grid: bool = False
    requires: str | None = None


def _tpe(space: SearchSpace, seed: int | None, input_shape=None) -> optuna.samplers.BaseSampler:
    """TPE with a short random start, modelling parameters jointly.

    Three random trials, not Optuna's ten: a search on two cores often runs only a dozen
    full trials, and the model must start steering early to matter.
    """
    return optuna.samplers.TPESampler(
        seed=seed, n_startup_trials=3, multivariate=True, constant_liar=True
    )


def _cost_aware_tpe(space: SearchSpace, seed: int | None, input_shape: tuple[int, int, int]):
    """TPE ranking proposals by improvement per predicted second of training."""
    from automl_core.models import architecture_work
    from automl_core.samplers import CostAwareTPESampler
    from automl_core.space import ModelConfig

    def work_of(params: dict) -> float:
        try:
            return architecture_work(ModelConfig(**params), input_shape)
        except (ConfigError, ValueError):
            return 0.0  # it cannot be built: the trial fails at once, costing nothing

    return CostAwareTPESampler(space.distributions(), work_of, seed=seed)


def _random(space: SearchSpace, seed: int | None, input_shape=None) -> optuna.samplers.BaseSampler:
    """Uniform random draws."""
    return optuna.samplers.RandomSampler(seed=seed)


STRATEGIES: dict[str, Strategy] = {
    "grid": Strategy(
        "every configuration of the grid, each once",
        lambda space, seed, input_shape: optuna.samplers.GridSampler(space.grid(), seed=seed),
        needs_grid=True,
    ),
    "random": Strategy("configurations drawn uniformly at random", _random),
    "tpe-cost": Strategy(
        "Bayesian (TPE), improvement per second of training: cheap models first",
        _cost_aware_tpe,
    ),
    "tpe": Strategy("Bayesian: tree-structured Parzen estimator", _tpe),
    "gp": Strategy(
        "Bayesian: Gaussian process (needs PyTorch: pip install torch)",
        lambda space, seed, input_shape: optuna.samplers.GPSampler(seed=seed),
        requires="torch",
    ),
    "hyperband": Strategy(
        "TPE proposals, Hyperband stops poor trials early",
        _tpe,
        make_pruner=lambda max_epochs: optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=max_epochs, reduction_factor=3
        ),
    ),
    "asha": Strategy(
        "random proposals, asynchronous successive halving stops poor trials early",
        _random,
        make_pruner=lambda max_epochs: optuna.pruners.SuccessiveHalvingPruner(
            min_resource=1, reduction_factor=3
        ),
    ),
    "nsga2": Strategy(
        "multi-objective genetic search: validation MSE against compression (Pareto front)",
        lambda space, seed, input_shape: optuna.samplers.NSGAIISampler(
            seed=seed, population_size=10
        ),
        multi_objective=True,
    ),
}
DEFAULT_STRATEGY = "tpe-cost"


def get_strategy(name: str) -> Strategy:
    """The registered strategy of that name.

    Raises:
        ConfigError: The name is not registered, or the strategy's extra is not installed.
    """
    if name not in STRATEGIES:
        raise ConfigError(f"unknown strategy {name!r}; expected one of {', '.join(STRATEGIES)}")
    strategy = STRATEGIES[name]
    if strategy.requires:
        import importlib.util

        if importlib.util.find_spec(strategy.requires) is None:
            raise ConfigError(
                f"strategy {name!r} needs the package {strategy.requires!r}, which is not "
                f"installed; run: pip install {strategy.requires}"
            )
    return strategy


@dataclass(frozen=True)
class SearchSettings:
    """Everything that defines a search; stored on the study so any worker can join it.

    Attributes:
        study: The study's name.
        dataset: A registry name or a path every worker can read.
        space: The search space, as :meth:`SearchSpace.to_dict` gives it.
        strategy: A :data:`STRATEGIES` name.
        trials: Trials to finish in the whole study (None: the grid's size, or 20).
        timeout: Seconds of wall clock for the search from its (re)start, or None.
        max_epochs: Most epochs per trial.
        seed: Seed of the data split, the sampler and weight initialisation.
        max_images: Use only this many images (tiny runs), or None for all.
        val_fraction: Share of images for validation.
        test_fraction: Share of images for the test split.
        second_objective: For multi-objective strategies: ``compression_ratio`` or
            ``param_count``.
    """

    study: str
    dataset: str = "mnist-5k"
    space: dict[str, Any] = field(default_factory=dict)
    strategy: str = DEFAULT_STRATEGY
    trials: int | None = None
    timeout: float | None = None
    max_epochs: int = 20
    seed: int = 0
    max_images: int | None = None
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    second_objective: str = "compression_ratio"

    def __post_init__(self) -> None:
        store.validate_study_name(self.study)
        if self.trials is not None and (isinstance(self.trials, bool) or self.trials < 1):
            raise ConfigError(f"trials must be a positive integer, got trials={self.trials}")
        if self.timeout is not None and not self.timeout > 0:
            raise ConfigError(
                f"timeout must be a positive number of seconds, got timeout={self.timeout}"
            )
        if isinstance(self.max_epochs, bool) or self.max_epochs < 1:
            raise ConfigError(
                f"max_epochs must be a positive integer, got max_epochs={self.max_epochs}"
            )
        if self.second_objective not in SECOND_OBJECTIVES:
            raise ConfigError(
                f"unknown second objective {self.second_objective!r}; expected one of "
                f"{', '.join(SECOND_OBJECTIVES)}"
            )

    def search_space(self) -> SearchSpace:
        """The space as an object."""
        return SearchSpace.from_dict(self.space)

    def trial_budget(self) -> int:
        """Trials to finish: ``trials``, capped by the grid size for grid search."""
        size = self.search_space().grid_size()
        if self.strategy == "grid" and size is not None:
            return min(self.trials, size) if self.trials else size
        if self.trials:
            return self.trials
        return 10_000 if self.timeout else 20

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SearchSettings:
        """Reads :meth:`to_dict` output back."""
        return cls(**values)


# settings a re-run may change without making it another search
RESUMABLE_SETTINGS = ("trials", "timeout", "max_epochs")
# a worker process ends after this many trials and a fresh one takes over: TensorFlow keeps
# ~10 MB per trained model even after clear_session(), so a long-lived process would grow
TRIALS_PER_PROCESS = int(os.environ.get("AUTOML_TRIALS_PER_PROCESS", "16"))


def settings_conflict(settings: SearchSettings, stored: dict[str, Any]) -> str | None:
    """Why a re-run with ``settings`` cannot resume a study stored with ``stored``, or None.

    Args:
        settings: The new run's settings.
        stored: The study's stored settings (:meth:`SearchSettings.to_dict`).

    Returns:
        A message naming the first differing setting, or None when they match.
    """
    wanted = {**settings.to_dict(), "space": settings.search_space().to_dict()}
    for key, value in wanted.items():
        if key not in RESUMABLE_SETTINGS and stored.get(key) != value:
            return (
                f"study {settings.study!r} already exists with {key}={stored.get(key)!r}, not "
                f"{value!r}; resume it with the same settings or pick a new study name"
            )
    return None


def _count_trials(study: optuna.Study) -> tuple[int, int]:
    """(finished trials that use up budget, trials running now).

    A trial failed for a reason of its own counts; one interrupted or killed (no reason
    recorded) does not: it is retried.
    """
    done = running = 0
    for trial in study.get_trials(deepcopy=False):
        if trial.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED):
            done += 1
        elif trial.state == optuna.trial.TrialState.FAIL and FAIL_REASON_ATTR in trial.user_attrs:
            done += 1
        elif trial.state == optuna.trial.TrialState.RUNNING:
            running += 1
    return done, running


def prepare_study(settings: SearchSettings, storage_url: str | None = None) -> optuna.Study:
    """Creates the study, or checks that a re-run matches the stored one, and sets its deadline.

    Args:
        settings: The search.
        storage_url: Where studies live. Defaults to :func:`store.default_storage_url`.

    Returns:
        The study, with its settings stored for workers.

    Raises:
        ConfigError: The space or strategy is invalid, or the study exists with other settings.
        StorageError: The storage cannot be reached.
    """
    strategy = get_strategy(settings.strategy)
    space = settings.search_space()
    if strategy.needs_grid:
        space.grid()
    storage = store.open_storage(storage_url)
    directions = ["minimize"]
    if strategy.multi_objective:
        directions.append(SECOND_OBJECTIVES[settings.second_objective])
    settings = replace(settings, space=space.to_dict())
    study = optuna.create_study(
        study_name=settings.study, storage=storage, directions=directions, load_if_exists=True
    )
    stored = study.user_attrs.get(store.SETTINGS_ATTR)
    if stored is None:
        study.set_user_attr(store.SETTINGS_ATTR, settings.to_dict())
        study.set_user_attr(store.ARTIFACT_ROOT_ATTR, str(store.artifact_root()))
    else:
        conflict = settings_conflict(settings, stored)
        if conflict:
            raise ConfigError(conflict)
        resumed = {**stored, **{k: getattr(settings, k) for k in RESUMABLE_SETTINGS}}
        study.set_user_attr(store.SETTINGS_ATTR, resumed)
    deadline = time.time() + settings.timeout if settings.timeout else None
    study.set_user_attr(DEADLINE_ATTR, deadline)
    return study


def study_settings(study: optuna.Study) -> SearchSettings:
    """The settings stored on a study by :func:`prepare_study`.

    Raises:
        StorageError: The study was not created by this tool.
    """
    stored = study.user_attrs.get(store.SETTINGS_ATTR)
    if stored is None:
        raise StorageError(
            f"study {study.study_name!r} has no search settings; it was not created by automl_core"
        )
    return SearchSettings.from_dict(stored)


def trial_reporter(trial: optuna.Trial, prune: bool, deadline: float | None, max_epochs: int):
    """A Keras callback that reports each epoch to Optuna, publishes live progress, prunes.

    Args:
        trial: The running trial.
        prune: Report the validation loss and let the pruner stop the trial.
        deadline: Unix time at which training stops (the trial is kept), or None.
        max_epochs: The trial's epoch budget; a trial that reaches it is never pruned.

    Returns:
        A ``keras.callbacks.Callback``.
    """
    import keras

    class Reporter(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.curves: dict[str, list[float]] = {"loss": [], "val_loss": []}

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            for key in self.curves:
                if key in logs:
                    self.curves[key].append(float(logs[key]))
            trial.set_user_attr(LIVE_ATTR, {"epoch": epoch + 1, **self.curves})
            val_loss = float(logs.get("val_loss", math.nan))
            if prune and math.isfinite(val_loss):
                trial.report(val_loss, epoch + 1)
                # a trial that has run all its epochs is finished, not pruned
                if epoch + 1 < max_epochs and trial.should_prune():
                    raise optuna.TrialPruned(f"pruned after epoch {epoch + 1}")
            if deadline is not None and time.time() >= deadline:
                self.model.stop_training = True

    return Reporter()


def _finished_twin(study: optuna.Study, config: dict) -> optuna.trial.FrozenTrial | None:
    """An earlier complete trial of the same configuration with a saved model, if any."""
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if (
            trial.user_attrs.get(CONFIG_ATTR) == config
            and store.ARTIFACT_ATTR in trial.user_attrs
            and DUPLICATE_ATTR not in trial.user_attrs
        ):
            return trial
    return None


def _objective(
    settings: SearchSettings, dataset: Dataset, strategy: Strategy, study: optuna.Study
):
    """The function Optuna calls for each trial."""
    from automl_core.training import train_autoencoder

    space = settings.search_space()

    def objective(trial: optuna.Trial):
        trial.set_user_attr(WORKER_ATTR, worker_id())
        config = space.suggest(trial)
        trial.set_user_attr(CONFIG_ATTR, config.to_dict())
        earlier = _finished_twin(study, config.to_dict())
        if earlier is not None:
            # samplers may propose a configuration again; training is seeded, so reuse it
            for key in (METRICS_ATTR, store.ARTIFACT_ATTR):
                trial.set_user_attr(key, earlier.user_attrs[key])
            trial.set_user_attr(DUPLICATE_ATTR, earlier.number)
            return earlier.values[0] if len(earlier.values) == 1 else tuple(earlier.values)
        deadline = study.user_attrs.get(DEADLINE_ATTR)
        reporter = trial_reporter(
            trial,
            prune=not strategy.multi_objective,
            deadline=deadline,
            max_epochs=settings.max_epochs,
        )
        try:
            trained = train_autoencoder(
                config, dataset, settings.max_epochs, settings.seed + trial.number, [reporter]
            )
        except optuna.TrialPruned:
            raise
        except TrialFailure as exc:
            trial.set_user_attr(FAIL_REASON_ATTR, str(exc))
            raise
        except (ConfigError, ValueError) as exc:
            trial.set_user_attr(FAIL_REASON_ATTR, f"impossible configuration: {exc}")
            raise TrialFailure(str(exc)) from exc
        metrics = trained.metrics.to_dict()
        relative = store.save_trial_artifacts(
            store.artifact_root(),
            settings.study,
            trial.number,
            trained.models.autoencoder,
            trained.history,
            metrics,
            config.to_dict(),
        )
        trial.set_user_attr(METRICS_ATTR, metrics)
        trial.set_user_attr(store.ARTIFACT_ATTR, relative)
        if strategy.multi_objective:
            return metrics["val_mse"], metrics[settings.second_objective]
        return metrics["val_mse"]

    return objective


def _retry_interrupted(study: optuna.Study, trial: optuna.trial.FrozenTrial | None) -> None:
    """Queues the parameters of a trial cut off by Ctrl-C so a re-run tries them again."""
    if trial is not None and trial.state == optuna.trial.TrialState.FAIL and trial.params:
        if FAIL_REASON_ATTR not in trial.user_attrs:
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})


def budget_left(study: optuna.Study, settings: SearchSettings) -> bool:
    """Whether the study still has trials to start (trial budget, grid and deadline).

    Stale trials of killed workers are failed first, so they are retried, not counted.
    """
    deadline = study.user_attrs.get(DEADLINE_ATTR)
    if deadline is not None and time.time() >= deadline:
        return False
    # a killed worker's trial stays RUNNING until someone fails it; it is then re-queued
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    done, running = _count_trials(study)
    return done + running < settings.trial_budget()


def run_worker(
    study_name: str,
    storage_url: str | None = None,
    on_trial: TrialCallback | None = None,
    seed_offset: int = 0,
    max_trials: int | None = None,
) -> optuna.Study:
    """Runs trials of an existing study until its budget (trials or deadline) is spent.

    Any number of workers, on this machine or others sharing the storage and the artifact
    folder, may run this at once: each asks the storage for the next trial, so none is run
    twice.

    Args:
        study_name: The study to join.
        storage_url: Its storage. Defaults to :func:`store.default_storage_url`.
        on_trial: Called with ``(study, trial)`` after each trial this worker finishes.
        seed_offset: Added to the sampler's seed, so workers propose different points.
        max_trials: Stop after this many trials of this call (the process is then replaced
            by a fresh one). Defaults to no limit.

    Returns:
        The study.

    Raises:
        StorageError: The study does not exist or was not created by this tool.
    """
    study = store.load_study(study_name, storage_url)
    settings = study_settings(study)
    strategy = get_strategy(settings.strategy)
    dataset = load_dataset(
        settings.dataset,
        settings.seed,
        settings.val_fraction,
        settings.test_fraction,
        settings.max_images,
    )
    space = settings.search_space()
    space.validate_for(dataset.input_shape)
    study = optuna.load_study(
        study_name=study_name,
        storage=store.open_storage(storage_url),
        sampler=strategy.make_sampler(space, settings.seed + seed_offset, dataset.input_shape),
        pruner=strategy.make_pruner(settings.max_epochs),
    )
    objective = _objective(settings, dataset, strategy, study)
    callbacks = [on_trial] if on_trial else []
    import keras

    ran = 0
    while budget_left(study, settings) and (max_trials is None or ran < max_trials):
        before = {t.number for t in study.get_trials(deepcopy=False)}
        ran += 1
        try:
            study.optimize(objective, n_trials=1, catch=(TrialFailure,), callbacks=callbacks)
        except KeyboardInterrupt:
            mine = [t for t in study.get_trials(deepcopy=False) if t.number not in before]
            _retry_interrupted(study, mine[-1] if mine else None)
            raise
        finally:
            keras.backend.clear_session()
            gc.collect()
    return study


def run_search(
    settings: SearchSettings,
    storage_url: str | None = None,
    on_trial: TrialCallback | None = None,
    workers: int = 1,
    poll_seconds: float = 0.5,
) -> optuna.Study:
    """Runs (or resumes) a search to its budget with worker processes, and follows it.

    Trials run in ``workers`` child processes (``python -m automl_core worker``); each runs
    at most :data:`TRIALS_PER_PROCESS` trials and is then replaced, so memory stays flat
    however long the search. This process only reads the storage and reports finished
    trials, in order, through ``on_trial``. Finished trials are never retrained: a re-run of
    the same study continues where it stopped. Ctrl-C (or SIGINT) stops the workers: their
    running trials are queued again for the next run.

    Args:
        settings: The search.
        storage_url: Where the study lives. Defaults to :func:`store.default_storage_url`.
        on_trial: Called with ``(study, trial)`` for each trial that finishes.
        workers: Worker processes on this machine. Defaults to 1.
        poll_seconds: How often the storage is read. Defaults to 0.5.

    Returns:
        The study.

    Raises:
        ConfigError: Invalid settings, space, strategy or dataset for the space.
        DatasetError: The dataset cannot be loaded.
        StorageError: The storage cannot be reached.
        TrialFailure: Worker processes keep dying without finishing a trial.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be a positive integer, got workers={workers!r}")
    get_strategy(settings.strategy)
    dataset = load_dataset(
        settings.dataset,
        settings.seed,
        settings.val_fraction,
        settings.test_fraction,
        settings.max_images,
    )
    settings.search_space().validate_for(dataset.input_shape)
    study = prepare_study(settings, storage_url)
    settings = study_settings(study)
    reported = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
    children: dict[int, Any] = {}
    spawned = crashes = 0
    last_error = ""
    try:
        while True:
            for index, child in [(i, c) for i, c in children.items() if c.poll() is not None]:
                del children[index]
                if child.returncode != 0:
                    crashes += 1
                    last_error = (
                        _last_error_line(settings.study, index)
                        or f"exit status {child.returncode}"
                    )
            progressed = _report_finished(study, reported, on_trial)
            crashes = 0 if progressed else crashes
            if crashes >= 3 * workers:
                raise TrialFailure(
                    f"worker processes of study {settings.study!r} exited {crashes} times in a "
                    f"row without finishing a trial; the last said: {last_error}"
                )
            more = budget_left(study, settings)
            if not more and not children:
                break
            while more and len(children) < workers:
                children[spawned] = spawn_worker(settings.study, storage_url, spawned)
                spawned += 1
            time.sleep(poll_seconds)
    except BaseException:
        stop_workers(list(children.values()))
        requeue_orphans(study, {worker_id(c.pid) for c in children.values()})
        _report_finished(study, reported, on_trial)
        raise
    _report_finished(study, reported, on_trial)
    return study


def _report_finished(
    study: optuna.Study, reported: set[int], on_trial: TrialCallback | None
) -> bool:
    """Calls ``on_trial`` for trials finished since the last call; True if there were any."""
    new = [
        t
        for t in study.get_trials(deepcopy=False)
        if t.state.is_finished() and t.number not in reported
    ]
    for trial in sorted(new, key=lambda t: t.number):
        reported.add(trial.number)
        if on_trial:
            on_trial(study, trial)
    return bool(new)


def worker_log_path(study_name: str, index: int) -> Path:
    """Where a supervised worker's stderr goes: ``<runs>/logs/<study>-worker-<index>.log``."""
    return (
        store.runs_home() / "logs" / f"{store.validate_study_name(study_name)}-worker-{index}.log"
    )


def spawn_worker(study_name: str, storage_url: str | None, index: int):
    """Starts a quiet ``python -m automl_core worker`` for a study as a child process.

    Its stderr (TensorFlow's start-up chatter included) goes to :func:`worker_log_path`.
    """
    import subprocess
    import sys

    command = [
        sys.executable,
        "-m",
        "automl_core",
        "worker",
        "--study",
        study_name,
        "--seed-offset",
        str(index),
        "--max-trials",
        str(TRIALS_PER_PROCESS),
        "--quiet",
    ]
    if storage_url:
        command += ["--storage", storage_url]
    log = worker_log_path(study_name, index)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as stderr:
        return subprocess.Popen(
            command,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


def _last_error_line(study_name: str, index: int) -> str:
    """The last meaningful line a worker wrote to its log (its error), or ''."""
    try:
        lines = worker_log_path(study_name, index).read_text(errors="replace").splitlines()
    except OSError:
        return ""
    meaningful = [
        line
        for line in lines
        if line.strip() and not line.startswith(("I0000", "W0000", "WARNING: All log"))
    ]
    return meaningful[-1].strip() if meaningful else ""


def stop_workers(children: list, wait_seconds: float = 30.0) -> None:
    """Stops worker processes: SIGINT (they queue their trial again), then SIGKILL."""
    import signal
    import subprocess

    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGINT)
    for child in children:
        try:
            child.wait(timeout=wait_seconds)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
