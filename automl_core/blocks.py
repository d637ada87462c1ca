"""Resolution-changing blocks of the autoencoder: one registry, Keras imported only to build.

A block says how one encoder step halves the image and one decoder step doubles it. The
search space lists the registry's names without importing Keras, so a space can be checked
(and the dashboard can start) before TensorFlow loads. Add a block with
:func:`register_block` on a class with two static methods, ``down`` and ``up``, each
``(tensor, config, index) -> tensor``, naming its layers as :mod:`automl_core.models` says.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

BlockStep = Callable[[Any, Any, int], Any]


@dataclass(frozen=True)
class Block:
    """How one encoder block halves the image and one decoder block doubles it.

    Attributes:
        name: The value of the ``block`` parameter.
        down: ``(tensor, config, index) -> tensor`` for encoder block ``index``.
        up: ``(tensor, config, index) -> tensor`` for decoder block ``index``.
        description: One line for ``--help`` and the README.
    """

    name: str
    down: BlockStep
    up: BlockStep
    description: str


BLOCKS: dict[str, Block] = {}


def register_block(name: str, description: str):
    """Decorator that adds a class with static ``down`` and ``up`` methods to the registry.

    Args:
        name: The block's name (a value of the ``block`` parameter).
        description: One line describing it.

    Returns:
        The decorator, which returns the class unchanged.
    """

    def add(cls):
        BLOCKS[name] = Block(name, cls.down, cls.up, description)
        return cls

    return add


def conv(config, name: str, strides: int = 1):
    """A same-padded convolution with the configuration's filters, kernel and activation."""
    from keras import layers

    return layers.Conv2D(
        config.filters,
        config.kernel_size,
        strides=strides,
        padding="same",
        activation=config.activation,
        name=name,
    )


@register_block("pool", "conv + max-pool / upsample + conv")
class PoolBlock:
    """Convolution then 2x2 max pooling; nearest upsampling then convolution."""

    @staticmethod
    def down(x, config, i):
        """Convolution, then 2x2 max pooling."""
        from keras import layers

        x = conv(config, f"encoder_conv_{i}")(x)
        return layers.MaxPooling2D(2, padding="same", name=f"encoder_down_{i}")(x)

    @staticmethod
    def up(x, config, i):
        """Nearest-neighbour 2x upsampling, then convolution (resize-convolution)."""
        from keras import layers

        x = layers.UpSampling2D(2, name=f"decoder_up_{i}")(x)
        return conv(config, f"decoder_conv_{i}")(x)


@register_block("strided", "stride-2 conv / stride-2 transposed conv")
class StridedBlock:
    """A stride-2 convolution down; a stride-2 transposed convolution up."""

    @staticmethod
    def down(x, config, i):
        """One stride-2 convolution."""
        return conv(config, f"encoder_conv_{i}", strides=2)(x)

    @staticmethod
    def up(x, config, i):
        """One stride-2 transposed convolution."""
        from keras import layers

        return layers.Conv2DTranspose(
            config.filters,
            config.kernel_size,
            strides=2,
            padding="same",
            activation=config.activation,
            name=f"decoder_conv_{i}",
        )(x)
