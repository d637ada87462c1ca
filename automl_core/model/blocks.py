"""The building blocks of the autoencoder: one registry each for downsampling and upsampling.

An encoder block is one convolution (plus, by the configuration, batch normalisation, a
residual second convolution with a skip connection, and dropout) followed by the chosen
downsampling; a decoder block is the chosen upsampling followed by the same convolutions.
Keras is imported only when a block is built, so the search space can list the registries'
names (and the dashboard can start) before TensorFlow loads.

Add a way to halve the image with :func:`register_downsampling` on a function
``(tensor, config, index) -> tensor``, or to double it with :func:`register_upsampling` on
``(tensor, config, index) -> tensor``; name the layers as :mod:`automl_core.model.models` says.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

BlockStep = Callable[[Any, Any, int], Any]


@dataclass(frozen=True)
class Resampling:
    """One way to change an image's resolution by two.

    Attributes:
        name: The value of the ``downsample`` or ``upsample`` parameter.
        apply: ``(tensor, config, index) -> tensor``.
        description: One line for ``--help`` and the README.
        in_convolution: The convolution itself resamples (stride 2 / transposed), so the
            block has no separate resampling layer.
    """

    name: str
    apply: BlockStep
    description: str
    in_convolution: bool = False


DOWNSAMPLING: dict[str, Resampling] = {}
UPSAMPLING: dict[str, Resampling] = {}


def register_downsampling(name: str, description: str, in_convolution: bool = False):
    """Decorator that adds a way to halve the image to the registry.

    Args:
        name: The value of the ``downsample`` parameter.
        description: One line describing it.
        in_convolution: The block's first convolution strides by two instead.

    Returns:
        The decorator, which returns the function unchanged.
    """

    def add(apply: BlockStep) -> BlockStep:
        DOWNSAMPLING[name] = Resampling(name, apply, description, in_convolution)
        return apply

    return add


def register_upsampling(name: str, description: str, in_convolution: bool = False):
    """Decorator that adds a way to double the image to the registry.

    Args:
        name: The value of the ``upsample`` parameter.
        description: One line describing it.
        in_convolution: The block's convolution is a stride-2 transposed one instead.

    Returns:
        The decorator, which returns the function unchanged.
    """

    def add(apply: BlockStep) -> BlockStep:
        UPSAMPLING[name] = Resampling(name, apply, description, in_convolution)
        return apply

    return add


def resampling(config) -> tuple[Resampling, Resampling]:
    """The (downsampling, upsampling) a configuration uses.

    ``block="strided"`` is the original shorthand for a stride-2 convolution down and a
    transposed convolution up, whatever ``downsample`` and ``upsample`` say; ``block="pool"``
    follows them.
    """
    if config.block == "strided":
        return DOWNSAMPLING["stride"], UPSAMPLING["transpose"]
    return DOWNSAMPLING[config.downsample], UPSAMPLING[config.upsample]


@register_downsampling("max-pool", "2x2 max pooling after the convolution")
def _max_pool(x, config, i):
    from keras import layers

    return layers.MaxPooling2D(2, padding="same", name=f"encoder_down_{i}")(x)


@register_downsampling("avg-pool", "2x2 average pooling after the convolution")
def _avg_pool(x, config, i):
    from keras import layers

    return layers.AveragePooling2D(2, padding="same", name=f"encoder_down_{i}")(x)


@register_downsampling("stride", "the convolution itself strides by two", in_convolution=True)
def _stride(x, config, i):
    return x


@register_upsampling("resize", "nearest-neighbour 2x resize, then a convolution")
def _resize(x, config, i):
    from keras import layers

    return layers.UpSampling2D(2, name=f"decoder_up_{i}")(x)


@register_upsampling("transpose", "a stride-2 transposed convolution", in_convolution=True)
def _transpose(x, config, i):
    return x


MakeConvolution = Callable[[int, int, int, Any, str], Any]


@dataclass(frozen=True)
class Convolution:
    """One kind of convolution a block can use (the ``convolution`` parameter).

    Attributes:
        name: The parameter's value.
        make: ``(filters, kernel_size, strides, activation, name) -> keras layer``.
        parameters: ``(kernel_size, in_channels, filters) -> int``: its weights and biases.
        description: One line for ``--help`` and the README.
    """

    name: str
    make: MakeConvolution
    parameters: Callable[[int, int, int], int]
    description: str


CONVOLUTIONS: dict[str, Convolution] = {}


def register_convolution(name: str, description: str, parameters: Callable[[int, int, int], int]):
    """Decorator that adds a kind of convolution to the registry.

    Args:
        name: The value of the ``convolution`` parameter.
        description: One line describing it.
        parameters: ``(kernel_size, in_channels, filters) -> int``, the layer's weight count
            (the model's size is checked from it before anything is built).

    Returns:
        The decorator, which returns the function unchanged.
    """

    def add(make: MakeConvolution) -> MakeConvolution:
        CONVOLUTIONS[name] = Convolution(name, make, parameters, description)
        return make

    return add


def _dense_kernel(k: int, cin: int, cout: int) -> int:
    return k * k * cin * cout + cout


@register_convolution("standard", "a k x k convolution", _dense_kernel)
def _standard(filters, k, strides, activation, name):
    from keras import layers

    return layers.Conv2D(
        filters, k, strides=strides, padding="same", activation=activation, name=name
    )


@register_convolution(
    "dilated",
    "a k x k convolution with dilation 2 (a wider view for the same weights; a stride-2 "
    "convolution stays undilated, as Keras cannot do both)",
    _dense_kernel,
)
def _dilated(filters, k, strides, activation, name):
    from keras import layers

    return layers.Conv2D(
        filters,
        k,
        strides=strides,
        dilation_rate=1 if strides > 1 else 2,
        padding="same",
        activation=activation,
        name=name,
    )


@register_convolution(
    "separable",
    "depthwise-separable: a k x k convolution per channel, then a 1 x 1 across channels",
    lambda k, cin, cout: k * k * cin + cin * cout + cout,
)
def _separable(filters, k, strides, activation, name):
    from keras import layers

    return layers.SeparableConv2D(
        filters, k, strides=strides, padding="same", activation=activation, name=name
    )


def conv(config, name: str, strides: int = 1, transposed: bool = False):
    """A same-padded convolution with the configuration's filters, kernel and kind.

    Its activation is the configuration's, unless batch normalisation follows (then the
    activation comes after the normalisation, in :func:`normalize_activate`). A transposed
    convolution (upsampling) is always a standard one.
    """
    from keras import layers

    activation = None if config.batch_norm else config.activation
    if transposed:
        return layers.Conv2DTranspose(
            config.filters,
            config.kernel_size,
            strides=strides,
            padding="same",
            activation=activation,
            name=name,
        )
    kind = CONVOLUTIONS[config.convolution]
    return kind.make(config.filters, config.kernel_size, strides, activation, name)


def normalize_activate(x, config, prefix: str, i: int):
    """Batch normalisation and then the activation, when the configuration asks for it."""
    if not config.batch_norm:
        return x
    from keras import layers

    x = layers.BatchNormalization(name=f"{prefix}_bn_{i}")(x)
    return layers.Activation(config.activation, name=f"{prefix}_act_{i}")(x)


def encoder_block(x, config, i: int):
    """Encoder block ``i``: convolution(s), then halving the image, then dropout."""
    from keras import layers

    down, _ = resampling(config)
    stride = 2 if down.in_convolution else 1
    y = normalize_activate(
        conv(config, f"encoder_conv_{i}", strides=stride)(x), config, "encoder", i
    )
    if config.residual:
        y = normalize_activate(conv(config, f"encoder_res_{i}")(y), config, "encoder_res", i)
        skip = layers.Conv2D(config.filters, 1, strides=stride, name=f"encoder_skip_{i}")(x)
        y = layers.Add(name=f"encoder_add_{i}")([y, skip])
    y = down.apply(y, config, i)
    if config.dropout > 0:
        y = layers.Dropout(config.dropout, name=f"encoder_dropout_{i}")(y)
    return y


def decoder_block(x, config, i: int):
    """Decoder block ``i``: doubling the image, then convolution(s)."""
    from keras import layers

    _, up = resampling(config)
    y = up.apply(x, config, i)
    stride = 2 if up.in_convolution else 1
    y = conv(config, f"decoder_conv_{i}", strides=stride, transposed=up.in_convolution)(y)
    y = normalize_activate(y, config, "decoder", i)
    if config.residual:
        z = normalize_activate(conv(config, f"decoder_res_{i}")(y), config, "decoder_res", i)
        y = layers.Add(name=f"decoder_add_{i}")([y, z])
    return y


ATTENTION_HEADS = 2


def bottleneck_attention(x):
    """Self-attention over the bottleneck's positions, added back to its input."""
    from keras import layers

    height, width, channels = (int(d) for d in x.shape[1:])
    tokens = layers.Reshape((height * width, channels), name="bottleneck_tokens")(x)
    attended = layers.MultiHeadAttention(
        num_heads=ATTENTION_HEADS,
        key_dim=max(1, channels // ATTENTION_HEADS),
        name="bottleneck_mha",
    )(tokens, tokens)
    tokens = layers.Add(name="bottleneck_add")([tokens, attended])
    return layers.Reshape((height, width, channels), name="bottleneck_attention")(tokens)
