"""The search loop: prepare a study, train its trials in workers, follow it to its budget.

The space says what to try (:mod:`automl_core.model.space`), a strategy is Optuna's sampler and
pruner (:mod:`automl_core.search.strategies`), the settings are one record stored on the study
(:mod:`automl_core.storage.settings`), and the loop here trains, reports each epoch, stores the
artifacts and records the trial (:mod:`automl_core.storage.trials`). Worker processes are started
and stopped by :mod:`automl_core.hosting.processes`. Progress flows out through callbacks
``(study, trial) -> None``.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import random
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from automl_core import limits
from automl_core.errors import AutoMLError, ConfigError, StorageError, TrialFailure
from automl_core.model.baseline import baseline_metrics
from automl_core.model.checkpoints import EpochCheckpoint
from automl_core.model.datasets import DATASETS, Dataset, load_dataset
from automl_core.model.precision import gpu_names
from automl_core.model.precision_probe import resolve_precision
from automl_core.model.representation import probe_metrics
from automl_core.search import workers as worker_processes
from automl_core.search.preflight import check_search
from automl_core.search.strategies import Strategy, StrategyContext, get_strategy
from automl_core.storage import store
from automl_core.storage.settings import (
    DEADLINE_ATTR,
    RESUMABLE_SETTINGS,
    SECOND_OBJECTIVES,
    STUDY_PRECISION_ATTR,
    SearchSettings,
    StudyRecord,
    settings_conflict,
    study_deadline,
    study_precision,
    study_settings,
)
from automl_core.storage.trials import (
    ARTIFACT_ATTR,
    CONFIG_ATTR,
    COST_ATTR,
    DUPLICATE_ATTR,
    FAIL_REASON_ATTR,
    LIVE_ATTR,
    METRICS_ATTR,
    PRECISION_ATTR,
    PRECISION_FALLBACK_ATTR,
    PROMOTED_FROM_ATTR,
    RESUMED_AT_ATTR,
    RETRY_ATTR,
    RUN_ATTR,
    RUN_HEARTBEAT_ATTR,
    WORKER_ATTR,
    BudgetCount,
    TrialRecord,
    configuration_key,
    fail_trial,
    failures_in_a_row,
    finished_twin,
    read_trials,
    settled_configurations,
    stopped_twin,
    touch_study,
)

TrialCallback = Callable[[optuna.Study, optuna.trial.FrozenTrial], None]


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
        study.set_user_attr(store.ARTIFACT_KEY_ATTR, uuid.uuid4().hex[:8])
    else:
        conflict = settings_conflict(settings, stored)
        if conflict:
            raise ConfigError(conflict)
        resumed = {**stored, **{k: getattr(settings, k) for k in RESUMABLE_SETTINGS}}
        study.set_user_attr(store.SETTINGS_ATTR, resumed)
    deadline = time.time() + settings.timeout if settings.timeout else None
    study.set_user_attr(DEADLINE_ATTR, deadline)
    return study


def trial_reporter(
    trial: optuna.Trial,
    prune: bool,
    deadline: float | None,
    max_epochs: int,
    reports_per_epoch: int = 1,
):
    """A Keras callback that reports each report point to Optuna, publishes progress, prunes.

    The pruner's step is the training done in units of ``1 / reports_per_epoch`` epoch:
    epochs for a plain search; thirds of an epoch for a multi-fidelity one, whose first
    rungs are a third and two thirds of the training images. The validation MSE is
    reported (not the loss): trials trained with other losses stay comparable. The trial's
    measured timings are stored under :data:`~automl_core.storage.trials.COST_ATTR` for cost models.

    Args:
        trial: The running trial.
        prune: Report the validation MSE and let the pruner stop the trial.
        deadline: Unix time at which training stops (the trial is kept), or None.
        max_epochs: The trial's epoch budget; a trial that reaches it is never pruned.
        reports_per_epoch: Pruner steps per epoch. Defaults to 1.

    Returns:
        A ``keras.callbacks.Callback``.
    """
    import keras

    started = time.perf_counter()

    class Reporter(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.curves: dict[str, list[float]] = {"loss": [], "val_loss": [], "val_mse": []}
            self.cost: dict[str, float] = {}

        def on_train_begin(self, logs=None):
            # a training retried in float32 starts its curves again
            for curve in self.curves.values():
                curve.clear()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            now = time.perf_counter()
            epochs = float(logs.get("epochs", epoch + 1))
            for key in self.curves:
                if key in logs:
                    self.curves[key].append(float(logs[key]))
            if not self.cost:
                self.cost = {"first_report_seconds": now - started, "first_report_epochs": epochs}
            elif epochs > self.cost["first_report_epochs"]:
                self.cost["epoch_seconds"] = (
                    now - started - self.cost["first_report_seconds"]
                ) / (epochs - self.cost["first_report_epochs"])
            trial.set_user_attr(COST_ATTR, self.cost)
            trial.set_user_attr(
                LIVE_ATTR,
                {"epoch": max(1, math.ceil(epochs - 1e-9)), "epochs": epochs, **self.curves},
            )
            val_mse = float(logs.get("val_mse", logs.get("val_loss", math.nan)))
            if prune and math.isfinite(val_mse):
                trial.report(val_mse, max(1, round(epochs * reports_per_epoch)))
                # a trial that has run all its epochs is finished, not pruned
                if epochs < max_epochs and trial.should_prune():
                    raise optuna.TrialPruned(f"pruned after {epochs:.3g} epochs")
            if deadline is not None and time.time() >= deadline:
                self.model.stop_training = True

    return Reporter()


def _objective(
    settings: SearchSettings,
    dataset: Dataset,
    strategy: Strategy,
    study: optuna.Study,
    interrupts: worker_processes.InterruptHold | None = None,
    precision: str = "float32",
    precision_note: str = "",
):
    """The function Optuna calls for each trial.

    ``interrupts``, held while the trial was created, is released once the trial names its
    worker: from then on an interrupted trial can be found and queued again. Trials train
    in the Keras policy ``precision``; ``precision_note`` says why this worker trains in
    another policy than the study's (recorded on each trial), or is ''.
    """
    # TensorFlow only where a trial trains (a worker), not in the supervisor nor pre-flight
    from automl_core.model.training import train_autoencoder

    space = settings.search_space()

    def objective(trial: optuna.Trial):
        trial.set_user_attr(WORKER_ATTR, worker_processes.worker_id())
        if interrupts is not None:
            interrupts.release()
        touch_study(study)
        config = space.suggest(trial)
        trial.set_user_attr(CONFIG_ATTR, config.to_dict())
        records = read_trials(study)
        earlier = finished_twin(records, config.to_dict())
        if earlier is not None:
            # samplers may propose a configuration again; training is seeded, so reuse it
            trial.set_user_attr(METRICS_ATTR, earlier.metrics)
            trial.set_user_attr(ARTIFACT_ATTR, earlier.artifact_dir)
            trial.set_user_attr(DUPLICATE_ATTR, earlier.number)
            trial.set_user_attr(PRECISION_ATTR, earlier.precision or "float32")
            queue_an_untried_configuration(study, space, records, settings.seed + trial.number)
            values = earlier.values or ()
            return values[0] if len(values) == 1 else tuple(values)
        stopped = stopped_twin(records, config.to_dict())
        if stopped is not None and PROMOTED_FROM_ATTR not in trial.user_attrs:
            # stopped at a rung and not promoted since: training it again would end the same
            trial.set_user_attr(DUPLICATE_ATTR, stopped.number)
            queue_an_untried_configuration(study, space, records, settings.seed + trial.number)
            raise optuna.TrialPruned(f"same configuration as trial {stopped.number}")
        # the last trial of a trial budget with no model yet is not pruned: a search always
        # ends with at least one trained model
        last_chance = not any(r.state == "COMPLETE" and r.has_model for r in records) and (
            BudgetCount.of(records).done + BudgetCount.of(records).running
            >= settings.trial_budget()
        )
        reporter = trial_reporter(
            trial,
            prune=strategy.prunes and not last_chance,
            deadline=study_deadline(study),
            max_epochs=settings.max_epochs,
            reports_per_epoch=strategy.reports_per_epoch,
        )
        trial.set_user_attr(PRECISION_ATTR, precision)
        checkpoint = _trial_checkpoint(study, trial, config, precision, settings)
        try:
            trained = train_autoencoder(
                config,
                dataset,
                settings.max_epochs,
                settings.seed + trial.number,
                [reporter],
                first_epoch_reports=strategy.reports_per_epoch,
                precision=precision,
                checkpoint=checkpoint,
            )
        except optuna.TrialPruned:
            checkpoint.discard()
            raise
        except TrialFailure as exc:
            checkpoint.discard()
            trial.set_user_attr(FAIL_REASON_ATTR, str(exc))
            raise
        except (ConfigError, ValueError) as exc:
            checkpoint.discard()
            trial.set_user_attr(FAIL_REASON_ATTR, f"impossible configuration: {exc}")
            raise TrialFailure(str(exc)) from exc
        except MemoryError as exc:
            checkpoint.discard()
            trial.set_user_attr(FAIL_REASON_ATTR, "out of memory while building or training")
            raise TrialFailure("out of memory") from exc
        finally:
            # an interrupted trial keeps its checkpoint: its retry continues from it
            if checkpoint.resumed_at_epoch is not None:
                trial.set_user_attr(RESUMED_AT_ATTR, checkpoint.resumed_at_epoch)
        checkpoint.discard()
        metrics = trained.metrics.to_dict()
        # PCA with as many components, on the same split: the linear baseline a reader
        # judges the model by (left out, never failing the trial, when it cannot be made)
        metrics.update(
            baseline_metrics(
                dataset,
                config.latent_dim,
                store.artifact_root() / store.study_artifact_folder(study) / "pca",
            )
        )
        # how much of the labels the code carries (left out for unlabelled data)
        metrics.update(probe_metrics(trained.models.encoder, dataset))
        if trained.precision != precision:
            trial.set_user_attr(PRECISION_ATTR, trained.precision)
        if trained.precision_fallback or precision_note:
            trial.set_user_attr(
                PRECISION_FALLBACK_ATTR, trained.precision_fallback or precision_note
            )
        try:
            relative = store.save_trial_artifacts(
                store.artifact_root(),
                store.study_artifact_folder(study),
                trial.number,
                trained.models.autoencoder,
                trained.history,
                metrics,
                config.to_dict(),
                trained.preview,
            )
        except StorageError as exc:
            trial.set_user_attr(FAIL_REASON_ATTR, str(exc))
            raise TrialFailure(str(exc)) from exc
        trial.set_user_attr(METRICS_ATTR, metrics)
        trial.set_user_attr(ARTIFACT_ATTR, relative)
        if strategy.multi_objective:
            return metrics["val_mse"], metrics[settings.second_objective]
        return metrics["val_mse"]

    return objective


def _retry_interrupted(study: optuna.Study, trial: optuna.trial.FrozenTrial | None) -> None:
    """Queues the parameters of a trial cut off by Ctrl-C so a re-run tries them again."""
    if trial is None or trial.state != optuna.trial.TrialState.FAIL:
        return
    if not TrialRecord.from_frozen(trial).fail_reason:
        worker_processes.requeue(study, trial.number, trial.params)


def _trial_checkpoint(
    study: optuna.Study, trial: optuna.Trial, config, precision: str, settings: SearchSettings
) -> EpochCheckpoint:
    """The trial's epoch checkpoint, resuming the one of the interrupted trial it retries.

    Checkpoints live beside the study's models (``<artifacts>/<study>/checkpoints/``), so a
    retry on another machine sharing the artifact folder finds them too.
    """
    folder = store.artifact_root() / store.study_artifact_folder(study) / "checkpoints"
    retry_of = trial.user_attrs.get(RETRY_ATTR)
    identity = {
        "config": config.to_dict(),
        "precision": precision,
        "dataset": settings.dataset,
        "data_seed": settings.seed,
        "max_epochs": settings.max_epochs,
    }
    return EpochCheckpoint(
        folder / f"trial_{trial.number:05d}.npz",
        identity,
        folder / f"trial_{int(retry_of):05d}.npz" if isinstance(retry_of, int) else None,
    )


def budget_left(study: optuna.Study, settings: SearchSettings) -> bool:
    """Whether the study still has trials to start (trial budget, grid and deadline).

    Stale trials of killed workers are failed first, so they are retried, not counted.
    """
    deadline = study_deadline(study)
    if deadline is not None and time.time() >= deadline:
        return False
    # a killed worker's trial stays RUNNING until someone fails it; it is then re-queued
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    records = read_trials(study)
    space = settings.search_space()
    finite = space.grid_size() is not None
    if finite and exhausted(records, space):
        return False
    # in a finite space a configuration proposed again is not a trial of the budget: the
    # search ends when every configuration is settled (see queue_an_untried_configuration)
    count = BudgetCount.of(records, count_duplicates=not finite)
    return count.done + count.running < settings.trial_budget()


def exhausted(records: list[TrialRecord], space) -> bool:
    """Whether every configuration of a finite space is settled (trained, stopped at its
    rung or failed for its own reason) and nothing is queued or running."""
    size = space.grid_size()
    if size is None or any(r.state in ("WAITING", "RUNNING") for r in records):
        return False
    return len(settled_configurations(records, space.parameters)) >= size


def exhausted_message(study: optuna.Study) -> str | None:
    """Why a search ended before its budget because its space is exhausted, or None."""
    settings = study_settings(study)
    space = settings.search_space()
    if not exhausted(read_trials(study), space):
        return None
    return (
        f"the search space is exhausted: each of its {space.grid_size():,} configurations was "
        "trained, stopped at its rung or failed; widen it (more choices, or a range) to "
        "search further"
    )


def queue_an_untried_configuration(
    study: optuna.Study, space, records: list[TrialRecord], seed: int
) -> dict | None:
    """After a configuration was proposed again, queues one not tried yet (a finite space).

    A sampler that has converged may keep proposing what it already knows; without this a
    small space is re-proposed over and over while configurations wait untried. Nothing is
    queued while a queued trial waits, or when every configuration is taken.

    Returns:
        The queued parameters, or None.
    """
    size = space.grid_size()
    if size is None or size > limits.get("max_grid_size"):
        return None
    if any(r.state == "WAITING" for r in records):
        return None
    names = list(space.parameters)
    taken = settled_configurations(records, names) | {
        configuration_key(r.config, names) for r in records if r.running
    }
    configurations = space.configurations()
    order = list(range(len(configurations)))
    random.Random(seed).shuffle(order)
    for index in order:
        values = configurations[index].to_dict()
        if configuration_key(values, names) not in taken:
            params = {name: values[name] for name in names}
            study.enqueue_trial(params, skip_if_exists=True)
            return params
    return None


def run_worker(
    study_name: str,
    storage_url: str | None = None,
    on_trial: TrialCallback | None = None,
    seed_offset: int = 0,
    max_trials: int | None = None,
    *,
    run: str | None = None,
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
        run: The search run this worker belongs to, whose split arrays it reads instead of
            loading the dataset (an inline worker's; a worker process learns its run from
            :data:`~automl_core.search.workers.WORKER_RUN_ENV`). Defaults to None.

    Returns:
        The study.

    Raises:
        StorageError: The study does not exist or was not created by this tool.
        KeyboardInterrupt: SIGINT or SIGTERM arrived (or the supervisor died): the running
            trial was failed and queued again.
    """
    with worker_processes.stop_on_interrupt():
        return _run_worker(study_name, storage_url, on_trial, seed_offset, max_trials, run)


