"""Overview: the picked study at a glance and where to go next (the landing page)."""

from __future__ import annotations

import streamlit as st

from automl_core.analysis.leaderboard import as_display_images, summary
from automl_core.errors import AutoMLError
from automl_core.hosting import uploads
from automl_core.model.space import PARAMETERS
from dashboard import state

SHOWN_IMAGES = 10
PAGES = (
    ("pages/search.py", "Search", "launch a new search or resume one", ":material/rocket_launch:"),
    ("pages/leaderboard.py", "Leaderboard", "every trial, compared", ":material/leaderboard:"),
    ("pages/filters.py", "Filters", "learned kernels as heatmaps", ":material/grid_on:"),
    (
        "pages/activations.py",
        "Activations",
        "what each layer does to an image",
        ":material/layers:",
    ),
    (
        "pages/latent_space.py",
        "Latent space",
        "UMAP / t-SNE / PCA, decode by hand",
        ":material/scatter_plot:",
    ),
    (
        "pages/reconstructions.py",
        "Reconstructions",
        "errors, worst images, compression",
        ":material/compare:",
    ),
)


def best_ui(study: str, url: str, board) -> None:
    """The best trial's configuration and a strip of its reconstructions."""
    finished = board[board["has_model"]]
    if finished.empty:
        st.info("No trial has finished with a model yet.")
        return
    best = finished.sort_values("val_mse").iloc[0]
    number = int(best["trial"])
    st.subheader(f"Best trial: #{number}")
    config = {k: best[k] for k in PARAMETERS if k in best}
    st.caption(" · ".join(f"{k.replace('_', ' ')} **{v}**" for k, v in config.items()))
    try:
        originals = state.first_test_images(study, url, SHOWN_IMAGES)
        rebuilt = state.reconstructions(study, number, url, SHOWN_IMAGES)
    except AutoMLError as exc:
        st.warning(str(exc))
        return
    for note in state.dataset_notes(study, url):
        st.caption(f"Dataset: {note}.")
    st.markdown("Test images (top) and their reconstructions (bottom)")
    st.image(as_display_images(originals), width=64, clamp=True)
    st.image(as_display_images(rebuilt), width=64, clamp=True)


state.ensure_routed(__file__)
st.title("Autoencoder AutoML")
st.caption(
    "Search convolutional autoencoder architectures, compare the trials, and look inside "
    "the models. The study picked in the sidebar is shared by every page."
)
with state.shown_errors(stop=False):
    study = state.study_picker()
    if study is not None:
        url = state.storage_url()
        board = state.load_board((study,), url)
        settings = state.study_settings_of(study, url)
        if settings is not None:
            st.markdown(
                f"Study **{study}**: dataset `{uploads.display_name(settings.dataset)}`, strategy "
                f"`{settings.strategy}`, at most {settings.max_epochs} epochs per trial."
            )
            st.caption(state.study_precision_of(study, url).summary() + ".")
        for column, (label, value) in zip(st.columns(4), summary(board).items(), strict=False):
            column.metric(label, value)
        best_ui(study, url, board)
if st.session_state.get(state.ROUTED_FLAG):  # links need app.py's navigation
    st.subheader("Where to go")
    columns = st.columns(2)
    for index, (path, title, what, icon) in enumerate(PAGES):
        with columns[index % 2]:
            st.page_link(path, label=f"{title}: {what}", icon=icon)
