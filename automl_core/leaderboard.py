"""What the leaderboard shows: tables of trials, loss curves, reconstructions, which charts.

Everything here is a data step (DataFrames, arrays, small dataclasses); the figures are
drawn from them by :mod:`automl_core.charts`. Pages only call ``st.plotly_chart``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import optuna
import pandas as pd

from automl_core import limits, store, trials
from automl_core.errors import AutoMLError
from automl_core.results import EMPTY_COLUMNS, METRIC_COLUMNS, sort_trials, trials_frame

STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")


def studies_frame(studies: list[optuna.Study]) -> pd.DataFrame:
    """The trials of several studies on one table (``study`` tells them apart), best first.

    Args:
        studies: The studies.

    Returns:
        One row per trial, as :func:`automl_core.results.trials_frame` gives them.
    """
    frames = [trials_frame(study) for study in studies]
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame(columns=EMPTY_COLUMNS)
    return sort_trials(pd.concat(frames, ignore_index=True, sort=False))


def filter_frame(
    frame: pd.DataFrame,
    states: list[str] | None = None,
    text: str = "",
    max_val_mse: float | None = None,
) -> pd.DataFrame:
    """Rows of the leaderboard that match a state filter, a text filter and an MSE ceiling.

    Args:
        frame: The leaderboard.
        states: Keep only these states (None or empty: all).
        text: Keep rows where any cell contains this text, case-insensitive ('' keeps all).
        max_val_mse: Keep rows whose validation MSE is at most this (None keeps all).

    Returns:
        The matching rows, in the same order.
    """
    keep = pd.Series(True, index=frame.index)
    if states:
        keep &= frame["state"].isin(states)
    if text.strip():
        needle = text.strip().lower()
        # map(str), not astype(str): pandas keeps NaN missing under astype, and join fails
        joined = frame.apply(lambda col: col.map(str).str.lower()).agg(" ".join, axis=1)
        keep &= joined.str.contains(needle, regex=False)
    if max_val_mse is not None and "val_mse" in frame:
        keep &= frame["val_mse"].astype(float) <= max_val_mse
    return frame[keep]


def loss_curves(
    studies: dict[str, optuna.Study], picks: list[tuple[str, int]]
) -> tuple[pd.DataFrame, list[str]]:
    """Per-epoch losses of picked trials, long form, and a note for each that has none.

    Args:
        studies: Loaded studies by name.
        picks: ``(study name, trial number)`` pairs.

    Returns:
        ``(frame, notes)``: columns ``label``, ``epoch``, ``split`` (loss / val_loss), ``value``;
        notes say which trials have no history (missing model, failed, running).
    """
    rows, notes = [], []
    for study_name, number in picks:
        label = _label(study_name, number, len({s for s, _ in picks}) > 1)
        try:
            history = store.load_trial_history(studies[study_name], number)
        except (AutoMLError, OSError, ValueError) as exc:
            notes.append(str(exc))
            continue
        for split in ("loss", "val_loss"):
            for epoch, value in enumerate(history.get(split, []), start=1):
                rows.append(
                    {"label": label, "epoch": epoch, "split": split, "value": float(value)}
                )
    return pd.DataFrame(rows, columns=["label", "epoch", "split", "value"]), notes


def _label(study_name: str, number: int, with_study: bool) -> str:
    return f"{study_name} #{number}" if with_study else f"#{number}"


def live_curves(live: dict) -> pd.DataFrame:
    """The running trial's curves (``live`` user attribute) in the long form of :func:`loss_curves`."""
    rows = []
    for split in ("loss", "val_loss"):
        for epoch, value in enumerate(live.get(split, []), start=1):
            rows.append(
                {
                    "label": f"#{live.get('trial', '?')}",
                    "epoch": epoch,
                    "split": split,
                    "value": float(value),
                }
            )
    return pd.DataFrame(rows, columns=["label", "epoch", "split", "value"])


