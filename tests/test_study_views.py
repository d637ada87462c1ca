"""Study views a reader can use: charts over the parameters that vary (parallel coordinates,
importances, slice, contour, the Pareto set), readable labels, the settings picked trials
differ in, notes on trials (role-checked in the core, a named length limit), and the HTML
report's tables and latent colours."""

from __future__ import annotations

import itertools
import json
import re
import shutil
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial
from streamlit.testing.v1 import AppTest

from automl_core import limits
from automl_core.analysis import charts, export, leaderboard
from automl_core.errors import ConfigError, PermissionDenied
from automl_core.hosting import access
from automl_core.model.space import PARAMETERS
from automl_core.storage import results, store, trials

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 90
VARYING = {"num_conv_layers": [1, 2, 3], "latent_dim": [4, 8], "activation": ["relu", "elu"]}
LABELS = {"num_conv_layers": "Conv layers", "latent_dim": "Latent dim", "activation": "Activation"}


def _study(n: int = 12, directions=("minimize",), name: str = "views", storage=None):
    """A study whose trials hold every parameter of the table, three of them varying."""
    distributions = {
        name: CategoricalDistribution(VARYING.get(name, [spec.default]))
        for name, spec in PARAMETERS.items()
    }
    study = optuna.create_study(directions=list(directions), study_name=name, storage=storage)
    grid = list(itertools.product(*VARYING.values()))
    for i in range(n):
        params = {name: spec.default for name, spec in PARAMETERS.items()}
        params.update(zip(VARYING, grid[i % len(grid)], strict=True))
        mse = 0.01 * params["num_conv_layers"] + (0.003 if params["activation"] == "elu" else 0)
        mse += 0.0001 * i
        values = [mse, params["latent_dim"] * 1.0 + i % 3][: len(directions)]
        study.add_trial(
            create_trial(
                state=TrialState.COMPLETE,
                params=params,
                distributions=distributions,
                values=values,
                user_attrs={"config": params, "metrics": {"val_mse": mse, "test_psnr": 20.0}},
            )
        )
    return study


def _parallel_axes(figure) -> set[str]:
    return set(figure.layout.xaxis.ticktext)


