"""What the leaderboard shows: tables of trials, loss curves, reconstructions, which charts.

Everything here is a data step (DataFrames, arrays, small dataclasses); the figures are
drawn from them by :mod:`automl_core.analysis.charts`. Pages only call ``st.plotly_chart``. The one
action is a user's note on a trial (:func:`annotate_trial`), checked against their role.
"""

from __future__ import annotations

import functools
import math
import unicodedata
from dataclasses import dataclass

import numpy as np
import optuna
import pandas as pd

from automl_core import limits
from automl_core.errors import AutoMLError, ConfigError
from automl_core.hosting import access
from automl_core.model.space import parameter_label
from automl_core.storage import store, trials
from automl_core.storage.bulk_read import frozen_trials
from automl_core.storage.results import EMPTY_COLUMNS, METRIC_COLUMNS, sort_trials, trials_frame
from automl_core.storage.settings import StudyRecord

STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")


def studies_frame(studies: list[optuna.Study], bulks: list | None = None) -> pd.DataFrame:
    """The trials of several studies on one table (``study`` tells them apart), best first.

    Args:
        studies: The studies.
        bulks: Each study's trials already read in bulk
            (:func:`automl_core.storage.bulk_read.read_bulk`; None for one not read), in the
            studies' order. Defaults to None: read here.

    Returns:
        One row per trial, as :func:`automl_core.storage.results.trials_frame` gives them.
    """
    bulks = bulks if bulks is not None else [None] * len(studies)
    frames = [trials_frame(study, bulk) for study, bulk in zip(studies, bulks, strict=True)]
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


