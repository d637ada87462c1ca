"""What the command line prints: a line per trial, a leaderboard that fits a terminal, the
Pareto set of a multi-objective search, and the per-epoch progress of running trials.

Each printer is a plain function of trial records or a leaderboard table, so it is tested
without running a search; :mod:`automl_core.cli` only chooses which to call.
"""

from __future__ import annotations

import math
import shutil
import sys
from dataclasses import dataclass
from typing import Any, TextIO

import optuna
import pandas as pd

from automl_core.analysis.leaderboard import display_columns
from automl_core.errors import StorageError
from automl_core.model.space import PARAMETERS, active_parameters
from automl_core.storage.results import records_frame
from automl_core.storage.settings import study_settings
from automl_core.storage.trials import BudgetCount, TrialRecord

# the CLI's tables fit a terminal this wide unless --wide asks for every column
DEFAULT_WIDTH = 100
# columns between which a narrow table puts this many spaces
GAP = "  "
# a narrow table shows the note (cut) after its parameters when this much room is left
MIN_NOTE_ROOM = 12


def short_value(value: Any) -> str:
    """A value as a table or a trial line shows it: floats to 3 significant digits
    (``0.000585``), integers as integers, ``-`` for a missing number."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.3g}"
    if hasattr(value, "item"):  # a numpy scalar from a table
        return short_value(value.item())
    return str(value)


def study_varying(study: optuna.Study) -> list[str] | None:
    """The parameters with more than one value in a study's search space, or None when the
    study was not made by this tool (it has no stored space)."""
    try:
        return study_settings(study).search_space().varying()
    except StorageError:
        return None


def shown_parameters(config: dict[str, Any], varying: list[str] | None) -> list[str]:
    """The parameters a trial's line names: those that vary in the study's space and act on
    the configuration (:func:`automl_core.model.space.active_parameters`), in table order.

    Args:
        config: The trial's configuration.
        varying: The parameters that vary in the study's space; None when it is unknown,
            and then those of ``config`` that act and differ from their default.

    Returns:
        Parameter names.
    """
    active = [n for n in active_parameters(config) if n in config]
    if varying is None:
        return [n for n in active if config[n] != PARAMETERS[n].default]
    return [n for n in active if n in varying]


def trial_line(record: TrialRecord, varying: list[str] | None) -> str:
    """One finished trial: number, state, its parameters (:func:`shown_parameters`), its
    metrics (or why it failed) and its precision.

    Args:
        record: The trial.
        varying: The parameters that vary in the study's space (:func:`study_varying`).

    Returns:
        The line, without a newline.
    """
    names = shown_parameters(record.config, varying)
    params = " ".join(f"{n}={short_value(record.config[n])}" for n in names)
    if record.precision:
        params = f"{params} [{record.precision}]".strip()
    metrics = record.metrics
    if metrics:
        tail = (
            f"val_mse={short_value(metrics['val_mse'])} psnr={metrics['test_psnr']:.2f}dB "
            f"ssim={metrics['test_ssim']:.3f} {metrics['train_seconds']:.1f}s"
        )
        if not math.isnan(record.vs_pca_db):
            tail += f" vs_pca={record.vs_pca_db:+.2f}dB"
    elif math.isfinite(record.best_val_mse):  # pruned: its best before it was stopped
        tail = f"val_mse={short_value(record.best_val_mse)} ({record.note})"
    else:
        tail = record.note
    head = " ".join(p for p in (f"trial {record.number:4d} {record.state:8s}", params) if p)
    return f"{head.strip()}  {tail}".rstrip()


def wrapped_pairs(config: dict[str, Any], names: list[str], width: int, indent: str) -> list[str]:
    """``name=value`` pairs of a configuration, wrapped to lines of at most ``width``."""
    lines, line = [], indent
    for name in names:
        pair = f"{name}={short_value(config[name])}"
        if line.strip() and len(line) + 1 + len(pair) > width:
            lines.append(line)
            line = indent
        line += (" " if line.strip() else "") + pair
    if line.strip():
        lines.append(line)
    return lines


# --- tables -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """A column of a text table: a leaderboard field, its header and how to print a value."""

    key: str
    header: str
    # text (left-aligned), number (3 digits), decibels, signed (+/-), seconds, integer
    kind: str = "text"

    def cell(self, value: Any) -> str:
        """One value as this column prints it."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        if self.kind == "signed":
            return f"{value:+.2f}"
        if self.kind == "decibels":
            return f"{value:.2f}"
        if self.kind == "seconds":
            return f"{value:.1f}"
        if self.kind == "integer":
            return str(int(value))
        return short_value(value)

    @property
    def right(self) -> bool:
        """Whether values align right (numbers)."""
        return self.kind != "text"