def _run_worker(
    study_name, storage_url, on_trial, seed_offset, max_trials, run=None
) -> optuna.Study:
    """:func:`run_worker` with its interrupt handling set."""
    started_for = os.environ.get(worker_processes.WORKER_RUN_ENV)
    if started_for:
        run = started_for
        worker_processes.die_with_parent()
        import keras  # noqa: F401  (TensorFlow's import overlaps the study's preparation)

        study = _wait_for_run(study_name, storage_url, run)
    else:
        study = store.load_study(study_name, storage_url)
    settings = study_settings(study)
    strategy = get_strategy(settings.strategy)
    dataset = _shared_dataset(settings, run) or load_dataset(
        settings.dataset,
        settings.seed,
        settings.val_fraction,
        settings.test_fraction,
        settings.max_images,
    )
    space = settings.search_space()
    space.validate_for(dataset.input_shape)
    precision, precision_note = worker_policy(study_precision(study).policy)
    context = StrategyContext(
        space,
        settings.seed + seed_offset,
        dataset.input_shape,
        settings.max_epochs,
        train_images=len(dataset.x_train),
        precision=precision,
        study_seed=settings.seed,
        load_data=lambda: dataset,
        deadline=study_deadline(study),
    )
    study = optuna.load_study(
        study_name=study_name,
        storage=store.open_storage(storage_url),
        sampler=strategy.make_sampler(context),
        pruner=strategy.make_pruner(context),
    )
    interrupts = worker_processes.InterruptHold()
    objective = _objective(
        settings, dataset, strategy, study, interrupts, precision, precision_note
    )
    callbacks = [lambda finished_study, trial: touch_study(finished_study)]
    callbacks += [on_trial] if on_trial else []
    import keras

    ran = 0
    memory_at_start = worker_processes.resident_mib()
    while max_trials is None or ran < max_trials:
        if hasattr(study.pruner, "promote"):
            # stopped trials now among the best are queued again (before the budget is
            # read: a promotion keeps an otherwise exhausted space going)
            study.pruner.promote(study)
        if not budget_left(study, settings):
            break
        if (
            ran
            and worker_processes.resident_mib() - memory_at_start
            > worker_processes.WORKER_GROWTH_MIB
        ):
            break  # a fresh process takes over (see worker_processes.WORKER_GROWTH_MIB)
        if worker_processes.supervisor_gone():
            break  # its search was killed: no worker trains on alone
        before = {t.number for t in study.get_trials(deepcopy=False)}
        ran += 1
        try:
            with interrupts:  # released by the objective once the trial names its worker
                study.optimize(objective, n_trials=1, catch=(TrialFailure,), callbacks=callbacks)
        except KeyboardInterrupt:
            mine = [t for t in study.get_trials(deepcopy=False) if t.number not in before]
            _retry_interrupted(study, mine[-1] if mine else None)
            raise
        finally:
            keras.backend.clear_session()
            gc.collect()
    return study


