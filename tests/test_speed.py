"""The fast training loop: batch order, report points, best weights, callbacks, scoring."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from automl_core.model.datasets import load_dataset
from automl_core.model.fit_loop import BatchOrder, Diverged, fit_autoencoder
from automl_core.model.models import build_autoencoder
from automl_core.model.space import ModelConfig
from automl_core.model.training import compile_autoencoder, reconstruct, train_autoencoder

CONFIG = ModelConfig(num_conv_layers=1, filters=4, latent_dim=4, batch_size=16)


def test_every_image_once_per_pass_and_batches_wrap_around():
    order = BatchOrder(10, 4, seed=0)
    first = order.next(5)  # 20 indices: two passes over 10 images
    assert first.shape == (5, 4)
    flat = first.ravel()
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:]) == list(range(10))
    assert not np.array_equal(flat[:10], flat[10:])  # a fresh permutation each pass


def _compiled(data, learning_rate=1e-3):
    keras.utils.set_random_seed(0)
    config = ModelConfig(**{**CONFIG.to_dict(), "learning_rate": learning_rate})
    models = build_autoencoder(config, data.input_shape)
    compile_autoencoder(models, config)
    return models.autoencoder


class Recorder(keras.callbacks.Callback):
    def __init__(self, stop_after=None):
        super().__init__()
        self.logs = []
        self.stop_after = stop_after

    def on_epoch_end(self, epoch, logs=None):
        self.logs.append(dict(logs))
        if self.stop_after is not None and len(self.logs) >= self.stop_after:
            self.model.stop_training = True


@pytest.mark.slow
def test_first_epoch_in_thirds_then_whole_epochs_and_best_weights_kept():
    data = load_dataset("digits", max_images=120)
    model = _compiled(data)
    recorder = Recorder()
    result = fit_autoencoder(
        model, data.x_train, data.x_val, 16, 3, first_epoch_reports=3, callbacks=[recorder]
    )
    assert result.history["epochs"] == pytest.approx([1 / 3, 2 / 3, 1, 2, 3], abs=0.05)
    assert [set(r) for r in recorder.logs] == [
        {"loss", "val_loss", "val_mse", "val_psnr", "epochs"}
    ] * 5
    expected = float(np.mean((reconstruct(model, data.x_val) - data.x_val) ** 2))
    assert result.val_mse == pytest.approx(expected, rel=1e-4)
    assert result.val_mse == min(result.history["val_mse"])
    assert result.setup_seconds > 0 and result.epoch_seconds > 0


@pytest.mark.slow
def test_a_callback_can_stop_training():
    data = load_dataset("digits", max_images=120)
    recorder = Recorder(stop_after=2)
    result = fit_autoencoder(
        _compiled(data), data.x_train, data.x_val, 16, 5, callbacks=[recorder]
    )
    assert len(result.history["loss"]) == 2 and result.epochs_run == 2


@pytest.mark.slow
def test_a_diverging_model_is_reported():
    data = load_dataset("digits", max_images=120)
    model = _compiled(data, learning_rate=1e12)
    with pytest.raises(Diverged, match="diverged"):
        fit_autoencoder(model, data.x_train * 1e6, data.x_val, 16, 3)


@pytest.mark.slow
def test_reconstruct_matches_predict_and_trial_metrics_are_whole_epochs():
    data = load_dataset("digits", max_images=120)
    trained = train_autoencoder(CONFIG, data, 2, first_epoch_reports=3)
    model = trained.models.autoencoder
    assert np.allclose(
        reconstruct(model, data.x_test), model.predict(data.x_test, verbose=0), atol=1e-5
    )
    assert trained.metrics.epochs == 2 and trained.metrics.best_epoch in (1, 2)
    assert len(trained.history["val_mse"]) == 4  # 1/3, 2/3, 1, 2
