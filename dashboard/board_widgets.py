"""The Leaderboard's study views: chart axes and tabs, the settings picked trials differ in,
and a note on a trial. Widgets read here; the core computes and checks everything."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from automl_core import limits
from automl_core.analysis.leaderboard import (
    StudyChartPlan,
    annotate_trial,
    drawable_charts,
    settings_diff,
)
from automl_core.errors import AutoMLError
from automl_core.hosting import access
from automl_core.model.space import parameter_label
from dashboard import auth, state

PARETO_SET = "Pareto set"
# the chart tabs' key prefix (a study's open tab is kept in the session state under it)
CHART_TAB_KEY = "chart_tab"


def axes_ui(study_name: str, plan: StudyChartPlan) -> tuple[str, ...]:
    """The parameters the charts are drawn over: those that vary by default, any added or
    removed by the reader (a key per study, so each study keeps its own choice)."""
    if not plan.parameters:
        return ()
    chosen = st.multiselect(
        "Chart axes",
        plan.parameters,
        default=plan.varying,
        format_func=parameter_label,
        key=f"chart_axes_{study_name}",
        help="The parameters the parallel coordinates, importances, slice and contour plots "
        "are drawn over; by default those whose value differs between finished trials.",
    )
    return tuple(chosen)


def charts_ui(study_name: str, url: str) -> None:
    """Optuna's figures for a study, one tab each, over the chosen axes; a multi-objective
    study's Pareto set as a table (redrawn when a trial finishes).

    Only the open tab is drawn (the tabs rerun the page when switched): a large study's
    parallel coordinates and importances take seconds, and a reader looks at one chart."""
    version = state.board_version((study_name,), url)
    plan = state.chart_plan(study_name, url, version)
    axes = axes_ui(study_name, plan)
    for note in plan.notes:
        st.caption(note)
    # the same tabs whatever the axes, so the open one stays open when axes change
    titles = list(plan.charts) + ([PARETO_SET] if plan.multi_objective and plan.charts else [])
    if not titles:
        return
    drawable, notes = drawable_charts(plan, axes)
    tabs = st.tabs(titles, key=f"{CHART_TAB_KEY}_{study_name}", on_change="rerun")
    for tab, title in zip(tabs, titles, strict=True):
        if tab.open is False:
            continue
        with tab:
            if title in drawable or title == PARETO_SET:
                _chart_tab(study_name, url, version, axes, title)
            else:  # it needs more axes than chosen: say which
                st.caption(notes[title])


def _chart_tab(study_name: str, url: str, version: tuple, axes: tuple[str, ...], title: str):
    """One chart tab's content: the figure (or the Pareto set), and what it was drawn from."""
    if title == PARETO_SET:
        pareto = state.pareto_table(study_name, url, version, axes)
        if pareto.empty:
            st.caption("No trial is on the Pareto front yet.")
        else:
            st.dataframe(pareto, hide_index=True, key="pareto_set")
        return
    figure = state.study_figure(study_name, url, version, axes, title)
    if figure is None:
        st.caption(f"{title} could not be computed for this study.")
        return
    st.plotly_chart(figure, key=f"chart_{title}")
    note = state.chart_sample(study_name, url, version).note
    if note and title != "Optimization history":
        st.caption(note)


def diff_ui(board: pd.DataFrame, picks: list[tuple[str, int]]) -> None:
    """The settings the picked trials differ in, one row per setting."""
    if len(picks) < 2:
        return
    st.markdown("**Settings that differ**")
    diff = settings_diff(board, picks)
    if diff.empty:
        st.caption("The picked trials share every setting.")
    else:
        st.dataframe(diff, hide_index=True, key="settings_diff")


def _save_note(study_name: str, number: int, key: str, url: str) -> None:
    """The Save button's callback: the core checks the acting user's role and the length."""
    try:
        annotate_trial(
            state.load_study(study_name, url),
            number,
            st.session_state.get(key, ""),
            actor=auth.current_user(),
        )
    except AutoMLError as exc:
        st.session_state["_note_message"] = ("error", str(exc))
    else:
        st.session_state["_note_message"] = ("success", f"Note on {study_name} #{number} saved.")


def note_ui(board: pd.DataFrame, picks: list[tuple[str, int]], url: str) -> None:
    """A plain-text note on one of the picked trials (operators and admins write it)."""
    st.markdown("**Note on a trial**")
    labels = [f"{s} #{n}" for s, n in picks]
    label = st.selectbox("Trial", labels, key="note_trial") if len(labels) > 1 else labels[0]
    study_name, number = label.rsplit(" #", 1)[0], int(label.rsplit(" #", 1)[1])
    row = board[(board["study"] == study_name) & (board["trial"] == number)]
    current = str(row.iloc[0]["user_note"]) if not row.empty and "user_note" in row else ""
    user = auth.current_user()
    can_write = access.allowed(user, "annotate")
    key = f"note_{study_name}_{number}"
    st.text_area(
        f"Note on {label} (plain text)",
        value=current,
        key=key,
        max_chars=limits.get("max_note_length"),
        disabled=not can_write,
    )
    st.button(
        "Save note",
        key="save_note",
        on_click=_save_note,
        args=(study_name, number, key, url),
        disabled=not can_write,
    )
    if not can_write:
        st.caption("Log in as an operator to write notes.")
    message = st.session_state.pop("_note_message", None)
    if message is not None:
        kind, text = message
        (st.error if kind == "error" else st.success)(text)