class InlineWorker:
    """A worker that runs in the search's own process (``AUTOML_WORKER_POOL=inline``).

    It stands where a worker process would, with the part of :class:`subprocess.Popen` the
    search loop uses: the first :meth:`poll` runs its share of trials
    (:data:`~automl_core.search.workers.TRIALS_PER_PROCESS`) to the end, so trials run one
    after another in this process and no TensorFlow start-up is paid per worker. An error
    ends it with exit status 1 and the line a worker process would have logged.
    """

    def __init__(self, study_name: str, storage_url: str | None, index: int, run: str) -> None:
        self.study_name, self.storage_url, self.index, self.run = (
            study_name,
            storage_url,
            index,
            run,
        )
        self.pid = os.getpid()
        self.returncode: int | None = None
        self.error_line = ""

    def poll(self) -> int:
        """Runs the worker's trials, the first time; its exit status."""
        if self.returncode is None:
            try:
                run_worker(
                    self.study_name,
                    self.storage_url,
                    # the search loop waits meanwhile: each trial keeps its run alive
                    on_trial=lambda study, _: study.set_user_attr(RUN_HEARTBEAT_ATTR, time.time()),
                    seed_offset=self.index,
                    max_trials=worker_processes.TRIALS_PER_PROCESS,
                    run=self.run,
                )
                self.returncode = 0
            except Exception as exc:
                prefix = "error" if isinstance(exc, AutoMLError) else type(exc).__name__
                self.error_line = f"{prefix}: {exc}"
                self.returncode = 1
        return self.returncode

    def send_signal(self, signum: int) -> None:
        """Stops a worker that has not run yet (a running one is this process)."""
        if self.returncode is None:
            self.returncode = -signum

    def wait(self, timeout: float | None = None) -> int | None:
        """Its exit status (it never runs in the background)."""
        return self.returncode

    def kill(self) -> None:
        """Stops it if it has not run yet."""
        self.send_signal(9)


