"""The training recipe as parameter rows: momentum, weight decay and augmentation beyond
flips and shifts (rotation, crop, brightness / contrast)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from automl_core.errors import ConfigError
from automl_core.model import recipes
from automl_core.model.datasets import split_arrays
from automl_core.model.space import PARAMETERS, ModelConfig, SearchSpace
from automl_core.model.training import make_optimizer, train_autoencoder

SHAPE = (16, 16, 1)
ROWS = ("momentum", "weight_decay", "rotation", "crop", "color_jitter")


def _config(**options) -> ModelConfig:
    values = {"num_conv_layers": 1, "filters": 4, "latent_dim": 4}
    values.update(options)
    return ModelConfig(**values)


def _images(n: int = 8) -> np.ndarray:
    # smooth images (a gradient and a blob): a rotation or a crop visibly moves them
    rows, cols = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]] / (SHAPE[0] - 1)
    base = 0.6 * cols + 0.3 * np.exp(-((rows - 0.3) ** 2 + (cols - 0.7) ** 2) * 20)
    return np.repeat(base[None, :, :, None], n, axis=0).astype(np.float32)


class TestRows:
    @pytest.mark.parametrize("name", ROWS)
    def test_each_is_one_row_in_the_training_group(self, name):
        spec = PARAMETERS[name]
        assert spec.group == "Training" and spec.label and spec.help
        assert spec.default in spec.grid

    @pytest.mark.parametrize(
        ("name", "value", "expected"),
        [
            ("momentum", 1.5, "momentum must be at most 0.999, got momentum=1.5"),
            ("rotation", 200.0, "rotation must be at most 180, got rotation=200"),
            ("crop", -0.1, "crop must be a number from 0, got crop=-0.1"),
            ("color_jitter", "lots", "color_jitter must be a positive number"),
            ("weight_decay", 2.0, "weight_decay must be at most 1"),
        ],
    )
    def test_bad_values_are_refused_by_name(self, name, value, expected):
        with pytest.raises(ConfigError, match=expected):
            ModelConfig.from_dict({name: value})
        with pytest.raises(ConfigError, match=name):
            SearchSpace.from_dict({name: [0.0, value]})

    def test_ranges_are_searchable(self):
        space = SearchSpace.from_dict({"rotation": {"low": 0.0, "high": 20.0}})
        assert space.grid_size() is None


class TestOptimizer:
    def test_momentum_reaches_sgd(self):
        assert make_optimizer(_config(optimizer="sgd", momentum=0.5)).momentum == 0.5
        assert make_optimizer(_config(optimizer="sgd", momentum=0.0)).momentum == 0.0

    @pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
    def test_weight_decay_reaches_adamw_and_sgd(self, optimizer):
        made = make_optimizer(_config(optimizer=optimizer, weight_decay=0.01))
        assert made.weight_decay == pytest.approx(0.01)
        off = make_optimizer(_config(optimizer=optimizer, weight_decay=0.0)).weight_decay
        assert not off  # 0 for AdamW (it needs a number), None for SGD

    def test_adamw_keeps_keras_default_by_default(self):
        default = keras.optimizers.AdamW().weight_decay
        assert make_optimizer(_config(optimizer="adamw")).weight_decay == pytest.approx(default)

    def test_other_optimizers_ignore_weight_decay(self):
        assert make_optimizer(_config(optimizer="adam", weight_decay=0.5)).weight_decay is None


class TestAugmentation:
    def test_nothing_on_is_no_transform(self):
        assert recipes.augmenter(_config(), 0) is None

    @pytest.mark.parametrize(
        "options", [{"rotation": 20.0}, {"crop": 0.3}, {"color_jitter": 0.3}, {"augment": True}]
    )
    def test_each_row_changes_images_and_keeps_shape_and_range(self, options):
        x = _images()
        out = keras.ops.convert_to_numpy(recipes.augmenter(_config(**options), 1)(x))
        assert out.shape == x.shape
        assert out.min() >= -1e-6 and out.max() <= 1 + 1e-6
        assert not np.allclose(out, x, atol=1e-3)

    def test_trains_with_every_row_on(self):
        data = split_arrays("smooth", _images(30), None, None, seed=0)
        config = _config(
            augment=True, rotation=10.0, crop=0.1, color_jitter=0.1, optimizer="sgd", momentum=0.5
        )
        trained = train_autoencoder(config, data, max_epochs=1)
        assert np.isfinite(trained.metrics.val_mse)


class TestPsnrLoss:
    def test_is_minus_each_images_psnr(self):
        from automl_core.model.metrics import reconstruction_scores

        x = _images(4)
        noisy = np.clip(x + np.random.default_rng(1).normal(0, 0.05, x.shape), 0, 1).astype("f4")
        loss = recipes.make_loss(_config(loss="psnr"))
        value = float(loss(x, noisy))
        expected = -reconstruction_scores(x, noisy).psnr.mean()
        assert value == pytest.approx(expected, abs=1e-3)

    def test_trains_and_keeps_its_best_epoch_by_psnr(self):
        data = split_arrays("smooth", _images(30), None, None, seed=0)
        trained = train_autoencoder(_config(loss="psnr"), data, max_epochs=2)
        assert np.isfinite(trained.metrics.val_mse) and np.isfinite(trained.metrics.test_psnr)
        assert "val_psnr" in trained.history