class TestChartsOverVaryingParameters:
    def test_plan_knows_every_parameter_and_those_that_vary(self):
        plan = leaderboard.study_chart_plan(_study())
        assert set(plan.varying) == set(VARYING) and len(plan.parameters) == len(PARAMETERS)
        assert "Slice" in plan.charts and "Contour" in plan.charts

    def test_axes_are_the_varying_parameters_with_display_names(self):
        study = _study()
        figures = charts.study_figures(study, leaderboard.study_chart_plan(study))
        assert _parallel_axes(figures["Parallel coordinates"]) == {"val MSE", *LABELS.values()}
        hover = {row[0] for row in figures["Parallel coordinates"].data[0].customdata}
        assert hover == {"val MSE", *LABELS.values()}
        slice_titles = {
            figures["Slice"].layout[k].title.text
            for k in figures["Slice"].layout
            if k.startswith("xaxis")
        }
        assert slice_titles == set(LABELS.values())
        contour_titles = {
            figures["Contour"].layout[k].title.text
            for k in figures["Contour"].layout
            if k.startswith(("xaxis", "yaxis"))
        } - {None}
        assert contour_titles == set(LABELS.values())

    def test_the_value_axis_has_room_for_its_numbers(self):
        study = _study()
        figure = charts.study_figures(study, leaderboard.study_chart_plan(study))[
            "Parallel coordinates"
        ]
        assert figure.layout.margin.l >= 60  # Optuna writes the ticks left of the first axis
        first_axis = [a.text for a in figure.layout.annotations if a.x == 0]
        assert first_axis and all(re.fullmatch(r"0\.0\d+", t) for t in first_axis), first_axis

    def test_a_reader_adds_and_removes_axes(self):
        study = _study()
        plan = leaderboard.study_chart_plan(study)
        figures = charts.study_figures(
            study, plan, params=("latent_dim", "kernel_size", "not_a_parameter")
        )
        assert _parallel_axes(figures["Parallel coordinates"]) == {
            "val MSE",
            "Latent dim",
            "Kernel size",
        }
        one = charts.study_figures(study, plan, params=("latent_dim",))
        assert "Contour" not in one and "Slice" in one
        none = charts.study_figures(study, plan, params=())
        assert list(none) == ["Optimization history"]

    def test_importances_top_n_labelled_zero_dropped_and_sized(self):
        study = _study()
        constant = [n for n in PARAMETERS if n not in VARYING][:6]
        info = leaderboard.parameter_importances(study, [*VARYING, *constant], top=2)
        assert len(info.labels) <= 2 and set(info.labels) <= set(LABELS.values())
        assert all(v >= leaderboard.IMPORTANCE_FLOOR for v in info.values)
        assert len(info.zero) >= len(constant) and "no measurable importance" in info.note
        figure = charts.importances_figure(info, "val MSE")
        assert figure.layout.height == max(200, 34 * len(info.values) + 120)
        assert "Left out" in figure.layout.title.subtitle.text
        assert list(figure.data[0].y) == list(info.labels)

    def test_contour_draws_at_most_four_parameters_and_says_so(self):
        study = _study()
        plan = leaderboard.study_chart_plan(study)
        axes = (*VARYING, "kernel_size", "filters")
        figure = charts.study_figures(study, plan, params=axes)["Contour"]
        assert "not drawn: Filters" in figure.layout.title.subtitle.text

    def test_pareto_set_table_of_a_multi_objective_study(self):
        study = _study(directions=("minimize", "maximize"))
        plan = leaderboard.study_chart_plan(study)
        frame = leaderboard.pareto_frame(study, plan)
        assert list(frame.columns[:3]) == ["Trial", "val MSE", "objective 2"]
        assert set(frame.columns[3:]) == set(LABELS.values())
        assert set(frame["Trial"]) == {t.number for t in study.best_trials}
        assert leaderboard.pareto_frame(_study(), leaderboard.study_chart_plan(_study())).empty


class TestTables:
    def test_varying_parameters_come_before_shared_ones(self):
        frame = results.trials_frame(_study())
        columns = leaderboard.display_columns(frame, with_study=False)
        assert "user_note" not in columns  # nobody wrote a note: no empty column
        first_params = columns[columns.index("pca_psnr") + 1 :][: len(VARYING)]
        assert set(first_params) == set(VARYING)
        frame.loc[frame["trial"] == 3, "user_note"] = "a note"
        columns = leaderboard.display_columns(frame, with_study=False)
        assert columns.index("user_note") == columns.index("pca_psnr") + 1
        assert leaderboard.column_label("num_conv_layers") == "Conv layers"
        assert leaderboard.column_label("vs_pca_db") == "vs PCA (dB)"

    def test_settings_diff_shows_only_what_differs(self):
        frame = results.trials_frame(_study())
        diff = leaderboard.settings_diff(frame, [("views", 0), ("views", 1)])
        assert list(diff.columns) == ["Setting", "#0", "#1"]
        assert set(diff["Setting"]) <= set(LABELS.values()) and not diff.empty
        for row in diff.itertuples(index=False):
            assert row[1] != row[2]
        same = leaderboard.settings_diff(frame, [("views", 0), ("views", 0)])
        assert same.empty and list(same.columns) == ["Setting", "#0"]


@pytest.fixture
def noted(runs_dir, monkeypatch):
    """A stored study to write notes on, in local mode."""
    monkeypatch.delenv("AUTOML_MODE", raising=False)
    monkeypatch.setenv("AUTOML_SECRETS", str(runs_dir / "no-secrets.toml"))
    url = f"sqlite:///{runs_dir / 'notes.db'}"
    runs_dir.mkdir(parents=True, exist_ok=True)
    return _study(4, storage=store.open_storage(url))