def _start_worker(
    study_name: str, storage_url: str | None, index: int, run: str, pool: str
) -> Any:
    """A worker of a search run in ``pool`` (see :func:`~automl_core.search.workers.worker_pool`)."""
    if pool == "inline":
        return InlineWorker(study_name, storage_url, index, run)
    return worker_processes.spawn_worker(study_name, storage_url, index, run)


def worker_policy(policy: str) -> tuple[str, str]:
    """The Keras policy this worker trains a study's trials in, and why it differs ('' if not).

    A study resolved to ``mixed_float16`` on a GPU machine may be joined by a worker on a
    machine without one: that worker trains in float32 and its trials say so.
    """
    if policy == "mixed_float16" and not gpu_names():
        return "float32", "mixed_float16 needs a GPU and this worker has none; trained in float32"
    return policy, ""


def run_search(
    settings: SearchSettings,
    storage_url: str | None = None,
    on_trial: TrialCallback | None = None,
    workers: int = 1,
    poll_seconds: float = 0.5,
    on_start: Callable[[optuna.Study], None] | None = None,
    on_progress: Callable[[list[TrialRecord]], None] | None = None,
) -> optuna.Study:
    """Runs (or resumes) a search to its budget with worker processes, and follows it.

    Trials run in ``workers`` child processes (``python -m automl_core worker``); each runs
    at most :data:`TRIALS_PER_PROCESS` trials (or until it has grown by
    :data:`WORKER_GROWTH_MIB`) and is then replaced, so memory stays flat
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
        on_start: Called with the prepared study before its first trial (its settings and
            the resolved precision, :func:`automl_core.storage.settings.study_precision`, are set).
        on_progress: Called after each read of the storage (every ``poll_seconds``) with
            the study's trial records, whose :attr:`~TrialRecord.live` holds the epochs of
            the running ones (per-epoch progress). Defaults to None.

    Returns:
        The study.

    Raises:
        ConfigError: Invalid settings, space, strategy or dataset for the space.
        DatasetError: The dataset cannot be loaded.
        StorageError: The storage cannot be reached.
        TrialFailure: Worker processes keep dying without finishing a trial.
        KeyboardInterrupt: SIGINT or SIGTERM arrived: the workers were stopped and their
            running trials queued again.
    """
    with worker_processes.stop_on_interrupt():
        return _run_search(
            settings, storage_url, on_trial, workers, poll_seconds, on_start, on_progress
        )