def finished_trials(
    study: optuna.Study, bulk: list | None = None
) -> list[optuna.trial.FrozenTrial]:
    """The study's complete trials; read in bulk where the storage allows (a large study's
    charts otherwise wait on Optuna reading every trial). Read them once and hand them to
    :func:`study_chart_plan` and :func:`chart_sample`.

    Args:
        study: The study.
        bulk: Its trials already read by :func:`automl_core.storage.bulk_read.read_bulk`.
            Defaults to None: read here.
    """

    states = (optuna.trial.TrialState.COMPLETE,)
    finished = frozen_trials(study, states, bulk)
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
        parameters: Every parameter of the finished trials, in the order trials hold them
            (the axes a reader may pick).
        varying: Those whose value differs between finished trials (the default axes: a
            parameter every trial shares says nothing on a chart).
    """

    charts: tuple[str, ...]
    notes: tuple[str, ...]
    multi_objective: bool = False
    objective_names: tuple[str, ...] = ("val MSE",)
    few_trials: bool = True
    parameters: tuple[str, ...] = ()
    varying: tuple[str, ...] = ()


STUDY_CHARTS = (
    "Optimization history",
    "Parallel coordinates",
    "Parameter importances",
    "Slice",
    "Contour",
    "Pareto front",
)


def study_chart_plan(
    study: optuna.Study, finished: list[optuna.trial.FrozenTrial] | None = None
) -> StudyChartPlan:
    """Decides which study charts apply, and over which parameters by default.

    Optimisation history needs a finished trial; parallel coordinates and slices a
    parameter that varies; parameter importances two finished trials and a varying
    parameter; contour plots two varying parameters; a multi-objective study also gets its
    Pareto front.

    Args:
        study: The study.
        finished: Its complete trials when already read (:func:`finished_trials`).
            Defaults to None: read here.

    Returns:
        The plan; :func:`automl_core.analysis.charts.study_figures` draws it.
    """
    finished = finished_trials(study) if finished is None else finished
    multi = len(study.directions) > 1
    names = ("val MSE", _second_objective_name(study)) if multi else ("val MSE",)
    if not finished:
        notes = ("No finished trial yet: the charts appear when one completes.",)
        return StudyChartPlan((), notes, multi, names)
    parameters = tuple(dict.fromkeys(name for t in finished for name in t.params))
    varying = tuple(
        name for name in parameters if len({repr(t.params.get(name)) for t in finished}) > 1
    )
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
    if varying:
        charts.append("Slice")
    if len(varying) >= 2:
        charts.append("Contour")
    else:
        notes.append(
            "Contour plots need at least 2 parameters that vary; "
            f"{'only ' + parameter_label(varying[0]) if varying else 'none'} does."
        )
    if multi:
        charts.append("Pareto front")
    few = _trial_count(study) <= 20
    return StudyChartPlan(tuple(charts), tuple(notes), multi, names, few, parameters, varying)


# the charts drawn from every finished trial's value rather than over chosen parameters
AXIS_FREE_CHARTS = ("Optimization history", "Pareto front")


def drawable_charts(
    plan: StudyChartPlan, axes: tuple[str, ...]
) -> tuple[tuple[str, ...], dict[str, str]]:
    """The plan's charts that can be drawn over ``axes``, and a note per chart that cannot.

    Contour plots need two axes; the parallel coordinates, importances and slices one.

    Args:
        plan: The study's plan.
        axes: The chosen parameters (:func:`chart_axes`).

    Returns:
        (chart names in the plan's order, {chart left out: why, for a caption}).
    """
    shown, notes = [], {}
    for name in plan.charts:
        if name in AXIS_FREE_CHARTS or (axes and (name != "Contour" or len(axes) >= 2)):
            shown.append(name)
        elif name == "Contour":
            notes[name] = "Contour plots need 2 or more axes: add one above."
        else:
            notes[name] = f"{name} needs at least one axis: pick one above."
    return tuple(shown), notes


def chart_axes(plan: StudyChartPlan, wanted=None) -> tuple[str, ...]:
    """The parameters the study charts are drawn over.

    Args:
        plan: The study's plan.
        wanted: Parameter names a reader picked, in their order. Defaults to None: the
            parameters that vary (:attr:`StudyChartPlan.varying`).

    Returns:
        ``wanted`` without names the study's trials do not hold (and without repeats).
    """
    if wanted is None:
        return plan.varying
    return tuple(dict.fromkeys(name for name in wanted if name in plan.parameters))


# the most bars the importance chart draws, and the smallest importance drawn as a bar
IMPORTANCE_TOP = 8
IMPORTANCE_FLOOR = 0.005


@dataclass(frozen=True)
class ImportanceInfo:
    """fANOVA importances of the chosen parameters, ready for a bar chart.

    Attributes:
        names: The parameters drawn, most important first (at most ``top``).
        labels: Their display names (the parameter table's ``label``).
        values: Their importances (summing to at most 1 over every parameter).
        zero: Display names of the parameters left out for an importance below
            :data:`IMPORTANCE_FLOOR` (drawn as 0.00).
        beyond_top: Display names of those left out because ``top`` bars were drawn.
    """

    names: tuple[str, ...]
    labels: tuple[str, ...]
    values: tuple[float, ...]
    zero: tuple[str, ...] = ()
    beyond_top: tuple[str, ...] = ()

    @property
    def note(self) -> str:
        """What was left out, in one sentence ('' when nothing was)."""
        parts = []
        if self.beyond_top:
            parts.append(f"{len(self.beyond_top)} below the top {len(self.names)}")
        if self.zero:
            shown = ", ".join(self.zero[:6]) + (", ..." if len(self.zero) > 6 else "")
            parts.append(f"{len(self.zero)} with no measurable importance ({shown})")
        return f"Left out: {'; '.join(parts)}." if parts else ""


def parameter_importances(
    study: optuna.Study, params, target=None, top: int = IMPORTANCE_TOP
) -> ImportanceInfo:
    """fANOVA importances of ``params`` for the first objective: the top ``top`` drawn,
    those below :data:`IMPORTANCE_FLOOR` left out (a chart of 0.00 bars says nothing).

    Args:
        study: The study (or its :class:`ChartSample` copy).
        params: The parameters to weigh.
        target: What to weigh them for (the first objective of a multi-objective study).
            Defaults to None (the study's one objective).
        top: Most bars. Defaults to :data:`IMPORTANCE_TOP`.

    Returns:
        The importances.

    Raises:
        RuntimeError, ValueError, ZeroDivisionError: fANOVA cannot split the trials.
    """
    importances = optuna.importance.get_param_importances(
        study,
        evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0),
        params=list(params),
        target=target,
    )
    ranked = sorted(importances.items(), key=lambda item: -item[1])
    kept = [(n, v) for n, v in ranked if v >= IMPORTANCE_FLOOR]
    zero = tuple(parameter_label(n) for n, v in ranked if v < IMPORTANCE_FLOOR)
    shown, beyond = kept[:top], kept[top:]
    return ImportanceInfo(
        names=tuple(n for n, _ in shown),
        labels=tuple(parameter_label(n) for n, _ in shown),
        values=tuple(float(v) for _, v in shown),
        zero=zero,
        beyond_top=tuple(parameter_label(n) for n, _ in beyond),
    )


def pareto_frame(study: optuna.Study, plan: StudyChartPlan, params=None) -> pd.DataFrame:
    """The Pareto set of a multi-objective study as a table, best first objective first.

    Args:
        study: The study.
        plan: Its plan (objective names, the varying parameters).
        params: The parameter columns. Defaults to the parameters that vary.

    Returns:
        One row per trial of the set: ``Trial``, each objective under its display name,
        then the parameters under their display names; empty for a single-objective study.
    """
    if not plan.multi_objective:
        return pd.DataFrame()
    params = chart_axes(plan, params)
    rows = []
    for trial in sorted(study.best_trials, key=lambda t: tuple(t.values)):
        row = {"Trial": trial.number}
        row.update(dict(zip(plan.objective_names, trial.values, strict=False)))
        for name in params:
            row[parameter_label(name)] = _cell(trial.params.get(name))
        rows.append(row)
    columns = ["Trial", *plan.objective_names, *(parameter_label(n) for n in params)]
    return pd.DataFrame(rows, columns=columns)


def _cell(value) -> str:
    """A parameter value as table text (one type per column, whatever the values are)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


@dataclass(frozen=True)
class ChartSample:
    """The trials a large study's charts are drawn from.

    Optuna's parallel coordinates and the importances slow down with every trial (10,000
    trials take minutes); above :func:`limits.get` ``("max_chart_trials")`` finished trials
    they are drawn from an in-memory copy holding the best half and an even spread of the
    rest, and the history from every trial's (number, value).

    Attributes:
        source: The study.
        picked: The sampled trials, or None when every trial is drawn.
        history: ``(trial number, first objective)`` of every finished trial when sampled,
            else None (the history is then Optuna's own chart of the study).
        note: What was left out, for a caption; None when nothing was.
    """

    source: optuna.Study
    picked: tuple[optuna.trial.FrozenTrial, ...] | None = None
    history: tuple[tuple[int, float], ...] | None = None
    note: str | None = None

    @functools.cached_property
    def study(self) -> optuna.Study:
        """What the parallel coordinates, importances, slice and contour plots draw: the
        study itself when small, else an in-memory copy of the picked trials (made on first
        use: the history alone does not need it)."""
        if self.picked is None:
            return self.source
        copy = optuna.create_study(directions=self.source.directions)
        copy.add_trials(list(self.picked))
        settings = self.source.user_attrs.get(store.SETTINGS_ATTR)
        if settings is not None:
            copy.set_user_attr(store.SETTINGS_ATTR, settings)
        return copy


def chart_sample(
    study: optuna.Study, finished: list[optuna.trial.FrozenTrial] | None = None
) -> ChartSample:
    """The study itself, or a bounded sample of its finished trials (see :class:`ChartSample`).

    Args:
        study: The study.
        finished: Its complete trials when already read (:func:`finished_trials`).
            Defaults to None: read here.
    """
    limit = limits.get("max_chart_trials")
    finished = finished_trials(study) if finished is None else finished
    if len(finished) <= limit:
        return ChartSample(study)
    ranked = sorted(finished, key=lambda t: t.values[0])
    if len(study.directions) > 1:  # keep the Pareto front first
        front = {t.number for t in study.best_trials}
        ranked = sorted(finished, key=lambda t: (t.number not in front, t.values[0]))
    best, rest = ranked[: limit // 2], sorted(ranked[limit // 2 :], key=lambda t: t.number)
    step = len(rest) / (limit - len(best))
    spread = [rest[int(i * step)] for i in range(limit - len(best))]
    picked = tuple(sorted(best + spread, key=lambda t: t.number))
    note = (
        f"Parallel coordinates and importances are drawn from {limit:,} of the "
        f"{len(finished):,} finished trials (the best {len(best):,} and {len(spread):,} spread "
        "evenly over the rest); the table and the history have every trial."
    )
    history = tuple((t.number, float(t.values[0])) for t in finished)
    return ChartSample(study, picked, history, note)


def _second_objective_name(study: optuna.Study) -> str:
    settings = StudyRecord.of(study).settings
    return settings.second_objective.replace("_", " ") if settings else "objective 2"


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
LAST_COLUMNS = ("precision", "has_model", "note")
# display names of the table's own columns; parameters take theirs from the parameter table
COLUMN_LABELS = {
    "study": "Study",
    "trial": "Trial",
    "state": "State",
    "val_mse": "Val MSE",
    "test_psnr": "PSNR (dB)",
    "vs_pca_db": "vs PCA (dB)",
    "test_ssim": "SSIM",
    "probe_accuracy": "Linear probe",
    "param_count": "Params",
    "compression_ratio": "Compression",
    "train_seconds": "Seconds",
    "epochs": "Epochs",
    "pca_psnr": "PCA PSNR (dB)",
    "user_note": "User note",
    "precision": "Precision",
    "has_model": "Model",
    "note": "Status note",
}


def column_label(name: str) -> str:
    """A leaderboard column's display name: :data:`COLUMN_LABELS`, else the parameter
    table's label, else the name."""
    return COLUMN_LABELS.get(name) or parameter_label(name)


def parameter_columns(frame: pd.DataFrame) -> list[str]:
    """The configuration columns of a leaderboard (every column that is not a metric,
    identity or note), in the table's order."""
    own = {*FIRST_COLUMNS, *LAST_COLUMNS, "user_note"}
    return [c for c in frame.columns if c not in own and not c.startswith("_")]


def varying_columns(frame: pd.DataFrame) -> list[str]:
    """The parameter columns whose value differs between the table's rows."""
    return [c for c in parameter_columns(frame) if len({repr(v) for v in frame[c].tolist()}) > 1]


def display_columns(frame: pd.DataFrame, with_study: bool) -> list[str]:
    """Leaderboard columns in reading order: identity, metrics, users' notes (when a row
    has one), the parameters that vary, those every row shares, precision, model, status
    note. The linear probe's column is left out when no row has a score (a dataset
    without labels)."""
    first = [
        c
        for c in FIRST_COLUMNS
        if c in frame
        and (c != "study" or with_study)
        and (c != "probe_accuracy" or frame[c].notna().any())
    ]
    if "user_note" in frame and frame["user_note"].fillna("").astype(bool).any():
        first.append("user_note")
    last = [c for c in LAST_COLUMNS if c in frame]
    varying = varying_columns(frame)
    same = [c for c in parameter_columns(frame) if c not in varying]
    return first + varying + same + last


def settings_diff(frame: pd.DataFrame, picks: list[tuple[str, int]]) -> pd.DataFrame:
    """The settings that differ between picked trials, one row per setting.

    Args:
        frame: The leaderboard holding the picked trials (:func:`studies_frame`).
        picks: ``(study name, trial number)`` pairs, in the reader's order.

    Returns:
        Columns ``Setting`` (the parameter table's label) and one per picked trial
        (``#n``, or ``study #n`` when the picks come from several studies), values as text;
        only the parameters whose value is not the same for every picked trial. Empty
        (with those columns) when they share every setting or fewer than 2 are found.
    """
    picks = list(dict.fromkeys(picks))
    with_study = len({s for s, _ in picks}) > 1
    rows, labels = [], []
    for study_name, number in picks:
        match = frame[(frame["study"] == study_name) & (frame["trial"] == number)]
        if not match.empty:
            rows.append(match.iloc[0])
            labels.append(_label(study_name, number, with_study))
    columns = ["Setting", *labels]
    if len(rows) < 2:
        return pd.DataFrame(columns=columns)
    table = []
    for name in parameter_columns(frame):
        values = [row.get(name) for row in rows]
        if len({repr(_cell(v)) for v in values}) > 1:
            table.append([column_label(name), *(_cell(v) for v in values)])
    return pd.DataFrame(table, columns=columns)


def annotate_trial(
    study: optuna.Study, number: int, text: str, actor: access.User | None = None
) -> str:
    """Writes a user's plain-text note on a trial (an empty text removes it).

    The note is kept with the study (a study user attribute per trial,
    :func:`automl_core.storage.trials.note_attr`): Optuna refuses to change a finished trial's own
    attributes. It is shown as written, as text, never as Markdown or HTML.

    Args:
        study: The study.
        number: The trial's number.
        text: The note. Surrounding white space is dropped, and control characters other
            than line breaks and tabs.
        actor: Who writes it (an operator or an admin). Defaults to the local admin in
            local mode; required in shared mode.

    Returns:
        The note as stored.

    Raises:
        PermissionDenied: The actor may not annotate (a viewer, or no actor in shared mode).
        ConfigError: The text is not a string or is longer than the ``max_note_length``
            limit, or the study has no such trial.
    """
    access.check_allowed(access.resolve_actor(actor), "annotate")
    if not isinstance(text, str):
        raise ConfigError(f"a note must be text, got {type(text).__name__}")
    text = text.replace("\r\n", "\n")
    note = "".join(c for c in text if c in "\n\t" or unicodedata.category(c) != "Cc").strip()
    limit = limits.get("max_note_length")
    if len(note) > limit:
        raise ConfigError(
            f"the note is {len(note):,} characters long, more than the {limit:,} allowed "
            f"(max_note_length, {limits.LIMITS['max_note_length'].env})"
        )
    store.get_trial(study, number)  # no such trial: a clear error, not a stray attribute
    study.set_user_attr(trials.note_attr(number), note)
    trials.touch_study(study)  # readers that cache the leaderboard see the note
    return note
