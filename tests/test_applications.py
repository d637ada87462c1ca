"""Applications of a trained model: anomaly scores, denoising side by side, VAE samples."""

from __future__ import annotations

import numpy as np
import pytest

from automl_core.analysis import charts, inspect
from automl_core.errors import ConfigError
from automl_core.model.models import build_autoencoder
from automl_core.model.space import ModelConfig

SHAPE = (8, 8, 1)


def _model(**options):
    config = ModelConfig(num_conv_layers=1, filters=4, latent_dim=4, **options)
    return build_autoencoder(config, SHAPE).autoencoder


class TestAnomalies:
    def test_flags_what_is_worse_than_the_validation_percentile(self):
        validation = np.linspace(0.0, 0.01, 101)
        report = inspect.anomaly_report(np.array([0.001, 0.0095, 0.5]), validation, 90)
        assert report.threshold == pytest.approx(0.009)
        assert report.scores["flagged"].tolist() == [False, True, True]
        assert report.flagged.tolist() == [2, 1]
        assert report.scores["percentile"].iloc[2] == 100.0

    def test_threshold_at_100_flags_only_beyond_the_worst_validation(self):
        report = inspect.anomaly_report(np.array([0.01, 0.02]), np.array([0.0, 0.01]), 100)
        assert report.scores["flagged"].tolist() == [False, True]

    @pytest.mark.parametrize("percentile", [-1, 101])
    def test_percentile_out_of_range(self, percentile):
        with pytest.raises(ConfigError, match="percentile must lie in 0..100"):
            inspect.anomaly_report(np.ones(2), np.ones(2), percentile)

    def test_needs_validation_images(self):
        with pytest.raises(ConfigError, match="at least one validation image"):
            inspect.anomaly_report(np.ones(2), np.array([]))

    def test_figure_shows_both_distributions_and_the_threshold(self):
        report = inspect.anomaly_report(np.array([0.1, 0.2]), np.array([0.0, 0.1, 0.15]))
        fig = charts.anomaly_figure(report)
        assert len(fig.data) == 2 and "flagged" in fig.layout.annotations[0].text


class TestDenoising:
    def test_noisy_denoised_clean_side_by_side(self):
        model = _model(objective="denoising", noise=0.3)
        clean = np.random.default_rng(0).random((3, *SHAPE)).astype(np.float32)
        assert inspect.is_denoising(model)
        noisy, denoised = inspect.denoising_examples(model, clean)
        assert noisy.shape == denoised.shape == clean.shape
        assert not np.allclose(noisy, clean) and 0 <= noisy.min() and noisy.max() <= 1

    def test_plain_model_is_refused(self):
        model = _model()
        assert not inspect.is_denoising(model)
        with pytest.raises(ConfigError, match="not trained to denoise"):
            inspect.denoising_examples(model, np.zeros((1, *SHAPE), np.float32))


class TestVariationalSamples:
    def test_prior_samples_decode(self):
        model = _model(objective="variational")
        assert inspect.is_variational(model)
        codes, images = inspect.sample_prior(model, 4, seed=1)
        assert codes.shape == (4, 4) and images.shape == (4, *SHAPE)

    def test_plain_model_has_no_prior(self):
        with pytest.raises(ConfigError, match="only a variational model"):
            inspect.sample_prior(_model(), 2)