def _run_search(
    settings, storage_url, on_trial, workers, poll_seconds, on_start, on_progress
) -> optuna.Study:
    """:func:`run_search` with its interrupt handling set."""
    worker_processes.check_workers(workers)
    store.validate_study_name(settings.study)
    pool = worker_processes.worker_pool()
    # bad input fails here, in milliseconds, before any worker starts (downloadable
    # datasets are checked again against their images once loaded)
    check_search(settings, storage_url)
    # before the workers start: a probe of this machine (once, then cached) must not share
    # the cores with their start-up
    precision = resolve_precision(settings.precision, store.runs_home())
    worker_processes.sweep_stale_caches()
    # held until this run's token is on the study: a second search started at the same
    # moment then sees it and is refused
    starting = contextlib.ExitStack()
    starting.enter_context(worker_processes.study_run_lock(settings.study))
    try:
        _refuse_a_second_run(settings.study, storage_url)
    except BaseException:
        starting.close()
        raise
    # workers start before the data is loaded: their TensorFlow import overlaps loading it
    # and preparing the study; they wait for this run's token on the study
    run = worker_processes.run_token()
    children: dict[int, Any] = {
        index: _start_worker(settings.study, storage_url, index, run, pool)
        for index in range(workers)
    }
    try:
        dataset = load_dataset(
            settings.dataset,
            settings.seed,
            settings.val_fraction,
            settings.test_fraction,
            settings.max_images,
        )
        if settings.dataset in DATASETS and not DATASETS[settings.dataset].offline:
            check_search(settings, storage_url, dataset.input_shape)
        study = prepare_study(settings, storage_url)
        settings = study_settings(study)
        _share_dataset(dataset, settings, run)
        study.set_user_attr(STUDY_PRECISION_ATTR, precision.to_dict())
        study.set_user_attr(RUN_HEARTBEAT_ATTR, time.time())
        study.set_user_attr(RUN_ATTR, run)
        starting.close()
        if on_start is not None:
            on_start(study)
    except BaseException:
        starting.close()
        worker_processes.stop_workers(list(children.values()), wait_seconds=5.0)
        raise
    reported = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
    storage = store.open_storage(storage_url)
    started = time.time()
    spawned = workers
    crashes = 0
    last_error = ""
    beat = time.time()
    try:
        while True:
            if time.time() - beat >= HEARTBEAT_SECONDS:
                beat = time.time()
                study.set_user_attr(RUN_HEARTBEAT_ATTR, beat)
            for index, child in [(i, c) for i, c in children.items() if c.poll() is not None]:
                del children[index]
                if child.returncode != 0:
                    crashes += 1
                    last_error = (
                        getattr(child, "error_line", "")
                        or worker_processes.last_error_line(settings.study, index)
                        or f"exit status {child.returncode}"
                    )
                    _fail_trial_of_dead_worker(storage, study, child, last_error)
            new = _report_finished(study, reported, on_trial)
            if any(t.state != optuna.trial.TrialState.FAIL for t in new):
                crashes = 0
            records = read_trials(study)
            if on_progress is not None:
                on_progress(records)
            _stop_if_failing(settings.study, records, started, crashes, last_error)
            more = budget_left(study, settings)
            running = BudgetCount.of(records).running
            # a trial still RUNNING without a worker of ours (a killed run's, another
            # machine's) is waited for: it finishes, or heartbeats fail and re-queue it
            if not more and not children and not running:
                break
            while more and len(children) < workers:
                children[spawned] = _start_worker(settings.study, storage_url, spawned, run, pool)
                spawned += 1
            time.sleep(poll_seconds)
    except BaseException:
        worker_processes.stop_workers(list(children.values()))
        worker_processes.requeue_orphans(
            study, {worker_processes.worker_id(c.pid) for c in children.values()}
        )
        _report_finished(study, reported, on_trial)
        raise
    finally:
        _shared_dataset_path(settings.study, run).unlink(missing_ok=True)
        with contextlib.suppress(Exception):  # the run is over: a new search may start at once
            study.set_user_attr(RUN_HEARTBEAT_ATTR, None)
    _report_finished(study, reported, on_trial)
    return study


