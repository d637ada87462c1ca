"""The Search page's form: the sidebar's dataset, strategy, budget and study name, and the
main area's search space and the summary of what a launch will run.

Each ``*_ui()`` reads widgets and returns plain values (or None plus an ``st.error``); the
page turns them into one :class:`automl_core.storage.settings.SearchSettings`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import pandas as pd
import streamlit as st

from automl_core import limits
from automl_core.analysis.estimate import (
    SearchEstimate,
    TimedTrial,
    duration_text,
    estimate_search,
    expected_policy,
    past_timings,
)
from automl_core.errors import AutoMLError
from automl_core.hosting import uploads
from automl_core.model.datasets import DATASETS, load_notes
from automl_core.model.precision import PRECISIONS, SPEEDUP_THRESHOLD, default_precision
from automl_core.model.space import PARAMETERS, value_text, varying_parameters
from automl_core.search.strategies import STRATEGIES, default_space
from automl_core.storage import settings, store
from automl_core.storage.settings import DEFAULT_STRATEGY
from dashboard import auth, state

# the search space's widgets sit in this many columns per tab
SPACE_COLUMNS = 3

UPLOAD_CHOICE = "Upload a file…"


def dataset_ui() -> str | None:
    """The dataset: a registry name, or the saved path of a validated upload."""
    names = list(DATASETS) + [UPLOAD_CHOICE]
    choice = st.sidebar.selectbox(
        "Dataset",
        names,
        key="dataset",
        index=0,
        help="Registry datasets, or your own .npz (x, optional y) or .zip of images.",
    )
    if choice != UPLOAD_CHOICE:
        # the box holds the name only (a description there is cut); it reads whole below
        st.sidebar.caption(f"{DATASETS[choice].description}.")
        return choice
    upload = st.sidebar.file_uploader(
        f"Images (.npz or .zip, at most {limits.get('max_upload_bytes') // limits.MIB} MB)",
        type=["npz", "zip"],
        key="upload",
    )
    if upload is None:
        st.sidebar.info("Choose a file to upload.")
        return None
    return upload_ui(upload.name, upload.getvalue())


def upload_ui(name: str, data: bytes) -> str | None:
    """Saves and validates an upload once per file; shows the core's message when refused.

    What loading changed (images resized to the common size, converted to grayscale or RGB,
    links skipped) is told under the success message.
    """
    cache = st.session_state.setdefault("_uploads", {})
    # the whole content: a corrected file of the same name, size and start is a new upload
    key = (auth.current_user().name, name, uploads.content_digest(data))
    if key not in cache:
        try:
            path = uploads.save_upload(name, data, actor=auth.current_user())
            notes = load_notes(path)
            cache[key] = ("ok", str(path), list(notes.messages) if notes is not None else [])
        except AutoMLError as exc:
            cache[key] = ("error", str(exc), [])
    status, value, messages = cache[key]
    if status == "error":
        st.sidebar.error(value)
        return None
    st.sidebar.success(f"Dataset saved as {value}")
    for message in messages:
        st.sidebar.info(f"{message}.", icon=":material/info:")
    return value


def _default_choices(strategy: str) -> dict[str, list]:
    """Each parameter's preselected choices: the strategy's default space, as offered."""
    space = default_space(strategy)
    return {
        name: [v for v in space[name] if v in spec.offered] for name, spec in PARAMETERS.items()
    }


def _space_kind(strategy: str) -> str:
    return "grid" if STRATEGIES[strategy].needs_grid else "search"


def _on_strategy_change() -> None:
    """Switching between grid search and another strategy restores that kind's default
    choices (the seeds' grid, or the roomier search space); other edits are kept."""
    strategy = st.session_state["strategy"]
    kind = _space_kind(strategy)
    if st.session_state.get("_space_kind", _space_kind(DEFAULT_STRATEGY)) == kind:
        return
    st.session_state["_space_kind"] = kind
    for name, choices in _default_choices(strategy).items():
        st.session_state[f"param_{name}"] = choices


def _parameter_ui(name: str, strategy: str) -> list | dict:
    """One parameter: a multiselect of choices, or a range slider where a range makes sense."""
    spec = PARAMETERS[name]
    options = list(spec.offered)
    if spec.rangeable and st.toggle(f"{spec.label} as a range", key=f"range_{name}"):
        low, high = st.select_slider(
            spec.label,
            options=options,
            value=(options[0], options[-1]),
            key=f"slider_{name}",
            format_func=lambda v: f"{v:g}",
            help=spec.help,
        )
        return {"low": low, "high": high, "log": spec.log}
    key = f"param_{name}"
    # the choices are held in the session state alone (set on first show and on a change of
    # strategy kind): no run passes a default that disagrees with what the user chose
    if key not in st.session_state:
        st.session_state[key] = _default_choices(strategy)[name]
    return st.multiselect(
        spec.label,
        options,
        key=key,
        format_func=value_text,
        help=spec.help,
    )


def space_ui(strategy: str = DEFAULT_STRATEGY) -> tuple[dict, list[str]]:
    """The search space and a list of problems (an empty choice names its parameter).

    In the main area, one tab per group of the parameter table (model, training, blocks,
    objective and loss), its widgets in columns. The choices start from the strategy's
    default space.
    """
    spec, problems = {}, []
    groups = list(dict.fromkeys(p.group for p in PARAMETERS.values()))
    for tab, group in zip(st.tabs(groups), groups, strict=True):
        names = [name for name, p in PARAMETERS.items() if p.group == group]
        columns = tab.columns(SPACE_COLUMNS)
        for index, name in enumerate(names):
            with columns[index % SPACE_COLUMNS]:
                value = _parameter_ui(name, strategy)
            if isinstance(value, list) and not value:
                label = PARAMETERS[name].label
                problems.append(f"Choose at least one value for {name} ({label}).")
            spec[name] = value
    return spec, problems


@dataclass(frozen=True)
class Budget:
    """How much the search may spend."""

    trials: int | None
    timeout: float | None
    max_epochs: int
    workers: int
    seed: int
    max_images: int | None
    precision: str = "auto"


def strategy_ui() -> str:
    """The search strategy (registry :data:`automl_core.search.runner.STRATEGIES`)."""
    names = list(STRATEGIES)
    choice = st.sidebar.selectbox(
        "Strategy",
        names,
        index=names.index(DEFAULT_STRATEGY),
        key="strategy",
        on_change=_on_strategy_change,
    )
    # the box holds the name only (a description there is cut); the chosen one reads whole
    st.sidebar.caption(strategy_sentence(choice))
    return choice


def strategy_sentence(name: str) -> str:
    """A strategy's description as a sentence: capitalised, ending with a full stop."""
    text = STRATEGIES[name].description.strip()
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def budget_ui() -> Budget:
    """Trials, minutes, epochs, workers; seed and an image cap under Advanced."""
    with st.sidebar.expander("Budget", expanded=True):
        trials = st.number_input(
            "Trials",
            0,
            10_000,
            8,
            key="trials",
            help="Trials to finish. 0: the whole grid for grid search; otherwise 20, or no limit "
            "when a time limit is set.",
        )
        minutes = st.number_input(
            "Time limit, minutes",
            min_value=1,
            max_value=24 * 60,
            value=None,
            step=1,
            key="minutes",
            placeholder="no limit",
            help="Stop the search after this many minutes; empty: no time limit.",
        )
        max_epochs = st.number_input("Max epochs per trial", 1, 500, 10, key="max_epochs")
        workers = st.number_input("Worker processes", 1, 8, 1, key="workers")
    with st.sidebar.expander("Advanced"):
        seed = st.number_input("Seed", 0, 2**31 - 1, 0, key="seed")
        max_images = st.number_input(
            "Max images (0 = all)", 0, 1_000_000, 0, step=100, key="max_images"
        )
        precision = st.selectbox(
            "Precision",
            PRECISIONS,
            index=PRECISIONS.index(default_precision())
            if default_precision() in PRECISIONS
            else 0,
            key="precision",
            help="Number format of training. auto measures this machine once and trains in "
            f"bfloat16 (float16 on a GPU) only where that is at least {SPEEDUP_THRESHOLD:g}x "
            "faster than float32; variables, outputs, losses and scores stay float32. "
            "float16 needs a GPU.",
        )
    return Budget(
        int(trials) or None,
        float(minutes) * 60 if minutes else None,
        int(max_epochs),
        int(workers),
        int(seed),
        int(max_images) or None,
        str(precision),
    )


def study_name_ui(dataset: str | None, strategy: str) -> str | None:
    """The study name, validated by the core (no HTML, spaces or path characters).

    The suggested name follows the dataset and strategy until the user types their own.
    """
    previous = st.session_state.get("_suggested_study_name")
    untouched = "study_name" not in st.session_state or st.session_state["study_name"] == previous
    # a new suggestion only when what it is made of changed, not on every rerun (its time)
    if untouched and st.session_state.get("_suggested_for") != (dataset, strategy):
        suggested = settings.default_study_name(dataset or "data", strategy)
        st.session_state["study_name"] = suggested
        st.session_state["_suggested_study_name"] = suggested
        st.session_state["_suggested_for"] = (dataset, strategy)
    name = st.sidebar.text_input(
        "Study name", key="study_name", help="Re-use a name to resume that study."
    ).strip()
    try:
        return store.validate_study_name(name)
    except AutoMLError as exc:
        st.sidebar.error(str(exc))
        return None


@st.cache_data(ttl=60, max_entries=4, show_spinner="Reading past trials' timings…")
def _past_timings(url: str, policy: str) -> list[TimedTrial]:
    """This machine's past trials on the storage (re-read every minute: new trials teach
    the estimate), shared by every change of the form."""
    return past_timings(url, policy)


@st.cache_data(ttl=60, max_entries=32, show_spinner=False)
def _estimate(settings_json: str, workers: int, url: str) -> SearchEstimate:
    """The time estimate of a search, from the settings' JSON (its cache key)."""
    chosen = settings.SearchSettings.from_dict(json.loads(settings_json))
    timed = _past_timings(url, expected_policy(chosen.precision, store.runs_home()))
    return estimate_search(chosen, url, workers, timed=timed)


def summary_ui(chosen: settings.SearchSettings, workers: int) -> None:
    """What a launch will run: the space's size, the budget, the time it should take, and
    which parameters vary with their values."""
    space = chosen.search_space()
    size = space.grid_size()
    cells = st.columns(4)
    cells[0].metric(
        "Grid configurations"
        if STRATEGIES[chosen.strategy].needs_grid
        else "Distinct configurations",
        "—" if size is None else f"{size:,}",
        help="How many different configurations the space holds; — when a parameter is a range",
    )
    cells[1].metric("Trial budget", f"{chosen.trial_budget():,}")
    # the study's name changes nothing in the estimate: left out of its cache key
    key = json.dumps(dataclasses.replace(chosen, study="estimate").to_dict(), sort_keys=True)
    try:
        estimate = _estimate(key, workers, state.storage_url())
    except AutoMLError as exc:
        st.caption(f"No time estimate: {exc}")
    else:
        cells[2].metric(
            "Per trial", f"~{duration_text(estimate.trial_seconds)}", help=estimate.basis
        )
        cells[3].metric(
            "Whole search", f"~{duration_text(estimate.total_seconds)}", help=estimate.basis
        )
        line = estimate.text()
        st.caption(" ".join([line[:1].upper() + line[1:] + ".", *estimate.notes()]))
    rows = varying_parameters(space)
    if not rows:
        st.caption("Every parameter holds one value: the search trains one configuration.")
        return
    table = pd.DataFrame(
        {
            "Parameter": [r.label for r in rows],
            "Values": [r.values for r in rows],
            "Choices": [str(r.count) if r.count is not None else "range" for r in rows],
        }
    )
    fixed = len(space.parameters) - len(rows)
    st.caption(f"What varies ({len(rows)} parameters; the other {fixed} hold one value each):")
    st.dataframe(table, hide_index=True, key="space_summary")