def _kind_of(name: str) -> str:
    spec = PARAMETERS.get(name)
    return "number" if spec is not None and spec.numeric else "text"


# the leaderboard's columns that are always shown, and how
KEY_COLUMNS = (
    Column("trial", "trial", "integer"),
    Column("state", "state"),
    Column("val_mse", "val_mse", "number"),
    Column("test_psnr", "test_psnr", "decibels"),
    Column("vs_pca_db", "vs_pca_db", "signed"),
    Column("train_seconds", "seconds", "seconds"),
)
# how the other known columns print in a wide table
_WIDE_KINDS = {
    "test_ssim": "number",
    "probe_accuracy": "number",
    "param_count": "integer",
    "compression_ratio": "number",
    "epochs": "number",
    "pca_psnr": "decibels",
}


def render(columns: list[Column], rows: list[list[str]]) -> list[str]:
    """A header and one line per row, each column as wide as its widest cell."""
    widths = [_width(c, [r[i] for r in rows]) for i, c in enumerate(columns)]

    def line(cells: list[str]) -> str:
        padded = [
            cell.rjust(w) if column.right else cell.ljust(w)
            for cell, w, column in zip(cells, widths, columns, strict=True)
        ]
        return GAP.join(padded).rstrip()

    return [line([c.header for c in columns]), *(line(r) for r in rows)]


def _cells(frame: pd.DataFrame, column: Column, blank: list[bool] | None = None) -> list[str]:
    """A column's cells; ``-`` where ``blank`` (a parameter that does not act on the row)."""
    values = [column.cell(v) for v in frame[column.key]]
    if blank is not None:
        values = ["-" if off else v for v, off in zip(values, blank, strict=True)]
    return values


def _width(column: Column, cells: list[str]) -> int:
    return max([len(column.header), *map(len, cells)])


def _fits(columns: list[Column], cells: list[list[str]], width: int) -> bool:
    used = sum(_width(c, col) for c, col in zip(columns, cells, strict=True))
    return used + len(GAP) * (len(columns) - 1) <= width


@dataclass(frozen=True)
class TextTable:
    """A table as printed lines, and the columns a narrow one left out.

    Attributes:
        lines: The header and one line per row.
        hidden: Headers of the columns left out to fit the width (empty when none).
    """

    lines: list[str]
    hidden: list[str]


def _narrow(
    frame: pd.DataFrame,
    first: tuple[Column, ...],
    varying: list[str] | None,
    width: int,
    with_note: bool,
) -> TextTable:
    """``first``, then the varying parameters (short names, ``-`` where one does not act)
    for as long as they fit ``width``, then the note cut to the room left."""
    if varying is None:
        varying = [n for n in PARAMETERS if n in frame and frame[n].map(repr).nunique() > 1]
    columns = [c for c in first if c.key in frame]
    cells = [_cells(frame, c) for c in columns]
    hidden: list[str] = []
    configs = frame.to_dict("records")
    notes = [n if isinstance(n, str) else "" for n in frame["note"]] if "note" in frame else []
    notes = notes if with_note else []
    for name in (n for n in PARAMETERS if n in varying and n in frame):
        column = Column(name, PARAMETERS[name].abbreviation, _kind_of(name))
        values = _cells(frame, column, [not PARAMETERS[name].acts_on(c) for c in configs])
        if values and all(v == "-" for v in values):  # acts on none of these rows
            continue
        if not hidden and _fits([*columns, column], [*cells, values], width):
            columns.append(column)
            cells.append(values)
        else:  # keep the table's order: once one is left out, so are those after it
            hidden.append(column.header)
    if any(notes):
        used = sum(_width(c, col) for c, col in zip(columns, cells, strict=True))
        room = width - used - len(GAP) * len(columns)
        if room >= MIN_NOTE_ROOM:
            columns.append(Column("note", "note"))
            cells.append([n if len(n) <= room else n[: room - 1] + "…" for n in notes])
        else:
            hidden.append("note")
    rows = [list(r) for r in zip(*cells, strict=True)]
    return TextTable(render(columns, rows), hidden)


