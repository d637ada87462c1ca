"""Export: a trial as a .zip (Keras, TFLite, JSON, filters), a study as one HTML report;
admins also delete studies here."""

from __future__ import annotations

import functools

import streamlit as st

from automl_core.analysis.export import bundle_name, report_name, study_report, trial_bundle
from automl_core.errors import AutoMLError, file_problem
from automl_core.hosting import access, processes
from dashboard import auth, state


@st.cache_resource(show_spinner=False)
def failures() -> dict[tuple, str]:
    """Why the last try to make a download failed, by (study, what): the file is made in a
    thread of its own, where no message can reach the page, so the page's next run says it."""
    return {}


def _told(key: tuple, make):
    """``make()``, with a failure kept in :func:`failures` (one line, no path) for the page."""
    try:
        data = make()
    except (AutoMLError, OSError) as exc:
        failures()[key] = (
            str(exc) if isinstance(exc, AutoMLError) else file_problem(exc, with_path=False)
        )
        raise
    failures().pop(key, None)
    return data


# the downloads' data is made when a button is clicked, in a thread of its own: no spinner
# there (Streamlit commands do nothing outside a script run), and cached for the next click
@st.cache_data(max_entries=8, show_spinner=False)
def bundle(study_name: str, trial: int, url: str) -> bytes:
    """A trial's bundle (cached: a model's files do not change once trained)."""
    return _told(
        (study_name, f"trial {trial}"),
        lambda: trial_bundle(state.load_study(study_name, url), trial)[1],
    )


@st.cache_data(max_entries=8, show_spinner=False)
def report(study_name: str, url: str, version: tuple) -> str:
    """A study's HTML report, redrawn when a trial is added or finishes."""
    return _told((study_name, "report"), lambda: study_report(state.load_study(study_name, url)))


def failure_ui(study: str, what: str) -> None:
    """The last failure to make this download, if it failed."""
    message = failures().get((study, what))
    if message:
        st.error(f"The last try to make this file failed: {message}", icon=":material/error:")


def delete_ui(study: str, user: access.User) -> None:
    """Deleting a study, for admins: type its name to confirm."""
    st.subheader("Delete this study")
    st.caption("Removes its trials and trained models for everyone. This cannot be undone.")
    typed = st.text_input("Type the study's name to confirm", key="delete_confirm")
    if st.button("Delete study", key="delete", type="primary", disabled=typed != study):
        processes.delete_study(study, state.storage_url(), actor=user)
        state.list_studies.clear()
        st.session_state.pop("study", None)
        st.success(f"Study {study!r} deleted.")
        st.stop()


state.ensure_routed(__file__)
st.title("Export")
st.caption(
    "Download a trained trial (its Keras model, encoder and decoder, their TFLite versions "
    "checked against Keras, configuration, metrics and filters) or the whole study as one "
    "HTML page that opens without a server."
)
with state.shown_errors():
    study = state.study_picker()
    if study is None:
        st.stop()
    url = state.storage_url()
    user = auth.current_user()
    left, right = st.columns(2)
    trial = state.trial_picker(study)
    # one click each: the file is made when its button is clicked (a few seconds for the
    # TFLite conversion); the page then reruns to tell a failure, and both buttons stay
    with left:
        st.subheader("Trial bundle")
        if trial is None:
            st.info("No trial of this study has a model yet.")
        else:
            st.download_button(
                f"Download {bundle_name(study, trial)}",
                functools.partial(bundle, study, trial, url),
                bundle_name(study, trial),
                "application/zip",
                key="download_bundle",
                on_click="rerun",
                icon=":material/download:",
                help="Made when you click: the models are converted to TFLite and checked "
                "against Keras, which takes a few seconds.",
            )
            failure_ui(study, f"trial {trial}")
    with right:
        st.subheader("Study report")
        st.download_button(
            f"Download {report_name(study)}",
            functools.partial(report, study, url, state.board_version((study,), url)),
            report_name(study),
            "text/html",
            key="download_report",
            on_click="rerun",
            icon=":material/download:",
            help="Made when you click: one HTML page with the leaderboard, the charts and the "
            "best trial's images.",
        )
        failure_ui(study, "report")
    if access.allowed(user, "delete"):
        delete_ui(study, user)
