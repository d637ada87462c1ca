"""Where a running search stands: read from its storage and its launch record, cheaply."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from automl_core.errors import StorageError
from automl_core.hosting import access, processes
from automl_core.search import workers
from automl_core.storage import store
from automl_core.storage.settings import study_settings
from automl_core.storage.trials import BudgetCount, read_trials


@dataclass(frozen=True)
class SearchProgress:
    """Where a study's search stands, read from its storage and launch record.

    Attributes:
        study: The study.
        running: Whether its launched process still runs.
        exists: Whether the study is in the storage yet.
        budget: Trials the search will finish (None before the study exists).
        done: Trials finished (complete, pruned, failed for a reason of their own).
        states: Count of trials per state name.
        live: ``{"trial", "epoch", "loss", "val_loss", "max_epochs"}`` of each running trial.
        error: The error line of a launch that ended with one, or ''. An actor who may not
            read the launch's log (a viewer, another operator) is told only that it ended
            with an error.
    """

    study: str
    running: bool
    exists: bool
    budget: int | None = None
    done: int = 0
    states: dict[str, int] = field(default_factory=dict)
    live: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""

    @property
    def fraction(self) -> float:
        """Share of the budget done, in [0, 1]."""
        if not self.budget:
            return 0.0
        return min(1.0, self.done / self.budget)

    @property
    def finished(self) -> bool:
        """Whether the whole trial budget is done, even while the search process still winds
        down (prints its leaderboard, stops its workers)."""
        return self.exists and bool(self.budget) and self.done >= self.budget  # type: ignore[operator]

    @property
    def status(self) -> str:
        """``finished`` (the budget is done), ``running`` or ``stopped`` (ended before it)."""
        if self.finished:
            return "finished"
        return "running" if self.running else "stopped"


def search_progress(
    study: str, storage_url: str | None = None, actor: access.User | None = None
) -> SearchProgress:
    """Reads the progress of a study's search (cheap enough to poll every second or two).

    Every visitor may follow a search and see its outcome; the error line of a launch that
    ended with one comes from its log, which only its owner and admins may read.

    Args:
        study: The study's name.
        storage_url: Where studies live. Defaults to :func:`store.default_storage_url`.
        actor: Who reads it. Defaults to the local admin in local mode and to a visitor (a
            viewer) in shared mode: reading progress is never refused.

    Returns:
        The progress.
    """
    if actor is None:
        actor = access.LOCAL_ADMIN if access.current_mode() == "local" else access.VISITOR
    running = processes.is_running(study, storage_url)
    error = "" if running else _launch_error(study, storage_url, actor)
    if study not in store.study_names(storage_url, create=False):
        return SearchProgress(study, running, False, error=error)
    loaded = store.load_study(study, storage_url, create=False)
    try:
        settings = study_settings(loaded)
        budget, max_epochs = settings.trial_budget(), settings.max_epochs
    except StorageError:
        budget, max_epochs = None, None
    records = read_trials(loaded)
    states = dict(Counter(r.state for r in records))
    live = [
        {
            "trial": r.number,
            "epoch": r.live.get("epoch", 0),
            "loss": r.live.get("loss", []),
            "val_loss": r.live.get("val_loss", []),
            "max_epochs": max_epochs,
            "params": r.params,
        }
        for r in records
        if r.running
    ]
    done = BudgetCount.of(records).done
    return SearchProgress(study, running, True, budget, done, states, live, error)


def _launch_error(study: str, storage_url: str | None, actor: access.User) -> str:
    """The last error line of an ended launch's log, as much of it as the actor may read."""
    record = processes.read_record(study, storage_url)
    if record is None:
        return ""
    errors = [line for line in workers.log_lines(record.log)[-40:] if line.startswith("error:")]
    if not errors:
        return ""
    if access.allowed(actor, "view_log", record.owner):
        return errors[-1]
    return "error: the search ended with an error; its owner or an admin can read why in its log"


def elapsed_text(seconds: float) -> str:
    """Seconds as ``1h 02m``, ``3m 05s`` or ``12s``."""
    if not math.isfinite(seconds) or seconds < 0:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


# the live table's columns: the trial's fields, how each reads, and its heading
_LIVE_NUMBERS = {
    "val_mse": ("Val MSE", "{:.5f}"),
    "test_psnr": ("PSNR", "{:.2f} dB"),
    "test_ssim": ("SSIM", "{:.3f}"),
    "train_seconds": ("Seconds", "{:.1f} s"),
}
MISSING = "—"


def live_table(board: pd.DataFrame, now: SearchProgress) -> pd.DataFrame:
    """The trials of a running search as a table of text, for a live view.

    A number a trial does not have yet reads ``—``, never None or NaN, and a running trial's
    note says which epoch it is in.

    Args:
        board: The study's leaderboard (:func:`automl_core.storage.results.trials_frame`).
        now: The search's progress (its running trials' epochs).

    Returns:
        Columns ``Trial`` (int), ``State``, ``Val MSE``, ``PSNR``, ``SSIM``, ``Seconds`` and
        ``Note`` (text), in the board's order.
    """
    running = {live["trial"]: live for live in now.live}
    rows = []
    for row in board.to_dict("records"):
        trial = int(row["trial"])
        out: dict[str, Any] = {"Trial": trial, "State": str(row.get("state") or MISSING)}
        for column, (heading, form) in _LIVE_NUMBERS.items():
            value = row.get(column)
            finite = isinstance(value, (int, float)) and math.isfinite(value)
            out[heading] = form.format(value) if finite else MISSING
        note = row.get("note")
        note = note if isinstance(note, str) else ""
        if trial in running and not note:
            live = running[trial]
            note = f"training: epoch {live['epoch'] or 1} of {live['max_epochs'] or '?'}"
        out["Note"] = note
        rows.append(out)
    columns = ["Trial", "State", *(h for h, _ in _LIVE_NUMBERS.values()), "Note"]
    return pd.DataFrame(rows, columns=columns)