def leaderboard_table(
    frame: pd.DataFrame,
    varying: list[str] | None,
    wide: bool = False,
    width: int = DEFAULT_WIDTH,
) -> TextTable:
    """The leaderboard as text: by default narrow enough for ``width`` columns, else all.

    The narrow table holds the trial, its state, ``val_mse``, ``test_psnr``, ``vs_pca_db``
    and the training seconds, then the parameters that vary in the study's space under
    their short names (``-`` where one does not act on a row's configuration), in table
    order for as long as they fit, then the note cut to the room left. The wide one holds
    every column of :func:`automl_core.storage.results.trials_frame` under its full name.

    Args:
        frame: The leaderboard (:func:`automl_core.storage.results.trials_frame`), best first.
        varying: The parameters that vary in the study's space (:func:`study_varying`);
            None: those whose values differ between the rows.
        wide: Every column, whatever the width. Defaults to False.
        width: The most characters of a narrow table's line. Defaults to 100.

    Returns:
        The table.
    """
    if not wide:
        return _narrow(frame, KEY_COLUMNS, varying, width, with_note=True)
    keys = [c for c in display_columns(frame, with_study=False) if c != "has_model"]
    kinds = {**{c.key: c.kind for c in KEY_COLUMNS}, **_WIDE_KINDS}
    columns = [Column(k, k, kinds.get(k, _kind_of(k))) for k in keys]
    cells = [_cells(frame, c) for c in columns]
    return TextTable(render(columns, [list(r) for r in zip(*cells, strict=True)]), [])


def pareto_table(
    study: optuna.Study, varying: list[str] | None, width: int = DEFAULT_WIDTH
) -> tuple[str, TextTable]:
    """The Pareto set of a multi-objective study: a title and a table of its trials, lowest
    validation MSE first: the two objectives, ``test_psnr`` and the varying parameters that
    fit ``width``.

    Args:
        study: A study with two objectives (``val_mse`` and the second objective).
        varying: The parameters that vary in its space (:func:`study_varying`).
        width: The most characters of a line. Defaults to 100.

    Returns:
        ``(title, table)``; the table has no rows when no trial has finished.
    """
    try:
        second = study_settings(study).second_objective
    except StorageError:
        second = "compression_ratio"
    front = study.best_trials
    frame = records_frame(study.study_name, [TrialRecord.from_frozen(t) for t in front])
    # the objective values are what the front was chosen on
    frame[second] = frame["trial"].map({t.number: t.values[1] for t in front})
    maximize = study.directions[1] == optuna.study.StudyDirection.MAXIMIZE
    count = f"{len(front)} trial{'s' if len(front) != 1 else ''}"
    title = (
        f"Pareto set: {count}, none beaten on both val_mse (lower) and {second} "
        f"({'higher' if maximize else 'lower'})"
    )
    first = (
        Column("trial", "trial", "integer"),
        Column("val_mse", "val_mse", "number"),
        Column(second, second, "integer" if second == "param_count" else "number"),
        Column("test_psnr", "test_psnr", "decibels"),
    )
    return title, _narrow(frame, first, varying, width, with_note=False)


# --- progress -----------------------------------------------------------------------------


def _epochs_done(record: TrialRecord) -> float:
    return float(record.live.get("epochs", 0.0) or 0.0)


