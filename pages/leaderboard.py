"""Leaderboard: every trial of one or more studies; compare picked trials (their curves,
reconstructions, the settings they differ in, a note); Optuna's charts over chosen axes."""

from __future__ import annotations

import streamlit as st

from automl_core.analysis.charts import loss_curves_figure
from automl_core.analysis.leaderboard import (
    STATES,
    as_display_images,
    best_pca_verdict,
    display_columns,
    filter_frame,
    loss_curves,
    pca_missing_note,
    summary,
)
from automl_core.errors import AutoMLError
from dashboard import board_widgets, state

COMPARE_IMAGES = 8


def studies_ui(url: str) -> list[str]:
    """The picked study first, then any extra studies to show on the same table."""
    main = state.study_picker()
    if main is None:
        return []
    others = [n for n in state.list_studies(url) if n != main]
    extra = st.sidebar.multiselect("Compare with studies", others, key="extra_studies")
    return [main, *extra]


def filters_ui(frame):
    """State and text filters over the table; returns the rows to show."""
    present = [s for s in STATES if s in set(frame["state"])]
    left, right = st.columns([2, 3])
    states = left.multiselect("States", present, default=present, key="states")
    text = right.text_input("Filter", key="filter_text", placeholder="e.g. relu, 16, FAIL…")
    return filter_frame(frame, states, text)


def _sync_compare() -> None:
    """Table selection -> the compare list (the table is the quick way to pick)."""
    shown = st.session_state.get("_shown")
    rows = st.session_state["board"].selection.rows if "board" in st.session_state else []
    if shown is not None:
        st.session_state["compare"] = [shown[i] for i in rows if i < len(shown)][:6]


def table_ui(frame) -> list[tuple[str, int]]:
    """The leaderboard table with row selection; returns the picked (study, trial) pairs."""
    labels = [f"{r.study} #{int(r.trial)}" for r in frame.itertuples()]
    st.session_state["_shown"] = labels
    columns = display_columns(frame, with_study=frame["study"].nunique() > 1)
    st.dataframe(
        frame[columns],
        hide_index=True,
        key="board",
        on_select=_sync_compare,
        selection_mode="multi-row",
        column_config=state.BOARD_COLUMNS,
    )
    st.session_state["compare"] = [c for c in st.session_state.get("compare", []) if c in labels]
    picked = st.multiselect(
        "Compare trials (or select rows above)", labels, key="compare", max_selections=6
    )
    return [(label.rsplit(" #", 1)[0], int(label.rsplit(" #", 1)[1])) for label in picked]


def compare_ui(picks: list[tuple[str, int]], url: str) -> None:
    """Loss curves overlaid and the same test images reconstructed by each picked trial."""
    studies = {name: state.load_study(name, url) for name in {s for s, _ in picks}}
    curves, notes = loss_curves(studies, picks)
    for note in notes:
        st.warning(note)
    if not curves.empty:
        st.plotly_chart(loss_curves_figure(curves), key="compare_curves")
    st.markdown("**Reconstructions** of the first test images (top row: originals)")
    shown_originals = set()
    for study_name, number in picks:
        try:
            if study_name not in shown_originals:
                originals = state.first_test_images(study_name, url, COMPARE_IMAGES)
                st.image(
                    as_display_images(originals),
                    caption=["original"] * len(originals),
                    width=72,
                    clamp=True,
                )
                shown_originals.add(study_name)
            images = state.reconstructions(study_name, number, url, COMPARE_IMAGES)
        except AutoMLError as exc:
            st.warning(f"{study_name} #{number}: {exc}")
            continue
        st.image(
            as_display_images(images), caption=[f"#{number}"] * len(images), width=72, clamp=True
        )


def strategy_ui(study_name: str, url: str) -> None:
    """What a learning strategy (reinforce, darts) learned, when the study used one."""
    views = state.strategy_views(study_name, url, state.board_version((study_name,), url))
    if not views:
        return
    st.subheader(f"What the strategy learned — {study_name}")
    for title, view in views:
        st.markdown(f"**{title}**")
        if hasattr(view, "to_plotly_json"):
            st.plotly_chart(view, key=f"strategy_{title}")
        else:
            st.dataframe(view, hide_index=True)


state.ensure_routed(__file__)
st.title("Leaderboard")
with state.shown_errors():
    url = state.storage_url()
    names = studies_ui(url)
    if not names:
        st.info("No study yet: launch a search on the Search page.")
        st.stop()
    try:
        board = state.load_board(tuple(names), url)
    except AutoMLError as exc:
        st.error(str(exc))
        st.stop()
    for column, (label, value) in zip(st.columns(4), summary(board).items(), strict=False):
        column.metric(label, value)
    verdict = best_pca_verdict(board)
    # a finding about the models, not a problem of the page: info, not warning
    if verdict is not None and verdict.below:
        st.info(f"**Best model below PCA.** {verdict.text}", icon=":material/trending_down:")
    elif verdict is not None:
        st.caption(f"Best model against PCA: {verdict.text}")
    missing = pca_missing_note(board)
    if missing:
        st.caption(missing)
    shown = filters_ui(board)
    picks = table_ui(shown)
    st.download_button(
        "Download CSV",
        lambda: shown.to_csv(index=False).encode(),  # written on click, not on every rerun
        key="download",
        file_name=f"{'+'.join(names)}-trials.csv",
        mime="text/csv",
    )
    if picks:
        st.subheader("Compare")
        compare_ui(picks, url)
        board_widgets.diff_ui(board, picks)
        board_widgets.note_ui(board, picks, url)
    st.subheader(f"Optuna charts — {names[0]}")
    board_widgets.charts_ui(names[0], url)
    strategy_ui(names[0], url)
