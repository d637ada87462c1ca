"""Result tables and study charts: the data steps unit-tested, and their plot steps."""

from __future__ import annotations

import math

import optuna
import pandas as pd
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial

from automl_core.analysis import charts, leaderboard
from automl_core.errors import ArtifactMissing
from automl_core.storage import results

DIST = {"filters": CategoricalDistribution([4, 8, 16])}


def _add(study, state, filters=4, val=None, **attrs):
    metrics = {"val_mse": val, "test_psnr": 20.0} if val is not None else {}
    study.add_trial(
        create_trial(
            state=state,
            value=val if state == TrialState.COMPLETE else None,
            params={"filters": filters},
            distributions=DIST,
            user_attrs={"metrics": metrics, **attrs},
        )
    )


@pytest.fixture
def study():
    study = optuna.create_study(study_name="s")
    _add(study, TrialState.COMPLETE, 4, 0.03, artifact_dir="s/0")
    _add(study, TrialState.COMPLETE, 8, 0.01, artifact_dir="s/1")
    _add(study, TrialState.PRUNED, 16, live={"epoch": 1, "val_loss": [0.2]})
    _add(study, TrialState.FAIL, 16, fail_reason="loss became NaN")
    return study


class TestTrialsFrame:
    def test_complete_first_best_first_then_pruned_then_the_rest(self, study):
        frame = results.trials_frame(study)
        assert list(frame["trial"]) == [1, 0, 2, 3]
        assert list(frame["state"]) == ["COMPLETE", "COMPLETE", "PRUNED", "FAIL"]
        assert frame.loc[2, "val_mse"] == 0.2 and frame.loc[2, "note"] == "pruned after epoch 1"
        assert frame.loc[3, "note"] == "loss became NaN" and not frame.loc[3, "has_model"]
        assert math.isnan(frame.loc[3, "val_mse"])

    def test_empty_study_gives_the_columns(self):
        frame = results.trials_frame(optuna.create_study())
        assert frame.empty and list(frame.columns) == results.EMPTY_COLUMNS

    def test_best_trial(self, study):
        assert results.best_trial(study).number == 1
        with pytest.raises(ArtifactMissing, match="no finished trial with a model"):
            results.best_trial(optuna.create_study(study_name="empty"))


class TestLeaderboardTables:
    def test_filters_by_state_text_and_ceiling(self, study):
        frame = results.trials_frame(study)
        assert len(leaderboard.filter_frame(frame, states=["COMPLETE"])) == 2
        assert list(leaderboard.filter_frame(frame, text="Loss Became")["trial"]) == [3]
        assert list(leaderboard.filter_frame(frame, max_val_mse=0.02)["trial"]) == [1]

    def test_summary_headlines(self, study):
        headline = leaderboard.summary(results.trials_frame(study))
        assert headline == {
            "Trials": "4",
            "Finished": "2",
            "Best val MSE": "0.0100",
            "Best PSNR": "20.0 dB",
        }

    def test_display_columns_put_identity_and_metrics_first(self, study):
        frame = results.trials_frame(study)
        columns = leaderboard.display_columns(frame, with_study=False)
        assert columns[:3] == ["trial", "state", "val_mse"] and columns[-2:] == [
            "has_model",
            "note",
        ]
        assert "study" not in columns and "filters" in columns

    def test_studies_frame_merges_and_sorts(self, study):
        other = optuna.create_study(study_name="t")
        _add(other, TrialState.COMPLETE, 4, 0.005, artifact_dir="t/0")
        merged = leaderboard.studies_frame([study, other])
        assert list(zip(merged["study"][:2], merged["trial"][:2], strict=True)) == [
            ("t", 0),
            ("s", 1),
        ]

    def test_live_curves_long_form(self):
        frame = leaderboard.live_curves({"trial": 4, "loss": [0.3, 0.2], "val_loss": [0.4]})
        assert len(frame) == 3 and set(frame["split"]) == {"loss", "val_loss"}


class TestStudyCharts:
    def test_plan_of_a_study_with_varying_parameters(self, study):
        plan = leaderboard.study_chart_plan(study)
        assert plan.charts == (
            "Optimization history",
            "Parallel coordinates",
            "Parameter importances",
            "Slice",
        )
        assert plan.varying == ("filters",) and not plan.multi_objective
        assert plan.notes == (
            "Contour plots need at least 2 parameters that vary; only Filters does.",
        )

    def test_plan_without_finished_trials_says_why(self):
        plan = leaderboard.study_chart_plan(optuna.create_study())
        assert plan.charts == () and "No finished trial yet" in plan.notes[0]

    def test_plan_of_one_trial_leaves_importances_out(self):
        one = optuna.create_study()
        _add(one, TrialState.COMPLETE, 4, 0.1)
        plan = leaderboard.study_chart_plan(one)
        assert plan.charts == ("Optimization history",)
        assert "at least 2 finished trials" in plan.notes[0]
        assert plan.parameters == ("filters",) and plan.varying == ()

    def test_figures_follow_the_plan(self, study):
        plan = leaderboard.study_chart_plan(study)
        figures = charts.study_figures(study, plan)
        assert list(figures) == list(plan.charts)

    def test_loss_curves_figure_draws_one_line_per_trial_and_split(self):
        frame = pd.DataFrame(
            {
                "label": ["#1", "#1", "#2"],
                "epoch": [1, 1, 1],
                "split": ["loss", "val_loss", "val_loss"],
                "value": [0.3, 0.4, 0.5],
            }
        )
        figure = charts.loss_curves_figure(frame)
        assert len(figure.data) == 3
        assert figure.data[0].line.color == charts.PALETTE[0]