def _last_val_mse(record: TrialRecord) -> float | None:
    curve = record.live.get("val_mse") or record.live.get("val_loss") or []
    return float(curve[-1]) if curve else None


class EpochProgress:
    """The per-epoch progress of a search's running trials.

    On a terminal: a bar for the search (trials done of the budget, with the time left) and
    one per running trial (epochs done of ``max_epochs``, its last validation MSE, the time
    left), drawn by ``tqdm``. Elsewhere (a pipe, a file): a plain line per finished epoch,
    ``trial 3 epoch 2/20 val_mse=0.0123``. Trial lines go through :meth:`write`, so they
    do not tear the bars.

    Args:
        stream: Where to print. Defaults to ``sys.stdout``.
        max_epochs: The epochs of a whole trial.
        budget: Trials the search will finish, or None when its end is a timeout.
        tty: Draw bars (True) or print lines (False). Defaults to ``stream.isatty()``.
    """

    def __init__(
        self,
        max_epochs: int,
        budget: int | None = None,
        stream: TextIO | None = None,
        tty: bool | None = None,
    ):
        self.stream = stream if stream is not None else sys.stdout
        self.max_epochs = max_epochs
        self.budget = budget
        self.tty = bool(self.stream.isatty()) if tty is None else tty
        self._bars: dict[int, Any] = {}
        self._search_bar: Any = None
        self._printed: dict[int, int] = {}

    def update(self, records: list[TrialRecord]) -> None:
        """Shows where the running trials stand (called after each read of the storage)."""
        running = [r for r in records if r.running]
        if self.tty:
            self._draw(records, running)
            return
        for record in running:
            whole = int(_epochs_done(record) + 1e-9)
            if whole > self._printed.get(record.number, 0):
                self._printed[record.number] = whole
                val = _last_val_mse(record)
                tail = f" val_mse={short_value(val)}" if val is not None else ""
                print(
                    f"trial {record.number} epoch {whole}/{self.max_epochs}{tail}",
                    file=self.stream,
                    flush=True,
                )

    def _bar(self, **options):
        """A tqdm bar on the stream, as wide as the terminal."""
        from tqdm import tqdm

        # a terminal that reports no size (a bare pseudo-terminal) would hide every bar
        columns, rows = shutil.get_terminal_size((DEFAULT_WIDTH, 24))
        return tqdm(file=self.stream, ncols=columns, nrows=rows, leave=False, **options)

    def _draw(self, records: list[TrialRecord], running: list[TrialRecord]) -> None:
        done = BudgetCount.of(records).done
        if self._search_bar is None:
            self._search_bar = self._bar(
                total=self.budget, initial=done, desc="search", unit="trial"
            )
        if done != self._search_bar.n:
            self._search_bar.update(done - self._search_bar.n)
        for number in [n for n in self._bars if n not in {r.number for r in running}]:
            self._bars.pop(number).close()
        for record in running:
            bar = self._bars.get(record.number)
            if bar is None:
                bar = self._bars[record.number] = self._bar(
                    total=self.max_epochs,
                    desc=f"trial {record.number}",
                    unit="epoch",
                    bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} epochs "
                    "[{elapsed}<{remaining}{postfix}]",
                )
            epochs = _epochs_done(record)
            epochs = int(epochs) if float(epochs).is_integer() else round(epochs, 2)
            val = _last_val_mse(record)
            if val is not None:
                bar.set_postfix_str(f"val_mse={short_value(val)}", refresh=False)
            if epochs != bar.n:
                bar.update(epochs - bar.n)

    def write(self, line: str, finished: int | None = None) -> None:
        """Prints a line (a finished trial's, ``finished`` its number) above the bars."""
        if finished is not None and finished in self._bars:
            self._bars.pop(finished).close()
        if self.tty and (self._bars or self._search_bar is not None):
            from tqdm import tqdm

            tqdm.write(line, file=self.stream)
            self.stream.flush()
        else:
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        """Removes the bars (the search ended or was stopped)."""
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()
        if self._search_bar is not None:
            self._search_bar.close()
            self._search_bar = None