# a search run writes its heartbeat this often, and one silent for LIVE_RUN_SECONDS is over
HEARTBEAT_SECONDS = 5.0
LIVE_RUN_SECONDS = 30.0


def live_run(study_name: str, storage_url: str | None = None) -> str | None:
    """The token of a search run of this study that is still alive, or None.

    A run is alive while its heartbeat (:data:`RUN_HEARTBEAT_ATTR`) is under
    :data:`LIVE_RUN_SECONDS` old and, for a run of this machine, its process exists.
    """
    if study_name not in store.study_names(storage_url):
        return None
    record = StudyRecord.of(store.load_study(study_name, storage_url, create=False))
    token, beat = record.run, record.heartbeat
    if not token or beat is None or time.time() - beat > LIVE_RUN_SECONDS:
        return None
    parts = token.split(".")
    here = worker_processes.run_token().split(".")[0]
    if len(parts) == 3 and parts[0] == here and parts[1].isdigit():
        if not worker_processes.process_alive(int(parts[1])):
            return None
    return token


def _refuse_a_second_run(study_name: str, storage_url: str | None) -> None:
    """Raises ConfigError when a search of the study is already running (any machine)."""
    token = live_run(study_name, storage_url)
    if token is None:
        return
    host, _, rest = token.partition(".")
    where = f"process {rest.split('.')[0]} on {host}" if rest else "another run"
    raise ConfigError(
        f"a search of study {study_name!r} is already running ({where}); wait for it or stop "
        f"it, or add workers to it with `python -m automl_core worker --study {study_name}`"
    )


