"""The PCA path (``linear_path=true``): a model that starts exactly at PCA's reconstruction
and never ends worse than it on the validation split."""

from __future__ import annotations

import numpy as np
import pytest

from automl_core.analysis.inspect import ActivationProbe, conv_filters
from automl_core.errors import ConfigError
from automl_core.model import baseline
from automl_core.model.datasets import load_dataset
from automl_core.model.metrics import reconstruction_scores
from automl_core.model.models import (
    build_autoencoder,
    check_fits,
    estimate_parameters,
    has_linear_path,
    initialise_linear_path,
)
from automl_core.model.space import PARAMETERS, ModelConfig
from automl_core.model.training import reconstruct, train_autoencoder

SHAPE = (8, 8, 1)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", 0, max_images=300)


def _config(**overrides) -> ModelConfig:
    values = {"num_conv_layers": 1, "filters": 4, "latent_dim": 6, "linear_path": True}
    values.update(overrides)
    return ModelConfig(**values)


class TestParameterRow:
    def test_one_row_with_a_readable_name(self):
        spec = PARAMETERS["linear_path"]
        assert spec.label == "PCA path" and spec.default is False
        assert "PCA" in spec.help

    def test_default_models_have_no_pca_path(self):
        models = build_autoencoder(ModelConfig(num_conv_layers=1, filters=4, latent_dim=6), SHAPE)
        assert not has_linear_path(models.autoencoder)


class TestBuild:
    @pytest.mark.parametrize(
        "overrides",
        [
            {},
            {"num_conv_layers": 2, "filters": 8},
            {"objective": "sparse"},
            {"objective": "denoising"},
            {"loss": "l1"},
            {"block": "residual"},
        ],
    )
    def test_parameter_count_is_predicted_exactly(self, overrides):
        config = _config(**overrides)
        models = build_autoencoder(config, SHAPE)
        assert has_linear_path(models.autoencoder) and has_linear_path(models.encoder)
        assert estimate_parameters(config, SHAPE) == models.autoencoder.count_params()

    def test_odd_image_sizes_build_and_count(self):
        config = _config(num_conv_layers=2)
        shape = (9, 7, 3)
        models = build_autoencoder(config, shape)
        out = models.autoencoder(np.zeros((2, *shape), "float32"))
        assert tuple(out.shape) == (2, *shape)
        assert estimate_parameters(config, shape) == models.autoencoder.count_params()

    @pytest.mark.parametrize(
        ("overrides", "named"),
        [
            ({"bottleneck": "conv", "latent_dim": 8}, "bottleneck=conv"),
            ({"objective": "variational"}, "objective=variational"),
            ({"loss": "bce"}, "loss=bce"),
        ],
    )
    def test_combinations_it_cannot_serve_are_refused_by_name(self, overrides, named):
        with pytest.raises(ConfigError, match=named) as info:
            check_fits(_config(**overrides), SHAPE)
        assert "linear_path" in str(info.value)


class TestStartsAtPca:
    def test_untrained_model_reconstructs_as_pca(self, digits):
        config = _config()
        models = build_autoencoder(config, digits.input_shape)
        used = initialise_linear_path(models, digits.x_train)
        assert used == config.latent_dim
        ours = reconstruction_scores(
            digits.x_test, reconstruct(models.autoencoder, digits.x_test)
        ).psnr.mean()
        pca = baseline.pca_scores(digits, config.latent_dim).psnr
        assert abs(float(ours) - pca) < 0.05

    def test_code_is_pca_coordinates(self, digits):
        from sklearn.decomposition import PCA

        config = _config(latent_dim=4)
        models = build_autoencoder(config, digits.input_shape)
        initialise_linear_path(models, digits.x_train)
        code = np.asarray(models.encoder(digits.x_test[:20]))
        flat = digits.x_train.reshape(len(digits.x_train), -1)
        reference = PCA(n_components=4, svd_solver="full").fit(flat)
        expected = reference.transform(digits.x_test[:20].reshape(20, -1))
        # principal axes are defined up to sign
        signs = np.sign((code * expected).sum(axis=0))
        np.testing.assert_allclose(code * signs, expected, atol=1e-3)

    def test_more_components_than_the_data_has_leaves_the_rest_at_zero(self, digits):
        config = _config(latent_dim=12)
        models = build_autoencoder(config, digits.input_shape)
        used = initialise_linear_path(models, digits.x_train[:5])
        assert used <= 5
        code = np.asarray(models.encoder(digits.x_test[:3]))
        assert np.allclose(code[:, used:], 0.0)


