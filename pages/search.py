"""Search: pick a dataset and a space, launch a search as its own process, watch it live."""

from __future__ import annotations

import functools
import time

import streamlit as st

from automl_core.analysis import progress
from automl_core.analysis.charts import loss_curves_figure
from automl_core.analysis.leaderboard import live_curves
from automl_core.errors import AutoMLError
from automl_core.hosting import access, processes
from automl_core.storage.settings import SearchSettings
from dashboard import auth, search_form, state

LIVE_SECONDS = 2.0


def settings_ui() -> tuple[SearchSettings | None, int, list[str]]:
    """Reads the sidebar (dataset, strategy, budget, name) and the main area's search space;
    returns (settings or None, workers, problems to show)."""
    dataset = search_form.dataset_ui()
    strategy = search_form.strategy_ui()
    budget = search_form.budget_ui()
    name = search_form.study_name_ui(dataset, strategy)
    st.subheader("Search space")
    space, problems = search_form.space_ui(strategy)
    if dataset is None:
        problems.append("Choose a dataset (or upload a valid file).")
    if name is None:
        problems.append("Give the study a valid name (see the sidebar).")
    if problems:
        return None, budget.workers, problems
    try:
        settings = SearchSettings(
            study=name,
            dataset=dataset,
            space=space,
            strategy=strategy,
            trials=budget.trials,
            timeout=budget.timeout,
            max_epochs=budget.max_epochs,
            seed=budget.seed,
            max_images=budget.max_images,
            precision=budget.precision,
        )
        settings.search_space()
    except AutoMLError as exc:
        return None, budget.workers, [str(exc)]
    return settings, budget.workers, []


def launch_ui(settings: SearchSettings | None, workers: int, problems: list[str]) -> None:
    """The Launch button, disabled while the form has problems or for a viewer (the core
    refuses a viewer's launch anyway)."""
    user = auth.current_user()
    may_launch = access.allowed(user, "launch")
    if not may_launch:
        st.info("Viewers explore studies; log in as an operator to launch a search.")
    for problem in problems:
        st.error(problem)
    running = settings is not None and processes.is_running(settings.study, state.storage_url())
    if running:
        st.info(f"A search of study '{settings.study}' is running; follow it below.")
    disabled = settings is None or not may_launch
    clicked = st.button("Launch search", type="primary", key="launch", disabled=disabled)
    if clicked and settings is not None:  # a forced click of a viewer reaches the core: refused
        try:
            processes.launch_search(settings, workers, state.storage_url(), actor=user)
        except AutoMLError as exc:
            st.error(str(exc))
            return
        st.session_state["watch"] = settings.study
        st.toast(f"Search '{settings.study}' launched.")


@st.fragment(run_every=LIVE_SECONDS)
def live_ui(study: str) -> None:
    """Progress of a launched search, re-read from the storage every couple of seconds."""
    with state.shown_errors(stop=False):  # the next run tries again
        user = auth.current_user()
        now = progress.search_progress(study, state.storage_url(), actor=user)
        record = processes.read_record(study, state.storage_url())
        owner = record.owner if record else None
        elapsed = progress.elapsed_text(time.time() - record.started) if record else "-"
        head, stop = st.columns([4, 1])
        head.subheader(f"Study {study}")
        if record and owner != user.name and user != access.LOCAL_ADMIN:
            head.caption(f"launched by {owner}")
        may_stop = access.allowed(user, "stop", owner)
        stoppable = now.running and not now.finished
        if stoppable and may_stop and stop.button("Stop", key="stop", type="secondary"):
            with st.spinner("Stopping the search and its workers…"):
                processes.stop_search(study, actor=user, storage_url=state.storage_url())
            st.rerun()
        if now.error:
            st.error(now.error.removeprefix("error: "))
        if not now.exists:
            st.info(
                "Starting: loading the dataset and TensorFlow…"
                if now.running
                else "The search ended before creating its study; see the log below."
            )
        else:
            budget = now.budget or max(now.done, 1)
            st.progress(
                now.fraction, text=f"{now.done} / {budget} trials · {now.status} · {elapsed}"
            )
            st.caption(" · ".join(f"{k.lower()}: {v}" for k, v in sorted(now.states.items())))
            for live in now.live:
                epochs = live["max_epochs"] or "?"
                st.markdown(f"**Trial #{live['trial']}** — epoch {live['epoch']} / {epochs}")
                if live["loss"]:
                    st.plotly_chart(
                        loss_curves_figure(live_curves(live), "Running trial"),
                        key=f"live_{live['trial']}",
                    )
            board = state.read_board((study,), state.storage_url())
            if not board.empty:
                st.dataframe(
                    progress.live_table(board, now),
                    hide_index=True,
                    key="live_board",
                    column_config={"Trial": st.column_config.NumberColumn(format="%d")},
                )
            if now.finished:
                st.success(f"Search finished with {now.done} trials: open the Leaderboard.")
                if now.running:
                    st.caption("The search process is printing its summary and stopping.")
            elif not now.running:
                st.warning(
                    f"Search stopped after {now.done} of {budget} trials; launch the "
                    "same study name again to resume it."
                )
        if access.allowed(user, "view_log", owner):
            log_ui(study, user)


def log_ui(study: str, user: access.User) -> None:
    """The search's output: what happened (trials, the best, warnings, errors), or all of it."""
    with st.expander("Log"):
        full = st.toggle("Whole output", key="log_full", help="Every line, not only results")
        text = (
            processes.log_tail(study, lines=200, actor=user)
            if full
            else processes.log_summary(study, actor=user)
        )
        st.code(text or "(no output yet)", language=None)
        st.download_button(
            "Download the log",
            functools.partial(processes.log_text, study, user),
            f"{study}.log",
            "text/plain",
            key="download_log",
            on_click="ignore",
            icon=":material/download:",
        )


state.ensure_routed(__file__)
st.title("Search")
st.caption(
    "Choose a dataset, a strategy and a budget in the sidebar and the search space below, "
    "then launch. The search runs in its own process: reloading or closing this tab does "
    "not stop it."
)
with state.shown_errors():
    settings, workers, problems = settings_ui()
    if settings is not None:
        search_form.summary_ui(settings, workers)
    launch_ui(settings, workers, problems)
    watched = st.session_state.get("watch") or next(
        iter(processes.running_studies(state.storage_url())), None
    )
    if watched:
        live_ui(watched)