def _shared_dataset_path(study_name: str, run: str) -> Path:
    """Where a search run leaves its split arrays for its workers."""
    return worker_processes.run_cache_path(study_name, run)


def _share_dataset(dataset: Dataset, settings: SearchSettings, run: str) -> None:
    """Writes the split arrays once for this run's workers (they skip loading and splitting).

    Written to a temporary name and renamed, so a worker never reads half a file; plain
    arrays only (read back with ``allow_pickle=False``). Best effort: a worker that finds
    no file loads the dataset itself.
    """
    path = _shared_dataset_path(settings.study, run)
    arrays = {
        name: getattr(dataset, name)
        for name in ("x_train", "x_val", "x_test", "y_train", "y_val", "y_test")
        if getattr(dataset, name) is not None
    }
    if dataset.class_names is not None:
        arrays["class_names"] = np.array(dataset.class_names, dtype=str)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial.npz")
        np.savez(partial, **arrays)
        partial.rename(path)
    except OSError:
        pass


def _shared_dataset(settings: SearchSettings, run: str | None) -> Dataset | None:
    """The split arrays a search run left for its workers, or None."""
    if not run:
        return None
    try:
        with np.load(_shared_dataset_path(settings.study, run), allow_pickle=False) as arrays:
            fields = {name: arrays[name] for name in arrays.files}
    except (OSError, ValueError):
        return None
    names = fields.pop("class_names", None)
    return Dataset(
        settings.dataset,
        **fields,
        class_names=tuple(str(n) for n in names) if names is not None else None,
    )


