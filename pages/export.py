"""Export: a trial as a .zip (Keras, TFLite, JSON, filters), a study as one HTML report;
admins also delete studies here."""

from __future__ import annotations

import streamlit as st

from automl_core import access, store
from automl_core.export import study_report, trial_bundle
from dashboard import auth, state


@st.cache_data(max_entries=8, show_spinner="Converting to TFLite and checking it…")
def bundle(study_name: str, trial: int, url: str) -> tuple[str, bytes]:
    """A trial's bundle (cached: a model's files do not change once trained)."""
    return trial_bundle(state.load_study(study_name, url), trial)


@st.cache_data(max_entries=8, show_spinner="Drawing the report…")
def report(study_name: str, url: str, version: tuple) -> str:
    """A study's HTML report, redrawn when a trial is added or finishes."""
    return study_report(state.load_study(study_name, url))


def delete_ui(study: str, user: access.User) -> None:
    """Deleting a study, for admins: type its name to confirm."""
    st.subheader("Delete this study")
    st.caption("Removes its trials and trained models for everyone. This cannot be undone.")
    typed = st.text_input("Type the study's name to confirm", key="delete_confirm")
    if st.button("Delete study", key="delete", type="primary", disabled=typed != study):
        store.delete_study(study, state.storage_url(), actor=user)
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
    with left:
        st.subheader("Trial bundle")
        if trial is None:
            st.info("No trial of this study has a model yet.")
        elif st.button("Prepare the trial's .zip", key="make_bundle"):
            name, data = bundle(study, trial, url)
            st.download_button(
                f"Download {name}", data, name, "application/zip", key="download_bundle"
            )
    with right:
        st.subheader("Study report")
        if st.button("Prepare the HTML report", key="make_report"):
            text = report(study, url, state.board_version((study,), url))
            st.download_button(
                f"Download {study}-report.html",
                text,
                f"{study}-report.html",
                "text/html",
                key="download_report",
            )
    if access.allowed(user, "delete"):
        delete_ui(study, user)
