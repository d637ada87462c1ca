"""The applications on the pages: anomaly scores, denoising side by side, VAE samples."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from automl_core.storage.settings import SearchSettings

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 120


@pytest.fixture(scope="module")
def objectives_home(tmp_path_factory, search_in):
    """Two one-trial studies on ``digits``: a denoising model and a variational one."""
    home = tmp_path_factory.mktemp("objectives_runs")
    for name, objective in (("denoise", "denoising"), ("vae", "variational")):
        space = {
            "num_conv_layers": [1],
            "filters": [4],
            "latent_dim": [8],
            "batch_size": [32],
            "objective": [objective],
        }
        search_in(
            home,
            SearchSettings(
                study=name,
                dataset="digits",
                space=space,
                strategy="grid",
                max_epochs=1,
                max_images=120,
            ),
        )
    return home


@pytest.fixture
def objectives(objectives_home, monkeypatch, tmp_path):
    from dashboard import state

    monkeypatch.setenv("AUTOML_HOME", str(objectives_home))
    monkeypatch.delenv("AUTOML_STORAGE", raising=False)
    monkeypatch.setattr(state, "DEMO_DIR", tmp_path / "no-demo")
    return objectives_home


def _page(name: str, study: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / f"{name}.py"), default_timeout=TIMEOUT)
    at.session_state["study"] = study
    return at.run()


def _texts(elements) -> str:
    return " | ".join(str(e.value) for e in elements)


@pytest.mark.slow
class TestApplications:
    def test_anomaly_threshold_slider_flags_more_when_lowered(self, objectives):
        at = _page("reconstructions", "vae")
        assert not at.exception and not at.error, _texts(at.error)
        assert "Anomaly scores" in _texts(at.subheader)
        at.slider(key="anomaly_percentile").set_value(50.0).run()
        assert not at.exception
        charts_at_50 = len(at.get("plotly_chart"))
        assert "No test image is above the threshold" not in _texts(at.info)
        at.slider(key="anomaly_percentile").set_value(100.0).run()
        # at the top of the validation range few or none are flagged: one strip fewer or so
        assert len(at.get("plotly_chart")) <= charts_at_50

    def test_denoising_model_shows_noisy_denoised_clean(self, objectives):
        at = _page("reconstructions", "denoise")
        assert not at.exception and not at.error, _texts(at.error)
        assert "Denoising: noisy, denoised, clean" in _texts(at.subheader)
        assert "was trained to remove gaussian noise of level 0.2" in _texts(at.caption)
        # every trial gets the view; one not trained for it says so
        plain = _page("reconstructions", "vae")
        assert "Denoising: noisy, denoised, clean" in _texts(plain.subheader)
        assert "was not trained for denoising" in _texts(plain.caption)

    def test_variational_latent_page_shows_means_and_prior_samples(self, objectives):
        at = _page("latent_space", "vae")
        assert not at.exception and not at.error, _texts(at.error)
        assert "mean of its image's code" in _texts(at.caption)
        assert "Samples from the prior" in _texts(at.subheader)
        at.slider(key="prior_count").set_value(4).run()
        assert not at.exception
        plain = _page("latent_space", "denoise")
        assert "Samples from the prior" not in _texts(plain.subheader)
