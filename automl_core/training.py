"""Training one configuration: build, compile, fit with early stopping, score on test."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import keras
import numpy as np

from automl_core.datasets import Dataset
from automl_core.errors import TrialFailure
from automl_core.metrics import reconstruction_scores
from automl_core.models import Autoencoder, build_autoencoder
from automl_core.recipes import augmenter, make_loss, make_schedule
from automl_core.space import OPTIMIZERS, ModelConfig

EARLY_STOPPING_PATIENCE = 3
# many small steps per graph call: per-step overhead dominates models this small
STEPS_PER_EXECUTION = 16


@dataclass(frozen=True)
class TrialMetrics:
    """What a finished trial is ranked and compared by.

    Attributes:
        val_mse: Validation mean squared error of the restored best weights.
        test_psnr: Mean PSNR over the test split, in dB.
        test_ssim: Mean SSIM over the test split.
        test_mse: Mean squared error over the test split.
        param_count: Trainable and non-trainable parameters of the autoencoder.
        compression_ratio: Input values per latent value (H * W * C / latent_dim).
        train_seconds: Wall-clock seconds of building, training and scoring.
        epochs: Epochs run (early stopping may end before the maximum).
        best_epoch: The epoch (1-based) whose weights were kept.
    """

    val_mse: float
    test_psnr: float
    test_ssim: float
    test_mse: float
    param_count: int
    compression_ratio: float
    train_seconds: float
    epochs: int
    best_epoch: int

    def to_dict(self) -> dict:
        """The metrics as a JSON-ready dict."""
        return asdict(self)


@dataclass
class TrainedModel:
    """A trained autoencoder with its history and metrics."""

    config: ModelConfig
    models: Autoencoder
    history: dict[str, list[float]] = field(default_factory=dict)
    metrics: TrialMetrics | None = None


def make_optimizer(
    config: ModelConfig, steps_per_epoch: int = 1, epochs: int = 1
) -> keras.optimizers.Optimizer:
    """The Keras optimizer of a configuration: its class, schedule and gradient clipping.

    Args:
        config: The configuration.
        steps_per_epoch: Optimizer steps per epoch (for schedules). Defaults to 1.
        epochs: Epochs of training (for schedules). Defaults to 1.

    Returns:
        The optimizer.
    """
    class_name, options = OPTIMIZERS[config.optimizer]
    rate = make_schedule(config, steps_per_epoch, epochs)
    clipping = {"clipnorm": config.clip_norm} if config.clip_norm > 0 else {}
    return getattr(keras.optimizers, class_name)(learning_rate=rate, **options, **clipping)


def compile_autoencoder(
    models: Autoencoder, config: ModelConfig, steps_per_epoch: int = 1, epochs: int = 1
) -> None:
    """Compiles the autoencoder with the configuration's loss, optimizer and schedule.

    Mean squared error is tracked as a metric whatever the loss, so trials trained with
    different losses are still ranked (and pruned) by the same validation MSE.
    """
    models.autoencoder.compile(
        optimizer=make_optimizer(config, steps_per_epoch, epochs),
        loss=make_loss(config),
        metrics=["mse"],
        steps_per_execution=STEPS_PER_EXECUTION,
    )


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops training at the end of an epoch whose loss is NaN or infinite.

    Keras' ``TerminateOnNaN`` checks every batch, which forces a host sync per step; an
    epoch-level check keeps the fast path and loses at most one epoch of a diverged trial.
    """

    def on_epoch_end(self, epoch, logs=None):
        """Stops the fit when the epoch's loss is not finite."""
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.model.stop_training = True


def _check_finite(history: dict[str, list[float]]) -> None:
    """Raises TrialFailure when a loss became NaN or infinite (the model diverged)."""
    for key in ("loss", "val_loss"):
        for epoch, value in enumerate(history.get(key, []), start=1):
            if not math.isfinite(value):
                raise TrialFailure(f"diverged: {key} became {value} at epoch {epoch}")


def train_autoencoder(
    config: ModelConfig,
    dataset: Dataset,
    max_epochs: int = 20,
    seed: int = 0,
    callbacks: list[keras.callbacks.Callback] | None = None,
) -> TrainedModel:
    """Builds and trains one autoencoder, keeps its best epoch, and scores it on test data.

    Training stops early when the validation loss has not improved for three epochs, and
    the best weights are restored.

    Args:
        config: The configuration to train.
        dataset: The data; the model reconstructs its images.
        max_epochs: Upper bound on epochs. Defaults to 20.
        seed: Seed of weight initialisation and shuffling. Defaults to 0.
        callbacks: Extra Keras callbacks (progress reporting, pruning).

    Returns:
        The trained model with its per-epoch history and metrics.

    Raises:
        TrialFailure: The loss diverged or the model ran out of memory.
    """
    import tensorflow as tf

    if max_epochs < 1:
        raise ValueError(f"max_epochs must be a positive integer, got max_epochs={max_epochs}")
    started = time.perf_counter()
    keras.utils.set_random_seed(seed)
    models = build_autoencoder(config, dataset.input_shape)
    steps_per_epoch = math.ceil(len(dataset.x_train) / config.batch_size)
    compile_autoencoder(models, config, steps_per_epoch, max_epochs)
    stop = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=EARLY_STOPPING_PATIENCE, restore_best_weights=True
    )
    try:
        if config.augment:
            # an image and its target are the same augmented image: flips and shifts
            # change what is seen each epoch, never the task
            train = (
                tf.data.Dataset.from_tensor_slices(dataset.x_train)
                .shuffle(len(dataset.x_train), seed=seed)
                .batch(config.batch_size)
                .map(augmenter(seed), num_parallel_calls=tf.data.AUTOTUNE)
                .map(lambda x: (x, x))
                .prefetch(tf.data.AUTOTUNE)
            )
            inputs = {"x": train}
        else:
            inputs = {
                "x": dataset.x_train,
                "y": dataset.x_train,
                "batch_size": config.batch_size,
                "shuffle": True,
            }
        fit = models.autoencoder.fit(
            **inputs,
            validation_data=(dataset.x_val, dataset.x_val),
            epochs=max_epochs,
            verbose=0,
            callbacks=[StopOnNonFiniteLoss(), stop, *(callbacks or [])],
        )
    except tf.errors.ResourceExhaustedError as exc:
        raise TrialFailure(f"out of memory: {exc.message.splitlines()[0]}") from exc
    history = {key: [float(v) for v in values] for key, values in fit.history.items()}
    _check_finite(history)
    val_losses = history.get("val_loss", [])
    best_epoch = int(np.argmin(val_losses)) + 1 if val_losses else len(history.get("loss", []))
    val_mse = float(
        models.autoencoder.evaluate(
            dataset.x_val, dataset.x_val, verbose=0, batch_size=256, return_dict=True
        )["mse"]
    )
    reconstructions = models.autoencoder.predict(dataset.x_test, batch_size=256, verbose=0)
    scores = reconstruction_scores(dataset.x_test, reconstructions)
    if not math.isfinite(val_mse):
        raise TrialFailure(f"diverged: validation MSE is {val_mse}")
    metrics = TrialMetrics(
        val_mse=val_mse,
        test_psnr=float(scores.psnr.mean()),
        test_ssim=float(scores.ssim.mean()),
        test_mse=float(scores.mse.mean()),
        param_count=int(models.autoencoder.count_params()),
        compression_ratio=float(math.prod(dataset.input_shape) / config.latent_dim),
        train_seconds=time.perf_counter() - started,
        epochs=len(history.get("loss", [])),
        best_epoch=best_epoch,
    )
    return TrainedModel(config, models, history, metrics)