class TestNotes:
    def test_local_admin_writes_a_plain_text_note(self, noted):
        text = "  <b>blurry</b> on 7s\x00\r\nsee #3  "
        stored = leaderboard.annotate_trial(noted, 2, text)
        assert stored == "<b>blurry</b> on 7s\nsee #3"
        frame = results.trials_frame(noted)
        assert frame.set_index("trial").loc[2, "user_note"] == stored
        assert frame.set_index("trial").loc[1, "user_note"] == ""
        assert trials.trial_notes(noted.user_attrs) == {2: stored}

    def test_a_note_changes_the_leaderboard_version(self, noted, runs_dir):
        url = f"sqlite:///{runs_dir / 'notes.db'}"
        before = leaderboard.storage_version("views", url)
        leaderboard.annotate_trial(noted, 0, "first")
        assert leaderboard.storage_version("views", url) != before

    def test_an_empty_note_removes_it(self, noted):
        leaderboard.annotate_trial(noted, 1, "x")
        leaderboard.annotate_trial(noted, 1, "   ")
        assert trials.trial_notes(noted.user_attrs) == {}

    def test_viewer_is_refused_in_shared_mode_by_the_core(self, noted, monkeypatch):
        monkeypatch.setenv("AUTOML_MODE", "shared")
        with pytest.raises(PermissionDenied, match="may not annotate: it needs the operator"):
            leaderboard.annotate_trial(noted, 0, "mine", actor=access.VISITOR)
        with pytest.raises(PermissionDenied, match="needs the acting user"):
            leaderboard.annotate_trial(noted, 0, "mine")
        assert trials.trial_notes(noted.user_attrs) == {}

    def test_operator_and_admin_write_in_shared_mode(self, noted, monkeypatch):
        monkeypatch.setenv("AUTOML_MODE", "shared")
        leaderboard.annotate_trial(noted, 0, "by alice", actor=access.User("alice", "operator"))
        leaderboard.annotate_trial(noted, 1, "by root", actor=access.User("root", "admin"))
        assert trials.trial_notes(noted.user_attrs) == {0: "by alice", 1: "by root"}

    def test_at_the_limit_and_one_over(self, noted, monkeypatch):
        limit = limits.get("max_note_length")
        assert limit == limits.LIMITS["max_note_length"].default == 2_000
        assert leaderboard.annotate_trial(noted, 0, "n" * limit) == "n" * limit
        with pytest.raises(ConfigError, match=r"2,001 characters.*max_note_length"):
            leaderboard.annotate_trial(noted, 0, "n" * (limit + 1))
        assert trials.trial_notes(noted.user_attrs)[0] == "n" * limit
        monkeypatch.setenv("AUTOML_MAX_NOTE_LENGTH", "5")
        assert leaderboard.annotate_trial(noted, 0, "12345") == "12345"
        with pytest.raises(ConfigError, match="AUTOML_MAX_NOTE_LENGTH"):
            leaderboard.annotate_trial(noted, 0, "123456")

    def test_bad_input(self, noted):
        with pytest.raises(ConfigError, match="has no trial 9"):
            leaderboard.annotate_trial(noted, 9, "x")
        with pytest.raises(ConfigError, match="a note must be text"):
            leaderboard.annotate_trial(noted, 0, 5)


# --- the Leaderboard page -------------------------------------------------------------------


@pytest.fixture
def tiny_copy(tiny_study_home, runs_dir, monkeypatch):
    """A writable copy of the tiny study (num_conv_layers and latent_dim vary), local mode."""
    monkeypatch.delenv("AUTOML_MODE", raising=False)
    monkeypatch.setenv("AUTOML_SECRETS", str(runs_dir / "no-secrets.toml"))
    shutil.copytree(tiny_study_home, runs_dir)
    study = store.load_study("tiny", store.default_storage_url())
    study.set_user_attr(store.ARTIFACT_ROOT_ATTR, str(runs_dir / "artifacts"))
    return runs_dir