def _wait_for_run(
    study_name: str, storage_url: str | None, run: str, timeout: float = 300.0
) -> optuna.Study:
    """The study once the search run ``run`` has prepared it (started workers wait here).

    Raises:
        StorageError: The study was not prepared within ``timeout`` seconds (the search
            that started this worker failed or was stopped).
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            study = store.load_study(study_name, storage_url, create=False)
            if StudyRecord.of(study).run == run:
                return study
        except StorageError:
            pass
        if time.monotonic() >= deadline:
            raise StorageError(
                f"study {study_name!r} was not prepared by its search within {timeout:.0f} s"
            )
        time.sleep(0.1)


def _fail_trial_of_dead_worker(storage, study: optuna.Study, child, last_error: str) -> None:
    """Fails, with the reason, the trial a crashed worker left RUNNING, so it counts.

    A worker killed by the kernel (out of memory) or by an error would otherwise leave its
    trial to be retried, and the same configuration could kill the next worker again.
    """
    worker = worker_processes.worker_id(child.pid)
    for record in read_trials(study):
        if record.running and record.worker == worker:
            reason = f"its worker process died (exit status {child.returncode}): {last_error}"
            try:
                fail_trial(storage, study.study_name, record.number, reason)
            except optuna.exceptions.UpdateFinishedTrialError:
                pass  # it finished or was failed by heartbeats in the meantime
            touch_study(study)


def _stop_if_failing(
    study_name: str, records: list[TrialRecord], since: float, crashes: int, last_error: str
) -> None:
    """Raises TrialFailure when this run's recent trials all failed, or workers keep dying."""
    limit = limits.get("max_consecutive_failures")
    recent = [r for r in failures_in_a_row(records) if (r.finished_at or 0) >= since]
    if len(recent) >= limit:
        raise TrialFailure(
            f"the last {len(recent)} trials of study {study_name!r} failed, so the search "
            f"stopped (AUTOML_MAX_CONSECUTIVE_FAILURES={limit}); the last said: "
            f"{recent[-1].fail_reason}"
        )
    if crashes >= limit:
        raise TrialFailure(
            f"worker processes of study {study_name!r} exited {crashes} times in a row "
            f"without finishing a trial (AUTOML_MAX_CONSECUTIVE_FAILURES={limit}); the last "
            f"said: {last_error}"
        )


def _report_finished(
    study: optuna.Study, reported: set[int], on_trial: TrialCallback | None
) -> list[optuna.trial.FrozenTrial]:
    """Calls ``on_trial`` for trials finished since the last call and returns them."""
    new = [
        t
        for t in study.get_trials(deepcopy=False)
        if t.state.is_finished() and t.number not in reported
    ]
    for trial in sorted(new, key=lambda t: t.number):
        reported.add(trial.number)
        if on_trial:
            on_trial(study, trial)
    return new