class TestStorageVersion:
    def test_stamp_changes_when_a_trial_starts_or_ends(self, runs_dir):
        from automl_core.storage import store, trials

        url = f"sqlite:///{runs_dir / 'v.db'}"
        study = optuna.create_study(study_name="v", storage=store.open_storage(url))
        first = leaderboard.storage_version("v", url)
        assert first[0] == "count"  # no stamp yet: counted
        trial = study.ask()
        assert leaderboard.storage_version("v", url) != first
        trials.touch_study(study)
        stamped = leaderboard.storage_version("v", url)
        assert stamped[0] == "stamp" and leaderboard.storage_version("v", url) == stamped
        study.tell(trial, 0.1)
        trials.touch_study(study)
        assert leaderboard.storage_version("v", url) != stamped

    def test_missing_study(self, runs_dir):
        assert leaderboard.storage_version("nope", f"sqlite:///{runs_dir / 'v.db'}") == (
            "missing",
        )

    def test_a_study_made_elsewhere_is_counted_without_reading_its_trials(
        self, runs_dir, monkeypatch
    ):
        """No stamp (a study not made by our search): one SQL count, not every trial read;
        the count still changes when a trial finishes."""
        from automl_core.storage import store

        url = f"sqlite:///{runs_dir / 'v.db'}"
        study = optuna.create_study(study_name="v", storage=store.open_storage(url))
        study.add_trial(create_trial(value=0.5))
        running = study.ask()
        storage = store.open_storage(url)
        real = type(storage).get_all_trials
        reading = {"allowed": False}

        def guarded(self, *args, **kwargs):
            assert reading["allowed"], "the version read every trial"
            return real(self, *args, **kwargs)

        monkeypatch.setattr(type(storage), "get_all_trials", guarded)
        before = leaderboard.storage_version("v", url)
        assert before[0] == "count"
        reading["allowed"] = True
        study.tell(running, 0.2)
        reading["allowed"] = False
        assert leaderboard.storage_version("v", url) != before


class TestChartSample:
    """Large studies' charts are drawn from a bounded sample (limit ``max_chart_trials``)."""

    def _study(self, n):
        study = optuna.create_study()
        for i in range(n):
            _add(study, TrialState.COMPLETE, [4, 8, 16][i % 3], 0.1 + (i * 7919 % n) / n)
        return study

    def test_at_the_limit_the_study_is_drawn_whole(self, monkeypatch):
        monkeypatch.setenv("AUTOML_MAX_CHART_TRIALS", "30")
        study = self._study(30)
        sample = leaderboard.chart_sample(study)
        assert sample.study is study and sample.history is None and sample.note is None

    def test_above_the_limit_keeps_the_best_half_and_a_spread(self, monkeypatch):
        monkeypatch.setenv("AUTOML_MAX_CHART_TRIALS", "30")
        study = self._study(31 * 3)
        sample = leaderboard.chart_sample(study)
        kept = sorted(t.values[0] for t in sample.study.trials)
        every = sorted(t.values[0] for t in study.trials)
        assert len(kept) == 30 and kept[:15] == every[:15]
        assert len(sample.history) == 93 and "30 of the 93 finished trials" in sample.note
        figures = charts.study_figures(study, leaderboard.study_chart_plan(study), sample)
        assert list(figures) == [
            "Optimization history",
            "Parallel coordinates",
            "Parameter importances",
            "Slice",
        ]
        history = figures["Optimization history"]
        assert len(history.data[0].x) == 93 and min(history.data[1].y) == every[0]

    def test_the_history_alone_makes_no_copy_and_one_read_serves_both(self, monkeypatch):
        monkeypatch.setenv("AUTOML_MAX_CHART_TRIALS", "30")
        study = self._study(93)
        finished = leaderboard.finished_trials(study)
        plan = leaderboard.study_chart_plan(study, finished)
        sample = leaderboard.chart_sample(study, finished)
        only = charts.study_figures(study, plan, sample, only=("Optimization history",))
        assert list(only) == ["Optimization history"]
        assert "study" not in sample.__dict__  # the in-memory copy was not made
        assert len(sample.study.trials) == 30 and "study" in sample.__dict__

    def test_charts_that_need_more_axes_are_named(self):
        charts_all = ("Optimization history", "Parallel coordinates", "Slice", "Contour")
        plan = leaderboard.StudyChartPlan(charts_all, (), varying=("filters", "latent_dim"))
        shown, notes = leaderboard.drawable_charts(plan, ("filters",))
        assert "Contour" not in shown and "Slice" in shown
        assert notes == {"Contour": "Contour plots need 2 or more axes: add one above."}
        shown, notes = leaderboard.drawable_charts(plan, ())
        assert shown == ("Optimization history",)
        assert notes["Slice"] == "Slice needs at least one axis: pick one above."


def test_listing_studies_reads_no_trials(runs_dir, monkeypatch):
    """The sidebar lists studies on every page: that must not read every trial of every
    study (Optuna's study summaries do; at 10,000 trials that took most of a minute)."""
    from automl_core.storage import store

    url = store.default_storage_url()
    for name in ("first", "second"):
        study = optuna.create_study(study_name=name, storage=store.open_storage(url))
        study.add_trial(create_trial(value=1.0))
    storage = store.open_storage(url)

    def no_trials(*args, **kwargs):
        raise AssertionError("listing studies read trials")

    monkeypatch.setattr(type(storage), "get_all_trials", no_trials)
    assert store.study_names(url) == ["first", "second"]