def _board(user: access.User | None = None) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / "leaderboard.py"), default_timeout=TIMEOUT)
    if user is not None:
        at.session_state["_access_user"] = user
    at.run()
    at.selectbox(key="study").set_value("tiny").run()
    return at


def _spec(at: AppTest, title: str) -> dict:
    for chart in at.get("plotly_chart"):
        spec = json.loads(chart.proto.spec)
        text = (spec["layout"].get("title") or {}).get("text", "")
        if text.startswith(title):
            return spec
    raise AssertionError(f"no chart titled {title!r}")


def _chart_titles(at: AppTest) -> list[str]:
    """The study charts drawn on the page (their titles' first words)."""
    titles = []
    for chart in at.get("plotly_chart"):
        if chart.proto.id and "chart_" not in chart.proto.id:
            continue
        text = (json.loads(chart.proto.spec)["layout"].get("title") or {}).get("text", "")
        titles.append(text)
    known = ("Optimization history", "Parallel coordinates", "Parameter importances", "Slice")
    return [
        next((k for k in (*known, "Contour") if t.lower().startswith(k.lower())), t)
        for t in titles
    ]


def _open_tab(at: AppTest, title: str) -> None:
    """Opens a chart tab as a reader's click does (the tabs' key holds the open one)."""
    at.session_state["chart_tab_tiny"] = title
    at.run()
    assert not at.exception


def _frames(at: AppTest) -> list[pd.DataFrame]:
    return [d.value for d in at.dataframe]


