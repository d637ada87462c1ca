"""The four inspection pages with Streamlit's AppTest, on the tiny study and on bad input."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
import optuna
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent
PAGES = ("filters", "activations", "latent_space", "reconstructions")
TIMEOUT = 120


def _texts(elements) -> str:
    return " | ".join(str(e.value) for e in elements)


@pytest.fixture
def no_demo(monkeypatch, tmp_path):
    """Keeps the bundled demo study out of the storage the test reads."""
    from dashboard import state

    monkeypatch.setattr(state, "DEMO_DIR", tmp_path / "no-demo")


def _page(name: str, study: str = "tiny", trial: int | None = None) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / f"{name}.py"), default_timeout=TIMEOUT)
    at.session_state["study"] = study
    if trial is not None:
        at.session_state["trial"] = trial
    return at.run()


def _ok(at: AppTest) -> None:
    assert not at.exception, at.exception
    assert not at.error, _texts(at.error)


@pytest.mark.parametrize("page", PAGES)
def test_page_alone_on_the_tiny_study(page, tiny_study, no_demo):
    at = _page(page)
    _ok(at)
    assert at.title[0].value == page.replace("_", " ").capitalize()
    assert at.selectbox(key="study").value == "tiny"
    assert at.selectbox(key="trial").value is not None


@pytest.mark.parametrize("page", PAGES)
def test_page_alone_without_any_study(page, runs_dir, no_demo):
    at = AppTest.from_file(str(ROOT / "pages" / f"{page}.py"), default_timeout=TIMEOUT).run()
    assert not at.exception
    assert "No study yet" in _texts(at.info)


class TestFiltersPage:
    def test_decoder_toggle_and_channel_choice(self, tiny_study, no_demo):
        at = _page("filters")
        charts = len(at.get("plotly_chart"))
        at.toggle(key="with_decoder").set_value(True).run()
        _ok(at)
        assert len(at.get("plotly_chart")) > charts
        deep = [s for s in at.selectbox if s.key and s.key.startswith("channel_")]
        if deep:  # a layer reading several channels: pick one channel
            deep[0].set_value(1).run()
            _ok(at)
        keys = {b.proto.id for b in at.get("download_button")}
        assert len(keys) >= 3  # CSV, JSON, parameters


class TestActivationsPage:
    def test_test_image_by_class_and_index(self, tiny_study, no_demo):
        at = _page("activations")
        at.selectbox(key="act_class").select_index(1).run()
        at.number_input(key="act_index").set_value(0).run()
        _ok(at)
        assert {m.label for m in at.metric} == {"PSNR", "SSIM"}
        assert "test image #" in str(at.get("plotly_chart")[0].proto.spec)

    def test_upload_image_and_not_an_image(self, tiny_study, no_demo):
        at = _page("activations")
        at.segmented_control(key="act_source").set_value("Upload").run()
        assert not at.exception and "Upload an image" in _texts(at.info)
        buffer = io.BytesIO()
        Image.fromarray(np.full((40, 30, 3), 200, np.uint8), "RGB").save(buffer, format="PNG")
        at.file_uploader(key="act_upload").upload("big.png", buffer.getvalue(), "image/png").run()
        _ok(at)
        assert {m.label for m in at.metric} == {"PSNR", "SSIM"}
        at.file_uploader(key="act_upload").upload("notes.png", b"not an image", "image/png").run()
        assert not at.exception
        assert "not an image" in _texts(at.error)

    def test_blank_canvas_says_so(self, tiny_study, no_demo):
        at = _page("activations")
        at.segmented_control(key="act_source").set_value("Draw").run()
        assert not at.exception
        assert "canvas is blank" in _texts(at.info)


class TestLatentSpacePage:
    def test_selection_slider_and_interpolation(self, tiny_study, no_demo):
        at = _page("latent_space")
        _ok(at)
        # a chart selection writes the picked indices into these (see _take_selection)
        at.number_input(key="pick_a").set_value(2).run()
        at.number_input(key="pick_b").set_value(5).run()
        _ok(at)
        assert "image #2" in _texts(at.subheader)
        assert "from #2 to #5" in _texts(at.subheader)
        slider = at.slider(key="z_0")
        target = (
            slider.min if slider.value - slider.min > slider.max - slider.value else slider.max
        )
        decoded = at.get("plotly_chart")[-2].proto.spec
        slider.set_value(target).run()
        _ok(at)
        assert at.slider(key="z_0").value == pytest.approx(target, abs=1e-6)
        assert at.get("plotly_chart")[-2].proto.spec != decoded  # decoded again, live
        at.slider(key="steps").set_value(4).run()
        _ok(at)

    def test_selection_in_session_state_picks_points(self, tiny_study, no_demo):
        at = _page("latent_space")
        # what the chart's on_select callback writes after a click + shift-click
        at.session_state["pick_a"] = 7
        at.session_state["pick_b"] = 3
        at.run()
        _ok(at)
        assert at.number_input(key="pick_a").value == 7
        assert "image #7" in _texts(at.subheader)

    @pytest.mark.parametrize("method", ["tsne", "umap"])
    def test_parameters_above_the_point_count_are_clamped_with_a_notice(
        self, method, tiny_study, no_demo
    ):
        at = _page("latent_space")
        at.selectbox(key="method").set_value(method).run()
        if method == "tsne":
            at.slider(key="tsne_perplexity").set_value(60.0).run()
        else:
            at.slider(key="umap_n_neighbors").set_value(100).run()
        _ok(at)
        word = "perplexity=60" if method == "tsne" else "n_neighbors=100"
        assert word in _texts(at.warning)

    def test_probe_and_compare_two_trials(self, tiny_study, no_demo):
        at = _page("latent_space")
        assert "Linear-probe accuracy" in at.metric[0].label
        # accuracy above chance is a difference of percentages: points, not a percentage
        assert "points over chance" in at.metric[0].proto.delta
        other = at.selectbox(key="compare_trial").options[1]
        at.selectbox(key="compare_trial").set_value(int(other.lstrip("#"))).run()
        _ok(at)
        keys = [c.proto.id for c in at.get("plotly_chart")]
        assert len(keys) == len(set(keys)) and len(keys) >= 4


class TestReconstructionsPage:
    def test_sliders_and_compression_curve(self, tiny_study, no_demo):
        at = _page("reconstructions")
        _ok(at)
        at.slider(key="worst_k").set_value(3).run()
        at.slider(key="sample_size").set_value(4).run()
        _ok(at)
        assert len(at.dataframe[0].value) == 3
        assert "Compression curve" in _texts(at.subheader)
        assert not any("No finished trial" in t for t in _texts(at.info).split(" | "))


@pytest.fixture
def tiny_with_failure(tiny_study_home, runs_dir):
    """A copy of the tiny study plus one failed trial (no model)."""
    from automl_core.storage import store

    shutil.copytree(tiny_study_home, runs_dir)
    study = store.load_study("tiny", store.default_storage_url())
    study.set_user_attr(store.ARTIFACT_ROOT_ATTR, str(runs_dir / "artifacts"))
    trial = study.ask()
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    empty = optuna.create_study(storage=store.default_storage_url(), study_name="nothing")
    empty.tell(empty.ask(), state=optuna.trial.TrialState.FAIL)
    return trial.number


@pytest.mark.parametrize("page", PAGES)
def test_failed_trial_in_the_link_offers_finished_ones(page, tiny_with_failure, no_demo):
    at = AppTest.from_file(str(ROOT / "pages" / f"{page}.py"), default_timeout=TIMEOUT)
    at.session_state["study"] = "tiny"
    at.query_params["trial"] = str(tiny_with_failure)
    at.run()
    _ok(at)
    text = _texts(at.warning)
    assert f"Trial {tiny_with_failure} is fail and has no model" in text
    assert "Trials with a model: #" in text


def test_study_without_finished_trials(tiny_with_failure, no_demo):
    at = _page("latent_space", study="nothing")
    assert not at.exception
    assert "no finished trial with a model" in _texts(at.warning)


@pytest.fixture(scope="module")
def unlabelled_home(tmp_path_factory, search_in):
    """A one-trial study on 40 unlabelled RGB 8x8 images from an .npz file."""
    from automl_core.storage.settings import SearchSettings

    home = tmp_path_factory.mktemp("unlabelled")
    x = np.random.default_rng(0).random((40, 8, 8, 3), dtype=np.float32)
    np.savez(home / "plain.npz", x=x)
    space = {"num_conv_layers": [1], "filters": [3], "latent_dim": [4], "batch_size": [16]}
    search_in(
        home,
        SearchSettings(
            study="plain",
            dataset=str(home / "plain.npz"),
            space=space,
            strategy="grid",
            max_epochs=1,
            seed=0,
        ),
    )
    return home


@pytest.fixture
def unlabelled(unlabelled_home, monkeypatch, no_demo):
    monkeypatch.setenv("AUTOML_HOME", str(unlabelled_home))
    monkeypatch.delenv("AUTOML_STORAGE", raising=False)
    return "plain"


def test_unlabelled_latent_space_is_uncoloured_and_probe_hidden(unlabelled):
    at = _page("latent_space", study=unlabelled)
    _ok(at)
    info = _texts(at.info)
    assert "no labels: points are not coloured" in info
    assert "Linear probe hidden" in info
    assert not at.metric


def test_unlabelled_rgb_pages(unlabelled):
    at = _page("filters", study=unlabelled)
    _ok(at)
    assert at.selectbox(key="channel_encoder_conv_1").value == "rgb"
    for page in ("activations", "reconstructions"):
        _ok(_page(page, study=unlabelled))


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.timeout(600)  # a server and a browser
def test_clicking_a_point_in_chromium_picks_that_image(runs_dir, chromium):
    """A real click on the WebGL scatter selects a point (Streamlit's clickmode) and decodes it."""
    import socket
    import subprocess
    import sys
    import time
    from urllib.request import urlopen

    from playwright.sync_api import sync_playwright

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            "app.py",
            "--server.headless",
            "true",
            "--server.port",
            str(port),
            "--server.address",
            "127.0.0.1",
        ],
        cwd=ROOT,
        env={**os.environ, "AUTOML_HOME": str(runs_dir)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                if urlopen(f"{url}/_stcore/health", timeout=2).status == 200:
                    break
            except OSError:
                time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path="/usr/bin/chromium",
                args=[
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                ],
            )
            page = browser.new_page(viewport={"width": 1400, "height": 1600})
            page.goto(url, wait_until="networkidle")
            page.get_by_role("link", name="Latent space", exact=True).click()
            heading = page.get_by_text("Decode by hand: image #0")
            heading.wait_for(timeout=90_000)
            point = page.evaluate("""() => {
                const gd = document.querySelector('.js-plotly-plot');
                const t = gd._fullData[3], xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
                const r = gd.getBoundingClientRect();
                return {x: r.left + xa._offset + xa.d2p(t.x[5]),
                        y: r.top + ya._offset + ya.d2p(t.y[5]), index: t.customdata[5][0]}; }""")
            page.mouse.move(point["x"], point["y"])
            page.mouse.click(point["x"], point["y"])
            page.get_by_text(f"Decode by hand: image #{int(point['index'])}").wait_for(
                timeout=60_000
            )
            assert page.locator('[data-testid="stException"]').count() == 0
            browser.close()
    finally:
        os.killpg(process.pid, 15)
        process.wait(timeout=20)
