"""Sidebar widgets of the Search page: dataset, search space, strategy, budget, study name.

Each ``*_ui()`` reads widgets and returns plain values (or None plus an ``st.error``); the
page turns them into one :class:`automl_core.settings.SearchSettings`.
"""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from automl_core import limits, settings, store, uploads
from automl_core.datasets import DATASETS, load_notes
from automl_core.errors import AutoMLError
from automl_core.precision import PRECISIONS, SPEEDUP_THRESHOLD, default_precision
from automl_core.space import PARAMETERS
from automl_core.strategies import DEFAULT_STRATEGY, STRATEGIES, default_space
from dashboard import auth

UPLOAD_CHOICE = "Upload a file…"


def dataset_ui() -> str | None:
    """The dataset: a registry name, or the saved path of a validated upload."""
    names = list(DATASETS) + [UPLOAD_CHOICE]
    choice = st.sidebar.selectbox(
        "Dataset",
        names,
        key="dataset",
        index=0,
        format_func=lambda n: n if n == UPLOAD_CHOICE else f"{n} — {DATASETS[n].description}",
        help="Registry datasets, or your own .npz (x, optional y) or .zip of images.",
    )
    if choice != UPLOAD_CHOICE:
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


def _option_text(value) -> str:
    """How a choice reads in a widget: text as is, on / off for switches, numbers short."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return value if isinstance(value, str) else f"{value:g}"


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
    return st.multiselect(
        spec.label,
        options,
        # set through the session state after a change of strategy kind
        default=None if key in st.session_state else _default_choices(strategy)[name],
        key=key,
        format_func=_option_text,
        help=spec.help,
    )


def space_ui(strategy: str = DEFAULT_STRATEGY) -> tuple[dict, list[str]]:
    """The search space and a list of problems (an empty choice names its parameter).

    One sidebar section per group of the parameter table; the first is open, the others
    (blocks, objective and loss, training recipe) start folded with their defaults. The
    choices start from the strategy's default space.
    """
    spec, problems = {}, []
    groups = list(dict.fromkeys(p.group for p in PARAMETERS.values()))
    for index, group in enumerate(groups):
        title = "Search space" if index == 0 else f"Search space: {group.lower()}"
        with st.sidebar.expander(title, expanded=index == 0):
            for name, parameter in PARAMETERS.items():
                if parameter.group != group:
                    continue
                value = _parameter_ui(name, strategy)
                if isinstance(value, list) and not value:
                    problems.append(f"Choose at least one value for {name} ({parameter.label}).")
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
    """The search strategy (registry :data:`automl_core.search.STRATEGIES`)."""
    names = list(STRATEGIES)
    choice = st.sidebar.selectbox(
        "Strategy",
        names,
        index=names.index(DEFAULT_STRATEGY),
        key="strategy",
        format_func=lambda n: f"{n} — {STRATEGIES[n].description}",
        on_change=_on_strategy_change,
    )
    # the select box cuts long descriptions; the chosen one is shown whole
    st.sidebar.caption(STRATEGIES[choice].description)
    return choice


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
            "Time limit, minutes (0 = none)", 0.0, 24 * 60.0, 0.0, step=1.0, key="minutes"
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
        float(minutes) * 60 or None,
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