class TestLeaderboardPage:
    def test_charts_over_the_varying_parameters_in_tabs(self, tiny_copy):
        at = _board()
        assert not at.exception and not at.error
        tabs = {t.label for t in at.tabs}
        assert {"Parallel coordinates", "Parameter importances", "Slice", "Contour"} <= tabs
        # only the open tab is drawn: the history at first, then the tab a reader opens
        assert _chart_titles(at) == ["Optimization history"]
        _open_tab(at, "Parallel coordinates")
        assert _chart_titles(at) == ["Parallel coordinates"]
        axes = at.multiselect(key="chart_axes_tiny")
        assert set(axes.value) == {"num_conv_layers", "latent_dim"}
        ticks = _spec(at, "Parallel coordinates")["layout"]["xaxis"]["ticktext"]
        assert set(ticks) == {"val MSE", "Conv layers", "Latent dim"}
        axes.set_value(["latent_dim"]).run()
        assert not at.exception
        assert "Contour" in {t.label for t in at.tabs}  # the tabs stay; the open one too
        assert _chart_titles(at) == ["Parallel coordinates"]
        _open_tab(at, "Contour")
        assert _chart_titles(at) == []
        assert "Contour plots need 2 or more axes: add one above." in [c.value for c in at.caption]
        _open_tab(at, "Parallel coordinates")
        at.multiselect(key="chart_axes_tiny").set_value(["latent_dim", "filters"]).run()
        assert _chart_titles(at) == ["Parallel coordinates"]
        ticks = _spec(at, "Parallel coordinates")["layout"]["xaxis"]["ticktext"]
        assert set(ticks) == {"val MSE", "Latent dim", "Filters"}

    def test_the_table_and_the_charts_read_the_trials_once(self, tiny_copy, monkeypatch):
        from automl_core.storage import bulk_read

        reads = []
        real = bulk_read.read_bulk

        def counted(study):
            reads.append(study.study_name)
            return real(study)

        monkeypatch.setattr(bulk_read, "read_bulk", counted)
        at = AppTest.from_file(str(ROOT / "pages" / "leaderboard.py"), default_timeout=TIMEOUT)
        at.query_params["study"] = "tiny"
        at.run()
        assert not at.exception
        assert reads == ["tiny"]  # the table, the plan and the history from one read
        _open_tab(at, "Parallel coordinates")
        assert reads == ["tiny"]

    def test_the_pareto_set_tab_of_a_multi_objective_study(self, runs_dir, monkeypatch):
        monkeypatch.setenv("AUTOML_SECRETS", str(runs_dir / "no-secrets.toml"))
        runs_dir.mkdir(parents=True)
        url = store.default_storage_url()
        study = _study(directions=("minimize", "maximize"), name="two", storage=url)
        at = AppTest.from_file(str(ROOT / "pages" / "leaderboard.py"), default_timeout=TIMEOUT)
        at.run()
        at.selectbox(key="study").set_value("two").run()
        assert "Pareto set" in {t.label for t in at.tabs}
        at.session_state["chart_tab_two"] = "Pareto set"
        at.run()
        assert not at.exception and not at.error
        pareto = [f for f in _frames(at) if "val MSE" in f.columns]
        assert len(pareto) == 1
        assert set(pareto[0]["Trial"]) == {t.number for t in study.best_trials}

    def test_table_headers_are_display_names(self, tiny_copy):
        from dashboard.state import BOARD_COLUMNS

        at = _board()
        frame = _frames(at)[0]
        for name in ("num_conv_layers", "latent_dim", "filters", "vs_pca_db"):
            assert name in frame.columns
        assert BOARD_COLUMNS["num_conv_layers"]["label"] == "Conv layers"
        assert BOARD_COLUMNS["vs_pca_db"]["label"] == "vs PCA (dB)"
        assert all(BOARD_COLUMNS[n]["label"] == s.label for n, s in PARAMETERS.items())
        shown = json.loads(at.dataframe[0].proto.columns)
        assert shown["num_conv_layers"]["label"] == "Conv layers"

    def test_settings_that_differ_between_picked_trials(self, tiny_copy):
        at = _board()
        at.multiselect(key="compare").set_value(["tiny #0", "tiny #3"]).run()
        assert not at.exception
        diffs = [f for f in _frames(at) if "Setting" in f.columns]
        assert len(diffs) == 1
        diff = diffs[0]
        assert list(diff.columns) == ["Setting", "#0", "#3"]
        assert set(diff["Setting"]) <= {"Conv layers", "Latent dim"} and len(diff) >= 1
        assert all(row[1] != row[2] for row in diff.itertuples(index=False))

    def test_a_note_written_on_a_picked_trial_shows_in_the_table(self, tiny_copy):
        at = _board()
        at.multiselect(key="compare").set_value(["tiny #1"]).run()
        at.text_area(key="note_tiny_1").set_value("<i>sharpest</i> edges").run()
        at.button(key="save_note").click().run()
        assert not at.exception and "Note on tiny #1 saved" in at.success[0].value
        board = _frames(at)[0].set_index("trial")
        assert board.loc[1, "user_note"] == "<i>sharpest</i> edges"

    def test_a_viewer_reads_notes_but_cannot_write(self, tiny_copy, monkeypatch):
        leaderboard.annotate_trial(store.load_study("tiny", store.default_storage_url()), 1, "n")
        monkeypatch.setenv("AUTOML_MODE", "shared")
        at = _board()
        at.multiselect(key="compare").set_value(["tiny #1"]).run()
        assert at.text_area(key="note_tiny_1").disabled and at.button(key="save_note").disabled
        assert at.text_area(key="note_tiny_1").value == "n"
        assert "Log in as an operator" in " ".join(c.value for c in at.caption)

    def test_an_operator_writes_and_an_over_long_note_is_refused(self, tiny_copy, monkeypatch):
        monkeypatch.setenv("AUTOML_MODE", "shared")
        monkeypatch.setenv("AUTOML_MAX_NOTE_LENGTH", "10")
        at = _board(access.User("alice", "operator"))
        at.multiselect(key="compare").set_value(["tiny #2"]).run()
        area = at.text_area(key="note_tiny_2")
        assert area.max_chars == 10 and not area.disabled  # the widget stops at the limit too
        area.set_value("x" * 10).run()
        at.button(key="save_note").click().run()
        assert not at.error and _frames(at)[0].set_index("trial").loc[2, "user_note"] == "x" * 10
        # a request past the widget (or a limit lowered meanwhile) meets the core's check
        monkeypatch.setenv("AUTOML_MAX_NOTE_LENGTH", "5")
        at.button(key="save_note").click().run()
        assert not at.exception and "max_note_length" in at.error[0].value
        assert _frames(at)[0].set_index("trial").loc[2, "user_note"] == "x" * 10