class TestTraining:
    def test_trained_model_is_never_worse_than_its_pca_start(self, digits):
        # a learning rate far too large: every epoch is worse than the PCA start
        config = _config(learning_rate=0.5, optimizer="sgd")
        trained = train_autoencoder(config, digits, max_epochs=2, seed=0)
        start = build_autoencoder(config, digits.input_shape)
        initialise_linear_path(start, digits.x_train)
        start_mse = float(
            np.mean((reconstruct(start.autoencoder, digits.x_val) - digits.x_val) ** 2)
        )
        assert trained.metrics.val_mse <= start_mse * (1 + 1e-4)
        pca = baseline.pca_scores(digits, config.latent_dim).psnr
        assert trained.metrics.test_psnr >= pca - 0.05

    def test_kept_start_is_recorded_as_epoch_zero(self, digits):
        config = _config(learning_rate=0.5, optimizer="sgd")
        trained = train_autoencoder(config, digits, max_epochs=2, seed=0)
        if trained.metrics.best_epoch == 0:
            assert trained.metrics.epochs >= 1
        else:  # an epoch beat PCA after all: its weights were kept instead
            assert 1 <= trained.metrics.best_epoch <= trained.metrics.epochs

    def test_inspection_reads_a_pca_path_model(self, digits):
        config = _config(num_conv_layers=2)
        trained = train_autoencoder(config, digits, max_epochs=1, seed=0)
        names = [f.layer for f in conv_filters(trained.models.autoencoder, include_decoder=True)]
        assert "reconstruction" not in names  # the weightless sum of the two paths
        assert names[-1] == "decoder_conv_0"
        activations = ActivationProbe(trained.models.autoencoder)(digits.x_test[0])
        assert any(a.layer == "reconstruction" for a in activations)


class TestJudgedLikePca:
    def test_kept_weights_never_lower_the_validation_psnr(self, digits):
        from automl_core.model.fit_loop import fit_autoencoder
        from automl_core.model.training import compile_autoencoder

        config = _config(learning_rate=3e-3)
        models = build_autoencoder(config, digits.input_shape)
        initialise_linear_path(models, digits.x_train)
        compile_autoencoder(models, config, 5, 3)
        fitted = fit_autoencoder(
            models.autoencoder, digits.x_train, digits.x_val, 64, 3, keep_start=True
        )
        assert fitted.start_val_psnr == fitted.start_val_psnr  # scored
        if not fitted.kept_start:
            assert fitted.history["val_psnr"][fitted.best_index] >= fitted.start_val_psnr
            assert fitted.val_mse < fitted.start_val_mse
        scores = reconstruction_scores(digits.x_val, reconstruct(models.autoencoder, digits.x_val))
        assert float(scores.psnr.mean()) >= fitted.start_val_psnr - 1e-3

    def test_psnr_loss_keeps_the_epoch_of_best_validation_psnr(self, digits):
        config = _config(loss="psnr", learning_rate=1e-3)
        trained = train_autoencoder(config, digits, max_epochs=4, seed=0)
        history = trained.history
        assert "val_psnr" in history and len(history["val_psnr"]) == len(history["val_mse"])
        pca = baseline.pca_scores(digits, config.latent_dim).psnr
        assert trained.metrics.test_psnr >= pca - 0.5  # judged on the test split, kept on val
        if trained.metrics.best_epoch:
            kept = max(history["val_psnr"])
            assert kept == pytest.approx(
                history["val_psnr"][history["epochs"].index(trained.metrics.best_epoch)]
            )
