"""The convolutional autoencoder builder, with one registry of resolution-changing blocks.

Layer names are a contract the inspection code relies on:

- encoder (``keras.Model`` named ``encoder``): ``encoder_conv_1`` .. ``encoder_conv_L``
  (the learned filters), ``encoder_down_i`` where the block downsamples separately,
  ``encoder_flatten`` and ``latent`` (the bottleneck vector);
- decoder (named ``decoder``): ``decoder_dense``, ``decoder_reshape``, ``decoder_up_i`` and
  ``decoder_conv_i``, an optional ``decoder_crop``, and ``reconstruction``;
- the autoencoder (named ``autoencoder``) chains the two.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import keras
from keras import layers

from automl_core import limits
from automl_core.blocks import BLOCKS
from automl_core.errors import ConfigError
from automl_core.space import PARAMETERS, ModelConfig


@dataclass(frozen=True)
class Autoencoder:
    """The three models of one configuration; they share weights."""

    autoencoder: keras.Model
    encoder: keras.Model
    decoder: keras.Model


def estimate_parameters(config: ModelConfig, input_shape: tuple[int, int, int]) -> int:
    """The parameter count of ``config``'s autoencoder, computed without building it.

    Building a model allocates its weights, so a configuration far too large for memory is
    refused from this count first (see :func:`build_autoencoder`).

    Args:
        config: The architecture.
        input_shape: One image's (H, W, C).

    Returns:
        The number of weights and biases of the encoder and decoder.
    """
    height, width, channels = (int(d) for d in input_shape)
    k, f, depth = config.kernel_size, config.filters, config.num_conv_layers
    for _ in range(depth):  # each block halves the image, rounding up (same padding)
        height, width = math.ceil(height / 2), math.ceil(width / 2)
    features = height * width * f
    encoder_convs = (k * k * channels * f + f) + (depth - 1) * (k * k * f * f + f)
    decoder_convs = depth * (k * k * f * f + f) + (k * k * f * channels + channels)
    dense = 2 * features * config.latent_dim + config.latent_dim + features
    return encoder_convs + decoder_convs + dense


def build_autoencoder(config: ModelConfig, input_shape: tuple[int, int, int]) -> Autoencoder:
    """Builds an encoder, a decoder and the autoencoder chaining them.

    Works for any image size: the decoder's output is cropped back to the input when the
    sides are not powers of two.

    Args:
        config: The architecture (depth, filters, kernel, activation, latent size, block).
        input_shape: One image's shape, (H, W, C).

    Returns:
        The three models, uncompiled.

    Raises:
        ConfigError: The configuration does not fit the image size.
    """
    height, width, channels = (int(d) for d in input_shape)
    size = estimate_parameters(config, input_shape)
    if size > limits.get("max_model_parameters"):
        raise ConfigError(
            f"filters={config.filters}, latent_dim={config.latent_dim} and "
            f"num_conv_layers={config.num_conv_layers} make a model of {size:,} parameters "
            f"on {height}x{width}x{channels} images, more than the "
            f"{limits.get('max_model_parameters'):,} allowed (AUTOML_MAX_MODEL_PARAMETERS)"
        )
    if 2**config.num_conv_layers > min(height, width):
        raise ConfigError(
            f"num_conv_layers={config.num_conv_layers} would shrink the {height}x{width} image "
            "below 1x1"
        )
    if config.block not in BLOCKS:
        raise ConfigError(f"unknown block {config.block!r}; expected one of {', '.join(BLOCKS)}")
    block = BLOCKS[config.block]

    image = keras.Input((height, width, channels), name="encoder_input")
    x = image
    for i in range(1, config.num_conv_layers + 1):
        x = block.down(x, config, i)
    feature_shape = tuple(int(d) for d in x.shape[1:])
    x = layers.Flatten(name="encoder_flatten")(x)
    latent = layers.Dense(config.latent_dim, name="latent")(x)
    encoder = keras.Model(image, latent, name="encoder")

    code = keras.Input((config.latent_dim,), name="decoder_input")
    y = layers.Dense(math.prod(feature_shape), activation=config.activation, name="decoder_dense")(
        code
    )
    y = layers.Reshape(feature_shape, name="decoder_reshape")(y)
    for i in range(config.num_conv_layers, 0, -1):
        y = block.up(y, config, i)
    out_h, out_w = int(y.shape[1]), int(y.shape[2])
    if (out_h, out_w) != (height, width):
        dh, dw = out_h - height, out_w - width
        y = layers.Cropping2D(
            ((dh // 2, dh - dh // 2), (dw // 2, dw - dw // 2)), name="decoder_crop"
        )(y)
    reconstruction = layers.Conv2D(
        channels, config.kernel_size, padding="same", activation="sigmoid", name="reconstruction"
    )(y)
    decoder = keras.Model(code, reconstruction, name="decoder")

    autoencoder = keras.Model(image, decoder(encoder(image)), name="autoencoder")
    return Autoencoder(autoencoder, encoder, decoder)


def encoder_conv_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The encoder's convolution layers in order (``encoder_conv_1`` first).

    Args:
        model: An autoencoder from :func:`build_autoencoder` (or one loaded back), or its
            encoder.

    Returns:
        The convolution layers holding the learned filters.
    """
    encoder = model.get_layer("encoder") if model.name != "encoder" else model
    convs = [layer for layer in encoder.layers if layer.name.startswith("encoder_conv_")]
    return sorted(convs, key=lambda layer: int(layer.name.rsplit("_", 1)[1]))


def multiply_accumulates(model: keras.Model) -> int:
    """Multiply-accumulate operations of one image's forward pass through ``model``.

    Counts the convolutions (transposed ones included) and dense layers, which dominate a
    convolutional autoencoder's work; nested models (encoder, decoder) are walked into.
    """
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += multiply_accumulates(layer)
        elif isinstance(layer, layers.Conv2DTranspose):
            kernel = math.prod(layer.kernel.shape)  # kh * kw * out * in
            total += math.prod(layer.input.shape[1:3]) * kernel
        elif isinstance(layer, layers.Conv2D):
            kernel = math.prod(layer.kernel.shape[:3])  # kh * kw * in
            total += math.prod(layer.output.shape[1:]) * kernel
        elif isinstance(layer, layers.Dense):
            total += math.prod(layer.kernel.shape)
    return int(total)


@functools.lru_cache(maxsize=1024)
def _architecture_work(
    input_shape: tuple[int, int, int], costly: tuple[tuple[str, Any], ...]
) -> int:
    """Multiply-accumulates per image of one architecture (cached: building costs ~50 ms)."""
    config = ModelConfig(**dict(costly))
    return multiply_accumulates(build_autoencoder(config, input_shape).autoencoder)


def architecture_work(config: ModelConfig, input_shape: tuple[int, int, int]) -> int:
    """Multiply-accumulates of one image's forward pass through ``config``'s autoencoder.

    Training time per epoch grows with it. Only the parameters marked ``costly`` in the
    parameter table change it, so configurations differing only in others (learning rate,
    optimizer, activation) share one cached count.
    """
    costly = tuple((p.name, getattr(config, p.name)) for p in PARAMETERS.values() if p.costly)
    return _architecture_work(tuple(int(d) for d in input_shape), costly)
