"""Training recipes: objectives, losses and learning-rate schedules, one registry each.

- An objective changes what the autoencoder learns: ``plain`` reconstruction, ``denoising``
  (noisy inputs, clean targets), ``variational`` (a VAE: the code is a Gaussian whose KL
  divergence to the prior is penalised) or ``sparse`` (an L1 penalty on the code). The
  model builder (:mod:`automl_core.model.models`) asks :func:`input_noise` and
  :func:`code_layer` for the layers an objective needs.
- A loss compares reconstructions with their targets: ``mse``, ``bce``, ``l1`` or
  ``mse_ssim`` (MSE mixed with 1 - SSIM).
- A schedule shapes the learning rate over training: ``constant``, ``step``, ``cosine`` or
  ``one_cycle``, each after a linear warm-up of ``warmup_epochs``.

The custom layers and the schedule are registered with Keras' serialisation, so a saved
``.keras`` file loads again with ``safe_mode`` once this module is imported.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import keras
from keras import layers, ops

# the names of objectives, noise types and schedules are rows of the parameter table
# (automl_core.model.space.PARAMETERS), which must not import Keras; losses register here
LOSSES: dict[str, Callable[[Any], Any]] = {}
# the step schedule halves the rate at each third of training
STEP_FACTOR = 0.5


@keras.saving.register_keras_serializable(package="automl_core")
class MaskingNoise(layers.Layer):
    """Sets a random share ``rate`` of input values to zero, during training only."""

    def __init__(self, rate: float, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.rate = float(rate)
        self.seed = seed
        self._generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        """The inputs, with values masked when training."""
        if not training or self.rate <= 0:
            return inputs
        keep = keras.random.uniform(ops.shape(inputs), seed=self._generator) >= self.rate
        return inputs * ops.cast(keep, inputs.dtype)

    def get_config(self):
        """The layer's configuration."""
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


