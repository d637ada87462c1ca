"""The dashboard's own pages with Streamlit's AppTest: through app.py and each file alone."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 90


def _run(path: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / path), default_timeout=TIMEOUT)
    return at.run()


def _texts(elements) -> str:
    return " | ".join(str(e.value) for e in elements)


def _tiny_form(at: AppTest, study: str) -> AppTest:
    """Fills the Search sidebar with a tiny search: digits, 2 trials of 1 epoch, 120 images."""
    at.selectbox(key="dataset").set_value("digits")
    # a rerun of its own, as in a browser: a change of strategy kind resets the space
    at.selectbox(key="strategy").set_value("grid").run()
    for name, value in {
        "num_conv_layers": [1],
        "filters": [4],
        "activation": ["relu"],
        "latent_dim": [4, 8],
        "batch_size": [32],
    }.items():
        at.multiselect(key=f"param_{name}").set_value(value)
    at.number_input(key="trials").set_value(2)
    at.number_input(key="max_epochs").set_value(1)
    at.number_input(key="max_images").set_value(120)
    at.text_input(key="study_name").set_value(study)
    return at.run()


class TestApp:
    def test_router_opens_the_overview_of_the_demo_study(self, runs_dir):
        at = _run("app.py")
        assert not at.exception
        assert at.title[0].value == "Autoencoder AutoML"
        assert at.selectbox(key="study").value == "demo-mnist-5k"
        assert {m.label for m in at.metric} >= {"Trials", "Best val MSE"}
        assert any(s.value.startswith("Best trial: #") for s in at.subheader)
        assert len(at.get("image")) == 2  # originals and reconstructions

    def test_overview_alone_and_without_a_study(self, runs_dir, monkeypatch):
        from dashboard import state

        monkeypatch.setattr(state, "DEMO_DIR", runs_dir / "no-demo")
        at = _run("pages/overview.py")
        assert not at.exception and at.title[0].value == "Autoencoder AutoML"
        assert "No study yet" in _texts(at.sidebar.info)

    def test_router_lists_only_pages_that_exist(self, runs_dir):
        source = (ROOT / "app.py").read_text()
        for page in ("filters", "activations", "latent_space", "reconstructions"):
            assert f"pages/{page}.py" in source
        assert "exists()" in source

    def test_router_can_switch_to_the_leaderboard(self, runs_dir):
        at = _run("app.py")
        at.switch_page(str(ROOT / "pages" / "leaderboard.py")).run()
        assert not at.exception
        assert at.title[0].value == "Leaderboard"
        assert at.selectbox(key="study").value == "demo-mnist-5k"


class TestSearchPage:
    def test_suggested_study_name_follows_dataset_and_strategy(self, runs_dir):
        at = _run("pages/search.py")
        assert at.text_input(key="study_name").value.startswith("mnist-5k-tpe-cost-")
        at.selectbox(key="dataset").set_value("digits").run()
        at.selectbox(key="strategy").set_value("tpe").run()
        assert at.text_input(key="study_name").value.startswith("digits-tpe-")
        assert not at.text_input(key="study_name").value.startswith("digits-tpe-cost-")
        at.selectbox(key="strategy").set_value("tpe-cost").run()
        assert at.text_input(key="study_name").value.startswith("digits-tpe-cost-")
        at.text_input(key="study_name").set_value("mine").run()
        at.selectbox(key="strategy").set_value("random").run()
        assert at.text_input(key="study_name").value == "mine"

    def test_default_form_shows_grid_size_and_enables_launch(self, runs_dir):
        at = _run("pages/search.py")
        assert not at.exception and not at.error
        # the default strategy starts from the roomier search space, grid from the seeds' grid
        assert at.metric[0].label == "Distinct configurations" and at.metric[0].value == "2,592"
        assert not at.button(key="launch").disabled
        at.selectbox(key="strategy").set_value("grid").run()
        assert at.metric[0].label == "Grid configurations" and at.metric[0].value == "16"
        assert at.multiselect(key="param_linear_path").value == [False]
        at.selectbox(key="strategy").set_value("tpe").run()
        assert at.metric[0].value == "2,592"
        assert at.multiselect(key="param_linear_path").value == [False, True]

    def test_edits_survive_a_change_within_one_kind_of_strategy(self, runs_dir):
        at = _run("pages/search.py")
        at.multiselect(key="param_filters").set_value([16]).run()
        at.selectbox(key="strategy").set_value("random").run()
        assert at.multiselect(key="param_filters").value == [16]
        assert not at.exception and not at.warning

    def test_range_parameter_has_no_grid_size(self, runs_dir):
        at = _run("pages/search.py")
        at.toggle(key="range_learning_rate").set_value(True).run()
        at.selectbox(key="strategy").set_value("random").run()
        assert not at.exception and not at.error
        assert at.metric[0].value == "—"

    def test_empty_parameter_selection_names_it_and_disables_launch(self, runs_dir):
        at = _run("pages/search.py")
        at.multiselect(key="param_filters").set_value([]).run()
        assert not at.exception
        assert "filters" in _texts(at.error)
        assert at.button(key="launch").disabled

    @pytest.mark.parametrize("name", ["<b>x</b>", "../../etc", "a/b", "with space"])
    def test_bad_study_name_is_refused(self, runs_dir, name):
        at = _run("pages/search.py")
        at.text_input(key="study_name").set_value(name).run()
        assert not at.exception
        assert "invalid study name" in _texts(at.error)
        assert at.button(key="launch").disabled

    def test_grid_with_a_range_is_refused_with_the_core_message(self, runs_dir):
        at = _run("pages/search.py")
        at.selectbox(key="strategy").set_value("grid")
        at.toggle(key="range_latent_dim").set_value(True).run()
        at.button(key="launch").click().run()
        assert not at.exception
        assert "grid search needs a list of choices" in _texts(at.error)

    def test_launch_is_refused_while_the_same_study_runs(self, runs_dir):
        from automl_core.hosting import processes

        sleeper = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(60)", "automl_core"],
            start_new_session=True,
        )
        try:
            processes.launches_dir().mkdir(parents=True)
            (processes.launches_dir() / "busy.json").write_text(
                json.dumps(
                    {
                        "study": "busy",
                        "pid": sleeper.pid,
                        "started": time.time(),
                        "log": str(processes.launches_dir() / "busy.log"),
                    }
                )
            )
            at = _tiny_form(_run("pages/search.py"), "busy")
            at.button(key="launch").click().run()
            assert not at.exception
            assert "already running" in _texts(at.error)
        finally:
            sleeper.kill()
            sleeper.wait()

    def test_upload_helper_refuses_bad_files_with_the_core_message(self, runs_dir):
        def page():
            import io
            import zipfile

            import numpy as np

            from dashboard import search_form

            text_zip = io.BytesIO()
            with zipfile.ZipFile(text_zip, "w") as archive:
                archive.writestr("a.txt", "hello")
            search_form.upload_ui("text.zip", text_zip.getvalue())
            pickled = io.BytesIO()
            np.savez(pickled, x=np.array([object(), None], dtype=object))
            search_form.upload_ui("pickled.npz", pickled.getvalue())
            search_form.upload_ui("huge.npz", b"0" * (51 * 2**20))

        at = AppTest.from_function(page, default_timeout=TIMEOUT).run()
        assert not at.exception
        errors = _texts(at.sidebar.error)
        assert "no images found" in errors
        assert "pickled" in errors
        assert "MiB allowed" in errors

    @pytest.mark.slow
    @pytest.mark.timeout(600)  # a whole search launched as its own process
    def test_tiny_search_from_the_page_reaches_the_leaderboard(self, runs_dir):
        from automl_core.hosting import processes
        from automl_core.storage import store

        at = _tiny_form(_run("pages/search.py"), "page-tiny")
        assert at.metric[0].value == "2"
        at.button(key="launch").click().run()
        assert not at.exception and not at.error
        assert processes.read_record("page-tiny") is not None
        url = store.default_storage_url()
        deadline = time.time() + 150
        complete = []
        while time.time() < deadline and processes.is_running("page-tiny"):
            time.sleep(1.0)
        if "page-tiny" in store.study_names(url):
            study = optuna.load_study(study_name="page-tiny", storage=store.open_storage(url))
            complete = [t for t in study.trials if t.state.name == "COMPLETE"]
        assert len(complete) == 2, processes.log_tail("page-tiny", 40)
        at.run()
        assert not at.exception
        assert "Search finished with 2 trials" in _texts(at.success)
        board = _run("pages/leaderboard.py")
        board.selectbox(key="study").set_value("page-tiny").run()
        assert not board.exception
        frame = board.dataframe[0].value
        assert sorted(frame["trial"]) == [0, 1] and set(frame["state"]) == {"COMPLETE"}


class TestLeaderboardPage:
    def test_demo_study_on_a_fresh_install(self, runs_dir):
        at = _run("pages/leaderboard.py")
        assert not at.exception and not at.error
        assert at.selectbox(key="study").value == "demo-mnist-5k"
        frame = at.dataframe[0].value
        assert len(frame) >= 6 and set(frame["state"]) == {"COMPLETE"}
        assert [m.label for m in at.metric] == ["Trials", "Finished", "Best val MSE", "Best PSNR"]
        assert {"Optimization history", "Parameter importances"} <= {t.label for t in at.tabs}
        assert at.get("download_button")

    def test_filters_narrow_the_table(self, tiny_copy):
        at = _run("pages/leaderboard.py")
        at.selectbox(key="study").set_value("tiny").run()
        assert len(at.dataframe[0].value) == 4
        at.text_input(key="filter_text").set_value("latent_dim").run()  # a column name: no row
        assert len(at.dataframe[0].value) == 0
        at.text_input(key="filter_text").set_value("").run()
        at.multiselect(key="states").set_value([]).run()
        assert not at.exception and len(at.dataframe[0].value) == 4

    def test_compare_two_trials(self, tiny_copy):
        at = _run("pages/leaderboard.py")
        at.selectbox(key="study").set_value("tiny").run()
        at.multiselect(key="compare").set_value(["tiny #0", "tiny #1"]).run()
        assert not at.exception and not at.warning
        assert any(c.proto.spec and "loss" in c.proto.spec for c in at.get("plotly_chart"))
        assert len(at.get("image")) == 3  # originals + two reconstructions

    def test_several_studies_on_one_table(self, tiny_copy):
        from automl_core.storage import store
        from dashboard.state import DEMO_DIR, DEMO_STUDY

        store.install_study(
            f"sqlite:///{DEMO_DIR / 'studies.db'}", DEMO_DIR / "artifacts", DEMO_STUDY
        )
        at = _run("pages/leaderboard.py")
        at.selectbox(key="study").set_value("tiny").run()
        at.multiselect(key="extra_studies").set_value(["demo-mnist-5k"]).run()
        assert not at.exception
        assert set(at.dataframe[0].value["study"]) == {"tiny", "demo-mnist-5k"}

    def test_missing_model_file_is_reported(self, tiny_copy):
        from automl_core.storage import store

        study = store.load_study("tiny", store.default_storage_url())
        folder = store.trial_artifact_dir(study, study.trials[0])
        (folder / "model.keras").unlink()
        at = _run("pages/leaderboard.py")
        at.selectbox(key="study").set_value("tiny").run()
        at.multiselect(key="compare").set_value(["tiny #0", "tiny #1"]).run()
        assert not at.exception
        assert "missing" in _texts(at.warning)
        assert len(at.get("image")) == 2  # originals + the trial whose model is there