def reconstruct(model, images: np.ndarray) -> np.ndarray:
    """A model's reconstruction of images, clipped to [0, 1].

    Args:
        model: The trained autoencoder (a ``keras.Model``).
        images: (N, H, W, C) float32 images.

    Returns:
        The reconstructions, same shape.

    Raises:
        AutoMLError: The model does not take images of that shape.
    """
    expected = tuple(model.input_shape[1:])
    if tuple(images.shape[1:]) != expected:
        raise AutoMLError(
            f"the model takes images of shape {expected}, not {tuple(images.shape[1:])}"
        )
    out = model.predict(images, verbose=0, batch_size=64)
    return np.clip(np.asarray(out, dtype=np.float32), 0.0, 1.0)


def as_display_images(images: np.ndarray) -> list[np.ndarray]:
    """Images as 2-D (grey) or 3-D (RGB) arrays for ``st.image``."""
    return [img[..., 0] if img.shape[-1] == 1 else img for img in images]


def _finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The study's complete trials; read in bulk where the storage allows (a large study's
    charts otherwise wait on Optuna reading every trial)."""
    from automl_core.bulk_read import frozen_trials

    states = (optuna.trial.TrialState.COMPLETE,)
    finished = frozen_trials(study, states)
    return finished if finished is not None else study.get_trials(deepcopy=False, states=states)


def _trial_count(study: optuna.Study) -> int:
    """How many trials a study has, by one SQL count where the storage allows."""
    storage = study._storage
    counts = _trial_counts(getattr(storage, "_backend", storage), study._study_id)
    if counts is None:
        return len(study.get_trials(deepcopy=False))
    return sum(n for _, n, _ in counts)


@dataclass(frozen=True)
class StudyChartPlan:
    """Which of Optuna's study charts make sense for a study, and why others are left out.

    Attributes:
        charts: Chart names in display order, from :data:`STUDY_CHARTS`.
        notes: One sentence per chart left out (or the reason none is shown).
        multi_objective: Whether the study has two objectives (charts then plot the first).
        objective_names: The objectives' display names.
        few_trials: Whether the study has at most 20 trials (whole-number trial ticks).
    """

    charts: tuple[str, ...]
    notes: tuple[str, ...]
    multi_objective: bool = False
    objective_names: tuple[str, ...] = ("val MSE",)
    few_trials: bool = True


STUDY_CHARTS = (
    "Optimization history",
    "Parallel coordinates",
    "Parameter importances",
    "Pareto front",
)


def study_chart_plan(study: optuna.Study) -> StudyChartPlan:
    """Decides which study charts apply.

    Optimisation history needs a finished trial; parallel coordinates a parameter that
    varies; parameter importances two finished trials and a varying parameter; a
    multi-objective study also gets its Pareto front.

    Args:
        study: The study.

    Returns:
        The plan; :func:`automl_core.charts.study_figures` draws it.
    """
    finished = _finished(study)
    multi = len(study.directions) > 1
    names = ("val MSE", _second_objective_name(study)) if multi else ("val MSE",)
    if not finished:
        notes = ("No finished trial yet: the charts appear when one completes.",)
        return StudyChartPlan((), notes, multi, names)
    varying = [
        name
        for name in finished[0].params
        if len({repr(t.params.get(name)) for t in finished}) > 1
    ]
    charts = ["Optimization history"]
    notes = []
    if varying:
        charts.append("Parallel coordinates")
    if len(finished) >= 2 and varying:
        charts.append("Parameter importances")
    else:
        notes.append(
            "Parameter importances need at least 2 finished trials with varying parameters."
        )
    if multi:
        charts.append("Pareto front")
    few = _trial_count(study) <= 20
    return StudyChartPlan(tuple(charts), tuple(notes), multi, names, few)


@dataclass(frozen=True)
class ChartSample:
    """The trials a large study's charts are drawn from.

    Optuna's parallel coordinates and the importances slow down with every trial (10,000
    trials take minutes); above :func:`limits.get` ``("max_chart_trials")`` finished trials
    they are drawn from an in-memory copy holding the best half and an even spread of the
    rest, and the history from every trial's (number, value).

    Attributes:
        study: What the parallel coordinates and importances draw (the study itself when small).
        history: ``(trial number, first objective)`` of every finished trial when sampled,
            else None (the history is then Optuna's own chart of the study).
        note: What was left out, for a caption; None when nothing was.
    """

    study: optuna.Study
    history: tuple[tuple[int, float], ...] | None = None
    note: str | None = None


def chart_sample(study: optuna.Study) -> ChartSample:
    """The study itself, or a bounded sample of its finished trials (see :class:`ChartSample`)."""
    limit = limits.get("max_chart_trials")
    finished = _finished(study)
    if len(finished) <= limit:
        return ChartSample(study)
    ranked = sorted(finished, key=lambda t: t.values[0])
    if len(study.directions) > 1:  # keep the Pareto front first
        front = {t.number for t in study.best_trials}
        ranked = sorted(finished, key=lambda t: (t.number not in front, t.values[0]))
    best, rest = ranked[: limit // 2], sorted(ranked[limit // 2 :], key=lambda t: t.number)
    step = len(rest) / (limit - len(best))
    spread = [rest[int(i * step)] for i in range(limit - len(best))]
    copy = optuna.create_study(directions=study.directions)
    copy.add_trials(sorted(best + spread, key=lambda t: t.number))
    if store.SETTINGS_ATTR in study.user_attrs:
        copy.set_user_attr(store.SETTINGS_ATTR, study.user_attrs[store.SETTINGS_ATTR])
    note = (
        f"Parallel coordinates and importances are drawn from {limit:,} of the "
        f"{len(finished):,} finished trials (the best {len(best):,} and {len(spread):,} spread "
        "evenly over the rest); the table and the history have every trial."
    )
    history = tuple((t.number, float(t.values[0])) for t in finished)
    return ChartSample(copy, history, note)


def _second_objective_name(study: optuna.Study) -> str:
    settings = study.user_attrs.get(store.SETTINGS_ATTR, {})
    return str(settings.get("second_objective", "objective 2")).replace("_", " ")


def summary(frame: pd.DataFrame) -> dict[str, str]:
    """Headline numbers of a leaderboard: trials, finished, best val MSE and PSNR."""
    complete = frame[frame["state"] == "COMPLETE"] if "state" in frame else frame.iloc[0:0]
    best = complete["val_mse"].min() if "val_mse" in complete and len(complete) else math.nan
    psnr = complete["test_psnr"].max() if "test_psnr" in complete and len(complete) else math.nan
    return {
        "Trials": str(len(frame)),
        "Finished": str(len(complete)),
        "Best val MSE": "-" if math.isnan(best) else f"{best:.4f}",
        "Best PSNR": "-" if math.isnan(psnr) else f"{psnr:.1f} dB",
    }


@dataclass(frozen=True)
class PcaVerdict:
    """How a trial's test PSNR compares with PCA's with as many components.

    Attributes:
        trial: The trial's number.
        text: One sentence for a reader.
        below: Whether the model reconstructs worse than PCA.
        gap_db: Test PSNR minus PCA's, in dB.
    """

    trial: int
    text: str
    below: bool
    gap_db: float


def pca_verdict(trial: int, latent_dim, test_psnr, pca_psnr) -> PcaVerdict | None:
    """Says how a trial compares with the PCA baseline (see :data:`results.VS_PCA_HELP`).

    Args:
        trial: The trial's number.
        latent_dim: Its latent size (PCA's components).
        test_psnr: Its mean test PSNR in dB.
        pca_psnr: PCA's on the same test split in dB.

    Returns:
        The verdict, or None when either PSNR is missing.
    """
    try:
        psnr, pca = float(test_psnr), float(pca_psnr)
    except (TypeError, ValueError):
        return None
    if not (math.isfinite(psnr) and math.isfinite(pca)):
        return None
    gap = psnr - pca
    components = f"PCA with {int(latent_dim)} components" if latent_dim is not None else "PCA"
    if gap < 0:
        text = (
            f"Trial #{trial} is {-gap:.2f} dB BELOW {components} ({psnr:.2f} dB against "
            f"{pca:.2f} dB): a linear projection keeping as many numbers per image "
            "reconstructs the test images better."
        )
    else:
        text = (
            f"Trial #{trial} is {gap:.2f} dB above {components} "
            f"({psnr:.2f} dB against {pca:.2f} dB)."
        )
    return PcaVerdict(int(trial), text, gap < 0, gap)


def best_pca_verdict(frame: pd.DataFrame) -> PcaVerdict | None:
    """:func:`pca_verdict` of a leaderboard's best trial (complete, with a model, lowest
    validation MSE), or None when it has no PCA baseline."""
    if frame.empty or "pca_psnr" not in frame or "has_model" not in frame:
        return None
    best = frame[(frame["state"] == "COMPLETE") & frame["has_model"].astype(bool)]
    if best.empty:
        return None
    row = best.iloc[0]
    latent = row.get("latent_dim")
    latent = None if latent is None or pd.isna(latent) else int(latent)
    return pca_verdict(int(row["trial"]), latent, row.get("test_psnr"), row.get("pca_psnr"))


def pca_missing_note(frame: pd.DataFrame) -> str | None:
    """A note when finished trials have no PCA baseline (stored before it was recorded)."""
    if frame.empty or "vs_pca_db" not in frame or "test_psnr" not in frame:
        return None
    finished = frame[(frame["state"] == "COMPLETE") & frame["test_psnr"].notna()]
    missing = int(finished["vs_pca_db"].isna().sum())
    if not missing:
        return None
    return (
        f"vs PCA is blank for {missing} finished trial{'s' if missing != 1 else ''}: "
        "stored before the PCA baseline was recorded (or it could not be computed)."
    )


def storage_version(study_name: str, url: str | None = None) -> tuple:
    """A cheap stamp that changes when a study gains a trial or a trial finishes.

    Workers stamp the study each time a trial starts or ends (:func:`trials.touch_study`),
    so reading the stamp is one small query through the storage's public API, and a
    dashboard can cache the leaderboard until it changes instead of re-reading every trial.
    A study made elsewhere (no stamp) gets its trials counted per state, with the latest
    completion time, in one SQL query over Optuna's trials table (reading 10,000 trials to
    count them took 20 s a page); a storage where that query fails is read whole instead.

    Args:
        study_name: The study.
        url: Its storage. Defaults to :func:`store.default_storage_url`.

    Returns:
        A hashable stamp.
    """
    storage = store.open_storage(url)
    try:
        study_id = storage.get_study_id_from_name(study_name)
    except KeyError:
        return ("missing",)
    stamp = storage.get_study_user_attrs(study_id).get(trials.CHANGED_ATTR)
    if stamp is not None:
        return ("stamp", str(stamp))
    counts = _trial_counts(storage, study_id)
    if counts is not None:
        return ("count", counts)
    every = storage.get_all_trials(study_id, deepcopy=False)
    finished = [t.datetime_complete for t in every if t.datetime_complete is not None]
    running = sum(t.state == optuna.trial.TrialState.RUNNING for t in every)
    return ("count", len(every), running, str(max(finished, default="")))


# Optuna's RDB schema (stable across its 3.x and 4.x releases; optuna is pinned below 6)
_COUNT_TRIALS_SQL = (
    "SELECT state, COUNT(*), MAX(datetime_complete) FROM trials "
    "WHERE study_id = :study_id GROUP BY state"
)


def _trial_counts(storage, study_id: int) -> tuple | None:
    """Trials per state with each state's latest completion time, or None where the storage
    has no SQL engine or the query fails."""
    import sqlalchemy

    engine = getattr(storage, "engine", None)
    if engine is None:
        return None
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                sqlalchemy.text(_COUNT_TRIALS_SQL), {"study_id": study_id}
            ).all()
    except sqlalchemy.exc.SQLAlchemyError:
        return None
    return tuple(sorted((str(state), int(n), str(latest)) for state, n, latest in rows))


FIRST_COLUMNS = ("study", "trial", "state", *METRIC_COLUMNS)


def display_columns(frame: pd.DataFrame, with_study: bool) -> list[str]:
    """Leaderboard columns in reading order: identity, metrics, parameters, precision, model,
    note."""
    first = [c for c in FIRST_COLUMNS if c in frame and (c != "study" or with_study)]
    last = [c for c in ("precision", "has_model", "note") if c in frame]
    middle = [c for c in frame.columns if c not in first and c not in last and c != "study"]
    return first + middle + last