@keras.saving.register_keras_serializable(package="automl_core")
class VariationalCode(layers.Layer):
    """The code of a VAE: a sample of N(mean, exp(log_var)) when training, the mean otherwise.

    Adds ``kl_weight`` times the KL divergence to N(0, I) (summed over the code, averaged
    over the batch, divided by the values per image so it weighs like a per-pixel loss).
    """

    def __init__(self, kl_weight: float, values_per_image: int, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.kl_weight = float(kl_weight)
        self.values_per_image = int(values_per_image)
        self.seed = seed
        self._generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        """``inputs`` is ``[mean, log_var]``; returns the code."""
        mean, log_var = inputs
        log_var = ops.clip(log_var, -20.0, 20.0)
        kl = -0.5 * ops.sum(1.0 + log_var - ops.square(mean) - ops.exp(log_var), axis=-1)
        self.add_loss(self.kl_weight * ops.mean(kl) / self.values_per_image)
        if not training:
            return mean
        noise = keras.random.normal(ops.shape(mean), seed=self._generator)
        return mean + ops.exp(0.5 * log_var) * noise

    def compute_output_shape(self, input_shape):
        """The mean's shape."""
        return input_shape[0]

    def get_config(self):
        """The layer's configuration."""
        return {
            **super().get_config(),
            "kl_weight": self.kl_weight,
            "values_per_image": self.values_per_image,
            "seed": self.seed,
        }


def input_noise(config, seed: int | None = None):
    """The noise layer a denoising objective puts before the encoder (training only), or None."""
    if config.objective != "denoising" or config.noise <= 0:
        return None
    if config.noise_type == "masking":
        return MaskingNoise(config.noise, seed=seed, name="input_noise")
    return layers.GaussianNoise(config.noise, seed=seed, name="input_noise")


def code_layer(config, features, values_per_image: int):
    """The latent code from the encoder's flattened features, as the objective wants it.

    The layer named ``latent`` is what inspection reads: the code itself, or for a VAE its
    mean (the sample is drawn only when training).
    """
    if config.objective == "variational":
        mean = layers.Dense(config.latent_dim, name="latent_mean")(features)
        log_var = layers.Dense(
            config.latent_dim, name="latent_log_var", kernel_initializer="zeros"
        )(features)
        # the KL term in float32 under a mixed policy: exp(log_var) overflows float16
        return VariationalCode(config.kl_weight, values_per_image, name="latent", dtype="float32")(
            [mean, log_var]
        )
    regularizer = None
    if config.objective == "sparse":
        regularizer = keras.regularizers.L1(config.sparsity)
    # the code in float32 under a mixed policy: its L1 penalty and inspection read it
    return layers.Dense(
        config.latent_dim, activity_regularizer=regularizer, name="latent", dtype="float32"
    )(features)


def register_loss(name: str):
    """Decorator that adds a loss factory ``(config) -> keras loss`` to :data:`LOSSES`."""

    def add(factory):
        LOSSES[name] = factory
        return factory

    return add


@register_loss("mse")
def _mse(config):
    return "mse"


@register_loss("bce")
def _bce(config):
    return "binary_crossentropy"


@register_loss("l1")
def _l1(config):
    return "mae"


@keras.saving.register_keras_serializable(package="automl_core")
class MseSsimLoss(keras.losses.Loss):
    """``(1 - w) * MSE + w * (1 - SSIM)``: pixel error mixed with structural dissimilarity."""

    def __init__(self, ssim_weight: float = 0.5, name: str = "mse_ssim", **kwargs):
        super().__init__(name=name, **kwargs)
        self.ssim_weight = float(ssim_weight)

    def call(self, y_true, y_pred):
        """The mixed loss per image."""
        import tensorflow as tf

        height, width = int(y_true.shape[1]), int(y_true.shape[2])
        size = min(11, height, width)
        ssim = tf.image.ssim(
            y_true, y_pred, max_val=1.0, filter_size=size, filter_sigma=1.5 * size / 11
        )
        mse = ops.mean(ops.square(y_true - y_pred), axis=(1, 2, 3))
        return (1.0 - self.ssim_weight) * mse + self.ssim_weight * (1.0 - ssim)

    def get_config(self):
        """The loss's configuration."""
        return {**super().get_config(), "ssim_weight": self.ssim_weight}


@register_loss("mse_ssim")
def _mse_ssim(config):
    return MseSsimLoss(config.ssim_weight)


# 10 / ln(10): natural log to decibels
_DB = 4.342944819032518


@keras.saving.register_keras_serializable(package="automl_core")
class PsnrLoss(keras.losses.Loss):
    """Minus each image's PSNR, ``10 log10(MSE)``: its mean over a batch is what the
    reported PSNR averages.

    Mean squared error is dominated by the hardest images; this loss weighs every image's
    relative error alike, so smooth images are not reconstructed carelessly (PCA is the best
    linear code for MSE, and an MSE-trained model beside it has little to gain; by this
    measure it can gain decibels). The error is floored at 1e-10 (PSNR 100 dB), as scores are.
    """

    def __init__(self, name: str = "psnr", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        """Minus the PSNR of each image, in dB."""
        mse = ops.mean(ops.square(y_true - y_pred), axis=(1, 2, 3))
        return _DB * ops.log(mse + 1e-10)


@register_loss("psnr")
def _psnr(config):
    return PsnrLoss()


def make_loss(config):
    """The Keras loss of a configuration's ``loss`` parameter."""
    return LOSSES[config.loss](config)


@keras.saving.register_keras_serializable(package="automl_core")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """A learning rate that warms up linearly, then follows the ``schedule`` parameter.

    Args:
        kind: ``constant``, ``step`` (halved at each third), ``cosine`` (to zero) or
            ``one_cycle`` (up to 10x and back down to 1/100, in two halves).
        base: The configuration's learning rate.
        total_steps: Optimizer steps of the whole training.
        warmup_steps: Steps of the linear warm-up from zero (0: none).
    """

    def __init__(self, kind: str, base: float, total_steps: int, warmup_steps: int = 0):
        self.kind = kind
        self.base = float(base)
        self.total_steps = max(1, int(total_steps))
        self.warmup_steps = max(0, min(int(warmup_steps), self.total_steps - 1))

    def __call__(self, step):
        """The learning rate at optimizer step ``step``."""
        step = ops.cast(step, "float32")
        warm = float(max(self.warmup_steps, 1))
        after = ops.maximum(step - self.warmup_steps, 0.0)
        # the last step reaches the schedule's end
        span = float(max(self.total_steps - self.warmup_steps - 1, 1))
        progress = ops.minimum(after / span, 1.0)
        if self.kind == "step":
            rate = self.base * ops.power(STEP_FACTOR, ops.floor(progress * 3.0))
        elif self.kind == "cosine":
            rate = self.base * 0.5 * (1.0 + ops.cos(math.pi * progress))
        elif self.kind == "one_cycle":
            peak, floor = 10.0 * self.base, self.base / 100.0
            rising = self.base + (peak - self.base) * progress * 2.0
            falling = peak + (floor - peak) * (progress - 0.5) * 2.0
            rate = ops.where(progress < 0.5, rising, falling)
        else:
            rate = self.base * ops.ones_like(progress)
        if self.warmup_steps:
            rate = ops.where(step < self.warmup_steps, rate * (step + 1.0) / warm, rate)
        return rate

    def get_config(self):
        """The schedule's configuration."""
        return {
            "kind": self.kind,
            "base": self.base,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
        }


def make_schedule(config, steps_per_epoch: int, epochs: int):
    """The learning rate (a float, or a :class:`WarmupSchedule`) of a configuration."""
    if config.schedule == "constant" and config.warmup_epochs == 0:
        return config.learning_rate
    steps_per_epoch = max(1, int(steps_per_epoch))
    return WarmupSchedule(
        config.schedule,
        config.learning_rate,
        steps_per_epoch * max(1, int(epochs)),
        steps_per_epoch * config.warmup_epochs,
    )


# augmentation: the largest shift, as a share of the image's side
SHIFT = 0.1


def augmenter(config, seed: int | None = None):
    """The batch transform of a configuration's augmentation rows, or None when all are off.

    ``augment`` gives random horizontal flips and shifts of up to 10%; ``rotation`` random
    rotations (degrees), ``crop`` random crops resized back (a share of each side),
    ``color_jitter`` random brightness and contrast changes. Images stay in [0, 1].

    Args:
        config: The :class:`~automl_core.model.space.ModelConfig`.
        seed: Seed of the random transforms.

    Returns:
        ``(images) -> images`` on a batch of NHWC images, or None.
    """
    # float32 under a mixed policy too: the augmented image is also the target
    steps = []
    if config.augment:
        steps.append(layers.RandomFlip("horizontal", seed=seed, dtype="float32"))
        steps.append(
            layers.RandomTranslation(SHIFT, SHIFT, fill_mode="reflect", seed=seed, dtype="float32")
        )
    if config.rotation > 0:  # Keras takes a share of a full turn
        steps.append(layers.RandomRotation(config.rotation / 360.0, seed=seed, dtype="float32"))
    if config.crop > 0:  # zooming in by up to the share crops and resizes back
        steps.append(layers.RandomZoom((-config.crop, 0.0), seed=seed, dtype="float32"))
    if config.color_jitter > 0:
        steps.append(
            layers.RandomBrightness(
                config.color_jitter, value_range=(0.0, 1.0), seed=seed, dtype="float32"
            )
        )
        steps.append(
            layers.RandomContrast(
                config.color_jitter, value_range=(0.0, 1.0), seed=seed, dtype="float32"
            )
        )
    if not steps:
        return None

    def augment(images):
        for step in steps:
            images = step(images, training=True)
        return images

    return augment
