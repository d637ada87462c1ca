"""Objectives, losses, schedules, clipping and augmentation: each does what it says."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from automl_core.errors import ConfigError
from automl_core.model import recipes
from automl_core.model.datasets import split_arrays
from automl_core.model.models import build_autoencoder, check_fits, estimate_parameters
from automl_core.model.space import PARAMETERS, ModelConfig
from automl_core.model.training import make_optimizer

SHAPE = (16, 16, 1)


def _config(**options) -> ModelConfig:
    values = {"num_conv_layers": 2, "filters": 4, "latent_dim": 8, "batch_size": 16}
    values.update(options)
    return ModelConfig(**values)


def _images(n: int = 8) -> np.ndarray:
    return np.random.default_rng(0).random((n, *SHAPE)).astype(np.float32)


def test_the_loss_registry_is_the_loss_parameter():
    assert set(recipes.LOSSES) == set(PARAMETERS["loss"].allowed)


class TestVariational:
    def test_kl_term_is_positive_and_means_are_the_code(self):
        config = _config(objective="variational", kl_weight=1.0)
        models = build_autoencoder(config, SHAPE)
        assert estimate_parameters(config, SHAPE) == models.autoencoder.count_params()
        x = _images()
        models.autoencoder(x, training=True)
        kl = float(sum(keras.ops.convert_to_numpy(loss) for loss in models.autoencoder.losses))
        assert kl > 0
        means = models.encoder.predict(x, verbose=0)
        # inference gives the mean, deterministically
        assert np.allclose(means, models.encoder.predict(x, verbose=0))

    def test_prior_samples_decode_to_images(self):
        models = build_autoencoder(_config(objective="variational"), SHAPE)
        prior = np.random.default_rng(1).standard_normal((5, 8)).astype(np.float32)
        images = models.decoder.predict(prior, verbose=0)
        assert images.shape == (5, *SHAPE) and 0 <= images.min() and images.max() <= 1

    def test_needs_a_dense_bottleneck(self):
        with pytest.raises(ConfigError, match="objective=variational needs bottleneck=dense"):
            check_fits(_config(objective="variational", bottleneck="conv", latent_dim=16), SHAPE)

    def test_saved_model_loads_in_safe_mode(self, tmp_path):
        models = build_autoencoder(_config(objective="variational"), SHAPE)
        models.autoencoder.save(tmp_path / "vae.keras")
        loaded = keras.models.load_model(tmp_path / "vae.keras", safe_mode=True, compile=False)
        x = _images(2)
        assert np.allclose(
            loaded.predict(x, verbose=0), models.autoencoder.predict(x, verbose=0), atol=1e-6
        )


class TestDenoising:
    @pytest.mark.parametrize("noise_type", ["gaussian", "masking"])
    def test_inputs_are_noisy_in_training_only(self, noise_type):
        config = _config(objective="denoising", noise=0.5, noise_type=noise_type)
        models = build_autoencoder(config, SHAPE)
        noise = models.encoder.get_layer("input_noise")
        x = _images(4)
        noisy = keras.ops.convert_to_numpy(noise(x, training=True))
        assert not np.allclose(noisy, x)
        assert np.allclose(keras.ops.convert_to_numpy(noise(x, training=False)), x)
        if noise_type == "masking":
            assert 0.3 < np.mean(noisy == 0) < 0.7

    def test_targets_are_clean(self):
        """The model is fit on (x, x): the noise is inside the model, so the target is x."""
        from automl_core.model.training import train_autoencoder

        data = split_arrays("noise", _images(30), None, None, seed=0)
        trained = train_autoencoder(_config(objective="denoising"), data, max_epochs=1)
        assert "input_noise" in [layer.name for layer in trained.models.encoder.layers]
        assert np.isfinite(trained.metrics.val_mse)


def test_sparse_code_carries_an_l1_penalty():
    models = build_autoencoder(_config(objective="sparse", sparsity=0.1), SHAPE)
    models.autoencoder(_images(), training=True)
    assert float(sum(keras.ops.convert_to_numpy(v) for v in models.autoencoder.losses)) > 0


@pytest.mark.parametrize("loss", sorted(recipes.LOSSES))
def test_each_loss_trains_and_ranks_by_validation_mse(loss):
    from automl_core.model.training import train_autoencoder

    data = split_arrays("noise", _images(30), None, None, seed=0)
    trained = train_autoencoder(_config(loss=loss, ssim_weight=0.3), data, max_epochs=1)
    reconstructions = trained.models.autoencoder.predict(data.x_val, verbose=0)
    expected = float(np.mean((reconstructions - data.x_val) ** 2))
    assert trained.metrics.val_mse == pytest.approx(expected, rel=1e-3)


def test_mse_ssim_is_zero_for_a_perfect_reconstruction_and_grows_with_error():
    loss = recipes.MseSsimLoss(0.5)
    x = _images(2)
    assert float(loss(x, x)) == pytest.approx(0.0, abs=1e-5)
    assert float(loss(x, np.clip(x + 0.2, 0, 1))) > 0.01


class TestSchedules:
    def _rates(self, schedule, warmup=0, total=30):
        rate = recipes.WarmupSchedule(schedule, 1.0, total, warmup)
        return [float(rate(step)) for step in range(total)]

    def test_constant_with_warmup_rises_linearly_then_stays(self):
        rates = self._rates("constant", warmup=5)
        assert rates[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
        assert rates[5:] == pytest.approx([1.0] * 25)

    def test_step_halves_at_each_third(self):
        rates = self._rates("step")
        assert rates[0] == 1.0 and rates[10] == 0.5 and rates[20] == 0.25

    def test_cosine_falls_from_base_to_zero(self):
        rates = self._rates("cosine", total=101)
        assert rates[0] == pytest.approx(1.0) and rates[50] == pytest.approx(0.5, abs=0.01)
        assert rates[100] == pytest.approx(0.0, abs=1e-3)
        assert all(a >= b for a, b in zip(rates, rates[1:], strict=False))

    def test_one_cycle_rises_to_ten_times_and_ends_low(self):
        rates = self._rates("one_cycle", total=101)
        assert max(rates) == pytest.approx(10.0, rel=0.05)
        assert rates.index(max(rates)) == pytest.approx(50, abs=1)
        assert rates[-1] < 0.05

    def test_optimizer_uses_the_schedule_and_constant_stays_a_float(self):
        plain = make_optimizer(_config())
        assert float(keras.ops.convert_to_numpy(plain.learning_rate)) == pytest.approx(1e-3)
        scheduled = make_optimizer(_config(schedule="cosine", warmup_epochs=1), 10, 5)
        assert isinstance(scheduled._learning_rate, recipes.WarmupSchedule)
        assert scheduled._learning_rate.total_steps == 50
        assert scheduled._learning_rate.warmup_steps == 10


def test_clipping_bounds_the_gradient_norm():
    optimizer = make_optimizer(_config(clip_norm=1.0, optimizer="sgd", learning_rate=1.0))
    variable = keras.Variable(np.zeros(4, np.float32))
    gradient = keras.ops.convert_to_tensor(np.full(4, 100.0, np.float32))
    optimizer.apply_gradients([(gradient, variable)])
    step = np.linalg.norm(keras.ops.convert_to_numpy(variable))
    assert step == pytest.approx(1.0, rel=1e-4)  # lr 1 x clipped norm 1 (first SGD step)
    assert optimizer.clipnorm == 1.0


def test_sgd_has_momentum():
    assert make_optimizer(_config(optimizer="sgd")).momentum == 0.9


class TestAugmentation:
    def test_flips_and_shifts_keep_shape_and_range(self):
        x = _images(6)
        out = keras.ops.convert_to_numpy(recipes.augmenter(_config(augment=True), 0)(x))
        assert out.shape == x.shape and 0 <= out.min() and out.max() <= 1
        assert not np.allclose(out, x)

    def test_trains_with_augmentation(self):
        from automl_core.model.training import train_autoencoder

        data = split_arrays("noise", _images(30), None, None, seed=0)
        trained = train_autoencoder(_config(augment=True), data, max_epochs=2)
        assert trained.metrics.epochs == 2 and math.isfinite(trained.metrics.val_mse)
