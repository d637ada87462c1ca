"""The study and trial picked by the user (session state + URL), and cached loaders."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import streamlit as st
from streamlit.errors import StreamlitAPIException

from automl_core.errors import AutoMLError, file_problem
from automl_core.storage import store

ASSETS = Path(__file__).resolve().parent.parent / "assets"
DEMO_DIR = ASSETS / "demo"
DEMO_STUDY = "demo-mnist-5k"
# AUTOML_WARM_UP=0 turns off compiling UMAP in the background when the server starts
WARM_UP_ENV = "AUTOML_WARM_UP"


def storage_url() -> str:
    """The storage every page reads (``AUTOML_STORAGE`` or the embedded SQLite file)."""
    return store.default_storage_url()


@contextlib.contextmanager
def shown_errors(stop: bool = True) -> Iterator[None]:
    """The page edge: the core's errors, and a storage that cannot be read, become ``st.error``.

    A damaged or foreign ``studies.db``, an unreachable database or a missing file is told in
    one line (no password, no traceback) and the page stops there.

    Args:
        stop: Stop the script run after the message (a page). A live fragment passes False:
            the block ends and the fragment tries again on its next run. Defaults to True.
    """
    try:
        yield
    except AutoMLError as exc:
        st.error(str(exc), icon=":material/error:")
    except store.STORAGE_FAILURES as exc:  # raised by a read deep in Optuna or SQLAlchemy
        st.error(str(store.storage_error(exc, storage_url())), icon=":material/error:")
    except OSError as exc:  # a read-only or full runs folder: no path, no traceback
        st.error(file_problem(exc, with_path=False), icon=":material/error:")
    else:
        return
    if stop:
        st.stop()


@st.cache_resource(show_spinner=False)
def ensure_demo_study(url: str) -> bool:
    """Copies the bundled demo study into an empty storage, so a fresh install shows results.

    A storage that already holds studies (a user's, a shared one) is left as it is.
    """
    demo_db = DEMO_DIR / "studies.db"
    if not demo_db.is_file() or store.study_names(url, create=False):
        return False
    try:
        return store.install_study(f"sqlite:///{demo_db}", DEMO_DIR / "artifacts", DEMO_STUDY, url)
    except AutoMLError:
        return False


@st.cache_data(ttl=5, show_spinner=False)
def list_studies(url: str) -> list[str]:
    """Study names in the storage (refreshed every few seconds, so new searches appear).

    Reading never creates the database: a missing SQLite file holds no study.
    """
    return store.study_names(url, create=False)


def study_picker(label: str = "Study", key: str = "study") -> str | None:
    """A sidebar select box of studies, shared by every page and mirrored in the URL.

    The ``?study=`` query parameter wins on first load, so a link opens the same study.

    Returns:
        The chosen study's name, or None when the storage has no study.
    """
    url = storage_url()
    ensure_demo_study(url)
    names = list_studies(url)
    if not names:
        st.sidebar.info("No study yet: launch a search on the Search page.")
        return None
    wanted = st.query_params.get("study")
    if key not in st.session_state or (
        wanted
        and wanted in names
        and wanted != st.session_state[key]
        and not st.session_state.get("_study_from_widget")
    ):
        default = wanted if wanted in names else (DEMO_STUDY if DEMO_STUDY in names else names[-1])
        st.session_state[key] = default
    if st.session_state[key] not in names:
        st.session_state[key] = names[-1]
    chosen = st.sidebar.selectbox(label, names, key=key, on_change=_mark_widget_choice)
    st.query_params["study"] = chosen
    return chosen


def _mark_widget_choice() -> None:
    """Remembers that the user picked in the widget, so the URL no longer overrides it."""
    st.session_state["_study_from_widget"] = True


def trial_picker(study_name: str, label: str = "Trial", key: str = "trial") -> int | None:
    """A sidebar select box of the study's trials that have a model, best first, in the URL.

    Returns:
        The chosen trial number, or None when no trial has a model (the sidebar says so).
    """
    from automl_core.storage.results import trials_frame

    frame = trials_frame(load_study(study_name, storage_url()))
    finished = frame[frame["has_model"]]
    if finished.empty:
        st.sidebar.warning(f"Study {study_name!r} has no finished trial with a model yet.")
        return None
    numbers = [int(n) for n in finished["trial"]]
    wanted = st.query_params.get("trial")
    if key not in st.session_state or st.session_state[key] not in numbers:
        st.session_state[key] = (
            int(wanted) if wanted and wanted.isdigit() and int(wanted) in numbers else numbers[0]
        )
    labels = {
        int(r.trial): f"#{int(r.trial)}  val_mse {r.val_mse:.4f}" for r in finished.itertuples()
    }
    chosen = st.sidebar.selectbox(label, numbers, key=key, format_func=labels.get)
    st.query_params["trial"] = str(chosen)
    return chosen


def load_study(study_name: str, url: str):
    """The study (not cached: it changes while a search runs; loading it is cheap)."""
    return store.load_study(study_name, url, create=False)


@st.cache_resource(max_entries=16, show_spinner="Loading model…")
def load_model(study_name: str, trial_number: int, url: str):
    """A trial's trained autoencoder, loaded once per process (bounded to 16 models)."""
    return store.load_trial_model(load_study(study_name, url), trial_number)


@st.cache_resource(max_entries=8, show_spinner="Loading dataset…")
def load_study_dataset(study_name: str, url: str):
    """The dataset a study was searched on, split as the search split it (read-only, shared)."""
    from automl_core.storage.settings import study_dataset

    return study_dataset(load_study(study_name, url))


@st.cache_data(max_entries=32, show_spinner="Loading test images…")
def first_test_images(study_name: str, url: str, count: int):
    """The first ``count`` test images of a study's dataset, as its search split them.

    Read without loading the whole dataset into this server process (see
    ``datasets.first_test_images``): for pages that show a few images.
    """
    from automl_core.model.datasets import first_test_images as read
    from automl_core.storage.settings import study_settings

    settings = study_settings(load_study(study_name, url))
    return read(
        settings.dataset,
        count,
        settings.seed,
        settings.val_fraction,
        settings.test_fraction,
        settings.max_images,
    )


def _board_columns() -> dict:
    """Column settings of every leaderboard table: the core's display names
    (:data:`automl_core.analysis.leaderboard.COLUMN_LABELS`, the parameter table's labels), formats."""
    from automl_core.analysis.leaderboard import column_label
    from automl_core.model.space import PARAMETERS
    from automl_core.storage.results import PROBE_HELP, VS_PCA_HELP

    column = st.column_config
    columns = {
        name: column.Column(spec.label, help=spec.help) for name, spec in PARAMETERS.items()
    }
    formats = {
        "trial": column.NumberColumn(format="%d"),
        "val_mse": column.NumberColumn(format="%.5f"),
        "test_psnr": column.NumberColumn(format="%.2f"),
        "vs_pca_db": column.NumberColumn(format="%+.2f", help=VS_PCA_HELP),
        "test_ssim": column.NumberColumn(format="%.3f"),
        "probe_accuracy": column.NumberColumn(format="percent", help=PROBE_HELP),
        "param_count": column.NumberColumn(format="localized"),
        "compression_ratio": column.NumberColumn(format="%.1fx"),
        "train_seconds": column.NumberColumn(format="%.1f"),
        "epochs": column.NumberColumn(format="%d"),
        "pca_psnr": column.NumberColumn(
            format="%.2f",
            help="PCA with latent_dim components, fitted on the training split, on the test split",
        ),
        "learning_rate": column.NumberColumn(format="%.0e", help=PARAMETERS["learning_rate"].help),
        "precision": column.TextColumn(help="the Keras number format the trial trained in"),
        "has_model": column.CheckboxColumn(),
        "user_note": column.TextColumn(
            width="medium", help="a note a user wrote on the trial (Note on a trial, below)"
        ),
        "note": column.TextColumn(
            width="medium", help="why a trial failed or was pruned, or whose result it reuses"
        ),
    }
    columns.update(formats)
    for name in ("study", "state"):
        columns.setdefault(name, column.TextColumn())
    for name, config in columns.items():
        config["label"] = column_label(name)
    return columns


BOARD_COLUMNS = _board_columns()


def read_board(study_names: tuple[str, ...], url: str):
    """The leaderboard of one or more studies, read now (for live views)."""
    from automl_core.analysis.leaderboard import studies_frame

    return studies_frame([load_study(name, url) for name in study_names])


def board_version(study_names: tuple[str, ...], url: str) -> tuple:
    """A stamp per study that changes when a trial is added or finishes (one SQL query each)."""
    from automl_core.analysis.leaderboard import storage_version

    return tuple(storage_version(name, url) for name in study_names)


def load_board(study_names: tuple[str, ...], url: str):
    """The leaderboard of one or more studies, re-read only when a trial was added or finished."""
    return _cached_board(study_names, url, board_version(study_names, url))


@st.cache_data(max_entries=32, show_spinner=False)
def _cached_board(study_names: tuple[str, ...], url: str, version: tuple):
    """The leaderboard, cached per storage version; each study's trials read once for the
    table and its charts (:func:`bulk_trials`)."""
    from automl_core.analysis.leaderboard import studies_frame

    studies = [load_study(name, url) for name in study_names]
    bulks = [bulk_trials(n, url, (stamp,)) for n, stamp in zip(study_names, version, strict=True)]
    return studies_frame(studies, bulks)


# resources, not data: thousands of trial objects, read once per version and shared by the
# table, the plan, the sample and the Pareto table
@st.cache_resource(max_entries=8, show_spinner=False)
def bulk_trials(study_name: str, url: str, version: tuple):
    """A study's trials read in bulk from its SQL tables once per ``version`` (its
    :func:`board_version`), or None where the storage has none. Shared by every session:
    do not modify them."""
    from automl_core.storage.bulk_read import read_bulk

    return read_bulk(load_study(study_name, url))


@st.cache_resource(max_entries=8, show_spinner=False)
def finished_trials(study_name: str, url: str, version: tuple):
    """A study's complete trials, read in bulk once per ``version`` (see :func:`board_version`).
    Shared by every session: do not modify them."""
    from automl_core.analysis.leaderboard import finished_trials as read

    return read(load_study(study_name, url), bulk_trials(study_name, url, version))


@st.cache_data(max_entries=32, show_spinner=False)
def chart_plan(study_name: str, url: str, version: tuple):
    """Which study charts apply and the parameters they may be drawn over
    (:class:`automl_core.analysis.leaderboard.StudyChartPlan`); ``version`` keys the re-read."""
    from automl_core.analysis.leaderboard import study_chart_plan

    study = load_study(study_name, url)
    return study_chart_plan(study, finished_trials(study_name, url, version))


@st.cache_resource(max_entries=8, show_spinner=False)
def chart_sample(study_name: str, url: str, version: tuple):
    """What a study's charts are drawn from (:func:`automl_core.analysis.leaderboard.chart_sample`:
    the study, or a bounded sample of a large one). Shared by every session."""
    from automl_core.analysis.leaderboard import chart_sample as sample

    study = load_study(study_name, url)
    return sample(study, finished_trials(study_name, url, version))


# a resource, not data: cache_data would unpickle (and so re-validate) every trace of every
# figure on each rerun, over a second for a 1,000-line parallel-coordinates chart; the pages
# only hand the figures to st.plotly_chart, which copies them
@st.cache_resource(max_entries=32, show_spinner="Drawing the chart…")
def study_figure(
    study_name: str, url: str, version: tuple, params: tuple[str, ...] | None, chart: str
):
    """One of Optuna's figures of a study over ``params`` (None: the parameters that vary),
    or None when it cannot be computed; ``version`` (see :func:`board_version`) keys the
    redraw. Drawn only when a reader opens its tab. Shared by every session: do not modify it."""
    from automl_core.analysis.charts import study_figures as draw
    from automl_core.analysis.leaderboard import chart_axes

    plan = chart_plan(study_name, url, version)
    figures = draw(
        load_study(study_name, url),
        plan,
        chart_sample(study_name, url, version),
        chart_axes(plan, params),
        only=(chart,),
    )
    return figures.get(chart)


@st.cache_data(max_entries=16, show_spinner=False)
def pareto_table(study_name: str, url: str, version: tuple, params: tuple[str, ...] | None):
    """The Pareto set of a multi-objective study (empty otherwise) as a table."""
    from automl_core.analysis.leaderboard import pareto_frame

    study = load_study(study_name, url)
    return pareto_frame(study, chart_plan(study_name, url, version), params)


@st.cache_data(max_entries=64, show_spinner=False)
def reconstructions(study_name: str, trial_number: int, url: str, count: int):
    """A trial's reconstructions of the first ``count`` test images of its study (cached).

    Read from the preview saved with the trial when it holds enough images (no model, so no
    TensorFlow, on the landing page); otherwise the model reconstructs them.
    """
    from automl_core.analysis.leaderboard import reconstruct

    images = first_test_images(study_name, url, count)
    preview = store.load_trial_preview(load_study(study_name, url), trial_number)
    if (
        preview is not None
        and len(preview) >= len(images)
        and preview.shape[1:] == images.shape[1:]
    ):
        return preview[: len(images)]
    return reconstruct(load_model(study_name, trial_number, url), images)


ROUTED_FLAG = "_routed_by_app"


def mark_routed() -> None:
    """Called by ``app.py`` before its navigation runs: pages are now shown through it."""
    st.session_state[ROUTED_FLAG] = True


DEEP_LINK_KEY = "_deep_link_page"


def ensure_routed(page_file: str) -> None:
    """Sends a page run straight from ``pages/`` through the router, keeping its link.

    On the first run of a fresh server, Streamlit still treats ``pages/`` as an old-style
    page folder: a deep link such as ``/filters?study=s`` then runs that file alone, without
    the router, its layout and its navigation. This switches to ``app.py`` (whose
    ``st.navigation`` turns the old mode off for the whole server), remembering the page
    and its query, and ``app.py`` switches on to that page (:func:`follow_deep_link`). A page
    run on its own as the main script (``streamlit run pages/x.py``, ``AppTest.from_file``)
    has no ``app.py`` to switch to and is left alone. Public Streamlit API only.
    """
    if st.session_state.get(ROUTED_FLAG):
        return
    st.session_state[DEEP_LINK_KEY] = Path(page_file).name
    try:
        st.switch_page("app.py", query_params=st.query_params.to_dict())
    except StreamlitAPIException:
        st.session_state.pop(DEEP_LINK_KEY, None)  # run alone: nothing to route through


def follow_deep_link(pages_by_file: dict) -> None:
    """Called by ``app.py`` after ``st.navigation``: opens the page a deep link asked for.

    Args:
        pages_by_file: The router's ``st.Page`` objects by their file name.
    """
    wanted = st.session_state.pop(DEEP_LINK_KEY, None)
    if wanted in pages_by_file:
        st.switch_page(pages_by_file[wanted], query_params=st.query_params.to_dict())


def study_settings_of(study_name: str, url: str):
    """The search settings stored on a study, or None for a study made elsewhere."""
    from automl_core.errors import StorageError
    from automl_core.storage.settings import study_settings

    try:
        return study_settings(load_study(study_name, url))
    except StorageError:
        return None


def study_precision_of(study_name: str, url: str):
    """The precision a study's trials train with (:class:`automl_core.model.precision.PrecisionChoice`)."""
    from automl_core.storage.settings import study_precision

    return study_precision(load_study(study_name, url))


def dataset_notes(study_name: str, url: str) -> list[str]:
    """What loading a study's dataset changed, one sentence each (empty when nothing did).

    Call it after :func:`load_study_dataset` or :func:`first_test_images`: the notes are
    those of this process's load of the study's dataset file or folder, e.g. "12 of 40
    images were resized to 28x28".
    """
    from automl_core.model.datasets import load_notes

    settings = study_settings_of(study_name, url)
    notes = load_notes(settings.dataset) if settings is not None else None
    return list(notes.messages) if notes is not None else []


@st.cache_data(max_entries=16, show_spinner=False)
def strategy_views(study_name: str, url: str, version: tuple) -> list[tuple[str, object]]:
    """What the study's strategy itself learned, as (title, figure or table) pairs.

    The strategy's registry entry supplies them (:attr:`Strategy.views`: ``reinforce``'s
    controller probabilities, ``darts``' architecture weights); most strategies have none.
    ``version`` (see :func:`board_version`) keys the redraw.
    """
    from automl_core.analysis import charts
    from automl_core.search.strategies import get_strategy
    from automl_core.storage.settings import study_settings

    study = store.load_study(study_name, url, create=False)
    try:
        strategy = get_strategy(study_settings(study).strategy)
    except AutoMLError:
        return []
    if strategy.views is None:
        return []
    return [(view.title, charts.strategy_view_figure(view)) for view in strategy.views(study)]


@st.cache_resource(show_spinner=False)
def start_warm_up() -> subprocess.Popen | None:
    """Compiles and caches UMAP's kernels in a low-priority child process, once per server.

    Called by ``app.py`` after the first page is drawn, so a visitor's first UMAP loads the
    compiled kernels instead of waiting for numba (see ``latent.start_umap_warm_up``). A
    failure to start is only logged. Returns None when ``AUTOML_WARM_UP=0`` (the tests set it).
    """
    if os.environ.get(WARM_UP_ENV, "1") == "0":
        return None
    from automl_core.analysis.latent import start_umap_warm_up

    try:
        child = start_umap_warm_up()
    except OSError:
        logging.getLogger(__name__).warning("UMAP warm-up could not start", exc_info=True)
        return None
    # reaped when it ends, so no finished child lingers as a zombie beside the server
    threading.Thread(target=child.wait, name="umap-warm-up-reaper", daemon=True).start()
    return child
