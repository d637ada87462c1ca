"""Training one configuration: build, compile, fit with early stopping, score on test."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import keras
import numpy as np

from automl_core.errors import TrialFailure
from automl_core.limits import PREVIEW_IMAGES
from automl_core.model.checkpoints import EpochCheckpoint
from automl_core.model.datasets import Dataset
from automl_core.model.fit_loop import Diverged, fit_autoencoder
from automl_core.model.metrics import reconstruction_scores
from automl_core.model.models import Autoencoder, build_autoencoder, initialise_linear_path
from automl_core.model.precision import policy_scope
from automl_core.model.recipes import augmenter, make_loss, make_schedule
from automl_core.model.space import OPTIMIZERS, WEIGHT_DECAY_OPTIMIZERS, ModelConfig

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
        best_epoch: The epoch (1-based) whose weights were kept; 0 when no epoch beat the
            untrained model of a PCA path, whose PCA weights were kept.
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
    # reconstructions of the first test images, saved with the model so that pages can show
    # them without loading it (see store.load_trial_preview)
    preview: np.ndarray | None = None
    # the Keras policy it trained with, and why it fell back to float32 ('' if it did not)
    precision: str = "float32"
    precision_fallback: str = ""


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
    options = dict(options)
    if config.clip_norm > 0:
        options["clipnorm"] = config.clip_norm
    if config.optimizer == "sgd":
        options["momentum"] = config.momentum
    if config.optimizer in WEIGHT_DECAY_OPTIMIZERS:
        # AdamW needs a number; elsewhere None skips the decay's work entirely
        options["weight_decay"] = (
            config.weight_decay if config.optimizer == "adamw" else config.weight_decay or None
        )
    return getattr(keras.optimizers, class_name)(learning_rate=rate, **options)


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


def reconstruct(model: keras.Model, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """The model's reconstructions of ``images`` clipped to [0, 1], by direct calls (no
    ``predict`` tracing); clipping matters for a PCA path, whose sum is unbounded."""
    parts = [
        keras.ops.convert_to_numpy(model(images[start : start + batch_size], training=False))
        for start in range(0, len(images), batch_size)
    ]
    return np.clip(np.concatenate(parts), 0.0, 1.0) if parts else np.zeros_like(images)


def train_autoencoder(
    config: ModelConfig,
    dataset: Dataset,
    max_epochs: int = 20,
    seed: int = 0,
    callbacks: list[keras.callbacks.Callback] | None = None,
    first_epoch_reports: int = 1,
    precision: str = "float32",
    checkpoint: EpochCheckpoint | None = None,
) -> TrainedModel:
    """Builds and trains one autoencoder, keeps its best epoch, and scores it on test data.

    Training (:func:`automl_core.model.fit_loop.fit_autoencoder`) stops early when the validation
    MSE has not improved for three epochs, and the best weights are restored. Under a mixed
    policy, a loss that becomes NaN or infinite is retried once in float32 (the result says
    so), and the trained weights are moved into a float32 copy of the model: the returned
    model, its saved file, its validation MSE and its test scores are all float32.

    Args:
        config: The configuration to train.
        dataset: The data; the model reconstructs its images.
        max_epochs: Upper bound on epochs. Defaults to 20.
        seed: Seed of weight initialisation and shuffling. Defaults to 0.
        callbacks: Extra Keras callbacks (progress reporting, pruning), called at each
            report point with ``logs`` of ``loss``, ``val_loss``, ``val_mse``, ``epochs``.
        first_epoch_reports: Report points in the first epoch (a multi-fidelity search
            reads 3: after a third, two thirds and all of the training images). Defaults
            to 1 (once per epoch).
        precision: The Keras dtype policy to train in: ``float32``, ``mixed_bfloat16`` or
            ``mixed_float16``. Defaults to ``float32``.
        checkpoint: Saves the training state after every whole epoch, and resumes an
            interrupted training of the same configuration from it. Defaults to None.

    Returns:
        The trained model with its per-epoch history and metrics.

    Raises:
        TrialFailure: The loss diverged (in float32) or the model ran out of memory.
    """

    if max_epochs < 1:
        raise ValueError(f"max_epochs must be a positive integer, got max_epochs={max_epochs}")
    started = time.perf_counter()
    fallback = ""
    try:
        with policy_scope(precision):
            models, fitted = _fit(
                config, dataset, max_epochs, seed, callbacks, first_epoch_reports, checkpoint
            )
    except Diverged as exc:
        if precision == "float32":
            raise TrialFailure(str(exc)) from exc
        fallback = f"{precision} training {exc}; retried in float32"
        precision = "float32"
        try:
            models, fitted = _fit(
                config, dataset, max_epochs, seed, callbacks, first_epoch_reports
            )
        except Diverged as again:
            raise TrialFailure(f"{again} (also after {fallback})") from again
    history = fitted.history
    val_mse = fitted.val_mse
    if precision != "float32":
        models = _float32_copy(models, config, dataset.input_shape)
        val_mse = float(
            np.mean((reconstruct(models.autoencoder, dataset.x_val) - dataset.x_val) ** 2)
        )
    if not math.isfinite(val_mse):
        raise TrialFailure(f"diverged: validation MSE is {val_mse}")
    rebuilt = reconstruct(models.autoencoder, dataset.x_test)
    scores = reconstruction_scores(dataset.x_test, rebuilt)
    metrics = TrialMetrics(
        val_mse=val_mse,
        test_psnr=float(scores.psnr.mean()),
        test_ssim=float(scores.ssim.mean()),
        test_mse=float(scores.mse.mean()),
        param_count=int(models.autoencoder.count_params()),
        compression_ratio=float(math.prod(dataset.input_shape) / config.latent_dim),
        train_seconds=time.perf_counter() - started,
        epochs=math.ceil(fitted.epochs_run - 1e-9),
        best_epoch=0
        if fitted.kept_start
        else max(1, math.ceil(history["epochs"][fitted.best_index] - 1e-9)),
    )
    return TrainedModel(
        config, models, history, metrics, rebuilt[:PREVIEW_IMAGES], precision, fallback
    )


def _fit(config, dataset, max_epochs, seed, callbacks, first_epoch_reports, checkpoint=None):
    """Builds, compiles and trains the model under the current Keras policy."""
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    models = build_autoencoder(config, dataset.input_shape)
    if config.linear_path:
        initialise_linear_path(models, dataset.x_train)
    steps_per_epoch = math.ceil(len(dataset.x_train) / config.batch_size)
    compile_autoencoder(models, config, steps_per_epoch, max_epochs)
    try:
        fitted = fit_autoencoder(
            models.autoencoder,
            dataset.x_train,
            dataset.x_val,
            batch_size=config.batch_size,
            max_epochs=max_epochs,
            seed=seed,
            patience=EARLY_STOPPING_PATIENCE,
            first_epoch_reports=first_epoch_reports,
            callbacks=callbacks,
            # an image and its target are the same augmented image: augmentation
            # change what is seen each epoch, never the task
            augment=augmenter(config, seed),
            checkpoint=checkpoint,
            # a PCA path starts at PCA's error: training that never beats it keeps PCA
            keep_start=config.linear_path,
            # a model trained on PSNR keeps its best epoch by PSNR
            select_by="val_psnr" if config.loss == "psnr" else "val_mse",
        )
    except tf.errors.ResourceExhaustedError as exc:
        raise TrialFailure(f"out of memory: {exc.message.splitlines()[0]}") from exc
    return models, fitted


def _float32_copy(models: Autoencoder, config: ModelConfig, input_shape) -> Autoencoder:
    """The same trained weights in a model built under float32, for scoring and saving.

    Variables are float32 under every mixed policy, so the copy is exact; it computes in
    float32, and its ``.keras`` file loads as a float32 model wherever it is read.
    """
    with policy_scope("float32"):
        copy = build_autoencoder(config, input_shape)
    copy.autoencoder.set_weights(models.autoencoder.get_weights())
    return copy
