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
import numpy as np
from keras import layers

from automl_core.model import blocks, recipes
from automl_core.model.baseline import fit_pca
from automl_core.model.shapes import bottleneck_size, check_fits, estimate_parameters
from automl_core.model.space import PARAMETERS, ModelConfig

__all__ = [
    "Autoencoder",
    "architecture_work",
    "bottleneck_size",
    "build_autoencoder",
    "check_fits",
    "encoder_conv_layers",
    "estimate_parameters",
    "has_linear_path",
    "initialise_linear_path",
    "multiply_accumulates",
]


@dataclass(frozen=True)
class Autoencoder:
    """The three models of one configuration; they share weights."""

    autoencoder: keras.Model
    encoder: keras.Model
    decoder: keras.Model


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
    check_fits(config, input_shape)

    image = keras.Input((height, width, channels), name="encoder_input")
    x = image
    noise = recipes.input_noise(config)
    if noise is not None:
        x = noise(x)
    if config.linear_path:
        # PCA's projection (set by initialise_linear_path), in float32 under every policy:
        # it carries most of the image, and bfloat16 would cap its PSNR
        flat = layers.Flatten(name="pca_flatten", dtype="float32")(x)
        linear_code = layers.Dense(config.latent_dim, name="pca_encode", dtype="float32")(flat)
    for i in range(1, config.num_conv_layers + 1):
        x = blocks.encoder_block(x, config, i)
    if config.attention:
        x = blocks.bottleneck_attention(x)
    feature_shape = tuple(int(d) for d in x.shape[1:])
    if config.bottleneck == "conv":
        code_channels = config.latent_dim // (feature_shape[0] * feature_shape[1])
        sparse = config.objective == "sparse"
        x = layers.Conv2D(
            code_channels,
            1,
            activity_regularizer=keras.regularizers.L1(config.sparsity) if sparse else None,
            name="encoder_code",
            dtype="float32",  # the code stays float32 under a mixed policy (see code_layer)
        )(x)
        latent = layers.Flatten(name="latent", dtype="float32")(x)
    else:
        x = layers.Flatten(name="encoder_flatten")(x)
        if config.linear_path:
            latent = _linear_and_conv_code(config, x, linear_code)
        else:
            latent = recipes.code_layer(config, x, height * width * channels)
    encoder = keras.Model(image, latent, name="encoder")

    code = keras.Input((config.latent_dim,), name="decoder_input")
    if config.bottleneck == "conv":
        y = layers.Reshape((*feature_shape[:2], code_channels), name="decoder_reshape")(code)
        y = layers.Conv2D(feature_shape[2], 1, activation=config.activation, name="decoder_code")(
            y
        )
    else:
        y = layers.Dense(
            math.prod(feature_shape), activation=config.activation, name="decoder_dense"
        )(code)
        y = layers.Reshape(feature_shape, name="decoder_reshape")(y)
    for i in range(config.num_conv_layers, 0, -1):
        y = blocks.decoder_block(y, config, i)
    out_h, out_w = int(y.shape[1]), int(y.shape[2])
    if (out_h, out_w) != (height, width):
        dh, dw = out_h - height, out_w - width
        y = layers.Cropping2D(
            ((dh // 2, dh - dh // 2), (dw // 2, dw - dw // 2)), name="decoder_crop"
        )(y)
    # float32 under a mixed policy too: the output, and so every loss, keeps full precision
    if config.linear_path:
        # the convolutions add what PCA misses; from zero, so training starts at PCA's error
        residual = layers.Conv2D(
            channels,
            config.kernel_size,
            padding="same",
            kernel_initializer="zeros",
            name="decoder_conv_0",
            dtype="float32",
        )(y)
        linear_image = layers.Dense(height * width * channels, name="pca_decode", dtype="float32")(
            code
        )
        linear_image = layers.Reshape((height, width, channels), name="pca_image")(linear_image)
        reconstruction = layers.Add(name="reconstruction", dtype="float32")(
            [linear_image, residual]
        )
    else:
        reconstruction = layers.Conv2D(
            channels,
            config.kernel_size,
            padding="same",
            activation="sigmoid",
            name="reconstruction",
            dtype="float32",
        )(y)
    decoder = keras.Model(code, reconstruction, name="decoder")

    autoencoder = keras.Model(image, decoder(encoder(image)), name="autoencoder")
    return Autoencoder(autoencoder, encoder, decoder)


def _linear_and_conv_code(config: ModelConfig, features, linear_code):
    """The latent code of a model with a PCA path: PCA's code plus a learned correction.

    The correction starts at zero, so the first code is exactly PCA's.
    """
    regularizer = None
    if config.objective == "sparse":
        regularizer = keras.regularizers.L1(config.sparsity)
    correction = layers.Dense(
        config.latent_dim, kernel_initializer="zeros", name="conv_code", dtype="float32"
    )(features)
    return layers.Add(name="latent", activity_regularizer=regularizer, dtype="float32")(
        [linear_code, correction]
    )


def has_linear_path(model: keras.Model) -> bool:
    """Whether an autoencoder (or its encoder) has the PCA path of ``linear_path=true``."""
    encoder = model.get_layer("encoder") if model.name != "encoder" else model
    return any(layer.name == "pca_encode" for layer in encoder.layers)


def initialise_linear_path(models: Autoencoder, x_train: np.ndarray) -> int:
    """Sets a model's PCA path to PCA of the training images.

    The encoder's ``pca_encode`` becomes the projection onto the leading principal
    components (minus the mean), the decoder's ``pca_decode`` its transpose (plus the mean).
    With the convolutional corrections at zero, the model then reconstructs exactly as PCA
    with ``latent_dim`` components does; when the data has fewer components than that, the
    rest of the code starts at zero.

    Args:
        models: A model built with ``linear_path=true``.
        x_train: The training images, (N, H, W, C).

    Returns:
        The number of principal components used.
    """

    encode = models.encoder.get_layer("pca_encode")
    decode = models.decoder.get_layer("pca_decode")
    latent_dim = int(encode.units)
    pca = fit_pca(x_train, latent_dim)
    components = np.zeros((latent_dim, pca.components_.shape[1]), dtype=np.float32)
    used = pca.components_.shape[0]
    components[:used] = pca.components_
    mean = pca.mean_.astype(np.float32)
    encode.set_weights([components.T, -(mean @ components.T)])
    decode.set_weights([components, mean])
    return used


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
        elif isinstance(layer, layers.SeparableConv2D):
            positions = math.prod(layer.output.shape[1:3])
            depthwise, pointwise = layer.depthwise_kernel.shape, layer.pointwise_kernel.shape
            total += positions * (math.prod(depthwise) + math.prod(pointwise))
        elif isinstance(layer, layers.Dense):
            total += math.prod(layer.kernel.shape)
        elif isinstance(layer, layers.MultiHeadAttention):
            built = layer.get_build_config()
            # Keras 3.10+ nests the shapes under shapes_dict
            query = built.get("query_shape") or built["shapes_dict"]["query_shape"]
            tokens, width = (int(d) for d in query[1:])
            inner = layer.get_config()["num_heads"] * layer.get_config()["key_dim"]
            # q, k, v and output projections, then scores and the weighted sum
            total += 4 * tokens * width * inner + 2 * tokens * tokens * inner
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