# --- the HTML report ------------------------------------------------------------------------


def _figures(page: str) -> list[dict]:
    """Every Plotly figure of an HTML page: its data and layout."""
    found, decoder = [], json.JSONDecoder()
    for match in re.finditer(r'Plotly\.newPlot\(\s*"[^"]+",\s*', page):
        data, end = decoder.raw_decode(page, match.end())
        rest = re.match(r"\s*,\s*", page[end:])
        layout, _ = decoder.raw_decode(page, end + rest.end())
        found.append({"data": data, "layout": layout})
    return found


@pytest.fixture(scope="module")
def report(tiny_study_home):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AUTOML_HOME", str(tiny_study_home))
        study = store.load_study("tiny", f"sqlite:///{tiny_study_home / 'studies.db'}")
        return export.study_report(study)


class TestReport:
    def test_latent_scatter_colours_are_explicit_per_class(self, report):
        latent = [
            f
            for f in _figures(report)
            if f["layout"].get("title", {}).get("text", "") == "Latent (PCA)"
        ]
        assert len(latent) == 1
        classes = [t for t in latent[0]["data"] if t["name"] != "selected"]
        colours = [t["marker"].get("color") for t in classes]
        assert len(classes) >= 2 and all(isinstance(c, str) and c for c in colours)
        assert len(set(colours)) == len(colours)  # one colour per class
        assert not {c.lower() for c in colours} & {"black", "#000", "#000000"}

    def test_no_figure_keeps_the_dashboard_themes_placeholder_colours(self, tiny_study_home):
        """Streamlit's Plotly template (default once streamlit is imported, as on the Export
        page) colours by placeholders (#000001...) only the dashboard's theme replaces."""
        import plotly.io as pio
        import streamlit  # noqa: F401

        assert pio.templates.default == "streamlit"
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("AUTOML_HOME", str(tiny_study_home))
            study = store.load_study("tiny", f"sqlite:///{tiny_study_home / 'studies.db'}")
            page = export.study_report(study)
        assert "#000001" not in page
        for figure in _figures(page):
            assert "#000001" not in json.dumps(figure["layout"].get("template", {}))

    def test_leaderboard_table_metrics_first_varying_parameters_only(self, report):
        table = re.search(r'<div class="table-wrap"><table.*?</table>', report, re.S).group(0)
        headers = re.findall(r"<th>(.*?)</th>", table)
        assert headers[:4] == ["Trial", "State", "Val MSE", "PSNR (dB)"]
        assert "vs PCA (dB)" in headers
        assert {"Conv layers", "Latent dim"} <= set(headers)
        assert headers.index("Conv layers") > headers.index("Epochs")
        for constant in ("Filters", "Activation", "Batch size", "Kernel size", "Optimizer"):
            assert constant not in headers
        assert len(headers) <= 16
        assert "max-width:1200px" in report and "overflow-x:auto" in report

    def test_the_same_study_charts_as_the_page(self, report):
        for title in ("Parallel coordinates", "Parameter importances", "Slice", "Contour"):
            assert f"<h2>{title}</h2>" in report
        parallel = [
            f
            for f in _figures(report)
            if f["layout"].get("title", {}).get("text", "").startswith("Parallel coordinates")
        ]
        assert set(parallel[0]["layout"]["xaxis"]["ticktext"]) == {
            "val MSE",
            "Conv layers",
            "Latent dim",
        }
